/**
 * Authentication by passthrough: the client's token goes to the app's auth
 * endpoint, whose answer says who the client is and what it may do. The gateway
 * never reads the token itself.
 *
 * Answer mapping (CONTRACT §3): 200 with a valid body → granted; 401/403 →
 * `Unauthorized`; anything else, garbage or a timeout → `AuthServiceUnavailable`;
 * too many auth calls already in flight for the app → `AuthOverloaded`.
 */
import { Context, Effect, Layer, Schema } from "effect"
import type { AppConfig } from "../config/GatewayConfig.ts"
import type { AuthAnswer, AuthRequest as AuthRequestBody } from "../contract/Auth.ts"
import { Upstream } from "../upstream/Upstream.ts"
import type { UpstreamAnswer } from "../upstream/Upstream.ts"
import type { UpstreamError } from "../upstream/errors.ts"
import { addressKey } from "../ratelimit/addressKey.ts"
import { compileGrants } from "../apps/Grants.ts"
import { isJsonObject, parseJsonText } from "../protocol/json.ts"
import type { Grants } from "../apps/Grants.ts"
import type { TraceSpan } from "../observability/Tracing.ts"

/**
 * The body of a 200 answer, decoded by hand: it runs for every connection,
 * where the generic decoder cost a measurable share of the connect path. A
 * test holds it to `AuthAnswer`'s verdicts. Undefined when the body is invalid.
 */
export const parseAuthAnswer = (body: string): AuthAnswer | undefined => {
  // the answer object around its metadata
  const value = parseJsonText(body, 1)
  if (!isJsonObject(value)) return undefined
  const { client_id, client_type, metadata, permissions } = value
  if (typeof client_id !== "string" || client_id.length === 0) return undefined
  if (client_type !== undefined && typeof client_type !== "string") return undefined
  if (metadata !== undefined && !isJsonObject(metadata)) return undefined
  if (permissions !== undefined && !(Array.isArray(permissions) && permissions.every((p) => typeof p === "string"))) {
    return undefined
  }
  return value as AuthAnswer
}

export class Unauthorized extends Schema.TaggedError<Unauthorized>()("Unauthorized", {
  app: Schema.String,
  status: Schema.Number
}) {}

export class AuthServiceUnavailable extends Schema.TaggedError<AuthServiceUnavailable>()("AuthServiceUnavailable", {
  app: Schema.String,
  detail: Schema.String
}) {}

export class AuthOverloaded extends Schema.TaggedError<AuthOverloaded>()("AuthOverloaded", {
  app: Schema.String
}) {}

export type AuthError = Unauthorized | AuthServiceUnavailable | AuthOverloaded

export interface AuthRequest {
  readonly token: string
  readonly clientType: string
  readonly remoteIp: string
  readonly userAgent: string
  /** The connect's span: the auth call's span is its child. */
  readonly span: TraceSpan
}

/** The identity of an authenticated connection, shared by all its channels. */
export interface Identity {
  readonly clientId: string
  readonly clientType: string
  readonly metadata: Readonly<Record<string, unknown>>
  readonly grants: Grants
}

export interface AuthShape {
  /**
   * Asks the app who the token belongs to. Runs in plain callbacks, outside
   * any fiber, as it does for every connection: `done` is called once with the
   * failure or the identity, unless the returned function abandons the call
   * first (the client went away).
   */
  readonly authenticate: (
    app: AppConfig,
    request: AuthRequest,
    done: (error: AuthError | undefined, identity: Identity | undefined) => void
  ) => () => void
}

/** The one place where an auth call's outcome becomes the contract's meaning. */
const outcomeOf = (
  app: AppConfig,
  request: AuthRequest,
  error: UpstreamError | undefined,
  answer: UpstreamAnswer | undefined
): AuthError | Identity => {
  if (error !== undefined) {
    return error._tag === "UpstreamOverloaded"
      ? new AuthOverloaded({ app: app.id })
      : new AuthServiceUnavailable({ app: app.id, detail: error.message })
  }
  const { status, body } = answer!
  if (status === 401 || status === 403) return new Unauthorized({ app: app.id, status })
  if (status !== 200) return new AuthServiceUnavailable({ app: app.id, detail: `auth endpoint answered ${status}` })
  const decoded = parseAuthAnswer(body)
  if (decoded === undefined) {
    return new AuthServiceUnavailable({ app: app.id, detail: "auth endpoint answered 200 with an invalid body" })
  }
  return {
    clientId: decoded.client_id,
    clientType: decoded.client_type ?? request.clientType,
    metadata: decoded.metadata ?? {},
    grants: compileGrants(decoded.permissions ?? [])
  }
}

const isAuthError = (outcome: AuthError | Identity): outcome is AuthError => "_tag" in outcome

export class Auth extends Context.Service<Auth, AuthShape>()("realtime-gateway/auth/Auth") {
  static readonly layer = Layer.effect(
    Auth,
    Effect.gen(function*() {
      const upstream = yield* Upstream

      const authenticate: AuthShape["authenticate"] = (app, request, done) =>
        upstream.send(app, {
          call: "auth",
          method: "POST",
          url: app.authEndpoint,
          timeoutMs: app.timeouts.authMs,
          maxInFlight: app.rateLimits.maxConcurrentAuth,
          // a token is the client's to vary at will; its address much less so
          caller: addressKey(request.remoteIp),
          parent: request.span,
          body: {
            token: request.token,
            app: app.id,
            client_type: request.clientType,
            connection_type: "websocket",
            remote_ip: request.remoteIp,
            user_agent: request.userAgent
          } satisfies AuthRequestBody
        }, (error, answer) => {
          let outcome: AuthError | Identity
          try {
            outcome = outcomeOf(app, request, error, answer)
          } catch (defect) {
            // a bug here must still answer the client, as an app failure would be
            outcome = new AuthServiceUnavailable({ app: app.id, detail: `unexpected error reading the answer: ${String(defect)}` })
          }
          if (isAuthError(outcome)) done(outcome, undefined)
          else done(undefined, outcome)
        })

      return Auth.of({ authenticate })
    })
  )
}
