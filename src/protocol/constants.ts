/**
 * Every string and number of the Phoenix Channels wire protocol that the
 * gateway speaks or expects, kept in one place so that the rest of the code
 * never spells a protocol literal itself.
 */

/** Channel lifecycle and control events, as named by the phoenix client. */
export const Event = {
  join: "phx_join",
  leave: "phx_leave",
  reply: "phx_reply",
  error: "phx_error",
  close: "phx_close",
  /** Sent by the client on the {@link PHOENIX_TOPIC} topic; answered with an `ok` reply. */
  heartbeat: "heartbeat",
  /** Full presence snapshot pushed to a channel right after it joins. */
  presenceState: "presence_state",
  /** Incremental presence change (`{joins, leaves}`) pushed to a channel. */
  presenceDiff: "presence_diff"
} as const
export type Event = (typeof Event)[keyof typeof Event]

/** The socket-level topic carrying heartbeats; it is never joined. */
export const PHOENIX_TOPIC = "phoenix"

/** Reply statuses, the `status` of a `phx_reply` payload. */
export const Status = {
  ok: "ok",
  error: "error"
} as const
export type Status = (typeof Status)[keyof typeof Status]

/** Protocol versions, as sent by the client in the `vsn` query parameter. */
export const Vsn = {
  v1: "1.0.0",
  v2: "2.0.0"
} as const
export type Vsn = (typeof Vsn)[keyof typeof Vsn]

/** WebSocket close codes (RFC 6455 section 7.4.1) the gateway closes with. */
export const CloseCode = {
  normal: 1000,
  /** An undecodable frame: the client speaks something other than the negotiated protocol. */
  invalidPayload: 1007,
  policyViolation: 1008,
  messageTooBig: 1009,
  internalError: 1011,
  /** Graceful shutdown: tells the client to reconnect, preferably elsewhere. */
  serviceRestart: 1012
} as const
export type CloseCode = (typeof CloseCode)[keyof typeof CloseCode]

/**
 * Error reasons in `{reason}` reply payloads, worded as Phoenix words them so
 * that clients written against Phoenix can match on them.
 */
export const ErrorReason = {
  unmatchedTopic: "unmatched topic",
  tooManyChannels: "too many channels joined"
} as const
export type ErrorReason = (typeof ErrorReason)[keyof typeof ErrorReason]

/** First byte of a V2 binary frame. */
export const BinaryKind = {
  /** client to server push; server to client push carrying a join_ref (different header, see Serializer) */
  push: 0,
  /** server to client reply */
  reply: 1,
  /** server to client broadcast, without join_ref */
  broadcast: 2,
  /**
   * client to server "user broadcast push" of Supabase's realtime-js (its
   * default for `channel.send({type: "broadcast", ...})`): read as a push of
   * event {@link USER_BROADCAST_EVENT}
   */
  userBroadcastPush: 3
} as const
export type BinaryKind = (typeof BinaryKind)[keyof typeof BinaryKind]

/** Header fields of V2 binary frames carry their length in one byte. */
export const MAX_BINARY_FIELD_BYTES = 255

/** The event a {@link BinaryKind.userBroadcastPush} frame stands for, as realtime-js sends it in text frames. */
export const USER_BROADCAST_EVENT = "broadcast"

/** How the payload of a {@link BinaryKind.userBroadcastPush} frame is encoded (its header's last byte). */
export const UserPayloadEncoding = {
  binary: 0,
  json: 1
} as const
