/**
 * The data that crosses between nodes in entity calls, as Schemas: a mismatch
 * passes in one process and fails only across processes, so every such value
 * is declared here once.
 */
import { Schema } from "effect"
import { RateLimit } from "../contract/SchemaDocument.ts"
import type { RateLimits } from "../ratelimit/RateLimiter.ts"

/** One live connection, as the server API lists it (CONTRACT §4). */
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
