/**
 * The benchmark's figures: what one server's measurement of the connect suite
 * yields, how the gateway compares with the bare `ws` server (ratios against
 * the targets), and the printed tables (the fan-out and push suites build their
 * own rows, in `fanout.ts` and `push.ts`, and print them with `renderTable`).
 */
import type { CloseResult, LoadResult, ServerStats } from "./messages.ts"

export type ServerName = "bare" | "gateway"

export const serverLabels: Readonly<Record<ServerName, string>> = {
  bare: "bare ws",
  gateway: "gateway"
}

/** Targets of the gateway relative to the bare server. */
export const targets = {
  /** gateway RSS per connection / bare RSS per connection, at most. */
  memoryRatioMax: 1.5,
  /** gateway connect+join rate / bare rate, at least. */
  rateRatioMin: 0.5
} as const

export interface Percentiles {
  readonly p50: number
  readonly p90: number
  readonly p99: number
  readonly max: number
}

export interface ServerMeasurement {
  readonly server: ServerName
  readonly what: string
  readonly connections: {
    readonly requested: number
    readonly joined: number
    readonly failed: number
    readonly failures: Readonly<Record<string, number>>
    /** Joined connections closed by the server before the end of the measurement. */
    readonly droppedWhileIdle: Readonly<Record<string, number>>
  }
  readonly connectJoin: {
    /** First attempt to last join ok, across all load generators. */
    readonly durationMs: number
    /** Joined connections per second over `durationMs`. */
    readonly ratePerSecond: number
    /** One connection's connect (+ auth) + join time. */
    readonly latencyMs: Percentiles
  }
  readonly memory: {
    readonly gcForced: boolean
    readonly rssBeforeBytes: number
    readonly rssAfterBytes: number
    /** (RSS after − RSS before) / joined. */
    readonly rssPerConnectionBytes: number
    readonly heapUsedBeforeBytes: number
    readonly heapUsedAfterBytes: number
    /** (heap used after − before) / joined: the JavaScript objects' share. */
    readonly heapPerConnectionBytes: number
    /** Peak RSS of the server process during the whole measurement. */
    readonly peakRssBytes: number
  }
  readonly cpu: {
    /** Server process CPU time (user + system) from before the first connect to the last join. */
    readonly serverConnectPhaseMs: number
    readonly serverPerConnectionUs: number
    /** The runner process (fake app, IPC) over the same phase. */
    readonly runnerConnectPhaseMs: number
  }
  /** Calls the fake app received during the connect phase (gateway only). */
  readonly appCalls?: Readonly<Record<string, number>>
  /** The server's own readings: baseline, end of the connect phase (no GC), memory reading. */
  readonly serverStats: {
    readonly before: ServerStats
    readonly afterConnect: ServerStats
    readonly after: ServerStats
  }
}

export interface ServerFailure {
  readonly server: ServerName
  readonly error: string
}

export type ServerOutcome = ServerMeasurement | ServerFailure

export const isMeasurement = (outcome: ServerOutcome | undefined): outcome is ServerMeasurement =>
  outcome !== undefined && "connectJoin" in outcome

export interface Ratios {
  /** gateway / bare RSS per connection. */
  readonly memoryPerConnection: number
  /** gateway / bare connect+join rate. */
  readonly rate: number
  readonly memoryTargetMet: boolean
  readonly rateTargetMet: boolean
}

export const percentiles = (values: ReadonlyArray<number>): Percentiles => {
  if (values.length === 0) return { p50: 0, p90: 0, p99: 0, max: 0 }
  const sorted = [...values].sort((a, b) => a - b)
  const at = (q: number) => sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)]!
  return { p50: at(0.5), p90: at(0.9), p99: at(0.99), max: sorted[sorted.length - 1]! }
}

export const sumCounts = (records: ReadonlyArray<Readonly<Record<string, number>>>): Record<string, number> => {
  const total: Record<string, number> = {}
  for (const record of records) {
    for (const [key, count] of Object.entries(record)) total[key] = (total[key] ?? 0) + count
  }
  return total
}

export interface MeasurementInput {
  readonly server: ServerName
  readonly what: string
  readonly requested: number
  readonly loads: ReadonlyArray<LoadResult>
  readonly closes: ReadonlyArray<CloseResult>
  readonly before: ServerStats
  readonly afterConnect: ServerStats
  readonly after: ServerStats
  readonly runnerCpuUs: number
  readonly appCalls?: Readonly<Record<string, number>>
}

export const measure = (input: MeasurementInput): ServerMeasurement => {
  const { after, afterConnect, before, loads } = input
  const joined = loads.reduce((n, load) => n + load.joined, 0)
  const failures = sumCounts(loads.map((load) => load.failures))
  const failed = Object.values(failures).reduce((n, count) => n + count, 0)
  const first = Math.min(...loads.map((load) => load.firstAttemptAt))
  const last = Math.max(...loads.map((load) => load.lastJoinAt))
  const durationMs = Math.max(0, last - first)
  const perConnection = (bytes: number) => (joined === 0 ? 0 : bytes / joined)
  const serverCpuUs = afterConnect.cpuUserUs + afterConnect.cpuSystemUs - before.cpuUserUs - before.cpuSystemUs
  return {
    server: input.server,
    what: input.what,
    connections: {
      requested: input.requested,
      joined,
      failed,
      failures,
      droppedWhileIdle: sumCounts(input.closes.map((close) => close.droppedWhileIdle))
    },
    connectJoin: {
      durationMs,
      ratePerSecond: durationMs === 0 ? 0 : joined / (durationMs / 1000),
      latencyMs: percentiles(loads.flatMap((load) => load.latenciesMs))
    },
    memory: {
      gcForced: before.gcForced && after.gcForced,
      rssBeforeBytes: before.rssBytes,
      rssAfterBytes: after.rssBytes,
      rssPerConnectionBytes: perConnection(after.rssBytes - before.rssBytes),
      heapUsedBeforeBytes: before.heapUsedBytes,
      heapUsedAfterBytes: after.heapUsedBytes,
      heapPerConnectionBytes: perConnection(after.heapUsedBytes - before.heapUsedBytes),
      peakRssBytes: after.maxRssBytes
    },
    cpu: {
      serverConnectPhaseMs: serverCpuUs / 1000,
      serverPerConnectionUs: joined === 0 ? 0 : serverCpuUs / joined,
      runnerConnectPhaseMs: input.runnerCpuUs / 1000
    },
    ...(input.appCalls === undefined ? {} : { appCalls: input.appCalls }),
    serverStats: { before, afterConnect, after }
  }
}

export const ratios = (bare: ServerMeasurement, gateway: ServerMeasurement): Ratios | undefined => {
  const bareMemory = bare.memory.rssPerConnectionBytes
  const bareRate = bare.connectJoin.ratePerSecond
  if (bareMemory <= 0 || bareRate <= 0 || gateway.connections.joined === 0) return undefined
  const memoryPerConnection = gateway.memory.rssPerConnectionBytes / bareMemory
  const rate = gateway.connectJoin.ratePerSecond / bareRate
  return {
    memoryPerConnection,
    rate,
    memoryTargetMet: memoryPerConnection <= targets.memoryRatioMax,
    rateTargetMet: rate >= targets.rateRatioMin
  }
}

// ---------------------------------------------------------------------------
// Text output
// ---------------------------------------------------------------------------

const kib = (bytes: number) => (bytes / 1024).toFixed(2)
const mib = (bytes: number) => (bytes / (1024 * 1024)).toFixed(1)
export const fixed = (value: number, digits: number) => value.toFixed(digits)

/**
 * A text table: the first column is the label (left-aligned), the next
 * `valueColumns` are right-aligned values, anything after is a left-aligned
 * note. A row with only a label is a section heading.
 */
export const renderTable = (rows: ReadonlyArray<ReadonlyArray<string>>, valueColumns: number): string => {
  const widths: Array<number> = []
  for (const row of rows) {
    if (row.length <= 1) continue
    row.forEach((cell, i) => {
      if (i <= valueColumns) widths[i] = Math.max(widths[i] ?? 0, cell.length)
    })
  }
  return rows.map((row) =>
    row.length <= 1
      ? (row[0] ?? "")
      : row.map((cell, i) => (i === 0 ? cell.padEnd(widths[0]!) : i <= valueColumns ? cell.padStart(widths[i]!) : cell))
        .join("   ").trimEnd()
  ).join("\n")
}

/** "3× refused, 1× timeout", most frequent first. */
export const formatCounts = (counts: Readonly<Record<string, number>>): string =>
  Object.entries(counts).sort((a, b) => b[1] - a[1]).map(([key, n]) => `${n}× ${key}`).join(", ")

/** A process's CPU time (user + system) in a stats reading. */
export const cpuUs = (stats: ServerStats) => stats.cpuUserUs + stats.cpuSystemUs

export const formatTable = (outcomes: ReadonlyArray<ServerOutcome>, ratio: Ratios | undefined): string => {
  const measured = outcomes.filter(isMeasurement)
  const rows: Array<[string, ...Array<string>]> = []
  const columns = measured.map((m) => serverLabels[m.server])
  const hasBoth = measured.length === 2 && ratio !== undefined
  const row = (label: string, cell: (m: ServerMeasurement) => string, ratioCell = "") =>
    rows.push([label, ...measured.map(cell), ...(hasBoth ? [ratioCell] : [])])

  row("joined / requested", (m) => `${m.connections.joined}/${m.connections.requested}`)
  row(
    "connect+join rate (conn/s)",
    (m) => fixed(m.connectJoin.ratePerSecond, 0),
    ratio === undefined ? "" : `${fixed(ratio.rate, 2)}× (target ≥ ${targets.rateRatioMin}×: ${ratio.rateTargetMet ? "met" : "NOT met"})`
  )
  row("  duration (s)", (m) => fixed(m.connectJoin.durationMs / 1000, 2))
  row("  latency p50/p99/max (ms)", (m) => {
    const l = m.connectJoin.latencyMs
    return `${fixed(l.p50, 1)}/${fixed(l.p99, 1)}/${fixed(l.max, 0)}`
  })
  row(
    "RSS per connection (KiB)",
    (m) => kib(m.memory.rssPerConnectionBytes),
    ratio === undefined
      ? ""
      : `${fixed(ratio.memoryPerConnection, 2)}× (target ≤ ${targets.memoryRatioMax}×: ${ratio.memoryTargetMet ? "met" : "NOT met"})`
  )
  row("  JS heap per connection (KiB)", (m) => kib(m.memory.heapPerConnectionBytes))
  row("  RSS before → after (MiB)", (m) => `${mib(m.memory.rssBeforeBytes)} → ${mib(m.memory.rssAfterBytes)}`)
  row("  peak RSS (MiB)", (m) => mib(m.memory.peakRssBytes))
  row("server CPU per connection (µs)", (m) => fixed(m.cpu.serverPerConnectionUs, 0))
  row("runner CPU, connect phase (ms)", (m) => fixed(m.cpu.runnerConnectPhaseMs, 0))

  const header: [string, ...Array<string>] = ["", ...columns, ...(hasBoth ? ["gateway / bare"] : [])]
  const all = [header, ...rows]
  const widths = header.map((_, i) => Math.max(...all.map((r) => (r[i] ?? "").length)))
  const line = (r: ReadonlyArray<string>) =>
    r.map((cell, i) => (i === 0 ? cell.padEnd(widths[i]!) : cell.padStart(i <= columns.length ? widths[i]! : 0)))
      .join("   ").trimEnd()
  const out = measured.length === 0 ? [] : [line(header), ...rows.map(line)]

  for (const m of measured) {
    if (m.connections.failed > 0) out.push(`${serverLabels[m.server]} failures: ${formatCounts(m.connections.failures)}`)
    if (Object.keys(m.connections.droppedWhileIdle).length > 0) {
      out.push(`${serverLabels[m.server]} dropped while idle: ${formatCounts(m.connections.droppedWhileIdle)}`)
    }
    if (!m.memory.gcForced) out.push(`${serverLabels[m.server]}: no forced GC (run without --expose-gc?); RSS includes garbage`)
    if (m.appCalls !== undefined) out.push(`${serverLabels[m.server]} app calls during the connect phase: ${formatCounts(m.appCalls)}`)
  }
  for (const outcome of outcomes) {
    if (!isMeasurement(outcome)) out.push(`${serverLabels[outcome.server]}: NOT MEASURED: ${outcome.error}`)
  }
  return out.join("\n")
}
