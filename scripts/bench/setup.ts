/**
 * What every benchmark suite of the runner (`run.ts`) shares: starting a
 * measured server (bare `ws` or gateway, each with the stats agent preloaded)
 * and waiting until it is ready, the gateway's temporary config file, the fake
 * app as a process of its own (`app-server.ts`), and the connection load
 * generators (`load.ts`) that open and join WebSockets.
 */
import { randomBytes } from "node:crypto"
import { readFileSync, writeFileSync } from "node:fs"
import { dirname, join, resolve } from "node:path"
import { fileURLToPath, pathToFileURL } from "node:url"
import { APP_ID, CLIENT_TYPE } from "./bench-app.ts"
import { ChildError, describeExit, nextMessage, spawnManaged } from "./children.ts"
import type { Managed } from "./children.ts"
import type { AppCallsReply, FromApp, FromLoad, LoadPlan, LoadResult, CloseResult, ToApp, ToLoad } from "./messages.ts"
import { serverLabels } from "./report.ts"
import type { ServerName } from "./report.ts"

export const benchDir = dirname(fileURLToPath(import.meta.url))
export const rootDir = resolve(benchDir, "../..")
/** The stats agent, preloaded (`--import`) into every process whose CPU and memory the runner reads. */
const agentUrl = pathToFileURL(join(benchDir, "stats-agent.ts")).href

/** One server process holds at most ~18k sockets (open files are capped at 20,000). */
export const MAX_CONNECTIONS = 18_000
export const DEFAULT_SOURCE_ADDRESSES = Array.from({ length: 8 }, (_, i) => `127.0.0.${i + 2}`)
export const BASELINE_SETTLE_MS = 1_000
export const STOP_GRACE_MS = 5_000
const ATTEMPT_TIMEOUT_MS = 30_000
export const HEARTBEAT_INTERVAL_MS = 30_000
/** The event of the broadcasts the fan-out suite sends and the load generators time. */
export const BROADCAST_EVENT = "tick"

// ---------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------

export const sleep = (ms: number) => new Promise<void>((done) => setTimeout(done, ms))

export const log = (message: string) => process.stderr.write(`bench: ${message}\n`)

/** Wall-clock epoch milliseconds with sub-millisecond precision (comparable across processes). */
export const now = () => performance.timeOrigin + performance.now()

export const isLoopback = (address: string) =>
  /^127\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.test(address) &&
  address.split(".").every((part) => Number(part) <= 255)

/** `count` split into `parts` shares differing by at most one. */
export const split = (count: number, parts: number): Array<number> =>
  Array.from({ length: parts }, (_, i) => Math.floor(count / parts) + (i < count % parts ? 1 : 0))

/** The environment a child starts from: just enough to run, nothing of the caller's configuration. */
export const baseEnv = (): NodeJS.ProcessEnv => {
  const env: NodeJS.ProcessEnv = {}
  for (const key of ["PATH", "HOME", "TMPDIR", "LANG", "TZ"]) {
    const value = process.env[key]
    if (value !== undefined) env[key] = value
  }
  return env
}

/** CPU time of the whole machine so far, all cores, in milliseconds (Linux `/proc/stat`). */
export interface MachineCpu {
  readonly busyMs: number
  readonly idleMs: number
}

/** `undefined` where `/proc/stat` cannot be read. */
export const machineCpu = (): MachineCpu | undefined => {
  try {
    const line = readFileSync("/proc/stat", "utf8").split("\n", 1)[0] ?? ""
    const fields = line.trim().split(/\s+/).slice(1).map(Number)
    if (fields[0] === undefined || fields.length < 4 || fields.some((n) => !Number.isFinite(n))) return undefined
    // user nice system idle iowait irq softirq steal (guest time is already in user), in 1/100 s
    const [user = 0, nice = 0, system = 0, idle = 0, iowait = 0, irq = 0, softirq = 0, steal = 0] = fields
    return { busyMs: (user + nice + system + irq + softirq + steal) * 10, idleMs: (idle + iowait) * 10 }
  } catch {
    return undefined
  }
}

/**
 * The CPU the machine spent over a window besides the benchmark's own
 * processes (`ownMs`: their CPU over the same window), in % of one core;
 * `undefined` without `/proc/stat`. Other work on the machine shows here.
 */
export const othersCpuPercent = (
  before: MachineCpu | undefined,
  after: MachineCpu | undefined,
  windowMs: number,
  ownMs: number
): number | undefined =>
  before === undefined || after === undefined || windowMs <= 0
    ? undefined
    : Math.max(0, (after.busyMs - before.busyMs - ownMs) / windowMs * 100)

/** A random secret for the app (server API bearer token, signature key), new for every run. */
export const newSecret = () => randomBytes(24).toString("hex")

// ---------------------------------------------------------------------------
// Servers
// ---------------------------------------------------------------------------

export interface ServerProcess {
  readonly name: ServerName
  readonly port: number
  readonly process: Managed
  /** What one connection costs this server, for the report. */
  readonly what: string
}

export interface ServerStartOptions {
  readonly verbose: boolean
  /** Extra environment for the gateway. */
  readonly gatewayEnv: Readonly<Record<string, string>>
}

/** How a suite that broadcasts to its subscribers starts its servers and their load (fan-out, cross-node). */
export interface BroadcastSuiteSetup {
  readonly load: Omit<LoadSettings, "topics">
  /** Every gateway process is started with these (`--gateway-env`, `--verbose`). */
  readonly server: ServerStartOptions
  readonly readyTimeoutMs: number
  readonly gatewayDefaultLimits: boolean
  readonly appUrl: string
  readonly secret: string
  /** A directory for the gateway's config file. */
  readonly configDir: string
}

/** Where the gateway finds its app and its config file. */
export interface GatewaySetup {
  readonly appUrl: string
  readonly configFile: string | undefined
  /** The node's name (`NODE_NAME`, and its label in the logs); "bench" when not given. */
  readonly nodeName?: string
  /** More environment (a cluster node's settings); `--gateway-env` still comes last. */
  readonly env?: NodeJS.ProcessEnv
}

export interface BareSetup {
  /** Required as `authorization: Bearer <secret>` by the bare server's `POST /broadcast`. */
  readonly secret: string | undefined
}

/**
 * Writes the gateway's config file for the `bench` app: its secret, when
 * given, and admission limits raised for a connection burst of `concurrency`
 * attempts in flight, unless `defaultLimits`.
 */
export const writeGatewayConfig = (
  file: string,
  settings: { readonly secret: string | undefined; readonly defaultLimits: boolean; readonly concurrency: number }
): void => {
  writeFileSync(file, JSON.stringify({
    apps: [{
      id: APP_ID,
      ...(settings.secret === undefined ? {} : { secret: settings.secret }),
      ...(settings.defaultLimits ? {} : {
        rateLimits: {
          connectionsPerIpPerMinute: 1_000_000,
          maxConcurrentAuth: Math.max(1_000, settings.concurrency * 2)
        }
      })
    }]
  }, null, 2))
}

export const startServer = (
  name: ServerName,
  port: number,
  options: ServerStartOptions,
  setup: { readonly gateway?: GatewaySetup; readonly bare?: BareSetup }
): ServerProcess => {
  const nodeArgs = ["--expose-gc", "--import", agentUrl]
  if (name === "bare") {
    const secret = setup.bare?.secret
    const child = spawnManaged("bare", [...nodeArgs, join(benchDir, "bare-ws-server.ts")], {
      cwd: rootDir,
      env: { ...baseEnv(), PORT: String(port), HOST: "127.0.0.1", ...(secret === undefined ? {} : { BARE_SECRET: secret }) },
      verbose: options.verbose
    })
    return { name, port, process: child, what: "connect + join" }
  }
  const gateway = setup.gateway
  if (gateway === undefined) throw new Error("the gateway needs the fake app")
  const env: NodeJS.ProcessEnv = {
    ...baseEnv(),
    PORT: String(port),
    HOST: "127.0.0.1",
    NODE_NAME: gateway.nodeName ?? "bench",
    GATEWAY_APPS: APP_ID,
    BENCH_API: gateway.appUrl,
    LOG_LEVEL: "warn",
    MAX_CONNECTIONS: "20000",
    ...(gateway.configFile === undefined ? {} : { GATEWAY_CONFIG: gateway.configFile }),
    ...gateway.env,
    ...options.gatewayEnv
  }
  // the same V8 flag as `npm start` (see the README's operations section)
  const child = spawnManaged(gateway.nodeName ?? "gateway", [...nodeArgs, "--max-semi-space-size=32", join(rootDir, "src", "main.ts")], {
    cwd: rootDir,
    env,
    verbose: options.verbose
  })
  return { name, port, process: child, what: "connect + auth call + join" }
}

export const waitReady = async (server: ServerProcess, timeoutMs: number): Promise<void> => {
  const url = `http://127.0.0.1:${server.port}/health/ready`
  const deadline = Date.now() + timeoutMs
  let last = "no answer"
  while (Date.now() < deadline) {
    const exit = server.process.exitInfo()
    if (exit !== undefined) {
      throw new ChildError(
        `${serverLabels[server.name]} ${describeExit(exit)} before it was ready` +
          (server.process.tail() === "" ? " (it printed nothing)" : `; its last output:\n${server.process.tail()}`)
      )
    }
    try {
      const response = await fetch(url, { signal: AbortSignal.timeout(1_000) })
      const body = await response.text()
      if (response.status === 200) return
      last = `${response.status} ${body.slice(0, 300)}`
    } catch (error) {
      last = error instanceof Error ? (error.cause instanceof Error ? error.cause.message : error.message) : String(error)
    }
    await sleep(100)
  }
  throw new ChildError(
    `${serverLabels[server.name]} was not ready within ${timeoutMs / 1000} s (GET ${url}: ${last})` +
      (server.process.tail() === "" ? "" : `; its last output:\n${server.process.tail()}`)
  )
}

// ---------------------------------------------------------------------------
// The fake app as a process of its own
// ---------------------------------------------------------------------------

export interface AppProcess {
  readonly process: Managed
  /** Base URL, e.g. `http://127.0.0.1:40123`. */
  readonly url: string
}

/** Starts `app-server.ts` (stats agent preloaded, so that its CPU can be read) and waits for its URL. */
export const startAppProcess = async (verbose: boolean): Promise<AppProcess> => {
  const child = spawnManaged("app", ["--import", agentUrl, join(benchDir, "app-server.ts")], {
    cwd: rootDir,
    env: baseEnv(),
    verbose
  })
  const url = await nextMessage(child, "its URL", (m) => {
    const message = m as FromApp
    return message.type === "app-ready" ? message.url : undefined
  }, 30_000)
  return { process: child, url }
}

let appCallsId = 0

/** The calls the app process received since the previous question (or its start). */
export const appCalls = (app: AppProcess): Promise<Record<string, number>> => {
  const id = ++appCallsId
  const reply = nextMessage(app.process, "its call counts", (m) => {
    const message = m as AppCallsReply
    return message.type === "app-calls" && message.id === id ? { ...message.counts } : undefined
  }, 20_000)
  app.process.child.send({ type: "app-calls", id } satisfies ToApp)
  return reply
}

// ---------------------------------------------------------------------------
// Connection load generators (load.ts)
// ---------------------------------------------------------------------------

export interface LoadSettings {
  /** Load generator processes. */
  readonly workers: number
  /** Connection attempts in flight, over all load generators. */
  readonly concurrency: number
  readonly sourceAddresses: ReadonlyArray<string>
  /** 0: connection n joins room:<n>; K: joins room:<n mod K>. */
  readonly topics: number
  readonly verbose: boolean
}

/**
 * Starts the load generators for `connections` connections (they connect on
 * `runLoad`); generator w gets source addresses w, w + workers, …. With
 * `ports` (several servers on 127.0.0.1, e.g. the nodes of a cluster),
 * connection n goes to `ports[n mod ports.length]` instead of the server's.
 */
export const startLoad = async (
  server: ServerProcess,
  settings: LoadSettings,
  connections: number,
  deadline: number,
  ports?: ReadonlyArray<number>
): Promise<ReadonlyArray<Managed>> => {
  const workers = Math.min(settings.workers, connections)
  const counts = split(connections, workers)
  const concurrency = split(Math.max(settings.concurrency, workers), workers)
  const plans: Array<LoadPlan> = []
  let firstIndex = 0
  for (let w = 0; w < workers; w++) {
    const mine = settings.sourceAddresses.filter((_, i) => i % workers === w)
    plans.push({
      url: `ws://127.0.0.1:${server.port}/socket/websocket`,
      ...(ports === undefined ? {} : { urls: ports.map((port) => `ws://127.0.0.1:${port}/socket/websocket`) }),
      app: APP_ID,
      clientType: CLIENT_TYPE,
      firstIndex,
      count: counts[w]!,
      concurrency: concurrency[w]!,
      localAddresses: mine.length > 0 ? mine : [settings.sourceAddresses[w % settings.sourceAddresses.length]!],
      topics: settings.topics,
      attemptTimeoutMs: ATTEMPT_TIMEOUT_MS,
      heartbeatIntervalMs: HEARTBEAT_INTERVAL_MS,
      broadcastEvent: BROADCAST_EVENT,
      lifetimeMs: Math.max(1_000, deadline - Date.now() + 5_000)
    })
    firstIndex += counts[w]!
  }
  const generators = plans.map((_, w) =>
    spawnManaged(`load-${w + 1}`, [join(benchDir, "load.ts")], { cwd: rootDir, env: baseEnv(), verbose: settings.verbose })
  )
  await Promise.all(generators.map((generator, w) => {
    const ready = nextMessage(generator, "ready", (m) => ((m as FromLoad).type === "ready" ? true : undefined), 30_000)
    generator.child.send({ type: "plan", plan: plans[w]! } satisfies ToLoad)
    return ready
  }))
  return generators
}

const loadDone = (generator: Managed): Promise<LoadResult> =>
  nextMessage(generator, "its connect results", (m) => {
    const message = m as FromLoad
    return message.type === "done" ? message.result : undefined
  }, 24 * 3_600_000)

/** Every generator opens and joins its planned share; resolves with their results. */
export const runLoad = (generators: ReadonlyArray<Managed>): Promise<Array<LoadResult>> => {
  const done = generators.map(loadDone)
  for (const generator of generators) generator.child.send({ type: "go" } satisfies ToLoad)
  return Promise.all(done)
}

/**
 * Every generator opens and joins `counts[w]` further connections, with
 * tokens `bench-<firstIndex[w]>`… (kept distinct from the ones before).
 */
export const runMoreLoad = (
  generators: ReadonlyArray<Managed>,
  counts: ReadonlyArray<number>,
  firstIndexes: ReadonlyArray<number>
): Promise<Array<LoadResult>> => {
  const done = generators.map(loadDone)
  generators.forEach((generator, w) =>
    generator.child.send({ type: "more", firstIndex: firstIndexes[w]!, count: counts[w]! } satisfies ToLoad)
  )
  return Promise.all(done)
}

export const closeLoad = (generators: ReadonlyArray<Managed>): Promise<Array<CloseResult>> => {
  const closed = generators.map((generator) =>
    nextMessage(generator, "its close results", (m) => {
      const message = m as FromLoad
      return message.type === "closed" ? message.result : undefined
    }, 30_000)
  )
  for (const generator of generators) generator.child.send({ type: "close" } satisfies ToLoad)
  return Promise.all(closed)
}
