/**
 * The contract's wire reasons: what a client is told when the gateway refuses
 * something, and with which HTTP status an upgrade is refused. Every refusal in
 * the code names one of these; nothing else spells a reason string.
 */
import { ErrorReason } from "./constants.ts"

/** Refusals at the HTTP upgrade, answered with a JSON body `{"reason": ...}`. */
export const UpgradeRejection = {
  notFound: { status: 404, reason: "not_found" },
  missingParams: { status: 400, reason: "missing_params" },
  unsupportedVsn: { status: 400, reason: "unsupported_vsn" },
  unknownApp: { status: 404, reason: "unknown_app" },
  originNotAllowed: { status: 403, reason: "origin_not_allowed" },
  unauthorized: { status: 401, reason: "unauthorized" },
  authServiceError: { status: 503, reason: "auth_service_error" },
  schemaUnavailable: { status: 503, reason: "schema_unavailable" },
  rateLimited: { status: 429, reason: "rate_limited" },
  overCapacity: { status: 503, reason: "over_capacity" }
} as const
export type UpgradeRejection = (typeof UpgradeRejection)[keyof typeof UpgradeRejection]

/** Reasons in `{"status":"error","response":{"reason":...}}` replies to joins and pushes. */
export const ReplyReason = {
  invalidChannelPattern: "invalid_channel_pattern",
  unauthorized: "unauthorized",
  tooManyChannels: ErrorReason.tooManyChannels,
  unmatchedTopic: ErrorReason.unmatchedTopic,
  invalidEventForChannel: "invalid_event_for_channel",
  invalidPayload: "invalid_payload",
  rateLimited: "rate_limited",
  apiError: "api_error",
  apiTimeout: "api_timeout",
  /**
   * A join of a presence channel past the app's presence topics on this node
   * (`MAX_PRESENCE_TOPICS_PER_APP`; a gateway extension of the contract).
   */
  overCapacity: "over_capacity",
  /** The app asked for a broadcast that the cluster could not take (a gateway extension of the contract). */
  broadcastFailed: "broadcast_failed"
} as const
export type ReplyReason = (typeof ReplyReason)[keyof typeof ReplyReason]
