/**
 * Failures of calls from the gateway to an app's HTTP API. Callers map them to
 * the contract's reasons (`auth_service_error`, `api_error`, `api_timeout`,
 * `schema_unavailable`) in one place each; the upstream service itself never
 * decides what a client is told.
 */
import { Schema } from "effect"

export const UpstreamCall = Schema.Literals(["schema", "auth", "message", "notify"])
export type UpstreamCall = typeof UpstreamCall.Type

const fields = { app: Schema.String, call: UpstreamCall }

/** No answer within the call's timeout. */
export class UpstreamTimeout extends Schema.TaggedError<UpstreamTimeout>()("UpstreamTimeout", {
  ...fields,
  timeoutMs: Schema.Number
}) {
  override get message() {
    return `${this.call} call to app ${this.app} timed out after ${this.timeoutMs} ms`
  }
}

/** The connection failed (refused, reset, DNS) or the circuit breaker is open. */
export class UpstreamUnreachable extends Schema.TaggedError<UpstreamUnreachable>()("UpstreamUnreachable", {
  ...fields,
  detail: Schema.String
}) {
  override get message() {
    return `${this.call} call to app ${this.app} failed: ${this.detail}`
  }
}

/** The per-app concurrency bound was reached; the call was not made. */
export class UpstreamOverloaded extends Schema.TaggedError<UpstreamOverloaded>()("UpstreamOverloaded", {
  ...fields,
  limit: Schema.Number
}) {
  override get message() {
    return `${this.call} calls to app ${this.app} are at their limit of ${this.limit} in flight`
  }
}

export type UpstreamError = UpstreamTimeout | UpstreamUnreachable | UpstreamOverloaded
