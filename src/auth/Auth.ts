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
import { Upstream } from "../upstream/Upstream.ts"
import { compileGrants } from "../apps/Grants.ts"
import type { Grants } from "../apps/Grants.ts"

/** What the app's auth endpoint must answer with status 200. */
export const AuthAnswer = Schema.Struct({
  client_id: Schema.NonEmptyString,
  client_type: Schema.optional(Schema.String),
  metadata: Schema.optional(Schema.Record(Schema.String, Schema.Unknown)),
  permissions: Schema.optional(Schema.Array(Schema.String))
})
const decodeAuthAnswer = Schema.decodeUnknownEffect(Schema.fromJsonString(AuthAnswer))

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
}

/** The identity of an authenticated connection, shared by all its channels. */
export interface Identity {
  readonly clientId: string
  readonly clientType: string
  readonly metadata: Readonly<Record<string, unknown>>
  readonly grants: Grants
}

export interface AuthShape {
  readonly authenticate: (app: AppConfig, request: AuthRequest) => Effect.Effect<Identity, AuthError>
}

export class Auth extends Context.Service<Auth, AuthShape>()("realtime-gateway/auth/Auth") {
  static readonly layer = Layer.effect(
    Auth,
    Effect.gen(function*() {
      const upstream = yield* Upstream

      const authenticate = (app: AppConfig, request: AuthRequest) =>
        upstream.callBounded(app, {
          call: "auth",
          method: "POST",
          url: app.authEndpoint,
          timeoutMs: app.timeouts.authMs,
          body: {
            token: request.token,
            app: app.id,
            client_type: request.clientType,
            connection_type: "websocket",
            remote_ip: request.remoteIp,
            user_agent: request.userAgent
          }
        }, app.rateLimits.maxConcurrentAuth).pipe(
          Effect.catchTags({
            UpstreamOverloaded: () => Effect.fail(new AuthOverloaded({ app: app.id })),
            UpstreamTimeout: (error) => Effect.fail(new AuthServiceUnavailable({ app: app.id, detail: error.message })),
            UpstreamUnreachable: (error) => Effect.fail(new AuthServiceUnavailable({ app: app.id, detail: error.message }))
          }),
          Effect.flatMap((answer): Effect.Effect<Identity, AuthError> => {
            if (answer.status === 401 || answer.status === 403) {
              return Effect.fail(new Unauthorized({ app: app.id, status: answer.status }))
            }
            if (answer.status !== 200) {
              return Effect.fail(new AuthServiceUnavailable({ app: app.id, detail: `auth endpoint answered ${answer.status}` }))
            }
            return decodeAuthAnswer(answer.body).pipe(
              Effect.mapError(() =>
                new AuthServiceUnavailable({ app: app.id, detail: "auth endpoint answered 200 with an invalid body" })
              ),
              Effect.map((body): Identity => ({
                clientId: body.client_id,
                clientType: body.client_type ?? request.clientType,
                metadata: body.metadata ?? {},
                grants: compileGrants(body.permissions ?? [])
              }))
            )
          })
        )

      return Auth.of({ authenticate })
    })
  )
}
