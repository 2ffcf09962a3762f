/**
 * The data that crosses between nodes (entity calls, node links), as Schemas:
 * a mismatch passes in one process and fails only across processes, so every
 * such value is declared once, here or, when an app sees it too, in
 * `src/contract`.
 */
import { Schema } from "effect"
import { RateLimit } from "../contract/SchemaDocument.ts"
import type { RateLimits } from "../ratelimit/RateLimiter.ts"

/** One live connection as the server API lists it, and a topic's presences (CONTRACT §4, §6). */
export { ConnectionInfo, PresenceState } from "../contract/ServerApi.ts"

/**
 * One presence of a client on a topic: `key` is the client id, `ref` the
 * presence's unique `phx_ref`, and `meta` what Phoenix's `Presence` client
 * receives (`{phx_ref, client_type, online_at, ...metadata}`).
 */
export const PresenceEntry = Schema.Struct({
  key: Schema.String,
  ref: Schema.String,
  meta: Schema.Record(Schema.String, Schema.Unknown)
})
export type PresenceEntry = typeof PresenceEntry.Type

/** A broadcast on its way to a node's subscribers. */
export const BroadcastMessage = Schema.Struct({
  /** Unique per broadcast, so that a delivery repeated after a cluster retry is dropped. */
  id: Schema.String,
  app: Schema.String,
  topic: Schema.String,
  event: Schema.String,
  payload: Schema.Unknown,
  /** The pushing connection, when the app asked not to echo the broadcast to it. */
  excludeConnectionId: Schema.optional(Schema.String)
})
export type BroadcastMessage = typeof BroadcastMessage.Type

/** An app's push limits as they travel to a Client entity (the schema's `rateLimits`, compiled). */
export const RateLimitsMessage = Schema.Struct({
  default: Schema.optional(RateLimit),
  byEvent: Schema.Array(Schema.Tuple([Schema.String, RateLimit]))
})
export type RateLimitsMessage = typeof RateLimitsMessage.Type

export const toMessage = (limits: RateLimits): RateLimitsMessage => ({ default: limits.default, byEvent: [...limits.byEvent] })
export const fromMessage = (limits: RateLimitsMessage): RateLimits => ({
  default: limits.default,
  byEvent: new Map(limits.byEvent)
})

/** A rate-limit decision, as `RateLimiter` makes it. */
export const DecisionMessage = Schema.Union([
  Schema.Struct({ allowed: Schema.Literal(true) }),
  Schema.Struct({ allowed: Schema.Literal(false), retryAfterMs: Schema.Number })
])

/** The tokens left in a client's push buckets on one node (see `RateLimiter.clientTokens`). */
export const ClientTokensMessage = Schema.Struct({
  default: Schema.optional(Schema.Number),
  byEvent: Schema.Array(Schema.Tuple([Schema.String, Schema.Number]))
})

/**
 * One app's figures on one node: `connections` now, and cumulative counters
 * and latency percentiles by name (what the dashboard charts; see
 * `admin/NodeStatus.ts`).
 */
export const AppFiguresMessage = Schema.Record(Schema.String, Schema.Number)
export type AppFiguresMessage = typeof AppFiguresMessage.Type

/** A node's figures at one moment, as its history keeps them. */
export const NodeSampleMessage = Schema.Struct({
  /** Unix milliseconds. */
  at: Schema.Number,
  connections: Schema.Number,
  channels: Schema.Number,
  event_loop_lag_ms: Schema.Number,
  rss_bytes: Schema.Number,
  apps: Schema.Record(Schema.String, AppFiguresMessage)
})
export type NodeSampleMessage = typeof NodeSampleMessage.Type

/** What a node says about itself to the admin API (`GET /admin/cluster`). */
export const NodeStatusMessage = Schema.Struct({
  node: Schema.String,
  version: Schema.String,
  started_at: Schema.String,
  uptime_s: Schema.Number,
  /** `ready` once every configured app has a schema; `draining` after SIGTERM. */
  state: Schema.Literals(["ready", "not_ready", "draining"]),
  connections: Schema.Number,
  /** Channels joined by this node's connections. */
  channels: Schema.Number,
  shards: Schema.Number,
  entities: Schema.Number,
  /** The event loop's longest delay over the last sampling period (`observability/EventLoop.ts`). */
  event_loop_lag_ms: Schema.Number,
  memory: Schema.Struct({ rss_bytes: Schema.Number, heap_used_bytes: Schema.Number, heap_total_bytes: Schema.Number }),
  apps: Schema.Record(Schema.String, AppFiguresMessage),
  /** The last 15 minutes, oldest first; only when asked for. */
  history: Schema.optional(Schema.Array(NodeSampleMessage))
})
export type NodeStatusMessage = typeof NodeStatusMessage.Type
