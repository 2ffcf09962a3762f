/**
 * The server API (CONTRACT §4): what an app calls on the gateway, with its
 * secret as bearer token. Every call works whichever node receives it: the
 * work goes through the cluster (Topic and Client entities, the node router).
 *
 * Answers: 404 `unknown_app`, 401 `unauthorized` (wrong or missing secret; an
 * app without a configured secret cannot use the server API), 400
 * `invalid_json` / `invalid_body` with `errors` (bodies over 4 MiB are
 * `invalid_json`), 503 `broadcast_failed` (the cluster could not take a
 * broadcast; those before it in an array were delivered) or
 * `cluster_unavailable`, else the call's answer.
 */
import { timingSafeEqual } from "node:crypto"
import { ByteSize, Effect, Redacted, Schema } from "effect"
import { HttpIncomingMessage, HttpRouter, HttpServerRequest, HttpServerResponse } from "effect/http"
import { AppRegistry } from "../apps/AppRegistry.ts"
import type { RegisteredApp } from "../apps/AppRegistry.ts"
import { describeIssue } from "../apps/SchemaDocument.ts"
import { Client, clientEntityId } from "../cluster/ClientEntity.ts"
import { NodeRouter } from "../cluster/NodeRouter.ts"
import { Presence } from "../presence/Presence.ts"
import { AppEventName, Broadcaster } from "../fanout/Broadcaster.ts"

/** A refusal of a server API call; turned into its JSON answer in one place. */
class ApiRefusal extends Schema.TaggedError<ApiRefusal>()("ApiRefusal", {
  status: Schema.Number,
  reason: Schema.String,
  errors: Schema.optional(Schema.Array(Schema.Struct({ path: Schema.String, message: Schema.String })))
}) {}

const BroadcastRequest = Schema.Struct({
  topic: Schema.NonEmptyString,
  event: AppEventName,
  payload: Schema.optional(Schema.Unknown)
})
const BroadcastBody = Schema.Union([BroadcastRequest, Schema.Array(BroadcastRequest)])
const decodeBroadcastBody = Schema.decodeUnknownEffect(BroadcastBody, { errors: "all" })

/** A broadcast array past this is refused rather than buffered. */
const MAX_BODY_SIZE = ByteSize.mebibytes(4)

const json = (body: unknown, status = 200) => HttpServerResponse.jsonUnsafe(body, { status })

const secretMatches = (app: RegisteredApp, header: string | undefined) => {
  const secret = app.config.secret
  if (secret === undefined || header === undefined || !header.startsWith("Bearer ")) return false
  const given = Buffer.from(header.slice("Bearer ".length))
  const expected = Buffer.from(Redacted.value(secret))
  return given.length === expected.length && timingSafeEqual(given, expected)
}

export const ServerApiRoutes = HttpRouter.use(Effect.fnUntraced(function*(router) {
  const apps = yield* AppRegistry
  const broadcaster = yield* Broadcaster
  const nodeRouter = yield* NodeRouter
  const presence = yield* Presence
  const clientEntity = yield* Client.client

  /** The app named in the path, once its secret is proven. */
  const authorizedApp = Effect.gen(function*() {
    const request = yield* HttpServerRequest.HttpServerRequest
    const { app: appId } = yield* HttpRouter.params
    const app = apps.get(appId ?? "")
    if (app === undefined) return yield* new ApiRefusal({ status: 404, reason: "unknown_app" })
    if (!secretMatches(app, request.headers["authorization"])) {
      return yield* new ApiRefusal({ status: 401, reason: "unauthorized" })
    }
    return app
  })

  const jsonBody = HttpServerRequest.HttpServerRequest.pipe(
    Effect.flatMap((request) => request.json),
    Effect.provideService(HttpIncomingMessage.MaxBodySize, MAX_BODY_SIZE),
    Effect.mapError(() => new ApiRefusal({ status: 400, reason: "invalid_json" }))
  )

  const handle = <R>(effect: Effect.Effect<HttpServerResponse.HttpServerResponse, ApiRefusal, R>) =>
    effect.pipe(
      Effect.catchTag("ApiRefusal", (refusal) =>
        Effect.succeed(json(
          refusal.errors === undefined ? { reason: refusal.reason } : { reason: refusal.reason, errors: refusal.errors },
          refusal.status
        ))
      )
    )

  yield* router.add("POST", "/api/apps/:app/broadcast", handle(Effect.gen(function*() {
    const app = yield* authorizedApp
    const body = yield* jsonBody
    const decoded = yield* decodeBroadcastBody(body).pipe(
      Effect.mapError((error) => new ApiRefusal({ status: 400, reason: "invalid_body", errors: describeIssue(error.issue) }))
    )
    const broadcasts = Array.isArray(decoded) ? decoded : [decoded]
    // one after the other: broadcasts to the same topic keep the order they were given in
    for (const { topic, event, payload } of broadcasts) {
      yield* broadcaster.publish({ app: app.config.id, topic, event, payload: payload ?? {} }).pipe(
        Effect.mapError(() => new ApiRefusal({ status: 503, reason: "broadcast_failed" }))
      )
    }
    return json({ accepted: broadcasts.length }, 202)
  })))

  yield* router.add("DELETE", "/api/apps/:app/clients/:client_id", handle(Effect.gen(function*() {
    const app = yield* authorizedApp
    const { client_id: clientId } = yield* HttpRouter.params
    const disconnected = yield* clientEntity(clientEntityId(app.config.id, clientId ?? "")).DisconnectClient().pipe(
      Effect.mapError(() => new ApiRefusal({ status: 503, reason: "cluster_unavailable" }))
    )
    return json({ client_id: clientId, disconnected })
  })))

  yield* router.add("GET", "/api/apps/:app/connections", handle(Effect.gen(function*() {
    const app = yield* authorizedApp
    const nodes = yield* nodeRouter.nodes
    const perNode = yield* Effect.forEach(nodes, (node) => nodeRouter.connections(node, app.config.id), {
      concurrency: "unbounded"
    })
    return json({ connections: perNode.flat() })
  })))

  yield* router.add("GET", "/api/apps/:app/topics/:topic/presence", handle(Effect.gen(function*() {
    const app = yield* authorizedApp
    const { topic } = yield* HttpRouter.params
    const presences = yield* presence.presences(app.config.id, topic ?? "").pipe(
      Effect.mapError(() => new ApiRefusal({ status: 503, reason: "cluster_unavailable" }))
    )
    return json({ topic, presences })
  })))

  yield* router.add("POST", "/api/apps/:app/schema/refresh", handle(Effect.gen(function*() {
    const app = yield* authorizedApp
    return yield* apps.refresh(app.config.id).pipe(
      Effect.map((version) => json({ version })),
      Effect.catchTags({
        SchemaFetchFailed: (error) => Effect.succeed(json({ reason: error.reason }, 502)),
        UnknownApp: () => Effect.succeed(json({ reason: "unknown_app" }, 404))
      })
    )
  })))
}))
