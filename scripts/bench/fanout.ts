/**
 * The fan-out suite of the benchmark (`run.ts --suite fanout`): one topic,
 * many subscribers, broadcasts through each server's HTTP broadcast endpoint at
 * a fixed rate, on the bare `ws` server and on the gateway in turn.
 *
 * For each server (started alone, as in the connect suite), the connection load
 * generators (`load.ts`) open the smallest number of subscribers, every one
 * joined to `room:0`; for each size in turn (growing the same set of
 * connections to the next size) it:
 *   1. sends a heartbeat on every connection (so that no heartbeat round falls
 *      into the measurement) and waits a second; forces a GC in the server;
 *      reads the server's CPU time and the load generators';
 *   2. POSTs `rate / subscribers` broadcasts per second for the duration, on a
 *      fixed schedule (not waiting for answers; at most 64 in flight, beyond
 *      that a broadcast is skipped and reported), each
 *      `{topic: "room:0", event: "tick", payload: {seq, t, pad}}` with `t` the
 *      send time (epoch ms) and `pad` making the payload `payloadBytes` of JSON,
 *      over keep-alive HTTP from the runner: to the gateway's
 *      `POST /api/apps/bench/broadcast` with the app's bearer secret, to the
 *      bare server's `POST /broadcast` with the same header;
 *   3. waits until every accepted broadcast has reached every subscriber (or
 *      10 s after the last one), then reads the CPU times again and collects,
 *      per broadcast and load generator, how many subscribers got it and when
 *      the first and the last one did.
 * Figures per server and size:
 *   deliveries/s        frames received by the subscribers / time from the
 *                       first broadcast sent to the last frame received;
 *   server CPU/delivery server process CPU (user + system) over steps 2–3 /
 *                       frames received (includes parsing the broadcast
 *                       requests and answering them);
 *   latency             per broadcast, the last subscriber's arrival − its send
 *                       time (all clocks are this machine's); p50/p99 over the
 *                       broadcasts. It includes the load generators' own time to
 *                       read the frames, the same for both servers.
 * Ratios gateway / bare per size: CPU per delivery (target ≤ 1.3×) and latency.
 * Also shown: the load generators' CPU per delivery, and the CPU the machine
 * spent over steps 2–3 besides the server, the load generators and the runner
 * (other work on the machine, which skews the latencies).
 *
 * The cross-node suite (`cross.ts`) broadcasts and collects arrivals with the
 * same helpers (`sendBroadcasts`, `arrivals`, `heartbeats`, `drain`, `broadcastFigures`,
 * `connectFigures`).
 */
import { freePort } from "../../cluster/ports.ts"
import { Agent, request } from "node:http"
import type { IncomingMessage } from "node:http"
import { join } from "node:path"
import { APP_ID } from "./bench-app.ts"
import { nextMessage, requestStats, stop } from "./children.ts"
import type { Managed } from "./children.ts"
import type { ArrivalsResult, BroadcastArrival, CloseResult, FromLoad, LoadResult, ToLoad } from "./messages.ts"
import { cpuUs, fixed, formatCounts, percentiles, renderTable, serverLabels, sumCounts } from "./report.ts"
import type { Percentiles, ServerFailure, ServerName } from "./report.ts"
import {
  BASELINE_SETTLE_MS,
  BROADCAST_EVENT,
  closeLoad,
  log,
  machineCpu,
  now,
  othersCpuPercent,
  runLoad,
  runMoreLoad,
  sleep,
  split,
  startLoad,
  startServer,
  STOP_GRACE_MS,
  waitReady,
  writeGatewayConfig
} from "./setup.ts"
import type { BroadcastSuiteSetup, ServerProcess } from "./setup.ts"

export const TOPIC = "room:0"
const MAX_IN_FLIGHT = 64
const DRAIN_TIMEOUT_MS = 10_000
const POLL_MS = 100
export const HEARTBEAT_SETTLE_MS = 1_000
const POST_TIMEOUT_MS = 10_000

export const fanoutTargets = {
  /** gateway server CPU per delivery / bare, at most. */
  cpuPerDeliveryRatioMax: 1.3
} as const

export interface FanoutOptions extends BroadcastSuiteSetup {
  readonly servers: ReadonlyArray<ServerName>
  /** Subscriber counts, ascending; each is measured on the same connections, grown. */
  readonly subscribers: ReadonlyArray<number>
  /** Planned deliveries per second over all subscribers; broadcasts/s = this / subscribers. */
  readonly deliveriesPerSecond: number
  readonly durationMs: number
  readonly payloadBytes: number
}

/** How the broadcasts of one measurement went, and their deliveries: what every broadcast suite reports. */
export interface BroadcastFigures {
  readonly broadcasts: {
    readonly planned: number
    readonly sent: number
    /** Answered 202. */
    readonly accepted: number
    /** Reason → count (HTTP status, error, skipped while too many were in flight). */
    readonly failed: Readonly<Record<string, number>>
    /** Send to HTTP answer. */
    readonly answerMs: Percentiles
  }
  readonly deliveries: {
    /** Accepted broadcasts × joined subscribers. */
    readonly expected: number
    readonly received: number
    /** Accepted broadcasts that some subscriber did not get. */
    readonly incompleteBroadcasts: number
  }
  /** First broadcast sent to the last frame received. */
  readonly durationMs: number
  readonly deliveriesPerSecond: number
  /** Per broadcast: its last subscriber's arrival (over every target) − send time. */
  readonly latencyMs: Percentiles
  /** Per broadcast: its first subscriber's arrival − send time. */
  readonly firstArrivalMs: Percentiles
}

export interface FanoutStep extends BroadcastFigures {
  readonly subscribers: number
  /** Connections joined to the topic when the broadcasts started. */
  readonly joined: number
  readonly broadcastsPerSecond: number
  readonly cpu: {
    readonly serverMs: number
    readonly serverPerDeliveryUs: number
    readonly loadGeneratorsMs: number
    readonly loadGeneratorsPerDeliveryUs: number
    /** The runner sending the broadcasts. */
    readonly runnerMs: number
    /**
     * CPU the machine spent over the measurement besides the server, the load
     * generators and the runner, in % of one core (undefined without /proc/stat).
     */
    readonly othersPercentOfCore: number | undefined
  }
  /** Opening and joining the connections added for this size. */
  readonly connect: {
    readonly added: number
    readonly durationMs: number
    readonly failures: Readonly<Record<string, number>>
  }
}

export interface FanoutMeasurement {
  readonly server: ServerName
  readonly steps: ReadonlyArray<FanoutStep>
  /** Joined connections the server closed before the end. */
  readonly droppedWhileIdle: Readonly<Record<string, number>>
}

export type FanoutOutcome = FanoutMeasurement | ServerFailure

export const isFanoutMeasurement = (outcome: FanoutOutcome | undefined): outcome is FanoutMeasurement =>
  outcome !== undefined && "steps" in outcome

export interface FanoutRatio {
  readonly subscribers: number
  /** gateway / bare server CPU per delivery. */
  readonly cpuPerDelivery: number
  readonly cpuTargetMet: boolean
  readonly latencyP50: number
  readonly latencyP99: number
}

export interface FanoutResults {
  readonly options: {
    readonly subscribers: ReadonlyArray<number>
    readonly deliveriesPerSecond: number
    readonly durationMs: number
    readonly payloadBytes: number
    readonly topic: string
    readonly workers: number
  }
  readonly loadAverageAtStart: number
  readonly servers: Readonly<Partial<Record<ServerName, FanoutOutcome>>>
  readonly ratios: ReadonlyArray<FanoutRatio>
}

// ---------------------------------------------------------------------------
// Load generator questions
// ---------------------------------------------------------------------------

let arrivalsId = 0

/** Every generator's broadcast arrivals (per broadcast when `detail`); forgotten afterwards when `reset`. */
export const arrivals = (generators: ReadonlyArray<Managed>, detail: boolean, reset: boolean): Promise<Array<ArrivalsResult>> => {
  const id = ++arrivalsId
  return Promise.all(generators.map((generator) => {
    const reply = nextMessage(generator, "its broadcast arrivals", (m) => {
      const message = m as FromLoad
      return message.type === "arrivals" && message.id === id ? message.result : undefined
    }, 30_000)
    generator.child.send({ type: "arrivals", id, detail, reset } satisfies ToLoad)
    return reply
  }))
}

/** A heartbeat on every connection of every generator now (none then falls into a measurement). */
export const heartbeats = (generators: ReadonlyArray<Managed>): Promise<Array<number>> =>
  Promise.all(generators.map((generator) => {
    const reply = nextMessage(generator, "its heartbeats", (m) => {
      const message = m as FromLoad
      return message.type === "heartbeats-sent" ? message.count : undefined
    }, 30_000)
    generator.child.send({ type: "heartbeat" } satisfies ToLoad)
    return reply
  }))

// ---------------------------------------------------------------------------
// Broadcasting
// ---------------------------------------------------------------------------

export interface SendOutcome {
  /** seq → send time (epoch ms), for the accepted broadcasts. */
  readonly accepted: Map<number, number>
  readonly sent: number
  readonly failed: Record<string, number>
  readonly answerMs: Array<number>
}

/** `{seq, t, pad}` whose JSON is `bytes` long (or its fixed part, if longer). */
const payloadOf = (seq: number, t: number, bytes: number) => {
  const fixedPart = { seq, t: Math.round(t * 1000) / 1000 }
  const length = JSON.stringify({ ...fixedPart, pad: "" }).length
  return { ...fixedPart, pad: "x".repeat(Math.max(0, bytes - length)) }
}

const sleepUntil = (at: number) => new Promise<void>((resolve) => setTimeout(resolve, Math.max(0, at - now())))

/** Where broadcasts are POSTed: a server's port on 127.0.0.1 and its broadcast endpoint. */
interface BroadcastTarget {
  readonly port: number
  readonly path: string
}

/** The broadcast endpoint of a server: the gateway's server API or the bare server's equivalent. */
export const broadcastPath = (name: ServerName): string => (name === "gateway" ? `/api/apps/${APP_ID}/broadcast` : "/broadcast")

/**
 * POSTs `count` broadcasts to `room:0`, one every `intervalMs` on a fixed
 * schedule, seqs from `firstSeq`, over keep-alive HTTP (at most
 * `MAX_IN_FLIGHT` unanswered; beyond that a broadcast is skipped and
 * reported); resolves once every one is answered.
 */
export const sendBroadcasts = async (
  target: BroadcastTarget,
  secret: string,
  count: number,
  intervalMs: number,
  payloadBytes: number,
  firstSeq = 0
): Promise<SendOutcome> => {
  const { port, path } = target
  const agent = new Agent({ keepAlive: true, maxSockets: MAX_IN_FLIGHT })
  const accepted = new Map<number, number>()
  const failed: Record<string, number> = {}
  const answerMs: Array<number> = []
  const fail = (reason: string) => {
    failed[reason] = (failed[reason] ?? 0) + 1
  }
  let inFlight = 0
  let sent = 0
  const pending: Array<Promise<void>> = []
  const start = now() + 50
  for (let n = 0; n < count; n++) {
    const seq = firstSeq + n
    await sleepUntil(start + n * intervalMs)
    if (inFlight >= MAX_IN_FLIGHT) {
      fail(`skipped: ${MAX_IN_FLIGHT} broadcasts in flight`)
      continue
    }
    const t = now()
    const body = JSON.stringify({ topic: TOPIC, event: BROADCAST_EVENT, payload: payloadOf(seq, t, payloadBytes) })
    inFlight++
    sent++
    pending.push(new Promise<void>((resolve) => {
      const req = request({
        host: "127.0.0.1",
        port,
        path,
        method: "POST",
        agent,
        timeout: POST_TIMEOUT_MS,
        headers: {
          "content-type": "application/json",
          "content-length": Buffer.byteLength(body),
          authorization: `Bearer ${secret}`
        }
      }, (response: IncomingMessage) => {
        response.resume()
        response.on("end", () => {
          inFlight--
          answerMs.push(now() - t)
          if (response.statusCode === 202) accepted.set(seq, t)
          else fail(`http ${response.statusCode ?? "?"}`)
          resolve()
        })
      })
      req.on("timeout", () => req.destroy(new Error("timeout")))
      req.on("error", (error: Error & { code?: string }) => {
        inFlight--
        fail(`error ${error.code ?? error.message}`)
        resolve()
      })
      req.end(body)
    }))
  }
  await Promise.all(pending)
  agent.destroy()
  return { accepted, sent, failed, answerMs }
}

/** One broadcast's arrivals over all load generators (`byTarget` with several target servers). */
interface MergedArrival {
  count: number
  firstAt: number
  lastAt: number
  byTarget: Array<{ count: number; lastAt: number }> | undefined
}

/** Per broadcast seq, the arrivals reported by every load generator (asked with `detail`), merged. */
const mergeArrivals = (results: ReadonlyArray<ArrivalsResult>): Map<number, MergedArrival> => {
  const merged = new Map<number, MergedArrival>()
  for (const result of results) {
    for (const b of result.broadcasts ?? ([] as ReadonlyArray<BroadcastArrival>)) {
      const record = merged.get(b.seq)
      const byTarget = b.byTarget?.map((t) => ({ count: t.count, lastAt: t.lastAt }))
      if (record === undefined) {
        merged.set(b.seq, { count: b.count, firstAt: b.firstAt, lastAt: b.lastAt, byTarget })
        continue
      }
      record.count += b.count
      record.firstAt = Math.min(record.firstAt, b.firstAt)
      record.lastAt = Math.max(record.lastAt, b.lastAt)
      if (byTarget === undefined) continue
      if (record.byTarget === undefined) record.byTarget = byTarget
      else {
        byTarget.forEach((t, i) => {
          const into = record.byTarget![i]
          if (into === undefined) record.byTarget![i] = t
          else {
            into.count += t.count
            into.lastAt = Math.max(into.lastAt, t.lastAt)
          }
        })
      }
    }
  }
  return merged
}

// ---------------------------------------------------------------------------
// One size on one server
// ---------------------------------------------------------------------------

/** Polls the generators until `expected` frames arrived in all, or `DRAIN_TIMEOUT_MS` passed. */
export const drain = async (generators: ReadonlyArray<Managed>, expected: number): Promise<void> => {
  const until = now() + DRAIN_TIMEOUT_MS
  for (;;) {
    const counts = await arrivals(generators, false, false)
    if (counts.reduce((n, c) => n + c.delivered, 0) >= expected || now() >= until) return
    await sleep(POLL_MS)
  }
}

/**
 * The figures of the broadcasts in `outcome` from the generators' final
 * arrivals; with several load targets, also each broadcast's last arrival at
 * each target − its send time.
 */
export const broadcastFigures = (
  outcome: SendOutcome,
  final: ReadonlyArray<ArrivalsResult>,
  planned: number,
  joined: number,
  firstSend: number
): { readonly figures: BroadcastFigures; readonly byTarget: Array<Array<number>> } => {
  const merged = mergeArrivals(final)
  const latencies: Array<number> = []
  const firstArrivals: Array<number> = []
  const byTarget: Array<Array<number>> = []
  let received = 0
  let incomplete = 0
  let lastArrival = firstSend
  for (const [seq, sentAt] of outcome.accepted) {
    const record = merged.get(seq)
    if (record === undefined) {
      incomplete++
      continue
    }
    received += record.count
    if (record.count < joined) incomplete++
    latencies.push(record.lastAt - sentAt)
    firstArrivals.push(record.firstAt - sentAt)
    lastArrival = Math.max(lastArrival, record.lastAt)
    record.byTarget?.forEach((target, i) => {
      if (target.count > 0) (byTarget[i] ??= []).push(target.lastAt - sentAt)
    })
  }
  const durationMs = lastArrival - firstSend
  return {
    figures: {
      broadcasts: {
        planned,
        sent: outcome.sent,
        accepted: outcome.accepted.size,
        failed: outcome.failed,
        answerMs: percentiles(outcome.answerMs)
      },
      deliveries: { expected: outcome.accepted.size * joined, received, incompleteBroadcasts: incomplete },
      durationMs,
      deliveriesPerSecond: durationMs <= 0 ? 0 : received / (durationMs / 1000),
      latencyMs: percentiles(latencies),
      firstArrivalMs: percentiles(firstArrivals)
    },
    byTarget
  }
}

const measureStep = async (
  server: ServerProcess,
  generators: ReadonlyArray<Managed>,
  options: FanoutOptions,
  subscribers: number,
  joined: number,
  connect: FanoutStep["connect"]
): Promise<FanoutStep> => {
  const broadcastsPerSecond = options.deliveriesPerSecond / subscribers
  const planned = Math.max(1, Math.round(broadcastsPerSecond * options.durationMs / 1000))
  const intervalMs = 1000 / broadcastsPerSecond

  await heartbeats(generators)
  await sleep(HEARTBEAT_SETTLE_MS)
  await arrivals(generators, false, true)
  const before = await requestStats(server.process, true)
  const loadBefore = await arrivals(generators, false, false)
  const runnerBefore = process.cpuUsage()
  const machineBefore = machineCpu()
  const windowStart = now()

  log(
    `${serverLabels[server.name]}: ${joined} subscribers, ${fixed(broadcastsPerSecond, 1)} broadcasts/s ` +
      `for ${options.durationMs / 1000} s`
  )
  const firstSend = now()
  const outcome = await sendBroadcasts(
    { port: server.port, path: broadcastPath(server.name) },
    options.secret,
    planned,
    intervalMs,
    options.payloadBytes
  )
  await drain(generators, outcome.accepted.size * joined)
  const after = await requestStats(server.process, false)
  const final = await arrivals(generators, true, true)
  const machineAfter = machineCpu()
  const windowMs = now() - windowStart
  const runnerUsed = process.cpuUsage(runnerBefore)

  const { figures } = broadcastFigures(outcome, final, planned, joined, firstSend)
  const received = figures.deliveries.received
  const serverCpuUs = cpuUs(after) - cpuUs(before)
  const loadCpuUs = final.reduce((n, r, w) => n + r.cpuUs - (loadBefore[w]?.cpuUs ?? 0), 0)
  const perDelivery = (us: number) => (received === 0 ? 0 : us / received)
  return {
    subscribers,
    joined,
    broadcastsPerSecond,
    ...figures,
    cpu: {
      serverMs: serverCpuUs / 1000,
      serverPerDeliveryUs: perDelivery(serverCpuUs),
      loadGeneratorsMs: loadCpuUs / 1000,
      loadGeneratorsPerDeliveryUs: perDelivery(loadCpuUs),
      runnerMs: (runnerUsed.user + runnerUsed.system) / 1000,
      othersPercentOfCore: othersCpuPercent(
        machineBefore,
        machineAfter,
        windowMs,
        (serverCpuUs + loadCpuUs + runnerUsed.user + runnerUsed.system) / 1000
      )
    },
    connect
  }
}

/** How long the load generators took to connect (first attempt to last join), and what failed. */
export const connectFigures = (loads: ReadonlyArray<LoadResult>) => ({
  durationMs: Math.max(0, Math.max(...loads.map((l) => l.lastJoinAt)) - Math.min(...loads.map((l) => l.firstAttemptAt))),
  failures: sumCounts(loads.map((load) => load.failures))
})

const measureServer = async (name: ServerName, options: FanoutOptions, deadline: number): Promise<FanoutMeasurement> => {
  const port = await freePort()
  let configFile: string | undefined
  if (name === "gateway") {
    configFile = join(options.configDir, "gateway-fanout.json")
    writeGatewayConfig(configFile, {
      secret: options.secret,
      defaultLimits: options.gatewayDefaultLimits,
      concurrency: options.load.concurrency
    })
  }
  const server = startServer(name, port, options.server, {
    gateway: { appUrl: options.appUrl, configFile },
    bare: { secret: options.secret }
  })
  let generators: ReadonlyArray<Managed> = []
  try {
    log(`${serverLabels[name]}: starting on 127.0.0.1:${port}`)
    await waitReady(server, options.readyTimeoutMs)
    await sleep(BASELINE_SETTLE_MS)
    const steps: Array<FanoutStep> = []
    let opened = 0
    let joined = 0
    for (const size of options.subscribers) {
      const added = size - opened
      log(`${serverLabels[name]}: opening ${added} subscribers of ${TOPIC}`)
      let loads: Array<LoadResult>
      if (generators.length === 0) {
        generators = await startLoad(server, { ...options.load, topics: 1 }, size, deadline)
        loads = await runLoad(generators)
      } else {
        const counts = split(added, generators.length)
        const firstIndexes = counts.map((_, w) => opened + counts.slice(0, w).reduce((a, b) => a + b, 0))
        loads = await runMoreLoad(generators, counts, firstIndexes)
      }
      opened = size
      joined += loads.reduce((n, load) => n + load.joined, 0)
      steps.push(await measureStep(server, generators, options, size, joined, { added, ...connectFigures(loads) }))
    }
    const closes: Array<CloseResult> = await closeLoad(generators)
    return { server: name, steps, droppedWhileIdle: sumCounts(closes.map((close) => close.droppedWhileIdle)) }
  } finally {
    await Promise.all(generators.map((generator) => stop(generator, 2_000)))
    await stop(server.process, STOP_GRACE_MS)
  }
}

export const runFanout = async (options: FanoutOptions, deadline: number, loadAverage: number): Promise<FanoutResults> => {
  const servers: Partial<Record<ServerName, FanoutOutcome>> = {}
  for (const name of options.servers) {
    try {
      servers[name] = await measureServer(name, options, deadline)
    } catch (error) {
      const message = error instanceof Error ? error.message : String(error)
      log(`fan-out, ${serverLabels[name]}: ${message.split("\n")[0]}`)
      servers[name] = { server: name, error: message }
    }
  }
  const bare = servers.bare
  const gateway = servers.gateway
  const ratios: Array<FanoutRatio> = []
  if (isFanoutMeasurement(bare) && isFanoutMeasurement(gateway)) {
    for (const g of gateway.steps) {
      const b = bare.steps.find((step) => step.subscribers === g.subscribers)
      if (b === undefined || b.cpu.serverPerDeliveryUs <= 0 || b.latencyMs.p50 <= 0) continue
      const cpuPerDelivery = g.cpu.serverPerDeliveryUs / b.cpu.serverPerDeliveryUs
      ratios.push({
        subscribers: g.subscribers,
        cpuPerDelivery,
        cpuTargetMet: cpuPerDelivery <= fanoutTargets.cpuPerDeliveryRatioMax,
        latencyP50: g.latencyMs.p50 / b.latencyMs.p50,
        latencyP99: b.latencyMs.p99 <= 0 ? 0 : g.latencyMs.p99 / b.latencyMs.p99
      })
    }
  }
  return {
    options: {
      subscribers: options.subscribers,
      deliveriesPerSecond: options.deliveriesPerSecond,
      durationMs: options.durationMs,
      payloadBytes: options.payloadBytes,
      topic: TOPIC,
      workers: options.load.workers
    },
    loadAverageAtStart: loadAverage,
    servers,
    ratios
  }
}

/** Broadcasts or deliveries missing, or connections failed or dropped: figures suspect. */
export const fanoutSuspect = (results: FanoutResults): boolean =>
  Object.values(results.servers).some((outcome) =>
    isFanoutMeasurement(outcome) && (
      Object.keys(outcome.droppedWhileIdle).length > 0 ||
      outcome.steps.some((step) =>
        step.joined < step.subscribers || step.deliveries.received < step.deliveries.expected ||
        step.broadcasts.accepted < step.broadcasts.planned
      )
    )
  )

// ---------------------------------------------------------------------------
// Table
// ---------------------------------------------------------------------------


export const formatFanout = (results: FanoutResults): string => {
  const measured = (["bare", "gateway"] as const)
    .map((name) => results.servers[name])
    .filter(isFanoutMeasurement)
  const lines: Array<string> = []
  const o = results.options
  lines.push(
    `Fan-out: ${o.topic}, ${o.payloadBytes}-byte payloads, ${o.deliveriesPerSecond} deliveries/s planned for ` +
      `${o.durationMs / 1000} s per size; load average at start ${results.loadAverageAtStart.toFixed(2)}.`
  )
  if (measured.length > 0) {
    const both = measured.length === 2
    const rows: Array<Array<string>> = [["", ...measured.map((m) => serverLabels[m.server]), ...(both ? ["gateway / bare"] : [])]]
    for (const subscribers of o.subscribers) {
      const steps = measured.map((m) => m.steps.find((s) => s.subscribers === subscribers))
      if (steps.every((s) => s === undefined)) continue
      const ratio = results.ratios.find((r) => r.subscribers === subscribers)
      const cell = (f: (s: FanoutStep) => string) => steps.map((s) => (s === undefined ? "—" : f(s)))
      const rate = steps.find((s) => s !== undefined)?.broadcastsPerSecond ?? 0
      rows.push([`${subscribers} subscribers, ${fixed(rate, rate < 10 ? 1 : 0)} broadcasts/s`])
      rows.push(["  joined", ...cell((s) => `${s.joined}/${s.subscribers}`)])
      rows.push(["  broadcasts accepted/planned", ...cell((s) => `${s.broadcasts.accepted}/${s.broadcasts.planned}`)])
      rows.push(["  deliveries received/expected", ...cell((s) => `${s.deliveries.received}/${s.deliveries.expected}`)])
      rows.push(["  deliveries/s", ...cell((s) => fixed(s.deliveriesPerSecond, 0))])
      rows.push([
        "  server CPU per delivery (µs)",
        ...cell((s) => fixed(s.cpu.serverPerDeliveryUs, 2)),
        ...(both && ratio !== undefined
          ? [`${fixed(ratio.cpuPerDelivery, 2)}× (target ≤ ${fanoutTargets.cpuPerDeliveryRatioMax}×: ${ratio.cpuTargetMet ? "met" : "NOT met"})`]
          : [])
      ])
      rows.push([
        "  latency to all p50/p99 (ms)",
        ...cell((s) => `${fixed(s.latencyMs.p50, 1)}/${fixed(s.latencyMs.p99, 1)}`),
        ...(both && ratio !== undefined ? [`${fixed(ratio.latencyP50, 2)}× / ${fixed(ratio.latencyP99, 2)}×`] : [])
      ])
      rows.push(["  latency to first p50 (ms)", ...cell((s) => fixed(s.firstArrivalMs.p50, 1))])
      rows.push(["  HTTP answer p50 (ms)", ...cell((s) => fixed(s.broadcasts.answerMs.p50, 1))])
      rows.push(["  server CPU (ms)", ...cell((s) => fixed(s.cpu.serverMs, 0))])
      rows.push(["  load generators CPU per delivery (µs)", ...cell((s) => fixed(s.cpu.loadGeneratorsPerDeliveryUs, 2))])
      rows.push([
        "  other processes' CPU (% of a core)",
        ...cell((s) => (s.cpu.othersPercentOfCore === undefined ? "?" : fixed(s.cpu.othersPercentOfCore, 0)))
      ])
    }
    lines.push(renderTable(rows, measured.length))
  }
  for (const m of measured) {
    for (const s of m.steps) {
      if (Object.keys(s.broadcasts.failed).length > 0) {
        lines.push(`${serverLabels[m.server]}, ${s.subscribers} subscribers, broadcasts failed: ${formatCounts(s.broadcasts.failed)}`)
      }
      if (Object.keys(s.connect.failures).length > 0) {
        lines.push(`${serverLabels[m.server]}, ${s.subscribers} subscribers, connections failed: ${formatCounts(s.connect.failures)}`)
      }
      if (s.deliveries.incompleteBroadcasts > 0) {
        lines.push(
          `${serverLabels[m.server]}, ${s.subscribers} subscribers: ${s.deliveries.incompleteBroadcasts} broadcasts ` +
            "did not reach every subscriber (their latency is that of the last one that got it)"
        )
      }
    }
    if (Object.keys(m.droppedWhileIdle).length > 0) {
      lines.push(`${serverLabels[m.server]} dropped subscribers: ${formatCounts(m.droppedWhileIdle)}`)
    }
  }
  for (const outcome of Object.values(results.servers)) {
    if (outcome !== undefined && !isFanoutMeasurement(outcome)) {
      lines.push(`${serverLabels[outcome.server]}: NOT MEASURED: ${outcome.error}`)
    }
  }
  return lines.join("\n")
}
