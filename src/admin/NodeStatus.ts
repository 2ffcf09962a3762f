/**
 * What this node says about itself to the admin API and the dashboard: its
 * state, load and resources now, per-app figures, and a short history.
 *
 * The history is a ring buffer of one sample every {@link SAMPLE_INTERVAL_MS}
 * covering the last 15 minutes, kept in memory on each node, so that the
 * dashboard's charts are full the moment it opens. The event loop's delay is
 * measured by Node's own histogram (no timer of ours) and read as its 99th
 * percentile over each sampling period.
 */
import { monitorEventLoopDelay } from "node:perf_hooks"
import { Context, Effect, Layer, Metric, Schedule } from "effect"
import { ClusterMetrics, Sharding } from "effect/cluster"
import { AppRegistry } from "../apps/AppRegistry.ts"
import type { AppFiguresMessage, NodeSampleMessage, NodeStatusMessage } from "../cluster/messages.ts"
import { GatewayConfig } from "../config/GatewayConfig.ts"
import { Lifecycle } from "../server/Lifecycle.ts"
import { GATEWAY_VERSION } from "../server/version.ts"
import { Sessions } from "../socket/Sessions.ts"

export interface NodeStatusShape {
  /** This node now; with its history when asked. */
  readonly current: (withHistory: boolean) => Effect.Effect<NodeStatusMessage>
}

/** Sampling period of the history (and of the event-loop delay figure). */
export const SAMPLE_INTERVAL_MS = 5_000
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

      const delay = monitorEventLoopDelay({ resolution: 10 })
      delay.enable()
      yield* Effect.addFinalizer(() => Effect.sync(() => delay.disable()))
      let lagMs = 0

      /** Connections and joined channels, in all and per app. */
      const load = () => {
        const apps = new Map<string, AppFiguresMessage>()
        for (const app of registry.all()) apps.set(app.config.id, { connections: 0, channels: 0 })
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

      const history = new Ring<NodeSampleMessage>(HISTORY_SAMPLES)
      const takeSample = Effect.sync(() => {
        lagMs = delay.count > 0 ? round(delay.percentile(99) / 1e6, 1) : lagMs
        delay.reset()
        const { apps, channels, connections } = load()
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
      yield* Effect.forkScoped(sampleLoop)

      const current = (withHistory: boolean) =>
        Effect.gen(function*() {
          const shards = yield* Metric.value(ClusterMetrics.shards)
          const entities = yield* sharding.activeEntityCount
          const memory = process.memoryUsage()
          const { apps, channels, connections } = load()
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
