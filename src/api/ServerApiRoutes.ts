/**
 * The server API (CONTRACT §4): what an app calls on the gateway, with its
 * secret as bearer token. Every call works whichever node receives it: the
 * work goes through the cluster (Topic and Client entities, the node router).
 *
 * Answers: 404 `unknown_app`, 401 `unauthorized` (wrong or missing secret; an
 * app without a configured secret cannot use the server API), 400
 * `invalid_json` / `invalid_body` with `errors` (bodies over 4 MiB are
 * `invalid_json`, payloads nested deeper than `MAX_JSON_DEPTH` levels
 * `invalid_body`), 400 `invalid_query` (a bad `limit` or `cursor` of
 * `GET /connections`), 503 `broadcast_failed` (the cluster could not take a
 * broadcast; those before it in an array were delivered) or
 * `cluster_unavailable`, else the call's answer.
 */
import { createHash, timingSafeEqual } from "node:crypto"
import { ByteSize, Effect, Redacted, Schema } from "effect"
import { HttpIncomingMessage, HttpRouter, HttpServerRequest, HttpServerResponse } from "effect/http"
import { AppRegistry } from "../apps/AppRegistry.ts"
import type { RegisteredApp } from "../apps/AppRegistry.ts"
import { describeIssue } from "../contract/Problems.ts"
import { Client, clientEntityId } from "../cluster/ClientEntity.ts"
import { boundEntityCall } from "../cluster/entityCallTimeout.ts"
import { NodeRouter } from "../cluster/NodeRouter.ts"
import { Presence } from "../presence/Presence.ts"
import { ApiError, BroadcastBody } from "../contract/ServerApi.ts"
import type { BroadcastRequest, ConnectionInfo } from "../contract/ServerApi.ts"
import { Broadcaster } from "../fanout/Broadcaster.ts"
import { Metrics } from "../observability/Metrics.ts"
import { Tracing } from "../observability/Tracing.ts"
import { itemOrItemsLevels, jsonDepthExceeds, MAX_JSON_DEPTH, parseAnyDepth } from "../protocol/json.ts"
import { GatewayConfig } from "../config/GatewayConfig.ts"

/** A refusal of a server or admin API call; turned into its JSON answer in one place. */
export class ApiRefusal extends Schema.TaggedError<ApiRefusal>()("ApiRefusal", {
  status: Schema.Number,
  ...ApiError.fields
}) {}

const decodeBroadcastBody = Schema.decodeUnknownEffect(BroadcastBody, { errors: "all" })

/** Connections per page of `GET /connections`, by default and at most. */
const MAX_CONNECTIONS_PAGE = 1_000

const ConnectionsQuery = Schema.Struct({
  limit: Schema.optional(Schema.NumberFromString.check(Schema.isInt(), Schema.isBetween({ minimum: 1, maximum: MAX_CONNECTIONS_PAGE }))),
  cursor: Schema.optional(Schema.String)
})
const decodeConnectionsQuery = HttpServerRequest.schemaSearchParams(ConnectionsQuery, { errors: "all" })

/**
 * A page of connections ends at (node, connection_id); the next one starts
 * after it. The cursor is that pair, opaque to the app (base64url JSON).
 */
const CursorPosition = Schema.fromJsonString(Schema.Tuple([Schema.String, Schema.String]))
const encodeCursor = (node: string, connectionId: string) =>
  Buffer.from(JSON.stringify([node, connectionId])).toString("base64url")
const decodeCursor = (cursor: string) =>
  Schema.decodeUnknownEffect(CursorPosition)(Buffer.from(cursor, "base64url").toString("utf8"))

/** A broadcast array past this is refused rather than buffered. */
const MAX_BODY_SIZE = ByteSize.mebibytes(4)
const TOO_DEEP = { path: "", message: `a payload is nested deeper than ${MAX_JSON_DEPTH} levels` }

export const json = (body: unknown, status = 200) => HttpServerResponse.jsonUnsafe(body, { status })

/**
 * The request's JSON body; `invalid_json` when it is not JSON or is over 4 MiB,
 * `invalid_body` when a payload in it is nested deeper than `MAX_JSON_DEPTH`.
 */
export const jsonBody = HttpServerRequest.HttpServerRequest.pipe(
  Effect.flatMap((request) => request.text),
  Effect.provideService(HttpIncomingMessage.MaxBodySize, MAX_BODY_SIZE),
  Effect.mapError(() => new ApiRefusal({ status: 400, reason: "invalid_json" })),
  Effect.flatMap((text) => {
    // refused before parsing: a deep payload could not be broadcast (JSON.stringify would overflow)
    // an array of broadcasts around each one's payload, or one broadcast (or app) around its values
    if (jsonDepthExceeds(text, MAX_JSON_DEPTH + itemOrItemsLevels(text, 1))) {
      return Effect.fail(new ApiRefusal({ status: 400, reason: "invalid_body", errors: [TOO_DEEP] }))
    }
    const value = parseAnyDepth(text)
    return value === undefined ? Effect.fail(new ApiRefusal({ status: 400, reason: "invalid_json" })) : Effect.succeed(value)
  })
)

/** The request's JSON body as `decode` reads it; `invalid_body` with every problem when it does not fit. */
export const decodedJsonBody = <A>(
  decode: (input: unknown) => Effect.Effect<A, { readonly issue: Parameters<typeof describeIssue>[0] }>
) =>
  jsonBody.pipe(
    Effect.flatMap((body) =>
      decode(body).pipe(
        Effect.mapError((error) => new ApiRefusal({ status: 400, reason: "invalid_body", errors: describeIssue(error.issue) }))
      )
    )
  )

/** Answers a refusal with its status and `{reason, errors?}`. */
export const handleRefusals = <R>(effect: Effect.Effect<HttpServerResponse.HttpServerResponse, ApiRefusal, R>) =>
  effect.pipe(
    Effect.catchTag("ApiRefusal", (refusal) =>
      Effect.succeed(json(
        refusal.errors === undefined ? { reason: refusal.reason } : { reason: refusal.reason, errors: refusal.errors },
        refusal.status
      ))
    )
  )

const sha256 = (value: string) => createHash("sha256").update(value).digest()

/**
 * Whether an `Authorization: Bearer <secret>` header carries `secret`,
 * compared as digests of equal length, so that neither its bytes nor its
 * length show in the time the answer takes.
 */
export const bearerMatches = (header: string | undefined, secret: string): boolean =>
  timingSafeEqual(sha256(header?.startsWith("Bearer ") ? header.slice("Bearer ".length) : ""), sha256(secret))

const secretMatches = (app: RegisteredApp, header: string | undefined) =>
  app.config.secret !== undefined && bearerMatches(header, Redacted.value(app.config.secret))

/** What the server API and the admin API both do to an app, with the same answers. */
export const appActions = Effect.gen(function*() {
  const apps = yield* AppRegistry
  const broadcaster = yield* Broadcaster
  const metrics = yield* Metrics
  const clientEntity = yield* Client.client
  const { limits: { entityCallTimeoutMs } } = yield* GatewayConfig
  return {
    /** One broadcast; 503 `broadcast_failed` when the cluster could not take it. */
    publish: (appId: string, { event, payload, topic }: BroadcastRequest) => {
      metrics.forApp(appId).broadcast("server_api")
      return broadcaster.publish({ app: appId, topic, event, payload: payload ?? {} }).pipe(
        Effect.mapError(() => new ApiRefusal({ status: 503, reason: "broadcast_failed" }))
      )
    },
    /** Closes the client's connections on every node: `{client_id, disconnected}`. */
    disconnectClient: (appId: string, clientId: string) =>
      clientEntity(clientEntityId(appId, clientId)).DisconnectClient().pipe(
        boundEntityCall("Client.DisconnectClient", entityCallTimeoutMs),
        Effect.map((disconnected) => json({ client_id: clientId, disconnected })),
        Effect.mapError(() => new ApiRefusal({ status: 503, reason: "cluster_unavailable" }))
      ),
    /** Fetches the schema now: `{version}`, or 502 with the reason. */
    refreshSchema: (appId: string) =>
      apps.refresh(appId).pipe(
        Effect.map((version) => json({ version })),
        Effect.catchTags({
          SchemaFetchFailed: (error) => Effect.succeed(json({ reason: error.reason }, 502)),
          UnknownApp: () => Effect.succeed(json({ reason: "unknown_app" }, 404))
        })
      )
  }
})

export const ServerApiRoutes = HttpRouter.use(Effect.fnUntraced(function*(router) {
  const apps = yield* AppRegistry
  const tracing = yield* Tracing
  const nodeRouter = yield* NodeRouter
  const presence = yield* Presence
  const actions = yield* appActions

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

  yield* router.add("POST", "/api/apps/:app/broadcast", handleRefusals(Effect.gen(function*() {
    const app = yield* authorizedApp
    const decoded = yield* decodedJsonBody(decodeBroadcastBody)
    const broadcasts = Array.isArray(decoded) ? decoded : [decoded]
    // one after the other: broadcasts to the same topic keep the order they were given in
    yield* Effect.forEach(broadcasts, (broadcast) => actions.publish(app.config.id, broadcast), { discard: true }).pipe(
      tracing.around("gateway.server_api.broadcast", {
        "gateway.app_id": app.config.id,
        "gateway.broadcasts": broadcasts.length
      })
    )
    return json({ accepted: broadcasts.length }, 202)
  })))

  yield* router.add("DELETE", "/api/apps/:app/clients/:client_id", handleRefusals(Effect.gen(function*() {
    const app = yield* authorizedApp
    const { client_id: clientId } = yield* HttpRouter.params
    return yield* actions.disconnectClient(app.config.id, clientId ?? "")
  })))

  // Paginated, in (node, connection_id) order: nodes are asked one after the
  // other, from the cursor's on, each for what the page still lacks, so that a
  // page costs each node at most one page of work whatever the app's size.
  yield* router.add("GET", "/api/apps/:app/connections", handleRefusals(Effect.gen(function*() {
    const app = yield* authorizedApp
    const query = yield* decodeConnectionsQuery.pipe(
      Effect.mapError((error) => new ApiRefusal({ status: 400, reason: "invalid_query", errors: describeIssue(error.issue) }))
    )
    const limit = query.limit ?? MAX_CONNECTIONS_PAGE
    const [fromNode, afterConnection] = query.cursor === undefined ? [undefined, undefined] : yield* decodeCursor(query.cursor).pipe(
      Effect.mapError(() => new ApiRefusal({ status: 400, reason: "invalid_query", errors: [{ path: "cursor", message: "not a cursor this API gave" }] }))
    )
    const nodes = [...(yield* nodeRouter.nodes)].sort()
    const connections: Array<ConnectionInfo> = []
    for (const node of nodes) {
      if (connections.length >= limit) break
      if (fromNode !== undefined && node < fromNode) continue
      const page = yield* nodeRouter.connections(node, app.config.id, {
        after: node === fromNode ? afterConnection : undefined,
        limit: limit - connections.length
      })
      connections.push(...page)
    }
    const last = connections.length >= limit ? connections.at(-1) : undefined
    return json({ connections, next_cursor: last === undefined ? null : encodeCursor(last.node, last.connection_id) })
  })))

  yield* router.add("GET", "/api/apps/:app/topics/:topic/presence", handleRefusals(Effect.gen(function*() {
    const app = yield* authorizedApp
    const { topic } = yield* HttpRouter.params
    const presences = yield* presence.presences(app.config.id, topic ?? "").pipe(
      Effect.mapError(() => new ApiRefusal({ status: 503, reason: "cluster_unavailable" }))
    )
    return json({ topic, presences })
  })))

  yield* router.add("POST", "/api/apps/:app/schema/refresh", handleRefusals(Effect.gen(function*() {
    const app = yield* authorizedApp
    return yield* actions.refreshSchema(app.config.id)
  })))
}))
