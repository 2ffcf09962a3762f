/**
 * The gateway's benchmark: the gateway against a bare `ws` server speaking the
 * same protocol (`bare-ws-server.ts`), and a gateway cluster against a single
 * gateway, in one run, on this machine, in four suites (all by default;
 * `--suite` picks some, in this order):
 *   connect  connect + auth + join rate and memory per connection;
 *   fanout   one topic with 1,000 and 10,000 subscribers, broadcasts through
 *            the HTTP broadcast endpoint at a fixed delivery rate: CPU per
 *            delivery and broadcast-to-every-subscriber latency (`fanout.ts`);
 *   push     client push → gateway → app → reply round trips against the same
 *            calls made straight to the app, one client sequentially and 50
 *            concurrently (gateway only; `push.ts`);
 *   cross    one topic with 1,000 subscribers spread over a 4-node cluster
 *            (PostgreSQL-backed), broadcasts through node-1's server API at
 *            100/s: deliveries/s and broadcast-to-every-subscriber latency,
 *            per-node subscribers and CPU, beside the same load on one node
 *            (gateway only; `cross.ts`).
 *
 * Run
 *   npm run bench                                  # every suite at default sizes (about 3 minutes)
 *   npm run bench -- --suite fanout,push           # some suites (connect | fanout | push | cross)
 *   npm run bench -- --suite cross                 # the cluster suite alone, at 20 and 100 broadcasts/s (about 2 minutes)
 *   npm run bench -- --suite cross --cross-rate 40 # at another broadcast rate
 *   npm run bench -- --connections 500            # quick connect run (seconds)
 *   npm run bench -- --suite fanout --fanout-subscribers 500 --fanout-duration-s 3   # quick fan-out run
 *   npm run bench -- --only gateway                # one server (bare | gateway) in connect and fanout
 *   scripts/node.sh scripts/bench/run.ts --help    # every option
 * Options may also come from the environment: BENCH_SUITE, BENCH_CONNECTIONS,
 * BENCH_ONLY, BENCH_CONCURRENCY, BENCH_WORKERS, BENCH_TOPICS, BENCH_TIMEOUT_S,
 * BENCH_OUT (the command line wins). Exit status: 0 measured; 3 measured but
 * some connections, broadcasts, deliveries or round trips failed or were
 * dropped (figures suspect); 1 a server did not come up or the harness failed;
 * 124 overall timeout; 130 interrupted.
 *
 * Processes. Each measured server runs alone, as its own process started with
 * `--expose-gc` and the stats agent `stats-agent.ts` preloaded (which answers
 * the runner's IPC requests for its RSS, heap and CPU time), and is stopped
 * before the next one; the bare `ws` server goes first. Gateway processes are
 * started with `--max-semi-space-size=32`, as `npm start` starts one. The load
 * generators are child processes (`--workers`, 2 by default), each with its
 * own source addresses out of 127.0.0.2–127.0.0.9. The gateway is configured
 * with one app, `bench` (`bench-app.ts`: the fake app of
 * `src/testing/FakeApp.ts` with a schema of rooms `room:{id}` and the event
 * `echo`, no rate limits, an auth handler accepting every `bench-<n>` token,
 * and replies echoing the payload). In the connect suite the fake app runs
 * inside this runner process (the runner's CPU over the connect phase is
 * printed to show what it took); in the fanout, push and cross suites it runs
 * as a process of its own (`app-server.ts`), apart from the runner and the
 * load generators. The gateway's admission limits (connection attempts per IP,
 * concurrent auth calls) are raised through a temporary `GATEWAY_CONFIG` file
 * so that they do not refuse the benchmark's bursts (`--gateway-default-limits`
 * keeps the defaults); for fanout, push and cross the file also gives the app
 * a secret, new for every run (the bearer token of the server API, and the key
 * signing the gateway's calls to the app); `--gateway-env KEY=VALUE` passes
 * further settings (to every node in the cross suite).
 *
 * Connect suite, for each server in turn:
 *   1. start it on a free 127.0.0.1 port and wait for `GET /health/ready` = 200;
 *   2. after a short settle (and, with `--warmup N`, after opening, joining and
 *      closing N connections, so that one-time costs such as compiled code are
 *      not counted per connection; off by default), force a GC and read its
 *      RSS (the baseline);
 *   3. the load generators (`load.ts`, with their share of `--concurrency`,
 *      200 in flight in all) open `--connections` WebSockets to
 *      `/socket/websocket?app=bench&token=bench-<n>&client_type=bench&vsn=2.0.0`
 *      and send `["1","1","room:<n>","phx_join",{}]` on each, waiting for the ok
 *      reply. By default every connection joins its own topic `room:<n>` (one
 *      topic per connection, the costliest case); `--topics K` spreads them over
 *      `room:0`…`room:<K-1>` instead. Connections stay open and idle (heartbeat
 *      every 30 s) until the memory reading;
 *   4. after `--settle-ms`, force a GC and read its RSS again; then close
 *      everything and stop the server.
 * Figures
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
 *
 * Fanout suite (details in `fanout.ts`), for each server in turn: subscribers
 * (raw `ws` V2 clients in the load generators) all join `room:0`, first
 * `--fanout-subscribers`' smallest count, then grown to each next one; at each
 * size the runner POSTs broadcasts of `--payload-bytes` (100) payloads at
 * `--fanout-rate` deliveries/s in all (40,000: 40 broadcasts/s at 1,000
 * subscribers, 4/s at 10,000) for `--fanout-duration-s` (10 s), to the
 * gateway's server API `POST /api/apps/bench/broadcast` or the bare server's
 * equivalent `POST /broadcast`. Figures: deliveries/s; server CPU per delivery
 * (server CPU over the broadcasts and their delivery / frames received); p50
 * and p99 over the broadcasts of the time from a broadcast's send to its last
 * subscriber's arrival; gateway / bare ratios (target: CPU per delivery ≤ 1.3×).
 *
 * Push suite (details in `push.ts`), gateway only: one client pushing `echo`
 * sequentially, alternating with the same load process POSTing the same body
 * straight to the app's message endpoint over keep-alive HTTP (added latency
 * at p50 and p99; target ≤ 1 ms at p50); then `--push-clients` (50) clients
 * pushing concurrently for `--push-duration-s` (10 s), against the same
 * number of keep-alive callers of the app's message endpoint (round trips/s,
 * gateway / direct; target ≥ 0.5×).
 *
 * Cross suite (details in `cross.ts`), gateway only, two setups in turn, each
 * started afresh and stopped (SIGTERM) at its end: one gateway process without
 * `DATABASE_URL`, then embedded PostgreSQL (`cluster/postgres.ts`, in a
 * temporary directory, removed at the end) and `--cross-nodes` (4) gateway
 * processes `node-1`… forming one cluster over it, checked (a broadcast through
 * each node reaches a client on every node) before anything is measured. The
 * load generators open `--cross-subscribers` (1,000) raw `ws` V2 clients
 * joined to `room:0`, connection n to node n mod N; after `--cross-warmup-s`
 * (4 s, at 50/s at least) of uncounted broadcasts the runner POSTs `--cross-rate` (20, then 100)
 * broadcasts/s of `--payload-bytes` payloads through node-1's server API for
 * `--cross-duration-s` (10 s). Figures per setup: deliveries/s, p50/p99 over
 * the broadcasts of the time to reach every subscriber on every node (target
 * in the cluster: p99 ≤ 20 ms), per node its subscribers (as the gateway lists
 * them), CPU and its own subscribers' latency, which node runs the topic's
 * entity, the gateway processes' CPU per delivery, PostgreSQL's CPU. The
 * offered load is rate × subscribers deliveries/s (100,000 by default): on a
 * machine that cannot carry it together with the load generators the
 * latencies are those of queues (broadcasts skipped at 64 in flight are
 * reported); compare setups at a rate both carry (`--cross-rate`).
 *
 * Caveat: the server, the load generators, the runner and the fake app share
 * this machine's cores, so on a small machine rates are those of the whole
 * setup, not of the server alone; compare CPU per connection, per delivery and
 * per round trip rather than raw rates. Other work on the machine skews every
 * rate and latency: the 1-minute load average at the start of each suite is
 * printed and recorded (after the first suite it still holds some of the
 * previous suite's own load), and the fanout and push tables show the CPU the
 * machine spent during each measurement window besides the benchmark's own
 * processes ("other processes' CPU", from /proc/stat). Memory figures are not
 * affected.
 *
 * Results are printed as tables and written as JSON (`--out`, by default
 * `scripts/bench/results/latest.json`): the machine, then the connect suite's
 * `options`, `servers`, `ratios` and `notes` at the top level, and `fanout`,
 * `push` and `cross` objects, for the suites this run measured (a run replaces
 * the file).
 *
 * All traffic stays on 127.0.0.0/8; every load is bounded in connections,
 * broadcasts and round trips and in time (each suite bounded by its sizes and
 * durations; overall `--timeout-s`, 300 s per selected suite by default, after
 * which everything is killed), and every child process is killed when the
 * runner exits for any reason (the cross suite's PostgreSQL is asked to shut
 * down and its directory removed).
 */
import { freePort } from "../../cluster/ports.ts"
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs"
import { cpus, loadavg, release, tmpdir, totalmem } from "node:os"
import { dirname, join, resolve } from "node:path"
import { parseArgs } from "node:util"
import type { FakeApp } from "../../src/testing/FakeApp.ts"
import { countCalls, startBenchApp } from "./bench-app.ts"
import { killAll, requestStats, stop } from "./children.ts"
import type { Managed } from "./children.ts"
import { abandonPostgres, crossSuspect, formatCross, isCrossMeasurement, runCross } from "./cross.ts"
import type { CrossResults } from "./cross.ts"
import { fanoutSuspect, formatFanout, isFanoutMeasurement, runFanout } from "./fanout.ts"
import type { FanoutResults } from "./fanout.ts"
import type { ServerStats } from "./messages.ts"
import { formatPush, isPushMeasurement, pushSuspect, runPush } from "./push.ts"
import type { PushResults } from "./push.ts"
import { formatTable, isMeasurement, measure, ratios, serverLabels } from "./report.ts"
import type { Ratios, ServerName, ServerOutcome } from "./report.ts"
import {
  BASELINE_SETTLE_MS,
  benchDir,
  closeLoad,
  DEFAULT_SOURCE_ADDRESSES,
  isLoopback,
  log,
  MAX_CONNECTIONS,
  newSecret,
  runLoad,
  sleep,
  startAppProcess,
  startLoad,
  startServer,
  STOP_GRACE_MS,
  waitReady,
  writeGatewayConfig
} from "./setup.ts"
import type { AppProcess } from "./setup.ts"

const SUITES = ["connect", "fanout", "push", "cross"] as const
type Suite = typeof SUITES[number]
const TIMEOUT_PER_SUITE_S = 300

// ---------------------------------------------------------------------------
// Options
// ---------------------------------------------------------------------------

const usage = `Usage: npm run bench -- [options]   (or scripts/node.sh scripts/bench/run.ts [options])

  --suite LIST              comma-separated suites: connect, fanout, push, cross (default: all) [BENCH_SUITE]
  --only bare|gateway       measure one server only (connect and fanout; push is gateway only) [BENCH_ONLY]
  --workers N               load generator processes (default 2) [BENCH_WORKERS]
  --source-addresses LIST   comma-separated client source addresses in 127.0.0.0/8 (default 127.0.0.2-127.0.0.9)
  --payload-bytes N         JSON payload size of broadcasts and pushes (default 100)
  --ready-timeout-s S       how long a server may take to become ready (default 30)
  --timeout-s S             overall limit; everything is killed after it (default ${TIMEOUT_PER_SUITE_S} per suite) [BENCH_TIMEOUT_S]
  --gateway-env KEY=VALUE   extra environment for the gateway (repeatable)
  --gateway-default-limits  keep the gateway's default admission limits (otherwise raised for the bursts)
  --out PATH                JSON results (default scripts/bench/results/latest.json) [BENCH_OUT]
  --verbose                 echo all output of the servers, the app and the load generators
  --help

 connect suite
  --connections N           connections per server (default 10000, at most ${MAX_CONNECTIONS}) [BENCH_CONNECTIONS]
  --concurrency N           connection attempts in flight, over all load generators (default 200; also fanout) [BENCH_CONCURRENCY]
  --topics K                0: connection n joins room:<n> (default); K: joins room:<n mod K> [BENCH_TOPICS]
  --settle-ms MS            wait after the last join before the memory reading (default 2000)
  --warmup N                open, join and close N connections before the baseline reading (default 0),
                            so that one-time costs (compiled code, lazily built state) are not counted per connection

 fanout suite
  --fanout-subscribers LIST subscriber counts of the one topic, grown in turn (default 1000,10000; each at most ${MAX_CONNECTIONS})
  --fanout-rate N           deliveries per second in all; broadcasts/s = N / subscribers (default 40000)
  --fanout-duration-s S     broadcasting time per size (default 10)

 push suite
  --push-round-trips N      sequential round trips timed per kind, 1 client (default 2000, after 200 of warm-up)
  --push-clients N          concurrent clients (default 50)
  --push-duration-s S       timed window per kind, concurrent part (default 10, after 1 s of warm-up)

 cross suite (gateway only: one node, then a cluster over PostgreSQL)
  --cross-nodes N           nodes of the cluster (default 4)
  --cross-subscribers N     subscribers of the one topic, spread evenly over the nodes (default 1000, at most ${MAX_CONNECTIONS})
  --cross-rate LIST         broadcasts per second through node-1, one run per rate (default 20,100)
  --cross-duration-s S      broadcasting time (default 10)
  --cross-warmup-s S        broadcasts at the same rate (at least 50/s) before it, not counted (default 4; 0: none)`

interface Options {
  readonly suites: ReadonlyArray<Suite>
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
  readonly payloadBytes: number
  readonly fanoutSubscribers: ReadonlyArray<number>
  readonly fanoutRate: number
  readonly fanoutDurationMs: number
  readonly pushRoundTrips: number
  readonly pushClients: number
  readonly pushDurationMs: number
  readonly crossNodes: number
  readonly crossSubscribers: number
  readonly crossRates: ReadonlyArray<number>
  readonly crossDurationMs: number
  readonly crossWarmupMs: number
  readonly out: string
  readonly verbose: boolean
}

class UsageError extends Error {}

const parseOptions = (argv: ReadonlyArray<string>, env: NodeJS.ProcessEnv): Options => {
  const { values } = parseArgs({
    args: [...argv],
    strict: true,
    allowPositionals: false,
    options: {
      suite: { type: "string" },
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
      "payload-bytes": { type: "string" },
      "fanout-subscribers": { type: "string" },
      "fanout-rate": { type: "string" },
      "fanout-duration-s": { type: "string" },
      "push-round-trips": { type: "string" },
      "push-clients": { type: "string" },
      "push-duration-s": { type: "string" },
      "cross-nodes": { type: "string" },
      "cross-subscribers": { type: "string" },
      "cross-rate": { type: "string" },
      "cross-duration-s": { type: "string" },
      "cross-warmup-s": { type: "string" },
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
  const list = (raw: string | undefined) => (raw ?? "").split(",").map((a) => a.trim()).filter((a) => a !== "")

  const suiteList = list(values.suite ?? env["BENCH_SUITE"])
  for (const suite of suiteList) {
    if (!(SUITES as ReadonlyArray<string>).includes(suite)) {
      throw new UsageError(`unknown suite ${JSON.stringify(suite)} (expected ${SUITES.join(", ")})`)
    }
  }
  const suites = suiteList.length === 0 ? [...SUITES] : SUITES.filter((suite) => suiteList.includes(suite))

  const only = values.only ?? env["BENCH_ONLY"]
  if (only !== undefined && only !== "" && only !== "bare" && only !== "gateway") {
    throw new UsageError(`--only must be bare or gateway, got ${JSON.stringify(only)}`)
  }
  const connections = integer("connections", values.connections ?? env["BENCH_CONNECTIONS"], 10_000, 1, MAX_CONNECTIONS)
  const sourceAddresses = list(values["source-addresses"])
  for (const address of sourceAddresses) {
    if (!isLoopback(address)) throw new UsageError(`source address ${address} is not in 127.0.0.0/8`)
  }
  const gatewayEnv: Record<string, string> = {}
  for (const entry of values["gateway-env"] ?? []) {
    const at = entry.indexOf("=")
    if (at <= 0) throw new UsageError(`--gateway-env expects KEY=VALUE, got ${JSON.stringify(entry)}`)
    gatewayEnv[entry.slice(0, at)] = entry.slice(at + 1)
  }
  const subscriberList = list(values["fanout-subscribers"])
  const fanoutSubscribers = subscriberList.length === 0
    ? [1_000, 10_000]
    : [...new Set(subscriberList.map((raw) => integer("fanout-subscribers", raw, 0, 1, MAX_CONNECTIONS)))].sort((a, b) => a - b)
  return {
    suites,
    connections,
    servers: only === "bare" || only === "gateway" ? [only] : ["bare", "gateway"],
    concurrency: integer("concurrency", values.concurrency ?? env["BENCH_CONCURRENCY"], 200, 1, 5_000),
    workers: integer("workers", values.workers ?? env["BENCH_WORKERS"], 2, 1, 16),
    topics: integer("topics", values.topics ?? env["BENCH_TOPICS"], 0, 0, 1_000_000),
    settleMs: integer("settle-ms", values["settle-ms"], 2_000, 0, 120_000),
    warmup: integer("warmup", values.warmup, 0, 0, MAX_CONNECTIONS),
    readyTimeoutMs: integer("ready-timeout-s", values["ready-timeout-s"], 30, 1, 600) * 1000,
    timeoutMs: integer("timeout-s", values["timeout-s"] ?? env["BENCH_TIMEOUT_S"], TIMEOUT_PER_SUITE_S * suites.length, 10, 3_600) *
      1000,
    sourceAddresses: sourceAddresses.length > 0 ? sourceAddresses : DEFAULT_SOURCE_ADDRESSES,
    gatewayEnv,
    gatewayDefaultLimits: values["gateway-default-limits"] === true,
    payloadBytes: integer("payload-bytes", values["payload-bytes"], 100, 1, 64 * 1024),
    fanoutSubscribers,
    fanoutRate: integer("fanout-rate", values["fanout-rate"], 40_000, 1, 1_000_000),
    fanoutDurationMs: integer("fanout-duration-s", values["fanout-duration-s"], 10, 1, 120) * 1000,
    pushRoundTrips: integer("push-round-trips", values["push-round-trips"], 2_000, 1, 100_000),
    pushClients: integer("push-clients", values["push-clients"], 50, 1, 1_000),
    pushDurationMs: integer("push-duration-s", values["push-duration-s"], 10, 1, 120) * 1000,
    crossNodes: integer("cross-nodes", values["cross-nodes"], 4, 2, 8),
    crossSubscribers: integer("cross-subscribers", values["cross-subscribers"], 1_000, 1, MAX_CONNECTIONS),
    crossRates: list(values["cross-rate"] ?? "20,100").map((rate) => integer("cross-rate", rate, 100, 1, 1_000)),
    crossDurationMs: integer("cross-duration-s", values["cross-duration-s"], 10, 1, 120) * 1000,
    crossWarmupMs: integer("cross-warmup-s", values["cross-warmup-s"], 4, 0, 30) * 1000,
    out: resolve(values.out ?? env["BENCH_OUT"] ?? join(benchDir, "results", "latest.json")),
    verbose: values.verbose === true
  }
}

// ---------------------------------------------------------------------------
// Connect suite: one server's measurement
// ---------------------------------------------------------------------------

interface ConnectGatewaySetup {
  readonly app: FakeApp
  readonly configFile: string | undefined
}

const measureServer = async (
  name: ServerName,
  options: Options,
  deadline: number,
  gatewaySetup: ConnectGatewaySetup | undefined
): Promise<ServerOutcome> => {
  const port = await freePort()
  const server = startServer(name, port, options, {
    ...(gatewaySetup === undefined ? {} : { gateway: { appUrl: gatewaySetup.app.url, configFile: gatewaySetup.configFile } })
  })
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

const loadAverageNow = () => loadavg()[0] ?? 0

const warnIfBusy = (what: string, load: number) => {
  if (load > 0.5) log(`the machine is busy at the start of ${what} (1-minute load average ${load.toFixed(2)}): rates will be low`)
}

/** Holds the temporary gateway config files; removed on every way out. */
let configDir: string | undefined

const removeConfigDir = () => {
  if (configDir !== undefined) rmSync(configDir, { recursive: true, force: true })
  configDir = undefined
}

interface ConnectResults {
  readonly outcomes: ReadonlyArray<ServerOutcome>
  readonly ratio: Ratios | undefined
  readonly notes: ReadonlyArray<string>
  readonly loadAverageAtStart: number
}

const runConnect = async (options: Options, deadline: number, dir: string): Promise<ConnectResults> => {
  const loadAverageAtStart = loadAverageNow()
  warnIfBusy("the connect suite", loadAverageAtStart)
  let app: FakeApp | undefined
  const outcomes: Array<ServerOutcome> = []
  try {
    let gatewaySetup: ConnectGatewaySetup | undefined
    if (options.servers.includes("gateway")) {
      app = await startBenchApp()
      let configFile: string | undefined
      if (!options.gatewayDefaultLimits) {
        configFile = join(dir, "gateway-connect.json")
        writeGatewayConfig(configFile, { secret: undefined, defaultLimits: false, concurrency: options.concurrency })
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
    await app?.close()
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
  return { outcomes, ratio, notes, loadAverageAtStart }
}

const printConnect = (options: Options, info: ReturnType<typeof machine>, results: ConnectResults) => {
  const topics = options.topics === 0 ? "one topic per connection (room:<n>)" : `${options.topics} topics (room:<n mod ${options.topics}>)`
  console.log("")
  console.log(
    `Connect: ${options.connections} connections per server; ${topics}. Machine: ${info.cores} cores (${info.cpuModel}), ` +
      `Node ${info.node}, ${info.platform}; load average at start ${results.loadAverageAtStart.toFixed(2)}.`
  )
  for (const outcome of results.outcomes) {
    if (isMeasurement(outcome)) console.log(`  ${serverLabels[outcome.server]}: ${outcome.what}`)
  }
  console.log("")
  console.log(formatTable(results.outcomes, results.ratio))
  console.log("")
  console.log(`Note: ${results.notes[2]}.`)
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
  log(`suites: ${options.suites.join(", ")}; overall limit ${options.timeoutMs / 1000} s`)
  const deadline = Date.now() + options.timeoutMs
  const overall = setTimeout(() => {
    log(`overall timeout of ${options.timeoutMs / 1000} s reached: stopping everything`)
    killAll()
    process.exit(124)
  }, options.timeoutMs)

  configDir = mkdtempSync(join(tmpdir(), "gateway-bench-"))
  const dir = configDir
  const secret = newSecret()
  let connect: ConnectResults | undefined
  let fanout: FanoutResults | undefined
  let push: PushResults | undefined
  let cross: Array<CrossResults> | undefined
  let harnessError: string | undefined
  let app: AppProcess | undefined
  try {
    if (options.suites.includes("connect")) {
      connect = await runConnect(options, deadline, dir)
      printConnect(options, info, connect)
    }
    const load = {
      workers: options.workers,
      concurrency: options.concurrency,
      sourceAddresses: options.sourceAddresses,
      verbose: options.verbose
    }
    const needsApp = (options.suites.includes("fanout") && options.servers.includes("gateway")) ||
      options.suites.includes("push") || options.suites.includes("cross")
    if (needsApp) app = await startAppProcess(options.verbose)
    if (options.suites.includes("fanout")) {
      const loadAverage = loadAverageNow()
      warnIfBusy("the fanout suite", loadAverage)
      fanout = await runFanout({
        servers: options.servers,
        subscribers: options.fanoutSubscribers,
        deliveriesPerSecond: options.fanoutRate,
        durationMs: options.fanoutDurationMs,
        payloadBytes: options.payloadBytes,
        load,
        server: options,
        readyTimeoutMs: options.readyTimeoutMs,
        gatewayDefaultLimits: options.gatewayDefaultLimits,
        appUrl: app?.url ?? "http://127.0.0.1:9",
        secret,
        configDir: dir
      }, deadline, loadAverage)
      console.log("")
      console.log(formatFanout(fanout))
    }
    if (options.suites.includes("push") && app !== undefined) {
      const loadAverage = loadAverageNow()
      warnIfBusy("the push suite", loadAverage)
      push = await runPush({
        roundTrips: options.pushRoundTrips,
        warmup: 200,
        block: 100,
        sequentialMaxMs: 30_000,
        clients: options.pushClients,
        warmupMs: 1_000,
        durationMs: options.pushDurationMs,
        payloadBytes: options.payloadBytes,
        workers: options.workers,
        sourceAddresses: options.sourceAddresses,
        server: options,
        readyTimeoutMs: options.readyTimeoutMs,
        gatewayDefaultLimits: options.gatewayDefaultLimits,
        app,
        secret,
        configDir: dir
      }, deadline, loadAverage)
      console.log("")
      console.log(formatPush(push))
    }
    if (options.suites.includes("cross") && app !== undefined) {
      cross = []
      for (const rate of options.crossRates) {
        const loadAverage = loadAverageNow()
        warnIfBusy("the cross suite", loadAverage)
        const results = await runCross({
          nodes: options.crossNodes,
          subscribers: options.crossSubscribers,
          broadcastsPerSecond: rate,
          durationMs: options.crossDurationMs,
          warmupMs: options.crossWarmupMs,
          payloadBytes: options.payloadBytes,
          load,
          server: options,
          readyTimeoutMs: options.readyTimeoutMs,
          gatewayDefaultLimits: options.gatewayDefaultLimits,
          appUrl: app.url,
          secret,
          configDir: dir
        }, deadline, loadAverage)
        cross.push(results)
        console.log("")
        console.log(formatCross(results))
      }
    }
  } catch (error) {
    harnessError = error instanceof Error ? error.message : String(error)
    log(`failed: ${harnessError}`)
  } finally {
    clearTimeout(overall)
    if (app !== undefined) await stop(app.process, STOP_GRACE_MS)
    removeConfigDir()
  }

  const results = {
    startedAt: startedAt.toISOString(),
    finishedAt: new Date().toISOString(),
    machine: info,
    suites: options.suites,
    ...(connect === undefined ? {} : {
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
      servers: Object.fromEntries(connect.outcomes.map((o) => [o.server, o])),
      ratios: connect.ratio ?? null,
      notes: connect.notes,
      connectLoadAverageAtStart: connect.loadAverageAtStart
    }),
    ...(fanout === undefined ? {} : { fanout }),
    ...(push === undefined ? {} : { push }),
    ...(cross === undefined ? {} : { cross })
  }
  const measuredSomething = (connect?.outcomes.some(isMeasurement) ?? false) ||
    Object.values(fanout?.servers ?? {}).some(isFanoutMeasurement) ||
    (push !== undefined && isPushMeasurement(push.outcome)) ||
    (cross?.some((run) => isCrossMeasurement(run.single) || isCrossMeasurement(run.cluster)) ?? false)
  console.log("")
  if (measuredSomething) {
    mkdirSync(dirname(options.out), { recursive: true })
    writeFileSync(options.out, `${JSON.stringify(results, null, 2)}\n`)
    console.log(`Results written to ${options.out}`)
  } else {
    console.log(`Nothing measured; ${options.out} left as it was.`)
  }

  const failed = harnessError !== undefined ||
    (connect?.outcomes.some((o) => !isMeasurement(o)) ?? false) ||
    Object.values(fanout?.servers ?? {}).some((o) => o !== undefined && !isFanoutMeasurement(o)) ||
    (push !== undefined && !isPushMeasurement(push.outcome)) ||
    (cross?.some((run) => !(isCrossMeasurement(run.single) && isCrossMeasurement(run.cluster))) ?? false)
  if (failed) return 1
  const suspect = (connect?.outcomes.some((o) =>
    isMeasurement(o) && (o.connections.failed > 0 || Object.keys(o.connections.droppedWhileIdle).length > 0)
  ) ?? false) ||
    (fanout !== undefined && fanoutSuspect(fanout)) ||
    (push !== undefined && pushSuspect(push)) ||
    (cross?.some(crossSuspect) ?? false)
  return suspect ? 3 : 0
}

process.on("exit", () => {
  killAll()
  abandonPostgres()
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
