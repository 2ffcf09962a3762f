/** The auth call (CONTRACT §3): what the gateway asks an app for each connection, and the app's 200 answer. */
import { Schema } from "effect"

export const AuthRequest = Schema.Struct({
  token: Schema.String,
  app: Schema.String,
  client_type: Schema.String,
  connection_type: Schema.Literal("websocket"),
  remote_ip: Schema.String,
  user_agent: Schema.String
})
export type AuthRequest = typeof AuthRequest.Type

/** What the app's auth endpoint answers with status 200 (401/403 refuse the connection). */
export const AuthAnswer = Schema.Struct({
  client_id: Schema.NonEmptyString,
  client_type: Schema.optional(Schema.String),
  metadata: Schema.optional(Schema.Record(Schema.String, Schema.Unknown)),
  permissions: Schema.optional(Schema.Array(Schema.String))
})
export type AuthAnswer = typeof AuthAnswer.Type
