/**
 * The cross-node suite of the benchmark (`run.ts --suite cross`): the fan-out
 * of one topic when its subscribers are spread over the nodes of a cluster and
 * the broadcasts enter through one node, beside the same load on one node.
 *
 * Two setups, one after the other, each started afresh and stopped at its end:
 *   1 node   one gateway process without `DATABASE_URL` (single node, in-memory
 *            runner storage, no cluster port);
 *   cluster  PostgreSQL (`cluster/postgres.ts`: embedded, in a temporary
 *            directory on a free port; a fresh database) and `--cross-nodes`
 *            (4) gateway processes `node-1`…`node-N` forming one effect/cluster
 *            over it (a fresh `CLUSTER_SECRET`, `CLUSTER_HOST=127.0.0.1`, a distinct free
 *            `CLUSTER_PORT` each).
 * Every gateway process is started as the other suites start theirs
 * (`startServer`: as `npm start` does, with the stats agent preloaded, its CPU
 * time read over IPC, on a free 127.0.0.1 port, for the fake app process's app
 * `bench` with the temporary `GATEWAY_CONFIG` holding its secret and raising
 * the admission limits, `LOG_LEVEL=warn`), named `node-<n>`, with
 * `DRAIN_WINDOW_MS=500` (the clients are gone before the nodes are stopped).
 *
 * For each setup:
 *   1. start the nodes and wait until every one answers `GET /health/ready`
 *      with 200; in the cluster, then wait until the nodes form one cluster as
 *      clients see it: a probe client per node joins `room:999999999`, and a
 *      broadcast through each node's server API, repeated until it does, must
 *      reach the probes on every node (up to 30 s; the probes then leave;
 *      `cluster/formation.ts`);
 *   2. the connection load generators (`load.ts`) open `--cross-subscribers`
 *      (1,000) raw `ws` V2 clients, all joined to `room:0`, connection n to
 *      node n mod N (so the same number on every node); the share per node is
 *      then read from the gateway's own listing, `GET /api/apps/bench/connections`
 *      through node-1 (its `node` field), and in the cluster the node running
 *      `room:0`'s Topic entity from PostgreSQL's shard locks
 *      (`topicOwner` of `cluster/postgres.ts`);
 *   3. every node's CPU over 5 s at rest (subscribers joined, no broadcast);
 *      a heartbeat on every connection, then `--cross-warmup-s` (4 s) of
 *      broadcasts at the measured rate but at least 50 a second, not counted
 *      (compiled code, the Topic entity's start), until they are delivered.
 *      V8 compiles a function once it has run enough: a node of four runs
 *      each delivery function a quarter as often as one node, so with 1 s at
 *      20/s the cluster was still compiling through the measured window
 *      (`--trace-opt`: ~210 ms of compilation on the publishing node and
 *      ~80 ms on another in 20 s, where one node had finished);
 *   4. the runner POSTs `--cross-rate` (100) broadcasts per second for
 *      `--cross-duration-s` (10 s) through node-1's server API
 *      (`POST /api/apps/bench/broadcast`, bearer secret, keep-alive HTTP, on a
 *      fixed schedule as in the fanout suite: `fanout.ts`'s `sendBroadcasts`),
 *      each `{topic: "room:0", event: "tick", payload: {seq, t, pad}}` with `t`
 *      the send time and the payload `--payload-bytes` (100) of JSON; waits
 *      until every accepted broadcast reached every subscriber (or 10 s after
 *      the last one), reading every node's CPU time, the load generators' and
 *      the machine's before and after;
 *   5. the clients close, then the nodes are stopped (SIGTERM, SIGKILL after
 *      20 s), then PostgreSQL (which removes its directory).
 * Figures per setup:
 *   deliveries/s        frames received by the subscribers / time from the
 *                       first broadcast sent to the last frame received;
 *   latency to all      per broadcast, the last subscriber's arrival − its send
 *                       time (the maximum over all subscribers, on all nodes);
 *                       p50/p99 over the broadcasts. Target: p99 ≤ 20 ms in the
 *                       cluster at 1,000 subscribers and 100 broadcasts/s
 *                       (other sizes and rates are measured, not judged);
 *   per node            its subscribers, its CPU over step 4 in % of one core,
 *                       and p50/p99 over the broadcasts of its own last
 *                       subscriber's arrival (the topic entity's node delivers
 *                       to its own subscribers without the hop to another node);
 *   CPU per delivery    all gateway processes' CPU over step 4 / frames
 *                       received (it includes what they spend at rest, shown
 *                       apart from step 3); likewise for the load generators;
 *   other CPU           PostgreSQL's CPU over step 4 (its postmaster and
 *                       backends, from `/proc`), and the CPU the machine spent
 *                       besides all of these and the runner ("other
 *                       processes": the fake app, kernel work charged to no
 *                       process, other work on the machine), in % of a core.
 * All processes share this machine's cores: on a small machine the cluster's
 * four processes compete with the load generators for the same CPU, so its
 * latencies include that contention, which a real deployment (a node per
 * machine) would not have. The offered load is rate × subscribers deliveries
 * per second (100,000 by default), each costing the gateway and the load
 * generators about 10 µs of CPU apiece on a small VM: where the machine cannot
 * carry that, broadcasts queue (the latencies are those of the queues, and
 * broadcasts beyond 64 unanswered are skipped and reported, exit status 3);
 * `--cross-rate` compares the setups at a load the machine carries.
 */
import { randomBytes } from "node:crypto"
import { readdirSync, readFileSync, rmSync } from "node:fs"
import { join } from "node:path"
import { checkFormation } from "../../cluster/formation.ts"
import { startPostgres, topicOwner } from "../../cluster/postgres.ts"
import type { PostgresServer } from "../../cluster/postgres.ts"
import { freePort } from "../../cluster/ports.ts"
import { APP_ID, CLIENT_TYPE } from "./bench-app.ts"
import { requestStats, stop } from "./children.ts"
import type { Managed } from "./children.ts"
import {
  arrivals,
  broadcastFigures,
  broadcastPath,
  connectFigures,
  drain,
  heartbeats,
  HEARTBEAT_SETTLE_MS,
  sendBroadcasts,
  TOPIC
} from "./fanout.ts"
import type { BroadcastFigures, SendOutcome } from "./fanout.ts"
import type { CloseResult, LoadResult } from "./messages.ts"
import { cpuUs, fixed, formatCounts, percentiles, renderTable, sumCounts } from "./report.ts"
import type { Percentiles } from "./report.ts"
import {
  closeLoad,
  log,
  machineCpu,
  now,
  othersCpuPercent,
  runLoad,
  sleep,
  startLoad,
  startServer,
  waitReady,
  writeGatewayConfig
} from "./setup.ts"
import type { BroadcastSuiteSetup, ServerProcess } from "./setup.ts"

const PROBE_TOPIC = "room:999999999"
/** Probe clients use tokens `bench-<PROBE_TOKEN_BASE + i>`, apart from the subscribers'. */
const PROBE_TOKEN_BASE = 900_000_000
const HTTP_TIMEOUT_MS = 5_000
const NODE_STOP_GRACE_MS = 20_000
/** The nodes' CPU is read over this long with every subscriber joined and no broadcast. */
const IDLE_WINDOW_MS = 5_000
/** Warm-up broadcasts per second at the least, whatever the measured rate (see step 3 above). */
const WARMUP_MIN_RATE = 50
/** Warm-up broadcasts are numbered from here, apart from the measured ones (from 0). */
const WARMUP_FIRST_SEQ = 1_000_000

const crossTargets = {
  /** p99 of the time for a broadcast to reach every subscriber, in the cluster, at most… */
  latencyP99MaxMs: 20,
  /** The cluster hop's CPU per broadcast, summed over the nodes, at most (any rate). */
  hopCpuMaxMs: 0.5,
  /** The cluster's gateway CPU per delivery over one node's, at most (any rate). */
  cpuPerDeliveryRatioMax: 1.2,
  /** The cluster's p99 latency to all over one node's, at most (any rate). */
  latencyRatioMax: 1.5,
  /** …at this load (other sizes and rates are measured but not judged). */
  subscribers: 1_000,
  broadcastsPerSecond: 100
} as const

export interface CrossOptions extends BroadcastSuiteSetup {
  /** Nodes of the cluster setup (the other setup has one). */
  readonly nodes: number
  readonly subscribers: number
  readonly broadcastsPerSecond: number
  readonly durationMs: number
  readonly warmupMs: number
  readonly payloadBytes: number
}

export type CrossSetup = "single" | "cluster"

const setupLabels: Readonly<Record<CrossSetup, string>> = { single: "1 node", cluster: "cluster" }

export interface CrossNodeFigures {
  readonly name: string
  /** Subscribers of `room:0` on this node, as the gateway lists them (undefined: the listing failed). */
  readonly subscribers: number | undefined
  /** This node's CPU (user + system) over the measurement. */
  readonly cpuMs: number
  readonly cpuPercentOfCore: number
  /** Per broadcast: the last of this node's subscribers − send time (cluster only). */
  readonly latencyMs: Percentiles | undefined
}

/** Broadcasts go through node-1's server API: their answer times are node-1's. */
export interface CrossMeasurement extends BroadcastFigures {
  readonly setup: CrossSetup
  readonly nodes: ReadonlyArray<CrossNodeFigures>
  /** The node running `room:0`'s Topic entity (cluster; undefined when it could not be told). */
  readonly topicOwner: string | undefined
  /** Process start to every node ready, and (cluster) to the broadcast check passing. */
  readonly startup: { readonly readyMs: number; readonly convergedMs: number | undefined }
  readonly subscribers: number
  readonly joined: number
  readonly connect: { readonly durationMs: number; readonly failures: Readonly<Record<string, number>> }
  readonly broadcastsPerSecond: number
  readonly warmup: { readonly accepted: number; readonly planned: number; readonly failed: Readonly<Record<string, number>> }
  readonly cpu: {
    /** All gateway processes. */
    readonly gatewayMs: number
    readonly gatewayPerDeliveryUs: number
    readonly loadGeneratorsMs: number
    readonly loadGeneratorsPerDeliveryUs: number
    readonly runnerMs: number
    /**
     * All gateway processes with every subscriber joined and no broadcast, in
     * % of one core (over 5 s before the warm-up): what the setup costs at rest.
     */
    readonly idlePercentOfCore: number
    /** The cluster's PostgreSQL over the measurement, in % of one core (undefined: 1 node, or no `/proc`). */
    readonly postgresPercentOfCore: number | undefined
    /**
     * CPU the machine spent over the measurement besides the gateway processes,
     * the load generators, the runner and PostgreSQL, in % of one core (the
     * fake app, kernel work not charged to a process, other work on the machine).
     */
    readonly othersPercentOfCore: number | undefined
  }
  /** The measurement window (first broadcast to the end of the drain). */
  readonly windowMs: number
  readonly droppedWhileIdle: Readonly<Record<string, number>>
  /** Nodes that had to be killed after `NODE_STOP_GRACE_MS`, or exited otherwise than with code 0. */
  readonly unusualExits: Readonly<Record<string, string>>
}

export interface CrossFailure {
  readonly setup: CrossSetup
  readonly error: string
}

export type CrossOutcome = CrossMeasurement | CrossFailure

export const isCrossMeasurement = (outcome: CrossOutcome | undefined): outcome is CrossMeasurement =>
  outcome !== undefined && "deliveries" in outcome

export interface CrossResults {
  readonly options: {
    readonly nodes: number
    readonly subscribers: number
    readonly broadcastsPerSecond: number
    readonly durationMs: number
    readonly warmupMs: number
    readonly payloadBytes: number
    readonly topic: string
    readonly workers: number
  }
  readonly targets: typeof crossTargets
  readonly loadAverageAtStart: number
  readonly single: CrossOutcome
  readonly cluster: CrossOutcome
  /** Whether the cluster's p99 met the target (undefined when not measured, or measured at another load). */
  readonly latencyTargetMet: boolean | undefined
}

// ---------------------------------------------------------------------------
// Nodes
// ---------------------------------------------------------------------------

interface GatewayNode {
  readonly name: string
  readonly server: ServerProcess
}

const stopNodes = async (nodes: ReadonlyArray<GatewayNode>): Promise<Record<string, string>> => {
  const unusual: Record<string, string> = {}
  await Promise.all(nodes.map(async (node) => {
    const managed = node.server.process
    const wasRunning = managed.exitInfo() === undefined
    const startedAt = now()
    await stop(managed, NODE_STOP_GRACE_MS)
    const info = managed.exitInfo()
    if (!wasRunning) unusual[node.name] = "exited before it was stopped"
    else if (info?.signal === "SIGKILL" && now() - startedAt >= NODE_STOP_GRACE_MS) {
      unusual[node.name] = `still running ${NODE_STOP_GRACE_MS / 1000} s after SIGTERM: killed`
    } else if (info !== undefined && info.code !== 0 && info.signal !== "SIGTERM") {
      unusual[node.name] = info.signal === null ? `exited with code ${info.code}` : `ended by ${info.signal}`
    }
  }))
  return unusual
}

// ---------------------------------------------------------------------------
// Server API
// ---------------------------------------------------------------------------

/** Subscribers of `TOPIC` per node, from the gateway's connection listing through `port`. */
const subscribersByNode = async (port: number, secret: string): Promise<Record<string, number>> => {
  const response = await fetch(`http://127.0.0.1:${port}/api/apps/${APP_ID}/connections`, {
    headers: { authorization: `Bearer ${secret}` },
    signal: AbortSignal.timeout(HTTP_TIMEOUT_MS)
  })
  if (response.status !== 200) throw new Error(`GET /api/apps/${APP_ID}/connections answered ${response.status}`)
  const body = await response.json() as { connections?: ReadonlyArray<{ node?: unknown; topics?: unknown }> }
  const counts: Record<string, number> = {}
  for (const connection of body.connections ?? []) {
    if (!Array.isArray(connection.topics) || !connection.topics.includes(TOPIC)) continue
    const node = String(connection.node)
    counts[node] = (counts[node] ?? 0) + 1
  }
  return counts
}

// ---------------------------------------------------------------------------
// Broadcasting and waiting for the deliveries
// ---------------------------------------------------------------------------

/** `/proc/<pid>/stat` fields after the command name: [state, ppid, …]; undefined when unreadable. */
const procStat = (pid: string): Array<string> | undefined => {
  try {
    const text = readFileSync(`/proc/${pid}/stat`, "utf8")
    return text.slice(text.lastIndexOf(")") + 2).trim().split(" ")
  } catch {
    return undefined
  }
}

const processIds = (): Array<string> => readdirSync("/proc").filter((name) => /^\d+$/.test(name))

/**
 * CPU time (user + system, ms) of a PostgreSQL server: the postmaster, its
 * children that have exited (counted in its own figures once reaped) and its
 * live children (the backends of the nodes' connections). Undefined without
 * `/proc` (Linux only). Assumes 100 clock ticks per second, as `/proc/stat`
 * is read elsewhere.
 */
const postgresCpuMs = (postgres: PostgresServer): number | undefined => {
  if (postgres.pid === undefined) return undefined
  const postmaster = String(postgres.pid)
  try {
    // after the name: state(0) ppid(1) … utime(11) stime(12) cutime(13) cstime(14)
    const ticks = (fields: Array<string> | undefined, upTo: number) =>
      fields === undefined ? 0 : fields.slice(11, upTo + 1).reduce((n, field) => n + Number(field), 0)
    let total = ticks(procStat(postmaster), 14)
    for (const pid of processIds()) {
      const fields = procStat(pid)
      if (fields?.[1] === postmaster) total += ticks(fields, 12)
    }
    return total * 10
  } catch {
    return undefined
  }
}

// ---------------------------------------------------------------------------
// One setup
// ---------------------------------------------------------------------------

/** PostgreSQL of the cluster setup while it runs, so that an abrupt exit of the runner still stops it. */
let runningPostgres: PostgresServer | undefined

/** Bounds the synchronous wait of `abandonPostgres`. */
const ABANDON_WAIT_MS = 5_000

/**
 * Stops the cluster's PostgreSQL, if one runs, synchronously (for `exit`
 * handlers, where nothing asynchronous runs any more): a fast shutdown request,
 * a blocking wait (up to 5 s) until the server process has ended, so that it
 * writes no more files, then the removal of its temporary directory.
 */
export const abandonPostgres = (): void => {
  const postgres = runningPostgres
  runningPostgres = undefined
  if (postgres === undefined) return
  const pid = postgres.pid === undefined ? undefined : String(postgres.pid)
  postgres.interrupt()
  const pause = new Int32Array(new SharedArrayBuffer(4))
  const until = Date.now() + ABANDON_WAIT_MS
  // a process that has ended but is not reaped yet is a zombie ("Z")
  while (pid !== undefined && Date.now() < until && ![undefined, "Z", "X"].includes(procStat(pid)?.[0])) {
    Atomics.wait(pause, 0, 0, 20)
  }
  try {
    rmSync(postgres.dir, { recursive: true, force: true, maxRetries: 3 })
  } catch {
    // left behind: a temporary directory named realtime-gateway-pg-*
  }
}

const measureSetup = async (setup: CrossSetup, options: CrossOptions, deadline: number): Promise<CrossMeasurement> => {
  const count = setup === "single" ? 1 : options.nodes
  const names = Array.from({ length: count }, (_, i) => `node-${i + 1}`)
  const label = setupLabels[setup]
  const configFile = join(options.configDir, `gateway-cross-${setup}.json`)
  writeGatewayConfig(configFile, {
    secret: options.secret,
    defaultLimits: options.gatewayDefaultLimits,
    concurrency: options.load.concurrency
  })
  let postgres: PostgresServer | undefined
  const nodes: Array<GatewayNode> = []
  let generators: ReadonlyArray<Managed> = []
  let stopped = false
  let unusualExits: Record<string, string> = {}
  try {
    const env: NodeJS.ProcessEnv = { DRAIN_WINDOW_MS: "500" }
    let databaseUrl: string | undefined
    if (setup === "cluster") {
      log(`cross-node, ${label}: starting PostgreSQL`)
      postgres = await startPostgres()
      runningPostgres = postgres
      databaseUrl = await postgres.createDatabase()
      env["DATABASE_URL"] = databaseUrl
      env["CLUSTER_HOST"] = "127.0.0.1"
      env["CLUSTER_SECRET"] = randomBytes(48).toString("base64")
    }
    const startedAt = now()
    for (const name of names) {
      const port = await freePort()
      const nodeEnv: NodeJS.ProcessEnv = { ...env }
      if (setup === "cluster") nodeEnv["CLUSTER_PORT"] = String(await freePort())
      const server = startServer("gateway", port, options.server, {
        gateway: { appUrl: options.appUrl, configFile, nodeName: name, env: nodeEnv }
      })
      nodes.push({ name, server: { ...server, what: "subscriber" } })
    }
    log(`cross-node, ${label}: starting ${names.join(", ")} on ports ${nodes.map((n) => n.server.port).join(", ")}`)
    await Promise.all(nodes.map((node) =>
      waitReady(node.server, options.readyTimeoutMs).catch((error: unknown) => {
        throw new Error(`${node.name}: ${error instanceof Error ? error.message : String(error)}`)
      })
    ))
    const readyMs = now() - startedAt
    let convergedMs: number | undefined
    if (setup === "cluster") {
      log(`cross-node, ${label}: every node ready after ${fixed(readyMs / 1000, 1)} s; checking that they form one cluster`)
      const failure = await checkFormation({
        ports: nodes.map((node) => node.server.port),
        app: APP_ID,
        secret: options.secret,
        token: (index) => `bench-${PROBE_TOKEN_BASE + index}`,
        clientType: CLIENT_TYPE,
        topic: PROBE_TOPIC
      })
      if (failure !== undefined) throw new Error(`the nodes do not form one cluster: ${failure}`)
      convergedMs = now() - startedAt
    }
    const first = nodes[0]!

    log(`cross-node, ${label}: opening ${options.subscribers} subscribers of ${TOPIC} over ${count} node(s)`)
    generators = await startLoad(
      first.server,
      { ...options.load, topics: 1 },
      options.subscribers,
      deadline,
      nodes.map((node) => node.server.port)
    )
    const loads: Array<LoadResult> = await runLoad(generators)
    const joined = loads.reduce((n, load) => n + load.joined, 0)
    const connect = connectFigures(loads)
    const listed = await subscribersByNode(first.server.port, options.secret).catch((error: unknown) => {
      log(`cross-node, ${label}: no connection listing: ${error instanceof Error ? error.message : String(error)}`)
      return undefined
    })

    /** Each node's CPU so far (user + system, µs). */
    const nodesCpuUs = async () => (await Promise.all(nodes.map((node) => requestStats(node.server.process, false)))).map(cpuUs)
    const idleBefore = await nodesCpuUs()
    const idleStart = now()
    await sleep(IDLE_WINDOW_MS)
    const idleAfter = await nodesCpuUs()
    const idleUs = idleAfter.reduce((n, us, i) => n + us - idleBefore[i]!, 0)
    const idlePercentOfCore = idleUs / 1000 / (now() - idleStart) * 100

    const target = { port: first.server.port, path: broadcastPath("gateway") }
    const intervalMs = 1000 / options.broadcastsPerSecond
    await heartbeats(generators)
    const warmupPerSecond = Math.max(options.broadcastsPerSecond, WARMUP_MIN_RATE)
    const warmupPlanned = Math.round(warmupPerSecond * options.warmupMs / 1000)
    let warmupAccepted = 0
    let warmupFailed: Record<string, number> = {}
    if (warmupPlanned > 0) {
      const warm = await sendBroadcasts(target, options.secret, warmupPlanned, 1000 / warmupPerSecond, options.payloadBytes, WARMUP_FIRST_SEQ)
      warmupAccepted = warm.accepted.size
      warmupFailed = warm.failed
      await drain(generators, warm.accepted.size * joined)
    }
    await sleep(HEARTBEAT_SETTLE_MS)
    const owner = databaseUrl === undefined ? first.name : await topicOwner(databaseUrl, APP_ID, TOPIC)

    await arrivals(generators, false, true)
    const planned = Math.max(1, Math.round(options.broadcastsPerSecond * options.durationMs / 1000))
    const before = await nodesCpuUs()
    const loadBefore = await arrivals(generators, false, false)
    const runnerBefore = process.cpuUsage()
    const postgresBefore = postgres === undefined ? undefined : postgresCpuMs(postgres)
    const machineBefore = machineCpu()
    const windowStart = now()
    log(
      `cross-node, ${label}: ${joined} subscribers, ${fixed(options.broadcastsPerSecond, 0)} broadcasts/s ` +
        `through ${first.name} for ${options.durationMs / 1000} s`
    )
    const firstSend = now()
    const outcome: SendOutcome = await sendBroadcasts(target, options.secret, planned, intervalMs, options.payloadBytes)
    await drain(generators, outcome.accepted.size * joined)
    const after = await nodesCpuUs()
    const final = await arrivals(generators, true, true)
    const machineAfter = machineCpu()
    const postgresAfter = postgres === undefined ? undefined : postgresCpuMs(postgres)
    const windowMs = now() - windowStart
    const runnerUsed = process.cpuUsage(runnerBefore)

    const { figures, byTarget: perNode } = broadcastFigures(outcome, final, planned, joined, firstSend)
    const received = figures.deliveries.received
    const nodeCpuUs = after.map((us, i) => us - before[i]!)
    const gatewayUs = nodeCpuUs.reduce((a, b) => a + b, 0)
    const loadUs = final.reduce((n, r, w) => n + r.cpuUs - (loadBefore[w]?.cpuUs ?? 0), 0)
    const perDelivery = (us: number) => (received === 0 ? 0 : us / received)
    const postgresMs = postgresBefore === undefined || postgresAfter === undefined
      ? undefined
      : Math.max(0, postgresAfter - postgresBefore)

    const closes: Array<CloseResult> = await closeLoad(generators)
    await Promise.all(generators.map((generator) => stop(generator, 2_000)))
    generators = []
    log(`cross-node, ${label}: stopping ${names.join(", ")}`)
    unusualExits = await stopNodes(nodes)
    stopped = true

    return {
      setup,
      nodes: nodes.map((node, i) => ({
        name: node.name,
        subscribers: listed === undefined ? undefined : (listed[node.name] ?? 0),
        cpuMs: nodeCpuUs[i]! / 1000,
        cpuPercentOfCore: windowMs <= 0 ? 0 : nodeCpuUs[i]! / 1000 / windowMs * 100,
        latencyMs: setup === "cluster" ? percentiles(perNode[i] ?? []) : undefined
      })),
      topicOwner: owner,
      startup: { readyMs, convergedMs },
      subscribers: options.subscribers,
      joined,
      connect,
      broadcastsPerSecond: options.broadcastsPerSecond,
      warmup: { accepted: warmupAccepted, planned: warmupPlanned, failed: warmupFailed },
      ...figures,
      cpu: {
        gatewayMs: gatewayUs / 1000,
        gatewayPerDeliveryUs: perDelivery(gatewayUs),
        loadGeneratorsMs: loadUs / 1000,
        loadGeneratorsPerDeliveryUs: perDelivery(loadUs),
        runnerMs: (runnerUsed.user + runnerUsed.system) / 1000,
        idlePercentOfCore,
        postgresPercentOfCore: postgresMs === undefined || windowMs <= 0 ? undefined : postgresMs / windowMs * 100,
        othersPercentOfCore: othersCpuPercent(
          machineBefore,
          machineAfter,
          windowMs,
          (gatewayUs + loadUs + runnerUsed.user + runnerUsed.system) / 1000 + (postgresMs ?? 0)
        )
      },
      windowMs,
      droppedWhileIdle: sumCounts(closes.map((close) => close.droppedWhileIdle)),
      unusualExits
    }
  } finally {
    await Promise.all(generators.map((generator) => stop(generator, 2_000)))
    if (!stopped) await stopNodes(nodes)
    if (postgres !== undefined) {
      log(`cross-node, ${label}: stopping PostgreSQL`)
      await postgres.stop()
      runningPostgres = undefined
    }
  }
}

export const runCross = async (options: CrossOptions, deadline: number, loadAverage: number): Promise<CrossResults> => {
  const outcomes: Partial<Record<CrossSetup, CrossOutcome>> = {}
  for (const setup of ["single", "cluster"] as const) {
    try {
      outcomes[setup] = await measureSetup(setup, options, deadline)
    } catch (error) {
      const message = error instanceof Error ? error.message : String(error)
      log(`cross-node, ${setupLabels[setup]}: ${message.split("\n")[0]}`)
      outcomes[setup] = { setup, error: message }
    }
  }
  const cluster = outcomes.cluster!
  return {
    options: {
      nodes: options.nodes,
      subscribers: options.subscribers,
      broadcastsPerSecond: options.broadcastsPerSecond,
      durationMs: options.durationMs,
      warmupMs: options.warmupMs,
      payloadBytes: options.payloadBytes,
      topic: TOPIC,
      workers: options.load.workers
    },
    targets: crossTargets,
    loadAverageAtStart: loadAverage,
    single: outcomes.single!,
    cluster,
    latencyTargetMet: isCrossMeasurement(cluster) && options.subscribers === crossTargets.subscribers &&
        options.broadcastsPerSecond === crossTargets.broadcastsPerSecond
      ? cluster.latencyMs.p99 <= crossTargets.latencyP99MaxMs
      : undefined
  }
}

/** Subscribers, broadcasts or deliveries missing, or nodes that did not stop cleanly: figures suspect. */
export const crossSuspect = (results: CrossResults): boolean =>
  [results.single, results.cluster].some((outcome) =>
    isCrossMeasurement(outcome) && (
      outcome.joined < outcome.subscribers ||
      outcome.deliveries.received < outcome.deliveries.expected ||
      outcome.broadcasts.accepted < outcome.broadcasts.planned ||
      Object.keys(outcome.droppedWhileIdle).length > 0 ||
      Object.keys(outcome.unusualExits).length > 0
    )
  )

// ---------------------------------------------------------------------------
// Table
// ---------------------------------------------------------------------------


const percent = (value: number) => `${fixed(value, 0)}%`

/**
 * What the cluster hop costs: the cluster's gateway CPU per broadcast minus
 * one node's (the per-subscriber writes, the same number in both, cancel
 * out); by node, each node's CPU per broadcast minus its share of the single
 * node's.
 */
export const hopFigures = (single: CrossMeasurement, cluster: CrossMeasurement) => {
  const singlePerDeliveryMs = single.cpu.gatewayMs / Math.max(1, single.deliveries.received)
  const broadcasts = Math.max(1, cluster.broadcasts.accepted)
  const perBroadcastMs = (cluster.cpu.gatewayMs - singlePerDeliveryMs * cluster.deliveries.received) / broadcasts
  // the same without what each setup spends at rest (heartbeats, storage reads, health checks)
  const busyMs = (m: CrossMeasurement) => m.cpu.gatewayMs - m.cpu.idlePercentOfCore / 100 * m.windowMs
  const busyPerBroadcastMs = (busyMs(cluster) - busyMs(single) / Math.max(1, single.deliveries.received) * cluster.deliveries.received) /
    broadcasts
  const deliveriesPerBroadcast = cluster.deliveries.received / broadcasts
  const joined = Math.max(1, cluster.joined)
  return {
    perBroadcastMs,
    busyPerBroadcastMs,
    cpuRatio: cluster.cpu.gatewayPerDeliveryUs / Math.max(1e-9, single.cpu.gatewayPerDeliveryUs),
    latencyRatio: cluster.latencyMs.p99 / Math.max(1e-9, single.latencyMs.p99),
    byNode: cluster.nodes.map((node) => ({
      name: node.name,
      ms: node.cpuMs / broadcasts - singlePerDeliveryMs * deliveriesPerBroadcast * (node.subscribers ?? 0) / joined
    }))
  }
}

export const formatCross = (results: CrossResults): string => {
  const o = results.options
  const lines: Array<string> = []
  lines.push(
    `Cross-node: ${o.subscribers} subscribers of ${o.topic} spread over ${o.nodes} nodes (PostgreSQL-backed cluster) ` +
      `vs. the same on 1 node; ${o.broadcastsPerSecond} broadcasts/s of ${o.payloadBytes}-byte payloads through node-1 for ` +
      `${o.durationMs / 1000} s (after ${o.warmupMs / 1000} s of warm-up); load average at start ` +
      `${results.loadAverageAtStart.toFixed(2)}.`
  )
  const measured = [results.single, results.cluster].filter(isCrossMeasurement)
  if (measured.length > 0) {
    const both = measured.length === 2
    const header = measured.map((m) => (m.setup === "single" ? "1 node" : `${m.nodes.length} nodes`))
    const rows: Array<Array<string>> = [["", ...header, ...(both ? [`${header[1]} / 1 node`] : [])]]
    const cell = (f: (m: CrossMeasurement) => string) => measured.map(f)
    const ratio = (f: (m: CrossMeasurement) => number, digits = 2) => {
      if (!both) return []
      const [a, b] = [f(measured[0]!), f(measured[1]!)]
      return [a > 0 ? `${fixed(b / a, digits)}×` : "—"]
    }
    rows.push(["  subscribers joined", ...cell((m) => `${m.joined}/${m.subscribers}`)])
    rows.push(["  subscribers per node", ...cell((m) => m.nodes.map((n) => n.subscribers ?? "?").join("/"))])
    rows.push(["  topic entity on", ...cell((m) => m.topicOwner ?? "?")])
    rows.push(["  broadcasts accepted/planned", ...cell((m) => `${m.broadcasts.accepted}/${m.broadcasts.planned}`)])
    rows.push(["  deliveries received/expected", ...cell((m) => `${m.deliveries.received}/${m.deliveries.expected}`)])
    rows.push(["  deliveries/s", ...cell((m) => fixed(m.deliveriesPerSecond, 0)), ...ratio((m) => m.deliveriesPerSecond)])
    const cluster = results.cluster
    rows.push([
      "  latency to all p50/p99 (ms)",
      ...cell((m) => `${fixed(m.latencyMs.p50, 1)}/${fixed(m.latencyMs.p99, 1)}`),
      ...(both ? [`${ratio((m) => m.latencyMs.p50)[0]} / ${ratio((m) => m.latencyMs.p99)[0]}`] : [])
    ])
    rows.push(["  latency to all max (ms)", ...cell((m) => fixed(m.latencyMs.max, 1))])
    rows.push(["  latency to first p50 (ms)", ...cell((m) => fixed(m.firstArrivalMs.p50, 1))])
    rows.push(["  HTTP answer p50/p99 (ms)", ...cell((m) => `${fixed(m.broadcasts.answerMs.p50, 1)}/${fixed(m.broadcasts.answerMs.p99, 1)}`)])
    rows.push([
      "  gateway CPU per delivery (µs, all nodes)",
      ...cell((m) => fixed(m.cpu.gatewayPerDeliveryUs, 2)),
      ...ratio((m) => m.cpu.gatewayPerDeliveryUs)
    ])
    rows.push(["  gateway CPU (% of a core, all nodes)", ...cell((m) => percent(m.cpu.gatewayMs / m.windowMs * 100))])
    rows.push(["  gateway CPU at rest (% of a core, all nodes)", ...cell((m) => percent(m.cpu.idlePercentOfCore))])
    rows.push(["  load generators CPU per delivery (µs)", ...cell((m) => fixed(m.cpu.loadGeneratorsPerDeliveryUs, 2))])
    rows.push([
      "  PostgreSQL CPU (% of a core)",
      ...cell((m) => (m.setup === "single" ? "—" : m.cpu.postgresPercentOfCore === undefined ? "?" : fixed(m.cpu.postgresPercentOfCore, 1)))
    ])
    rows.push([
      "  other processes' CPU (% of a core)",
      ...cell((m) => (m.cpu.othersPercentOfCore === undefined ? "?" : fixed(m.cpu.othersPercentOfCore, 0)))
    ])
    lines.push(renderTable(rows, measured.length))
    const single = results.single
    if (isCrossMeasurement(single) && isCrossMeasurement(cluster)) {
      const t = crossTargets
      const hop = hopFigures(single, cluster)
      lines.push(
        `Cluster hop: ${fixed(hop.perBroadcastMs, 2)} ms of CPU per broadcast summed over the nodes ` +
          `(target ≤ ${t.hopCpuMaxMs} ms: ${hop.perBroadcastMs <= t.hopCpuMaxMs ? "met" : "NOT met"}; ` +
          `${fixed(hop.busyPerBroadcastMs, 2)} ms without the CPU each setup spends at rest); ` +
          `CPU per delivery ${fixed(hop.cpuRatio, 2)}× one node's (target ≤ ${t.cpuPerDeliveryRatioMax}×: ` +
          `${hop.cpuRatio <= t.cpuPerDeliveryRatioMax ? "met" : "NOT met"}); p99 to all ${fixed(hop.latencyRatio, 2)}× ` +
          `one node's (target ≤ ${t.latencyRatioMax}×: ${hop.latencyRatio <= t.latencyRatioMax ? "met" : "NOT met"})`
      )
      lines.push(`  hop per broadcast by node (ms of CPU): ${hop.byNode.map(({ name, ms }) => `${name} ${fixed(ms, 2)}`).join(", ")}`)
    }
    if (isCrossMeasurement(cluster)) {
      const t = crossTargets
      lines.push(
        `Target: p99 latency to all ≤ ${t.latencyP99MaxMs} ms at ${t.subscribers} subscribers and ${t.broadcastsPerSecond} ` +
          `broadcasts/s, cross-node: ${fixed(cluster.latencyMs.p99, 1)} ms` +
          (results.latencyTargetMet === undefined
            ? ` at ${o.subscribers} subscribers and ${o.broadcastsPerSecond} broadcasts/s (another load: not judged).`
            : `, ${results.latencyTargetMet ? "met" : "NOT met"}.`)
      )
      const nodeRows: Array<Array<string>> = [["  per node", "subscribers", "CPU (% of a core)", "its subscribers p50/p99 (ms)"]]
      for (const node of cluster.nodes) {
        nodeRows.push([
          `  ${node.name}${node.name === cluster.topicOwner ? " (topic entity)" : ""}${node.name === "node-1" ? " (server API)" : ""}`,
          node.subscribers === undefined
            ? "?"
            : `${node.subscribers} (${percent(cluster.joined === 0 ? 0 : node.subscribers / cluster.joined * 100)})`,
          percent(node.cpuPercentOfCore),
          node.latencyMs === undefined ? "—" : `${fixed(node.latencyMs.p50, 1)}/${fixed(node.latencyMs.p99, 1)}`
        ])
      }
      lines.push(renderTable(nodeRows, 3))
      lines.push(
        `  cluster start: every node ready after ${fixed(cluster.startup.readyMs / 1000, 1)} s, ` +
          `one cluster after ${fixed((cluster.startup.convergedMs ?? 0) / 1000, 1)} s`
      )
    }
    if (isCrossMeasurement(single)) {
      lines.push(`  1 node: ${single.nodes[0]?.name ?? "node-1"} CPU ${percent(single.nodes[0]?.cpuPercentOfCore ?? 0)} of a core`)
    }
  }
  for (const m of measured) {
    const label = setupLabels[m.setup]
    if (Object.keys(m.broadcasts.failed).length > 0) lines.push(`${label}: broadcasts failed: ${formatCounts(m.broadcasts.failed)}`)
    if (Object.keys(m.connect.failures).length > 0) lines.push(`${label}: connections failed: ${formatCounts(m.connect.failures)}`)
    if (m.warmup.accepted < m.warmup.planned) lines.push(`${label}: warm-up broadcasts failed: ${formatCounts(m.warmup.failed)}`)
    if (m.deliveries.incompleteBroadcasts > 0) {
      lines.push(
        `${label}: ${m.deliveries.incompleteBroadcasts} broadcasts did not reach every subscriber ` +
          "(their latency is that of the last one that got it)"
      )
    }
    if (Object.keys(m.droppedWhileIdle).length > 0) lines.push(`${label}: dropped subscribers: ${formatCounts(m.droppedWhileIdle)}`)
    for (const [node, what] of Object.entries(m.unusualExits)) lines.push(`${label}: ${node} ${what}`)
  }
  for (const outcome of [results.single, results.cluster]) {
    if (!isCrossMeasurement(outcome)) lines.push(`${setupLabels[outcome.setup]}: NOT MEASURED: ${outcome.error}`)
  }
  return lines.join("\n")
}
