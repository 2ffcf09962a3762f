/**
 * The message call (CONTRACT §3): a client's push forwarded to the app, and
 * the actions the app answers with.
 */
import { Schema } from "effect"

/** Events starting with `phx_` belong to the protocol: an app may never broadcast one. */
export const isAppEventName = (event: unknown): event is string =>
  typeof event === "string" && event.length > 0 && !event.startsWith("phx_")

export const AppEventName = Schema.NonEmptyString.check(
  Schema.makeFilter((event: string) => isAppEventName(event) || "events starting with phx_ are reserved")
)

/** How binary bytes travel in a JSON payload: `{binary: "<base64>"}`. */
export const binaryPayload = (bytes: Uint8Array): { readonly binary: string } => ({
  binary: Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("base64")
})

export const MessageRequest = Schema.Struct({
  app: Schema.String,
  event: Schema.String,
  /** A binary push (V2 binary frame) arrives as `{binary: "<base64>"}`. */
  payload: Schema.Unknown,
  channel: Schema.String,
  ref: Schema.NullOr(Schema.String),
  client_id: Schema.String,
  client_type: Schema.String,
  metadata: Schema.Record(Schema.String, Schema.Unknown),
  connection_id: Schema.String
})
export type MessageRequest = typeof MessageRequest.Type

export const ReplyAction = Schema.Struct({ action: Schema.Literal("reply"), data: Schema.optional(Schema.Unknown) })
export const BroadcastAction = Schema.Struct({
  action: Schema.Literal("broadcast"),
  event: AppEventName,
  data: Schema.optional(Schema.Unknown),
  topic: Schema.optional(Schema.NonEmptyString),
  exclude_sender: Schema.optional(Schema.Boolean)
})
export const NoreplyAction = Schema.Struct({ action: Schema.Literal("noreply") })
export const ErrorAction = Schema.Struct({ action: Schema.Literal("error"), reason: Schema.Unknown })

export const Action = Schema.Union([ReplyAction, BroadcastAction, NoreplyAction, ErrorAction])
export type Action = typeof Action.Type

/** What a 200 answer of the message endpoint holds: one action or an array of them. */
export const MessageActions = Schema.Union([Action, Schema.Array(Action)])
export type MessageActions = typeof MessageActions.Type

/** The body of a 200 answer of the message endpoint, as text. */
export const MessageAnswer = Schema.fromJsonString(MessageActions)
