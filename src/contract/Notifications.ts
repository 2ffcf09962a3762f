/** The notify call (CONTRACT §3): fire-and-forget news of connections and joins. */
import { Schema } from "effect"

export const NotifyEvent = Schema.Literals(["connection:established", "connection:closed", "channel:joined", "channel:left"])
export type NotifyEvent = typeof NotifyEvent.Type

export const Notification = Schema.Struct({
  app: Schema.String,
  event: NotifyEvent,
  /** The topic, for `channel:*` events; `null` for `connection:*`. */
  channel: Schema.NullOr(Schema.String),
  client_id: Schema.String,
  client_type: Schema.String,
  metadata: Schema.Record(Schema.String, Schema.Unknown),
  connection_id: Schema.String,
  node: Schema.String,
  /** ISO 8601 time of the event on the node. */
  at: Schema.String
})
export type Notification = typeof Notification.Type
