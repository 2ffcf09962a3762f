/**
 * Connection benchmark: the gateway against a bare `ws` server speaking the
 * same protocol, in one run, on this machine.
 *
 * Run
 *   npm run bench                                  # 10,000 connections per server, both servers
 *   npm run bench -- --connections 500            # quick smoke run (seconds)
 *   npm run bench -- --only gateway                # one server (bare | gateway)
 *   scripts/node.sh scripts/bench/run.ts --help    # every option
 * Options may also come from the environment: BENCH_CONNECTIONS, BENCH_ONLY,
 * BENCH_CONCURRENCY, BENCH_WORKERS, BENCH_TOPICS, BENCH_TIMEOUT_S, BENCH_OUT
 * (the command line wins). Exit status: 0 measured; 3 measured but some
 * connections failed or were dropped (figures suspect); 1 a server did not come
 * up or the harness failed; 124 overall timeout; 130 interrupted.
 *
 * What happens, for each server in turn (bare `ws` first, then the gateway;
 * each runs alone, as its own process started with `--expose-gc` and the
 * stats agent `stats-agent.ts` preloaded, and is stopped before the next one):
 *   1. start it on a free 127.0.0.1 port and wait for `GET /health/ready` = 200;
 *   2. after a short settle (and, with `--warmup N`, after opening, joining and
 *      closing N connections, so that one-time costs such as compiled code are
 *      not counted per connection; off by default), force a GC and read its
 *      RSS (the baseline);
 *   3. the load generators (`load.ts`, `--workers` child processes, 2 by
 *      default, each with its own source addresses out of 127.0.0.2–127.0.0.9
 *      and its share of `--concurrency`, 200 in flight in all) open
 *      `--connections` WebSockets to
 *      `/socket/websocket?app=bench&token=bench-<n>&client_type=bench&vsn=2.0.0`
 *      and send `["1","1","room:<n>","phx_join",{}]` on each, waiting for the ok
 *      reply. By default every connection joins its own topic `room:<n>` (one
 *      topic per connection, the costliest case); `--topics K` spreads them over
 *      `room:0`…`room:<K-1>` instead. Connections stay open and idle (heartbeat
 *      every 30 s) until the memory reading;
 *   4. after `--settle-ms`, force a GC and read its RSS again; then close
 *      everything and stop the server.
 * The gateway is configured with one app, `bench`, served by the fake app
 * (`src/testing/FakeApp.ts`) running inside this runner process: a schema with
 * the channel `room:{id}` and the event `echo`, and an auth handler accepting
 * every `bench-<n>` token. Its admission limits (connection attempts per IP
 * and concurrent auth calls) are raised through a temporary `GATEWAY_CONFIG`
 * file so that they do not refuse the benchmark's burst
 * (`--gateway-default-limits` keeps the defaults); `--gateway-env KEY=VALUE`
 * passes further settings.
 *
 * Figures (also written as JSON to `scripts/bench/results/latest.json`)
 *   connect+join rate   joined connections / time from the first connection
 *                       attempt to the last join ok, over all load generators.
 *                       Gateway: TCP connect + HTTP upgrade + auth call to the
 *                       app + join; bare: connect + upgrade + join.
 *   latency             one connection's time from attempt to join ok.
 *   RSS per connection  (server RSS with every connection joined, after a
 *                       forced GC − RSS before the first connection, after a
 *                       forced GC) / joined connections.
 *   JS heap per conn.   the same for V8's used heap: the JavaScript objects'
 *                       share of the RSS figure (the rest is socket buffers,
 *                       native allocations and allocator slack).
 *   server CPU per conn the server process's user + system CPU time over the
 *                       connect phase / joined connections.
 *   gateway / bare      ratios; targets: memory ≤ 1.5×, rate ≥ 0.5×.
 * Caveat: the server, the load generators and the runner (with the fake app
 * answering the gateway's auth and notify calls) share this machine's cores,
 * so on a small machine the rates are those of the whole setup, not of the
 * server alone; the runner's CPU over the connect phase is printed to show
 * how much the fake app took. Memory figures are not affected.
 *
 * All traffic stays on 127.0.0.0/8; every load is bounded in connections and
 * in time (`--timeout-s`, 300 s by default, after which everything is killed),
 * and every child process is killed when the runner exits for any reason.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs"
import { createServer } from "node:net"
import type { AddressInfo } from "node:net"
import { cpus, loadavg, release, tmpdir, totalmem } from "node:os"
import { dirname, join, resolve } from "node:path"
import { fileURLToPath, pathToFileURL } from "node:url"
import { parseArgs } from "node:util"
import { startFakeApp } from "../../src/testing/FakeApp.ts"
import type { FakeApp, SchemaDocument } from "../../src/testing/FakeApp.ts"
import { ChildError, describeExit, killAll, nextMessage, requestStats, spawnManaged, stop } from "./children.ts"
import type { Managed } from "./children.ts"
import type { CloseResult, FromLoad, LoadPlan, LoadResult, ServerStats, ToLoad } from "./messages.ts"
import { formatTable, isMeasurement, measure, ratios, serverLabels } from "./report.ts"
import type { Ratios, ServerName, ServerOutcome } from "./report.ts"

const benchDir = dirname(fileURLToPath(import.meta.url))
const rootDir = resolve(benchDir, "../..")
const agentUrl = pathToFileURL(join(benchDir, "stats-agent.ts")).href

const APP_ID = "bench"
const CLIENT_TYPE = "bench"
/** One server process holds at most ~18k sockets (open files are capped at 20,000). */
const MAX_CONNECTIONS = 18_000
const DEFAULT_SOURCE_ADDRESSES = Array.from({ length: 8 }, (_, i) => `127.0.0.${i + 2}`)
const BASELINE_SETTLE_MS = 1_000
const STOP_GRACE_MS = 5_000
const ATTEMPT_TIMEOUT_MS = 30_000
const HEARTBEAT_INTERVAL_MS = 30_000

// ---------------------------------------------------------------------------
// Options
// ---------------------------------------------------------------------------

const usage = `Usage: npm run bench -- [options]   (or scripts/node.sh scripts/bench/run.ts [options])

  --connections N           connections per server (default 10000, at most ${MAX_CONNECTIONS}) [BENCH_CONNECTIONS]
  --only bare|gateway       measure one server only [BENCH_ONLY]
  --concurrency N           connection attempts in flight, over all load generators (default 200) [BENCH_CONCURRENCY]
  --workers N               load generator processes (default 2) [BENCH_WORKERS]
  --topics K                0: connection n joins room:<n> (default); K: joins room:<n mod K> [BENCH_TOPICS]
  --settle-ms MS            wait after the last join before the memory reading (default 2000)
  --warmup N                open, join and close N connections before the baseline reading (default 0),
                            so that one-time costs (compiled code, lazily built state) are not counted per connection
  --ready-timeout-s S       how long a server may take to become ready (default 30)
  --timeout-s S             overall limit; everything is killed after it (default 300) [BENCH_TIMEOUT_S]
  --source-addresses LIST   comma-separated client source addresses in 127.0.0.0/8 (default 127.0.0.2-127.0.0.9)
  --gateway-env KEY=VALUE   extra environment for the gateway (repeatable)
  --gateway-default-limits  keep the gateway's default admission limits (otherwise raised for the burst)
  --out PATH                JSON results (default scripts/bench/results/latest.json) [BENCH_OUT]
  --verbose                 echo all output of the servers and load generators
  --help`

interface Options {
  readonly connections: number
  readonly servers: ReadonlyArray<ServerName>
  readonly concurrency: number
  readonly workers: number
  readonly topics: number
  readonly settleMs: number
  readonly warmup: number
  readonly readyTimeoutMs: number
  readonly timeoutMs: number
  readonly sourceAddresses: ReadonlyArray<string>
  readonly gatewayEnv: Readonly<Record<string, string>>
  readonly gatewayDefaultLimits: boolean
  readonly out: string
  readonly verbose: boolean
}

class UsageError extends Error {}

const isLoopback = (address: string) =>
  /^127\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.test(address) &&
  address.split(".").every((part) => Number(part) <= 255)

const parseOptions = (argv: ReadonlyArray<string>, env: NodeJS.ProcessEnv): Options => {
  const { values } = parseArgs({
    args: [...argv],
    strict: true,
    allowPositionals: false,
    options: {
      connections: { type: "string" },
      only: { type: "string" },
      concurrency: { type: "string" },
      workers: { type: "string" },
      topics: { type: "string" },
      "settle-ms": { type: "string" },
      warmup: { type: "string" },
      "ready-timeout-s": { type: "string" },
      "timeout-s": { type: "string" },
      "source-addresses": { type: "string" },
      "gateway-env": { type: "string", multiple: true },
      "gateway-default-limits": { type: "boolean" },
      out: { type: "string" },
      verbose: { type: "boolean" },
      help: { type: "boolean" }
    }
  })
  if (values.help === true) {
    console.log(usage)
    process.exit(0)
  }
  const integer = (name: string, raw: string | undefined, fallback: number, min: number, max: number) => {
    if (raw === undefined || raw === "") return fallback
    const value = Number(raw)
    if (!/^\d+$/.test(raw) || value < min || value > max) {
      throw new UsageError(`--${name} must be a whole number from ${min} to ${max}, got ${JSON.stringify(raw)}`)
    }
    return value
  }
  const only = values.only ?? env["BENCH_ONLY"]
  if (only !== undefined && only !== "" && only !== "bare" && only !== "gateway") {
    throw new UsageError(`--only must be bare or gateway, got ${JSON.stringify(only)}`)
  }
  const connections = integer("connections", values.connections ?? env["BENCH_CONNECTIONS"], 10_000, 1, MAX_CONNECTIONS)
  const sourceAddresses = (values["source-addresses"] ?? "").split(",").map((a) => a.trim()).filter((a) => a !== "")
  for (const address of sourceAddresses) {
    if (!isLoopback(address)) throw new UsageError(`source address ${address} is not in 127.0.0.0/8`)
  }
  const gatewayEnv: Record<string, string> = {}
  for (const entry of values["gateway-env"] ?? []) {
    const at = entry.indexOf("=")
    if (at <= 0) throw new UsageError(`--gateway-env expects KEY=VALUE, got ${JSON.stringify(entry)}`)
    gatewayEnv[entry.slice(0, at)] = entry.slice(at + 1)
  }
  return {
    connections,
    servers: only === "bare" || only === "gateway" ? [only] : ["bare", "gateway"],
    concurrency: integer("concurrency", values.concurrency ?? env["BENCH_CONCURRENCY"], 200, 1, 5_000),
    workers: integer("workers", values.workers ?? env["BENCH_WORKERS"], 2, 1, 16),
    topics: integer("topics", values.topics ?? env["BENCH_TOPICS"], 0, 0, 1_000_000),
    settleMs: integer("settle-ms", values["settle-ms"], 2_000, 0, 120_000),
    warmup: integer("warmup", values.warmup, 0, 0, MAX_CONNECTIONS),
    readyTimeoutMs: integer("ready-timeout-s", values["ready-timeout-s"], 30, 1, 600) * 1000,
    timeoutMs: integer("timeout-s", values["timeout-s"] ?? env["BENCH_TIMEOUT_S"], 300, 10, 3_600) * 1000,
    sourceAddresses: sourceAddresses.length > 0 ? sourceAddresses : DEFAULT_SOURCE_ADDRESSES,
    gatewayEnv,
    gatewayDefaultLimits: values["gateway-default-limits"] === true,
    out: resolve(values.out ?? env["BENCH_OUT"] ?? join(benchDir, "results", "latest.json")),
    verbose: values.verbose === true
  }
}

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

const sleep = (ms: number) => new Promise<void>((done) => setTimeout(done, ms))

const log = (message: string) => process.stderr.write(`bench: ${message}\n`)

const freePort = () =>
  new Promise<number>((done, fail) => {
    const probe = createServer()
    probe.once("error", fail)
    probe.listen(0, "127.0.0.1", () => {
      const port = (probe.address() as AddressInfo).port
      probe.close(() => done(port))
    })
  })

/** `count` split into `parts` shares differing by at most one. */
const split = (count: number, parts: number): Array<number> =>
  Array.from({ length: parts }, (_, i) => Math.floor(count / parts) + (i < count % parts ? 1 : 0))

/** The environment a child starts from: just enough to run, nothing of the caller's configuration. */
const baseEnv = (): NodeJS.ProcessEnv => {
  const env: NodeJS.ProcessEnv = {}
  for (const key of ["PATH", "HOME", "TMPDIR", "LANG", "TZ"]) {
    const value = process.env[key]
    if (value !== undefined) env[key] = value
  }
  return env
}

// ---------------------------------------------------------------------------
// The fake app behind the gateway
// ---------------------------------------------------------------------------

const benchSchema: SchemaDocument = {
  version: "bench-1",
  channels: [{
    pattern: "room:{id}",
    description: "Benchmark rooms",
    variables: { id: { type: "string", pattern: "^[0-9]{1,9}$" } }
  }],
  events: [{ name: "echo", allowedChannels: ["room:*"] }]
}

const startBenchApp = () =>
  startFakeApp({
    schema: benchSchema,
    auth: (body) =>
      /^bench-\d+$/.test(body.token)
        ? { client_id: body.token, client_type: CLIENT_TYPE, metadata: {}, permissions: [] }
        : null
  })

const countCalls = (app: FakeApp): Record<string, number> => {
  const counts: Record<string, number> = {}
  for (const request of app.requests) {
    const key = request.kind === "notify" && typeof request.body === "object" && request.body !== null
      ? `notify ${String((request.body as { event?: unknown }).event)}`
      : request.kind
    counts[key] = (counts[key] ?? 0) + 1
  }
  return counts
}

// ---------------------------------------------------------------------------
// Servers
// ---------------------------------------------------------------------------

interface ServerProcess {
  readonly name: ServerName
  readonly port: number
  readonly process: Managed
  /** What one connection costs this server, for the report. */
  readonly what: string
}

const startServer = (
  name: ServerName,
  port: number,
  options: Options,
  gatewaySetup: { readonly app: FakeApp; readonly configFile: string | undefined } | undefined
): ServerProcess => {
  const nodeArgs = ["--expose-gc", "--import", agentUrl]
  if (name === "bare") {
    const child = spawnManaged("bare", [...nodeArgs, join(benchDir, "bare-ws-server.ts")], {
      cwd: rootDir,
      env: { ...baseEnv(), PORT: String(port), HOST: "127.0.0.1" },
      verbose: options.verbose
    })
    return { name, port, process: child, what: "connect + join" }
  }
  if (gatewaySetup === undefined) throw new Error("the gateway needs the fake app")
  const env: NodeJS.ProcessEnv = {
    ...baseEnv(),
    PORT: String(port),
    HOST: "127.0.0.1",
    NODE_NAME: "bench",
    GATEWAY_APPS: APP_ID,
    BENCH_API: gatewaySetup.app.url,
    LOG_LEVEL: "warn",
    MAX_CONNECTIONS: "20000",
    ...(gatewaySetup.configFile === undefined ? {} : { GATEWAY_CONFIG: gatewaySetup.configFile }),
    ...options.gatewayEnv
  }
  const child = spawnManaged("gateway", [...nodeArgs, join(rootDir, "src", "main.ts")], {
    cwd: rootDir,
    env,
    verbose: options.verbose
  })
  return { name, port, process: child, what: "connect + auth call + join" }
}

const waitReady = async (server: ServerProcess, timeoutMs: number): Promise<void> => {
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
// Load generators
// ---------------------------------------------------------------------------

const startLoad = async (
  server: ServerProcess,
  options: Options,
  connections: number,
  deadline: number
): Promise<ReadonlyArray<Managed>> => {
  const workers = Math.min(options.workers, connections)
  const counts = split(connections, workers)
  const concurrency = split(Math.max(options.concurrency, workers), workers)
  const plans: Array<LoadPlan> = []
  let firstIndex = 0
  for (let w = 0; w < workers; w++) {
    const mine = options.sourceAddresses.filter((_, i) => i % workers === w)
    plans.push({
      url: `ws://127.0.0.1:${server.port}/socket/websocket`,
      app: APP_ID,
      clientType: CLIENT_TYPE,
      firstIndex,
      count: counts[w]!,
      concurrency: concurrency[w]!,
      localAddresses: mine.length > 0 ? mine : [options.sourceAddresses[w % options.sourceAddresses.length]!],
      topics: options.topics,
      attemptTimeoutMs: ATTEMPT_TIMEOUT_MS,
      heartbeatIntervalMs: HEARTBEAT_INTERVAL_MS,
      lifetimeMs: Math.max(1_000, deadline - Date.now() + 5_000)
    })
    firstIndex += counts[w]!
  }
  const generators = plans.map((_, w) =>
    spawnManaged(`load-${w + 1}`, [join(benchDir, "load.ts")], { cwd: rootDir, env: baseEnv(), verbose: options.verbose })
  )
  await Promise.all(generators.map((generator, w) => {
    const ready = nextMessage(generator, "ready", (m) => ((m as FromLoad).type === "ready" ? true : undefined), 30_000)
    generator.child.send({ type: "plan", plan: plans[w]! } satisfies ToLoad)
    return ready
  }))
  return generators
}

const runLoad = (generators: ReadonlyArray<Managed>): Promise<Array<LoadResult>> => {
  const done = generators.map((generator) =>
    nextMessage(generator, "its connect results", (m) => {
      const message = m as FromLoad
      return message.type === "done" ? message.result : undefined
    }, 24 * 3_600_000)
  )
  for (const generator of generators) generator.child.send({ type: "go" } satisfies ToLoad)
  return Promise.all(done)
}

const closeLoad = (generators: ReadonlyArray<Managed>): Promise<Array<CloseResult>> => {
  const closed = generators.map((generator) =>
    nextMessage(generator, "its close results", (m) => {
      const message = m as FromLoad
      return message.type === "closed" ? message.result : undefined
    }, 30_000)
  )
  for (const generator of generators) generator.child.send({ type: "close" } satisfies ToLoad)
  return Promise.all(closed)
}

// ---------------------------------------------------------------------------
// One server's measurement
// ---------------------------------------------------------------------------

const measureServer = async (
  name: ServerName,
  options: Options,
  deadline: number,
  gatewaySetup: { readonly app: FakeApp; readonly configFile: string | undefined } | undefined
): Promise<ServerOutcome> => {
  const port = await freePort()
  const server = startServer(name, port, options, gatewaySetup)
  let generators: ReadonlyArray<Managed> = []
  try {
    log(`${serverLabels[name]}: starting on 127.0.0.1:${port}`)
    await waitReady(server, options.readyTimeoutMs)
    await sleep(BASELINE_SETTLE_MS)
    if (options.warmup > 0) {
      log(`${serverLabels[name]}: warm-up with ${options.warmup} connections`)
      const warm = await startLoad(server, options, options.warmup, deadline)
      generators = warm
      const warmLoads = await runLoad(warm)
      await closeLoad(warm)
      await Promise.all(warm.map((generator) => stop(generator, 2_000)))
      generators = []
      const warmFailed = warmLoads.reduce((n, load) => n + load.attempted - load.joined, 0)
      if (warmFailed > 0) log(`${serverLabels[name]}: ${warmFailed} warm-up connections failed`)
      await sleep(BASELINE_SETTLE_MS)
    }
    const before: ServerStats = await requestStats(server.process, true)
    if (!before.gcForced) log(`${serverLabels[name]}: gc() is not exposed; RSS readings include garbage`)

    generators = await startLoad(server, options, options.connections, deadline)
    gatewaySetup?.app.clearRequests()
    log(
      `${serverLabels[name]}: opening ${options.connections} connections ` +
        `(${generators.length} load generators, ${options.concurrency} in flight)`
    )
    const runnerCpu = process.cpuUsage()
    const loads = await runLoad(generators)
    const afterConnect = await requestStats(server.process, false)
    const runnerCpuUsed = process.cpuUsage(runnerCpu)
    const appCalls = gatewaySetup === undefined ? undefined : countCalls(gatewaySetup.app)
    gatewaySetup?.app.clearRequests()

    log(`${serverLabels[name]}: all attempts done; settling ${options.settleMs} ms before the memory reading`)
    await sleep(options.settleMs)
    const after = await requestStats(server.process, true)
    const closes = await closeLoad(generators)
    return measure({
      server: name,
      what: server.what,
      requested: options.connections,
      loads,
      closes,
      before,
      afterConnect,
      after,
      runnerCpuUs: runnerCpuUsed.user + runnerCpuUsed.system,
      ...(appCalls === undefined ? {} : { appCalls })
    })
  } finally {
    await Promise.all(generators.map((generator) => stop(generator, 2_000)))
    await stop(server.process, STOP_GRACE_MS)
    gatewaySetup?.app.clearRequests()
  }
}

// ---------------------------------------------------------------------------
// Main
// ---------------------------------------------------------------------------

const machine = () => {
  const list = cpus()
  return {
    cores: list.length,
    cpuModel: list[0]?.model ?? "unknown",
    node: process.version,
    platform: `${process.platform} ${release()} ${process.arch}`,
    totalMemoryBytes: totalmem(),
    /** 1-minute load average when the run started: other work on the machine skews the rates. */
    loadAverageAtStart: loadavg()[0] ?? 0
  }
}

/** Holds the temporary gateway config file; removed on every way out. */
let configDir: string | undefined

const removeConfigDir = () => {
  if (configDir !== undefined) rmSync(configDir, { recursive: true, force: true })
  configDir = undefined
}

const main = async (): Promise<number> => {
  let options: Options
  try {
    options = parseOptions(process.argv.slice(2), process.env)
  } catch (error) {
    console.error(`bench: ${error instanceof Error ? error.message : String(error)}\n\n${usage}`)
    return 1
  }
  const startedAt = new Date()
  const info = machine()
  if (info.loadAverageAtStart > 0.5) {
    log(`the machine is busy (1-minute load average ${info.loadAverageAtStart.toFixed(2)}): rates will be low`)
  }
  const deadline = Date.now() + options.timeoutMs
  const overall = setTimeout(() => {
    log(`overall timeout of ${options.timeoutMs / 1000} s reached: stopping everything`)
    killAll()
    process.exit(124)
  }, options.timeoutMs)

  let app: FakeApp | undefined
  const outcomes: Array<ServerOutcome> = []
  try {
    let gatewaySetup: { readonly app: FakeApp; readonly configFile: string | undefined } | undefined
    if (options.servers.includes("gateway")) {
      app = await startBenchApp()
      let configFile: string | undefined
      if (!options.gatewayDefaultLimits) {
        configDir = mkdtempSync(join(tmpdir(), "gateway-bench-"))
        configFile = join(configDir, "gateway.json")
        writeFileSync(configFile, JSON.stringify({
          apps: [{
            id: APP_ID,
            rateLimits: { connectionsPerIpPerMinute: 1_000_000, maxConcurrentAuth: Math.max(1_000, options.concurrency * 2) }
          }]
        }, null, 2))
      }
      gatewaySetup = { app, configFile }
    }

    for (const name of options.servers) {
      try {
        outcomes.push(await measureServer(name, options, deadline, name === "gateway" ? gatewaySetup : undefined))
      } catch (error) {
        const message = error instanceof Error ? error.message : String(error)
        log(`${serverLabels[name]}: ${message.split("\n")[0]}`)
        outcomes.push({ server: name, error: message })
      }
    }
  } finally {
    clearTimeout(overall)
    await app?.close()
    removeConfigDir()
  }

  const bare = outcomes.find((o) => o.server === "bare")
  const gateway = outcomes.find((o) => o.server === "gateway")
  const ratio: Ratios | undefined = isMeasurement(bare) && isMeasurement(gateway) ? ratios(bare, gateway) : undefined
  const topics = options.topics === 0 ? "one topic per connection (room:<n>)" : `${options.topics} topics (room:<n mod ${options.topics}>)`
  const notes = [
    `topics: ${topics}`,
    `${options.workers} load generator processes, ${options.concurrency} attempts in flight, source addresses ${options.sourceAddresses.join(",")}`,
    "the fake app answering the gateway's auth and notify calls runs in the runner process; server, load generators and runner share the machine's cores",
    ...(options.servers.includes("gateway")
      ? [options.gatewayDefaultLimits ? "gateway admission limits: defaults" : "gateway admission limits raised for the burst (temporary GATEWAY_CONFIG)"]
      : [])
  ]

  console.log("")
  console.log(
    `Connections: ${options.connections} per server; ${topics}. Machine: ${info.cores} cores (${info.cpuModel}), ` +
      `Node ${info.node}, ${info.platform}; load average at start ${info.loadAverageAtStart.toFixed(2)}.`
  )
  for (const outcome of outcomes) {
    if (isMeasurement(outcome)) console.log(`  ${serverLabels[outcome.server]}: ${outcome.what}`)
  }
  console.log("")
  console.log(formatTable(outcomes, ratio))
  console.log("")
  console.log(`Note: ${notes[2]}.`)

  const results = {
    startedAt: startedAt.toISOString(),
    finishedAt: new Date().toISOString(),
    machine: info,
    options: {
      connections: options.connections,
      servers: options.servers,
      concurrency: options.concurrency,
      workers: options.workers,
      topics: options.topics,
      settleMs: options.settleMs,
      warmup: options.warmup,
      sourceAddresses: options.sourceAddresses,
      gatewayDefaultLimits: options.gatewayDefaultLimits,
      gatewayEnv: options.gatewayEnv
    },
    servers: Object.fromEntries(outcomes.map((o) => [o.server, o])),
    ratios: ratio ?? null,
    notes
  }
  if (outcomes.some(isMeasurement)) {
    mkdirSync(dirname(options.out), { recursive: true })
    writeFileSync(options.out, `${JSON.stringify(results, null, 2)}\n`)
    console.log(`Results written to ${options.out}`)
  } else {
    console.log(`Nothing measured; ${options.out} left as it was.`)
  }

  if (outcomes.some((o) => !isMeasurement(o))) return 1
  const suspect = outcomes.some((o) =>
    isMeasurement(o) && (o.connections.failed > 0 || Object.keys(o.connections.droppedWhileIdle).length > 0)
  )
  return suspect ? 3 : 0
}

process.on("exit", () => {
  killAll()
  removeConfigDir()
})
for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"] as const) {
  process.on(signal, () => {
    log(`${signal}: stopping everything`)
    killAll()
    process.exit(signal === "SIGINT" ? 130 : 143)
  })
}
process.on("uncaughtException", (error) => {
  log(`unexpected error: ${error.stack ?? error.message}`)
  killAll()
  process.exit(1)
})
process.on("unhandledRejection", (reason) => {
  log(`unexpected error: ${reason instanceof Error ? (reason.stack ?? reason.message) : String(reason)}`)
  killAll()
  process.exit(1)
})

main().then(
  (code) => process.exit(code),
  (error: unknown) => {
    log(`failed: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}`)
    killAll()
    process.exit(1)
  }
)
