/**
 * The push suite of the benchmark (`run.ts --suite push`): client push →
 * gateway → app → reply round trips, against the same calls made straight to
 * the app. Gateway only (the bare server calls no app).
 *
 * The fake app (`app-server.ts`) runs as a process of its own, apart from the
 * runner and the load generators; the gateway is configured with it as the app
 * `bench` (with a secret, so its calls to the app are signed as in production).
 * The push load generators (`push-load.ts`, `--workers` processes) then:
 *   1. sequential: one client in the first generator pushes
 *      `["1", ref, "room:<n>", "echo", {seq, pad}]` (payload of
 *      `payloadBytes`) and waits for its `phx_reply` before the next push;
 *      alternating with it, in blocks of `block`, the same generator POSTs the
 *      body the gateway would send for that push straight to the app's message
 *      endpoint over one keep-alive connection and reads the answer. After
 *      `warmup` round trips of each kind, `roundTrips` of each are timed.
 *      Figure: added latency = gateway round trip − direct call, at p50 and
 *      p99 (target: ≤ 1 ms at p50);
 *   2. concurrent: `clients` clients spread over the generators, each with one
 *      round trip in flight at a time, first all straight to the app (a
 *      keep-alive pool with one connection per client), then all through the
 *      gateway, each for `warmupMs` then `durationMs` timed. Figures: round
 *      trips/s in the timed window (gateway / direct, target ≥ 0.5×), their
 *      latency, and the CPU per round trip of the gateway, the app and the load
 *      generators over the window, plus the CPU the machine spent over it
 *      besides them (other work on the machine).
 * The gateway, the app and the load generators share the machine's cores: the
 * direct figure is what the app and the load generators reach alone, the
 * gateway figure what they reach with the gateway's work added.
 */
import { freePort } from "../../cluster/ports.ts"
import { join } from "node:path"
import { APP_ID, CLIENT_TYPE, PUSH_EVENT } from "./bench-app.ts"
import { nextMessage, requestStats, spawnManaged, stop } from "./children.ts"
import type { Managed } from "./children.ts"
import type { ConcurrentResult, FromPush, PushPlan, PushTarget, SequentialResult, ServerStats, ToPush } from "./messages.ts"
import { cpuUs, fixed, formatCounts, percentiles, renderTable } from "./report.ts"
import type { Percentiles } from "./report.ts"
import {
  appCalls,
  BASELINE_SETTLE_MS,
  baseEnv,
  benchDir,
  HEARTBEAT_INTERVAL_MS,
  log,
  machineCpu,
  now,
  othersCpuPercent,
  rootDir,
  sleep,
  split,
  startServer,
  STOP_GRACE_MS,
  waitReady,
  writeGatewayConfig
} from "./setup.ts"
import type { AppProcess, MachineCpu, ServerStartOptions } from "./setup.ts"

const ATTEMPT_TIMEOUT_MS = 30_000
/** Longer than the gateway's message timeout (8 s), so that its `api_timeout` reply is what counts. */
const ROUND_TRIP_TIMEOUT_MS = 10_000
const START_DELAY_MS = 300

export const pushTargets = {
  /** gateway p50 round trip − direct p50, at most (ms). */
  addedLatencyP50MaxMs: 1,
  /** gateway round trips/s / direct, at least. */
  throughputRatioMin: 0.5
} as const

export interface PushOptions {
  /** Round trips timed per kind in the sequential part. */
  readonly roundTrips: number
  readonly warmup: number
  readonly block: number
  /** Limit of the sequential part. */
  readonly sequentialMaxMs: number
  readonly clients: number
  readonly warmupMs: number
  readonly durationMs: number
  readonly payloadBytes: number
  readonly workers: number
  readonly sourceAddresses: ReadonlyArray<string>
  readonly server: ServerStartOptions
  readonly readyTimeoutMs: number
  readonly gatewayDefaultLimits: boolean
  readonly app: AppProcess
  readonly secret: string
  readonly configDir: string
}

export interface ConcurrentFigures {
  readonly target: PushTarget
  readonly clients: number
  readonly roundTrips: number
  readonly windowMs: number
  readonly roundTripsPerSecond: number
  readonly latencyMs: Percentiles
  readonly errors: Readonly<Record<string, number>>
  readonly cpu: {
    /** Gateway process CPU over the window (it runs, idle, during the direct window too). */
    readonly gatewayMs: number
    readonly gatewayPerRoundTripUs: number
    readonly appMs: number
    readonly appPerRoundTripUs: number
    readonly loadGeneratorsMs: number
    readonly loadGeneratorsPerRoundTripUs: number
    /**
     * CPU the machine spent over the window besides the gateway, the app and
     * the load generators, in % of one core (undefined without /proc/stat).
     */
    readonly othersPercentOfCore: number | undefined
  }
  /** Calls the app received from the start of this part to its end (warm-up included). */
  readonly appCalls: Readonly<Record<string, number>>
}

export interface PushMeasurement {
  readonly sequential: {
    readonly roundTrips: number
    readonly gatewayMs: Percentiles
    readonly directMs: Percentiles
    /** gateway − direct. */
    readonly addedP50Ms: number
    readonly addedP99Ms: number
    readonly addedP50TargetMet: boolean
    readonly errors: Readonly<Record<string, number>>
    readonly durationMs: number
  }
  readonly concurrent: {
    readonly direct: ConcurrentFigures
    readonly gateway: ConcurrentFigures
    /** gateway / direct round trips/s. */
    readonly ratio: number
    readonly ratioTargetMet: boolean
  }
  readonly connectFailures: Readonly<Record<string, number>>
}

export interface PushResults {
  readonly options: {
    readonly roundTrips: number
    readonly warmup: number
    readonly block: number
    readonly clients: number
    readonly warmupMs: number
    readonly durationMs: number
    readonly payloadBytes: number
    readonly workers: number
  }
  readonly loadAverageAtStart: number
  /** Where the fake app runs. */
  readonly app: { readonly pid: number | undefined; readonly url: string; readonly where: string }
  readonly outcome: PushMeasurement | { readonly error: string }
}

export const isPushMeasurement = (outcome: PushResults["outcome"]): outcome is PushMeasurement => "sequential" in outcome

// ---------------------------------------------------------------------------
// Generators
// ---------------------------------------------------------------------------

const ask = <A>(generator: Managed, message: ToPush, waitingFor: string, select: (m: FromPush) => A | undefined) => {
  const reply = nextMessage(generator, waitingFor, (m) => select(m as FromPush), 10 * 60_000)
  generator.child.send(message)
  return reply
}

const connectClients = (generator: Managed, clients: number) =>
  ask(generator, { type: "connect", clients }, "its clients", (m) => (m.type === "connected" ? m : undefined))

const startGenerators = async (
  options: PushOptions,
  port: number,
  deadline: number
): Promise<ReadonlyArray<Managed>> => {
  const workers = Math.max(1, Math.min(options.workers, options.clients))
  const generators: Array<Managed> = []
  for (let w = 0; w < workers; w++) {
    const mine = options.sourceAddresses.filter((_, i) => i % workers === w)
    const plan: PushPlan = {
      url: `ws://127.0.0.1:${port}/socket/websocket`,
      app: APP_ID,
      clientType: CLIENT_TYPE,
      messageUrl: `${options.app.url}/messages`,
      // far apart, so that every client has its own token and topic
      firstIndex: w * 100_000,
      localAddresses: mine.length > 0 ? mine : [options.sourceAddresses[w % options.sourceAddresses.length]!],
      event: PUSH_EVENT,
      payloadBytes: options.payloadBytes,
      attemptTimeoutMs: ATTEMPT_TIMEOUT_MS,
      roundTripTimeoutMs: ROUND_TRIP_TIMEOUT_MS,
      heartbeatIntervalMs: HEARTBEAT_INTERVAL_MS,
      lifetimeMs: Math.max(1_000, deadline - Date.now() + 5_000)
    }
    const generator = spawnManaged(`push-${w + 1}`, [join(benchDir, "push-load.ts")], {
      cwd: rootDir,
      env: baseEnv(),
      verbose: options.server.verbose
    })
    generators.push(generator)
    await ask(generator, { type: "plan", plan }, "ready", (m) => (m.type === "ready" ? true : undefined))
  }
  return generators
}

// ---------------------------------------------------------------------------
// The concurrent part
// ---------------------------------------------------------------------------

const runConcurrent = async (
  target: PushTarget,
  generators: ReadonlyArray<Managed>,
  shares: ReadonlyArray<number>,
  gateway: Managed,
  options: PushOptions
): Promise<ConcurrentFigures> => {
  await appCalls(options.app)
  const startAt = now() + START_DELAY_MS
  const windowStart = startAt + options.warmupMs
  const windowEnd = windowStart + options.durationMs
  const readAt = (at: number) =>
    new Promise<[ServerStats, ServerStats, MachineCpu | undefined]>((resolve, reject) => {
      setTimeout(() => {
        const machine = machineCpu()
        Promise.all([requestStats(gateway, false), requestStats(options.app.process, false)]).then(
          ([g, a]) => resolve([g, a, machine]),
          reject
        )
      }, Math.max(0, at - now()))
    })
  const atStart = readAt(windowStart)
  const atEnd = readAt(windowEnd)
  log(`push: ${options.clients} clients ${target === "gateway" ? "through the gateway" : "straight to the app"}`)
  const results: Array<ConcurrentResult> = await Promise.all(generators.map((generator, w) =>
    ask(
      generator,
      { type: "concurrent", target, clients: shares[w]!, startAt, warmupMs: options.warmupMs, durationMs: options.durationMs },
      `its ${target} round trips`,
      (m) => (m.type === "concurrent" ? m.result : undefined)
    )
  ))
  const [[gatewayStart, appStart, machineStart], [gatewayEnd, appEnd, machineEnd]] = await Promise.all([atStart, atEnd])
  const calls = await appCalls(options.app)
  const roundTrips = results.reduce((n, r) => n + r.roundTrips, 0)
  const errors: Record<string, number> = {}
  for (const result of results) {
    for (const [key, n] of Object.entries(result.errors)) errors[key] = (errors[key] ?? 0) + n
  }
  const per = (us: number) => (roundTrips === 0 ? 0 : us / roundTrips)
  const gatewayUs = cpuUs(gatewayEnd) - cpuUs(gatewayStart)
  const appUs = cpuUs(appEnd) - cpuUs(appStart)
  const loadUs = results.reduce((n, r) => n + r.cpuUs, 0)
  return {
    target,
    clients: results.reduce((n, r) => n + r.clients, 0),
    roundTrips,
    windowMs: options.durationMs,
    roundTripsPerSecond: roundTrips / (options.durationMs / 1000),
    latencyMs: percentiles(results.flatMap((r) => r.latenciesMs)),
    errors,
    cpu: {
      gatewayMs: gatewayUs / 1000,
      gatewayPerRoundTripUs: per(gatewayUs),
      appMs: appUs / 1000,
      appPerRoundTripUs: per(appUs),
      loadGeneratorsMs: loadUs / 1000,
      loadGeneratorsPerRoundTripUs: per(loadUs),
      othersPercentOfCore: othersCpuPercent(machineStart, machineEnd, options.durationMs, (gatewayUs + appUs + loadUs) / 1000)
    },
    appCalls: calls
  }
}

// ---------------------------------------------------------------------------
// The suite
// ---------------------------------------------------------------------------

const measure = async (options: PushOptions, deadline: number): Promise<PushMeasurement> => {
  const port = await freePort()
  const configFile = join(options.configDir, "gateway-push.json")
  writeGatewayConfig(configFile, { secret: options.secret, defaultLimits: options.gatewayDefaultLimits, concurrency: 200 })
  const gateway = startServer("gateway", port, options.server, { gateway: { appUrl: options.app.url, configFile } })
  let generators: ReadonlyArray<Managed> = []
  try {
    log(`push: gateway starting on 127.0.0.1:${port}; the app runs in its own process (${options.app.url})`)
    await waitReady(gateway, options.readyTimeoutMs)
    await sleep(BASELINE_SETTLE_MS)
    generators = await startGenerators(options, port, deadline)
    const connectFailures: Record<string, number> = {}
    const addFailures = (failures: Readonly<Record<string, number>>) => {
      for (const [key, n] of Object.entries(failures)) connectFailures[key] = (connectFailures[key] ?? 0) + n
    }

    const first = await connectClients(generators[0]!, 1)
    addFailures(first.failures)
    if (first.joined === 0) throw new Error(`the sequential client could not join: ${JSON.stringify(first.failures)}`)
    log(`push: 1 client, ${options.roundTrips} timed round trips each through the gateway and straight to the app`)
    const seq: SequentialResult = await ask(
      generators[0]!,
      {
        type: "sequential",
        roundTrips: options.roundTrips,
        warmup: options.warmup,
        block: options.block,
        maxMs: options.sequentialMaxMs
      },
      "its sequential round trips",
      (m) => (m.type === "sequential" ? m.result : undefined)
    )
    const gatewayMs = percentiles(seq.gatewayMs)
    const directMs = percentiles(seq.directMs)

    const shares = split(options.clients, generators.length)
    const connected = await Promise.all(generators.map((generator, w) => connectClients(generator, shares[w]!)))
    for (const c of connected) addFailures(c.failures)
    // the gateway's connection notifications to the app are sent in the background: let them pass
    await sleep(BASELINE_SETTLE_MS)
    const direct = await runConcurrent("direct", generators, shares, gateway.process, options)
    const viaGateway = await runConcurrent("gateway", generators, shares, gateway.process, options)
    const ratio = direct.roundTripsPerSecond === 0 ? 0 : viaGateway.roundTripsPerSecond / direct.roundTripsPerSecond

    await Promise.all(generators.map((generator) =>
      ask(generator, { type: "close" }, "its close", (m) => (m.type === "closed" ? true : undefined))
    ))
    return {
      sequential: {
        roundTrips: Math.min(seq.gatewayMs.length, seq.directMs.length),
        gatewayMs,
        directMs,
        addedP50Ms: gatewayMs.p50 - directMs.p50,
        addedP99Ms: gatewayMs.p99 - directMs.p99,
        addedP50TargetMet: gatewayMs.p50 - directMs.p50 <= pushTargets.addedLatencyP50MaxMs,
        errors: seq.errors,
        durationMs: seq.durationMs
      },
      concurrent: {
        direct,
        gateway: viaGateway,
        ratio,
        ratioTargetMet: ratio >= pushTargets.throughputRatioMin
      },
      connectFailures
    }
  } finally {
    await Promise.all(generators.map((generator) => stop(generator, 2_000)))
    await stop(gateway.process, STOP_GRACE_MS)
  }
}

export const runPush = async (options: PushOptions, deadline: number, loadAverage: number): Promise<PushResults> => {
  let outcome: PushResults["outcome"]
  try {
    outcome = await measure(options, deadline)
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error)
    log(`push: ${message.split("\n")[0]}`)
    outcome = { error: message }
  }
  return {
    options: {
      roundTrips: options.roundTrips,
      warmup: options.warmup,
      block: options.block,
      clients: options.clients,
      warmupMs: options.warmupMs,
      durationMs: options.durationMs,
      payloadBytes: options.payloadBytes,
      workers: options.workers
    },
    loadAverageAtStart: loadAverage,
    app: {
      pid: options.app.process.child.pid,
      url: options.app.url,
      where: "its own process (scripts/bench/app-server.ts), apart from the runner and the load generators"
    },
    outcome
  }
}

/** Errors, failed connections or too few timed round trips: figures suspect. */
export const pushSuspect = (results: PushResults): boolean => {
  const m = results.outcome
  if (!isPushMeasurement(m)) return false
  return Object.keys(m.connectFailures).length > 0 ||
    Object.keys(m.sequential.errors).length > 0 ||
    m.sequential.roundTrips < results.options.roundTrips ||
    Object.keys(m.concurrent.direct.errors).length > 0 ||
    Object.keys(m.concurrent.gateway.errors).length > 0
}

// ---------------------------------------------------------------------------
// Table
// ---------------------------------------------------------------------------


const p3 = (p: Percentiles) => `${fixed(p.p50, 2)}/${fixed(p.p90, 2)}/${fixed(p.p99, 2)}`

export const formatPush = (results: PushResults): string => {
  const o = results.options
  const lines = [
    `Push → app → reply (gateway only), ${o.payloadBytes}-byte payloads; the fake app runs in ${results.app.where} ` +
      `(pid ${results.app.pid ?? "?"}); load average at start ${results.loadAverageAtStart.toFixed(2)}.`
  ]
  const m = results.outcome
  if (!isPushMeasurement(m)) {
    lines.push(`push: NOT MEASURED: ${m.error}`)
    return lines.join("\n")
  }
  const s = m.sequential
  const c = m.concurrent
  const rows: Array<Array<string>> = [
    ["", "direct to app", "via gateway", "gateway vs direct"],
    [`1 client, sequential (${s.roundTrips} timed each, alternating blocks of ${o.block})`],
    [
      "  round trip p50/p90/p99 (ms)",
      p3(s.directMs),
      p3(s.gatewayMs),
      `+${fixed(s.addedP50Ms, 2)} ms at p50 (target ≤ ${pushTargets.addedLatencyP50MaxMs} ms: ` +
      `${s.addedP50TargetMet ? "met" : "NOT met"}), +${fixed(s.addedP99Ms, 2)} ms at p99`
    ],
    [`${o.clients} clients, one round trip in flight each, ${o.durationMs / 1000} s after ${o.warmupMs / 1000} s warm-up`],
    [
      "  round trips/s",
      fixed(c.direct.roundTripsPerSecond, 0),
      fixed(c.gateway.roundTripsPerSecond, 0),
      `${fixed(c.ratio, 2)}× (target ≥ ${pushTargets.throughputRatioMin}×: ${c.ratioTargetMet ? "met" : "NOT met"})`
    ],
    ["  round trip p50/p90/p99 (ms)", p3(c.direct.latencyMs), p3(c.gateway.latencyMs)],
    ["  gateway CPU per round trip (µs)", "—", fixed(c.gateway.cpu.gatewayPerRoundTripUs, 1)],
    ["  app CPU per round trip (µs)", fixed(c.direct.cpu.appPerRoundTripUs, 1), fixed(c.gateway.cpu.appPerRoundTripUs, 1)],
    [
      "  load generators CPU per round trip (µs)",
      fixed(c.direct.cpu.loadGeneratorsPerRoundTripUs, 1),
      fixed(c.gateway.cpu.loadGeneratorsPerRoundTripUs, 1)
    ],
    [
      "  CPU gateway+app+load (% of a core)",
      fixed((c.direct.cpu.appMs + c.direct.cpu.loadGeneratorsMs) / c.direct.windowMs * 100, 0),
      fixed((c.gateway.cpu.gatewayMs + c.gateway.cpu.appMs + c.gateway.cpu.loadGeneratorsMs) / c.gateway.windowMs * 100, 0)
    ],
    [
      "  other processes' CPU (% of a core)",
      c.direct.cpu.othersPercentOfCore === undefined ? "?" : fixed(c.direct.cpu.othersPercentOfCore, 0),
      c.gateway.cpu.othersPercentOfCore === undefined ? "?" : fixed(c.gateway.cpu.othersPercentOfCore, 0)
    ]
  ]
  lines.push(renderTable(rows, 2))
  if (Object.keys(s.errors).length > 0) lines.push(`sequential errors: ${formatCounts(s.errors)}`)
  if (Object.keys(c.direct.errors).length > 0) lines.push(`direct errors: ${formatCounts(c.direct.errors)}`)
  if (Object.keys(c.gateway.errors).length > 0) lines.push(`gateway errors: ${formatCounts(c.gateway.errors)}`)
  if (Object.keys(m.connectFailures).length > 0) lines.push(`client connections failed: ${formatCounts(m.connectFailures)}`)
  return lines.join("\n")
}
