/**
 * The admin API and the dashboard (CONTRACT §8), for operators, with
 * `Authorization: Bearer $GATEWAY_ADMIN_TOKEN`. Without a configured token no
 * `/admin` route exists (every `/admin` path is 404); with one, a missing or
 * wrong token is 401 `unauthorized`. The token is compared in constant time
 * (digests of equal length, so neither its bytes nor its length leak).
 *
 * The dashboard's page, style and script are public (they hold no data);
 * everything they show comes from the calls below, with the token.
 *
 * | call | answer |
 * |---|---|
 * | `GET /admin/apps` | every app, secrets redacted, with its schema state |
 * | `PUT /admin/apps/:id` | registers or changes the app at runtime (201 new, 200 changed) |
 * | `DELETE /admin/apps/:id` | removes the app; its connections are closed, its calls stopped |
 * | `GET /admin/cluster` | every node's status; `?history=true` adds each node's last 15 minutes |
 * | `POST /admin/apps/:id/schema/refresh` | fetches the app's schema now |
 * | `DELETE /admin/apps/:id/clients/:client_id` | closes the client's connections on every node |
 * | `POST /admin/apps/:id/broadcast` | one broadcast `{topic, event, payload}` |
 */
import { readFileSync } from "node:fs"
import { Effect, Redacted, Result, Schema } from "effect"
import { HttpRouter, HttpServerRequest, HttpServerResponse } from "effect/http"
import { ApiRefusal, appActions, bearerMatches, decodedJsonBody, handleRefusals, json, jsonBody } from "../api/ServerApiRoutes.ts"
import { BroadcastRequest } from "../contract/ServerApi.ts"
import { AppRegistry } from "../apps/AppRegistry.ts"
import type { RegisteredApp } from "../apps/AppRegistry.ts"
import { NodeRouter } from "../cluster/NodeRouter.ts"
import { isJsonObject } from "../protocol/json.ts"
import { GatewayConfig, decodeAppConfig, withoutCredentials } from "../config/GatewayConfig.ts"
import { SAMPLE_INTERVAL_MS } from "./NodeStatus.ts"
import { RuntimeApps } from "./RuntimeApps.ts"


const decodeBroadcast = Schema.decodeUnknownEffect(BroadcastRequest, { errors: "all" })

/** An app as the admin API shows it: no secret, no credentials in URLs. */
const appView = (app: RegisteredApp) => {
  const { config } = app
  return {
    id: config.id,
    source: app.runtime ? "runtime" : "config",
    schemaEndpoint: withoutCredentials(config.schemaEndpoint),
    authEndpoint: withoutCredentials(config.authEndpoint),
    messageEndpoint: withoutCredentials(config.messageEndpoint),
    notifyEndpoint: config.notifyEndpoint === undefined ? "none" : withoutCredentials(config.notifyEndpoint),
    secret: config.secret === undefined ? null : "[redacted]",
    allowedOrigins: config.allowedOrigins ?? null,
    rateLimits: config.rateLimits,
    timeouts: config.timeouts,
    schema: {
      version: app.schema?.version ?? null,
      last_fetch_at: app.lastFetchAt === undefined ? null : new Date(app.lastFetchAt).toISOString(),
      last_error: app.lastError ?? null
    }
  }
}

const asset = (name: string) => readFileSync(new URL(`../../src/admin/dashboard/${name}`, import.meta.url), "utf8")

// Everything the page needs comes from the gateway itself.
const ASSET_HEADERS = {
  "cache-control": "no-store",
  "content-security-policy":
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; " +
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
  "referrer-policy": "no-referrer",
  "x-content-type-options": "nosniff"
}

export const AdminRoutes = HttpRouter.use(Effect.fnUntraced(function*(router) {
  const config = yield* GatewayConfig
  if (config.adminToken === undefined) return
  const token = Redacted.value(config.adminToken)
  const registry = yield* AppRegistry
  const runtimeApps = yield* RuntimeApps
  const nodeRouter = yield* NodeRouter
  const actions = yield* appActions

  const keptNote = runtimeApps.keptIn === "memory"
    ? "single node without DATABASE_URL: this change lives in this process only and is lost when it restarts"
    : "kept in PostgreSQL: in force on every node within about a second, and after restarts"

  const authorized = Effect.gen(function*() {
    const request = yield* HttpServerRequest.HttpServerRequest
    if (!bearerMatches(request.headers["authorization"], token)) {
      return yield* new ApiRefusal({ status: 401, reason: "unauthorized" })
    }
  })

  /** A route of the admin API: only with the token. */
  const admin = <R>(
    method: "GET" | "PUT" | "POST" | "DELETE",
    path: HttpRouter.PathInput,
    handler: Effect.Effect<HttpServerResponse.HttpServerResponse, ApiRefusal, R>
  ) => router.add(method, path, handleRefusals(Effect.andThen(authorized, handler)))

  const knownApp = Effect.gen(function*() {
    const { id } = yield* HttpRouter.params
    const app = registry.get(id ?? "")
    if (app === undefined) return yield* new ApiRefusal({ status: 404, reason: "unknown_app" })
    return app
  })

  const unavailable = (error: { readonly detail: string }) =>
    Effect.logError("runtime app change could not be kept", error.detail).pipe(
      Effect.andThen(Effect.fail(new ApiRefusal({ status: 503, reason: "storage_unavailable" })))
    )

  const page = asset("index.html")
  const style = asset("dashboard.css")
  const script = asset("dashboard.js")
  const serve = (body: string, contentType: string) =>
    Effect.succeed(HttpServerResponse.text(body, { contentType, headers: ASSET_HEADERS }))
  yield* router.add("GET", "/admin", serve(page, "text/html; charset=utf-8"))
  yield* router.add("GET", "/admin/dashboard.css", serve(style, "text/css; charset=utf-8"))
  yield* router.add("GET", "/admin/dashboard.js", serve(script, "text/javascript; charset=utf-8"))

  yield* admin("GET", "/admin/apps", Effect.sync(() => json({ apps: registry.all().map(appView), kept_in: runtimeApps.keptIn })))

  yield* admin("PUT", "/admin/apps/:id", Effect.gen(function*() {
    const { id } = yield* HttpRouter.params
    const body = yield* jsonBody
    if (!isJsonObject(body)) {
      return yield* new ApiRefusal({ status: 400, reason: "invalid_body", errors: [{ path: "", message: "expected a JSON object" }] })
    }
    if ("id" in body && body.id !== id) {
      return yield* new ApiRefusal({
        status: 400,
        reason: "invalid_body",
        errors: [{ path: "id", message: "differs from the id in the path" }]
      })
    }
    const settings = { ...body, id }
    const decoded = decodeAppConfig(settings, config.allowedOrigins)
    if (Result.isFailure(decoded)) {
      return yield* new ApiRefusal({
        status: 400,
        reason: "invalid_app",
        errors: decoded.failure.problems.map((problem) => ({ path: problem.key, message: problem.message }))
      })
    }
    const existed = registry.get(decoded.success.id) !== undefined
    const app = yield* runtimeApps.put(decoded.success, settings).pipe(Effect.catch(unavailable))
    return json({ app: appView(app), kept_in: runtimeApps.keptIn, note: keptNote }, existed ? 200 : 201)
  }))

  yield* admin("DELETE", "/admin/apps/:id", Effect.gen(function*() {
    const app = yield* knownApp
    yield* runtimeApps.remove(app.config.id).pipe(Effect.catch(unavailable))
    return json({ removed: app.config.id, kept_in: runtimeApps.keptIn, note: keptNote })
  }))

  yield* admin("GET", "/admin/cluster", Effect.gen(function*() {
    const request = yield* HttpServerRequest.HttpServerRequest
    const withHistory = new URL(request.url, "http://admin").searchParams.get("history") === "true"
    const nodes = yield* nodeRouter.nodes
    const statuses = yield* Effect.forEach(
      [...nodes].sort(),
      (node) => nodeRouter.status(node, withHistory).pipe(Effect.map((status) => status ?? { node, state: "unreachable" })),
      { concurrency: "unbounded" }
    )
    return json({ at: new Date().toISOString(), sample_interval_ms: SAMPLE_INTERVAL_MS, nodes: statuses })
  }))

  yield* admin("POST", "/admin/apps/:id/schema/refresh", Effect.gen(function*() {
    const app = yield* knownApp
    return yield* actions.refreshSchema(app.config.id)
  }))

  yield* admin("DELETE", "/admin/apps/:id/clients/:client_id", Effect.gen(function*() {
    const app = yield* knownApp
    const { client_id: clientId } = yield* HttpRouter.params
    return yield* actions.disconnectClient(app.config.id, clientId ?? "")
  }))

  yield* admin("POST", "/admin/apps/:id/broadcast", Effect.gen(function*() {
    const app = yield* knownApp
    const broadcast = yield* decodedJsonBody(decodeBroadcast)
    yield* actions.publish(app.config.id, broadcast)
    return json({ accepted: 1 }, 202)
  }))
}))
