/**
 * What this node says about itself to the admin API and the dashboard: its
 * state, load and resources now, per-app figures, and a short history.
 *
 * The history is a ring buffer of one sample every {@link SAMPLE_INTERVAL_MS}
 * covering the last 15 minutes, kept in memory on each node, so that the
 * dashboard's charts are full the moment it opens. The event loop's delay is
 * the longest of each sampling period (`observability/EventLoop.ts`).
 *
 * Per app: connections and joined channels counted here; the traffic figures
 * read from the metric catalogue (`observability/Metrics.ts`), as cumulative
 * counts since the node started (`joins`, `pushes`, `broadcasts`,
 * `deliveries`, `rate_limited`, `push_refusals`, and per call kind
 * `<kind>_calls`, `<kind>_errors`), the breaker of each call kind
 * (`<kind>_breaker`: 0 closed, 1 open, 2 half-open) and the app-call latency
 * percentiles of the last sampling period (`<kind>_p50_ms`, `<kind>_p99_ms`).
 * Readers make rates from two cumulative counts.
 */
import { Context, Effect, Layer, Metric, Schedule } from "effect"
import { ClusterMetrics, Sharding } from "effect/cluster"
import { AppRegistry } from "../apps/AppRegistry.ts"
import type { AppFiguresMessage, NodeSampleMessage, NodeStatusMessage } from "../cluster/messages.ts"
import { GatewayConfig } from "../config/GatewayConfig.ts"
import { Lifecycle } from "../server/Lifecycle.ts"
import { GATEWAY_VERSION } from "../server/version.ts"
import { EventLoop } from "../observability/EventLoop.ts"
import { catalogue } from "../observability/Metrics.ts"
import { Sessions } from "../socket/Sessions.ts"
import { SupervisedChild } from "../supervision/children.ts"
import { supervised } from "../supervision/Supervisor.ts"

export interface NodeStatusShape {
  /** This node now; with its history when asked. */
  readonly current: (withHistory: boolean) => Effect.Effect<NodeStatusMessage>
}

/** Sampling period of the history (and of the event-loop delay figure). */
export const SAMPLE_INTERVAL_MS = 5_000
const SAMPLE_INTERVAL_SECONDS = SAMPLE_INTERVAL_MS / 1000
const HISTORY_MS = 15 * 60_000
const HISTORY_SAMPLES = HISTORY_MS / SAMPLE_INTERVAL_MS

/** A fixed number of the latest samples, oldest overwritten first. */
class Ring<A> {
  private readonly capacity: number
  private readonly items: Array<A | undefined>
  private next = 0
  private size = 0
  constructor(capacity: number) {
    this.capacity = capacity
    this.items = new Array(capacity)
  }
  push(item: A): void {
    this.items[this.next] = item
    this.next = (this.next + 1) % this.capacity
    this.size = Math.min(this.size + 1, this.capacity)
  }
  /** Oldest first. */
  toArray(): Array<A> {
    const start = (this.next - this.size + this.capacity) % this.capacity
    return Array.from({ length: this.size }, (_, i) => this.items[(start + i) % this.capacity]!)
  }
}

const round = (value: number, digits: number) => Number(value.toFixed(digits))

/** The cumulative counters shown per app, by the name the figures carry. */
const COUNTERS: ReadonlyArray<readonly [figure: string, metric: string]> = [
  ["joins", catalogue.joins.id],
  ["pushes", catalogue.messagesIn.id],
  ["broadcasts", catalogue.broadcasts.id],
  ["deliveries", catalogue.deliveries.id],
  ["rate_limited", catalogue.rateLimited.id],
  ["push_refusals", catalogue.pushRefusals.id]
]
const COUNTER_FIGURES = new Map(COUNTERS.map(([figure, metric]) => [metric, figure]))

/** Cumulative counts per latency bucket (the last entry: every call), per app and call kind. */
type Latencies = Map<string, Map<string, Array<number>>>

/**
 * The duration (in ms) under which a share `q` of the calls of a period
 * finished, interpolated inside its bucket as Prometheus' `histogram_quantile`
 * does; the largest bound when the calls were slower than every bound.
 */
const percentileMs = (
  boundaries: ReadonlyArray<number>,
  now: ReadonlyArray<number>,
  before: ReadonlyArray<number> | undefined,
  q: number
) => {
  const inPeriod = (i: number) => now[i]! - (before?.[i] ?? 0)
  const total = inPeriod(now.length - 1)
  if (total <= 0) return undefined
  const rank = q * total
  for (let i = 0; i < boundaries.length; i++) {
    const upTo = inPeriod(i)
    if (upTo >= rank) {
      const below = i === 0 ? 0 : inPeriod(i - 1)
      const lower = i === 0 ? 0 : boundaries[i - 1]!
      const share = upTo === below ? 1 : (rank - below) / (upTo - below)
      return round((lower + (boundaries[i]! - lower) * share) * 1000, 1)
    }
  }
  return boundaries[boundaries.length - 1]! * 1000
}

/**
 * Every app's traffic figures from the metric registry, and the latency
 * buckets (kept to make the next period's percentiles).
 */
const readMetrics = (snapshot: ReadonlyArray<Metric.Metric.Snapshot>) => {
  const figures = new Map<string, Record<string, number>>()
  const latencies: Latencies = new Map()
  let boundaries: ReadonlyArray<number> = []
  const of = (app: string) => {
    let entry = figures.get(app)
    if (entry === undefined) figures.set(app, entry = {})
    return entry
  }
  const add = (app: string, figure: string, value: number) => {
    const entry = of(app)
    entry[figure] = (entry[figure] ?? 0) + value
  }
  for (const metric of snapshot) {
    const app = metric.attributes?.["app"]
    if (app === undefined) continue
    const counter = COUNTER_FIGURES.get(metric.id)
    if (counter !== undefined && metric.type === "Counter") {
      add(app, counter, Number(metric.state.count))
    } else if (metric.id === catalogue.appCallDuration.id && metric.type === "Histogram") {
      const call = metric.attributes?.["call"] ?? "other"
      add(app, `${call}_calls`, metric.state.count)
      if (metric.attributes?.["outcome"] !== "ok") add(app, `${call}_errors`, metric.state.count)
      boundaries = metric.state.buckets.map(([boundary]) => boundary)
      let byCall = latencies.get(app)
      if (byCall === undefined) latencies.set(app, byCall = new Map())
      const counts = [...metric.state.buckets.map(([, count]) => count), metric.state.count]
      const sum = byCall.get(call)
      byCall.set(call, sum === undefined ? counts : sum.map((value, i) => value + counts[i]!))
    } else if (metric.id === catalogue.breakerState.id && metric.type === "Gauge") {
      of(app)[`${metric.attributes?.["call"] ?? "other"}_breaker`] = Number(metric.state.value)
    }
  }
  return { figures, latencies, boundaries }
}

export class NodeStatus extends Context.Service<NodeStatus, NodeStatusShape>()("realtime-gateway/admin/NodeStatus") {
  static readonly layer = Layer.effect(
    NodeStatus,
    Effect.gen(function*() {
      const config = yield* GatewayConfig
      const lifecycle = yield* Lifecycle
      const registry = yield* AppRegistry
      const sessions = yield* Sessions
      const sharding = yield* Sharding.Sharding
      const startedAt = Date.now()

      const eventLoop = yield* EventLoop
      let lagMs = 0
      const context = yield* Effect.context<never>()
      // the latency buckets at the last sample, and the percentiles of the period before it
      let lastLatencies: Latencies = new Map()
      let periodPercentiles = new Map<string, Record<string, number>>()

      const readNow = () => readMetrics(Metric.snapshotUnsafe(context))

      /** Connections and joined channels, in all and per app, with each app's traffic figures. */
      const load = (metrics: ReturnType<typeof readMetrics>) => {
        const apps = new Map<string, AppFiguresMessage>()
        for (const app of registry.all()) {
          const id = app.config.id
          apps.set(id, { ...metrics.figures.get(id), ...periodPercentiles.get(id), connections: 0, channels: 0 })
        }
        let connections = 0
        let channels = 0
        for (const session of sessions.all()) {
          connections++
          channels += session.joins.size
          const figures = apps.get(session.app.config.id) as Record<string, number> | undefined
          if (figures !== undefined) {
            figures["connections"]! += 1
            figures["channels"]! += session.joins.size
          }
        }
        return { connections, channels, apps: Object.fromEntries(apps) }
      }

      const percentilesSince = (metrics: ReturnType<typeof readMetrics>) => {
        const byApp = new Map<string, Record<string, number>>()
        for (const [app, byCall] of metrics.latencies) {
          const entry: Record<string, number> = {}
          for (const [call, counts] of byCall) {
            const before = lastLatencies.get(app)?.get(call)
            const p50 = percentileMs(metrics.boundaries, counts, before, 0.5)
            const p99 = percentileMs(metrics.boundaries, counts, before, 0.99)
            if (p50 !== undefined) entry[`${call}_p50_ms`] = p50
            if (p99 !== undefined) entry[`${call}_p99_ms`] = p99
          }
          byApp.set(app, entry)
        }
        lastLatencies = metrics.latencies
        return byApp
      }

      const history = new Ring<NodeSampleMessage>(HISTORY_SAMPLES)
      const takeSample = Effect.sync(() => {
        lagMs = round(eventLoop.maxLagOverMs(SAMPLE_INTERVAL_SECONDS), 1)
        const metrics = readNow()
        periodPercentiles = percentilesSince(metrics)
        const { apps, channels, connections } = load(metrics)
        history.push({
          at: Date.now(),
          connections,
          channels,
          event_loop_lag_ms: lagMs,
          rss_bytes: process.memoryUsage.rss(),
          apps
        })
      })
      const sampleLoop = takeSample.pipe(Effect.repeat(Schedule.spaced(SAMPLE_INTERVAL_MS)))
      yield* sampleLoop.pipe(supervised(SupervisedChild.nodeStatusSample))

      const current = (withHistory: boolean) =>
        Effect.gen(function*() {
          const shards = yield* Metric.value(ClusterMetrics.shards)
          const entities = yield* sharding.activeEntityCount
          const memory = process.memoryUsage()
          const { apps, channels, connections } = load(readNow())
          const status: NodeStatusMessage = {
            node: config.nodeName,
            version: GATEWAY_VERSION,
            started_at: new Date(startedAt).toISOString(),
            uptime_s: Math.floor((Date.now() - startedAt) / 1000),
            state: lifecycle.draining() ? "draining" : registry.unready().length === 0 ? "ready" : "not_ready",
            connections,
            channels,
            shards: Number(shards.value),
            entities,
            event_loop_lag_ms: lagMs,
            memory: { rss_bytes: memory.rss, heap_used_bytes: memory.heapUsed, heap_total_bytes: memory.heapTotal },
            apps
          }
          return withHistory ? { ...status, history: history.toArray() } : status
        })

      return NodeStatus.of({ current })
    })
  )
}
