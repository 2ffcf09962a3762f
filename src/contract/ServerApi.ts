/** The server API (CONTRACT §4): what an app calls on the gateway, bodies and answers. */
import { Schema } from "effect"
import { AppEventName } from "./Messages.ts"
import { Problem } from "./Problems.ts"

export const BroadcastRequest = Schema.Struct({
  topic: Schema.NonEmptyString,
  event: AppEventName,
  payload: Schema.optional(Schema.Unknown)
})
export type BroadcastRequest = typeof BroadcastRequest.Type

/** `POST /api/apps/:app/broadcast`: one broadcast or an array of them, delivered in order. */
export const BroadcastBody = Schema.Union([BroadcastRequest, Schema.Array(BroadcastRequest)])

/** 202 */
export const BroadcastAnswer = Schema.Struct({ accepted: Schema.Int })

/** `DELETE /api/apps/:app/clients/:client_id`: how many connections were closed. */
export const DisconnectAnswer = Schema.Struct({ client_id: Schema.String, disconnected: Schema.Int })

/** One live connection. */
export const ConnectionInfo = Schema.Struct({
  connection_id: Schema.String,
  client_id: Schema.String,
  client_type: Schema.String,
  metadata: Schema.Record(Schema.String, Schema.Unknown),
  node: Schema.String,
  connected_at: Schema.String,
  last_ping: Schema.String,
  topics: Schema.Array(Schema.String)
})
export type ConnectionInfo = typeof ConnectionInfo.Type

/** One page of `GET /api/apps/:app/connections`; `next_cursor` (null on the last page) asks for the next one with `?cursor=`. */
export const ConnectionsAnswer = Schema.Struct({
  connections: Schema.Array(ConnectionInfo),
  next_cursor: Schema.NullOr(Schema.String)
})

/**
 * Phoenix's presence state: client id → its metas, one per connection that
 * joined; each meta is `{phx_ref, client_type, online_at, ...metadata}`.
 */
export const PresenceState = Schema.Record(Schema.String, Schema.Struct({ metas: Schema.Array(Schema.Unknown) }))
export type PresenceState = typeof PresenceState.Type

/** `GET /api/apps/:app/topics/:topic/presence` */
export const PresenceAnswer = Schema.Struct({ topic: Schema.String, presences: PresenceState })

/** `POST /api/apps/:app/schema/refresh`, 200: the version now in force. */
export const SchemaRefreshAnswer = Schema.Struct({ version: Schema.String })

/** Every refusal: 400 `invalid_json` / `invalid_body` (with `errors`), 401, 404, 502, 503. */
export const ApiError = Schema.Struct({
  reason: Schema.String,
  errors: Schema.optional(Schema.Array(Problem))
})
export type ApiError = typeof ApiError.Type
