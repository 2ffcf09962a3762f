/**
 * The apps this node serves and the current channel schema of each.
 *
 * A schema is fetched at start, every five minutes, and on demand, with
 * `If-None-Match` once an `ETag` was seen. It is compiled once per version
 * (patterns, variable rules, payload validators), so the hot path only looks
 * up `app.schema`. A fetch that fails, or a document that does not parse, is
 * logged and the last good schema stays in force.
 *
 * Apps come from the configuration at start and, through the admin API, at
 * runtime (`put`, `remove`). An app changed at runtime keeps its
 * `RegisteredApp` object, whose `config` is replaced: the sessions holding it
 * see the new settings on their next call.
 */
import { Context, Effect, Layer, Schedule, Schema, Semaphore } from "effect"
import type { AppConfig } from "../config/GatewayConfig.ts"
import { GatewayConfig } from "../config/GatewayConfig.ts"
import { Metrics } from "../observability/Metrics.ts"
import { Upstream } from "../upstream/Upstream.ts"
import { MAX_JSON_DEPTH, parseJsonText } from "../protocol/json.ts"
import { loadSchemaDocument } from "./CompiledSchema.ts"
import type { CompiledAppSchema } from "./CompiledSchema.ts"
import { SupervisedChild } from "../supervision/children.ts"
import { supervised } from "../supervision/Supervisor.ts"

const SCHEMA_REFRESH_INTERVAL = "5 minutes"

/** An app as the hot path sees it; `schema` is replaced whole when a new version loads. */
export interface RegisteredApp {
  config: AppConfig
  /** Registered through the admin API rather than the configuration. */
  runtime: boolean
  schema: CompiledAppSchema | undefined
  etag: string | undefined
  /** Why the last fetch failed, while it keeps failing; for readiness and operators. */
  lastError: string | undefined
  /** When the last fetch (good or not) ended; `undefined` before the first. */
  lastFetchAt: number | undefined
}

export class SchemaFetchFailed extends Schema.TaggedError<SchemaFetchFailed>()("SchemaFetchFailed", {
  app: Schema.String,
  reason: Schema.String
}) {}

export class UnknownApp extends Schema.TaggedError<UnknownApp>()("UnknownApp", {
  app: Schema.String
}) {}

export interface AppRegistryShape {
  /** Hot-path lookup. */
  readonly get: (appId: string) => RegisteredApp | undefined
  /** Fetches the app's schema now; succeeds with the version in force afterwards. */
  readonly refresh: (appId: string) => Effect.Effect<string, SchemaFetchFailed | UnknownApp>
  /**
   * Configured apps that have never had a valid schema, with the reason. Empty
   * when all are usable. Apps registered at runtime are left out: one bad
   * registration must not take every node out of its load balancer.
   */
  readonly unready: () => ReadonlyArray<{ readonly app: string; readonly reason: string }>
  readonly all: () => ReadonlyArray<RegisteredApp>
  /**
   * Registers an app or changes one at runtime, then fetches its schema when
   * it has none yet or its schema endpoint changed (a failed fetch is kept in
   * `lastError`, as for any app).
   */
  readonly put: (config: AppConfig) => Effect.Effect<RegisteredApp>
  /** Forgets an app: new connections to it are refused as `unknown_app`. Answers whether it was known. */
  readonly remove: (appId: string) => boolean
}

const headerValue = (value: string | ReadonlyArray<string> | undefined) =>
  Array.isArray(value) ? value[0] : (value as string | undefined)

export class AppRegistry extends Context.Service<AppRegistry, AppRegistryShape>()("realtime-gateway/apps/AppRegistry") {
  static readonly layer = Layer.effect(
    AppRegistry,
    Effect.gen(function*() {
      const config = yield* GatewayConfig
      const upstream = yield* Upstream
      const metrics = yield* Metrics
      const registered = (app: AppConfig, runtime: boolean): RegisteredApp => ({
        config: app,
        runtime,
        schema: undefined,
        etag: undefined,
        lastError: undefined,
        lastFetchAt: undefined
      })
      const apps = new Map<string, RegisteredApp>(config.apps.map((app) => [app.id, registered(app, false)]))

      // one fetch per app at a time: the periodic, retry and on-demand fetches
      // could otherwise race, and an older answer overwrite a newer schema
      const fetchLocks = new WeakMap<RegisteredApp, Semaphore.Semaphore>()
      const fetchLock = (app: RegisteredApp) => {
        let lock = fetchLocks.get(app)
        if (lock === undefined) fetchLocks.set(app, lock = Semaphore.makeUnsafe(1))
        return lock
      }

      const fetchSchema = (app: RegisteredApp) =>
        Effect.gen(function*() {
          const appMetrics = metrics.forApp(app.config.id)
          const fail = (reason: string) => {
            app.lastError = reason
            app.lastFetchAt = Date.now()
            appMetrics.schemaRefreshed("failed")
            return Effect.logWarning("schema fetch failed; keeping the last good schema", reason).pipe(
              Effect.annotateLogs({ app_id: app.config.id, schema_version: app.schema?.version ?? "none" }),
              Effect.andThen(Effect.fail(new SchemaFetchFailed({ app: app.config.id, reason })))
            )
          }
          const answer = yield* upstream.call(app.config, {
            call: "schema",
            method: "GET",
            url: app.config.schemaEndpoint,
            timeoutMs: app.config.timeouts.schemaMs,
            ...(app.etag !== undefined && app.schema !== undefined ? { headers: { "if-none-match": app.etag } } : {})
          }).pipe(Effect.catch((error) => fail(error.message)))

          if (answer.status === 304 && app.schema !== undefined) {
            app.lastError = undefined
            app.lastFetchAt = Date.now()
            appMetrics.schemaRefreshed("unchanged")
            return app.schema.version
          }
          if (answer.status !== 200) return yield* fail(`schema endpoint answered ${answer.status}`)

          const document = parseJsonText(answer.body)
          if (document === undefined) {
            return yield* fail(`schema endpoint answered with invalid JSON (or JSON nested deeper than ${MAX_JSON_DEPTH} levels)`)
          }
          const compiled = yield* loadSchemaDocument(document).pipe(
            Effect.catch((error) => fail(`invalid schema document: ${error.reason}`))
          )
          const previous = app.schema?.version
          app.schema = compiled
          app.etag = headerValue(answer.headers["etag"])
          app.lastError = undefined
          app.lastFetchAt = Date.now()
          appMetrics.schemaRefreshed(previous === compiled.version ? "unchanged" : "changed")
          if (previous !== compiled.version) {
            yield* Effect.logInfo(previous === undefined ? "schema loaded" : "schema changed").pipe(
              Effect.annotateLogs({
                app_id: app.config.id,
                schema_version: compiled.version,
                previous_schema_version: previous ?? "none",
                channels: compiled.channels.length,
                events: compiled.events.size
              })
            )
          }
          return compiled.version
        }).pipe(fetchLock(app).withPermits(1))

      const refresh = (appId: string) =>
        Effect.suspend((): Effect.Effect<string, SchemaFetchFailed | UnknownApp> => {
          const app = apps.get(appId)
          return app === undefined ? Effect.fail(new UnknownApp({ app: appId })) : fetchSchema(app)
        })

      const fetchEach = (some: ReadonlyArray<RegisteredApp>) =>
        Effect.forEach(some, (app) => Effect.ignore(fetchSchema(app)), { concurrency: "unbounded", discard: true })
      const refreshAll = Effect.suspend(() => fetchEach([...apps.values()]))
      const withoutSchema = () => [...apps.values()].filter((app) => app.schema === undefined)

      const put = (next: AppConfig) =>
        Effect.suspend(() => {
          const known = apps.get(next.id)
          if (known === undefined) {
            const app = registered(next, true)
            apps.set(next.id, app)
            return Effect.as(Effect.ignore(fetchSchema(app)), app)
          }
          const schemaMoved = known.config.schemaEndpoint !== next.schemaEndpoint
          known.config = next
          known.runtime = true
          if (schemaMoved) known.etag = undefined
          return schemaMoved || known.schema === undefined
            ? Effect.as(Effect.ignore(fetchSchema(known)), known)
            : Effect.succeed(known)
        })

      yield* Effect.forEach(
        config.apps.filter((app) => app.notifyEndpoint === undefined),
        (app) =>
          Effect.logInfo(
            "lifecycle notifications are off for this app (its notify endpoint is \"none\", or it has no base URL and no notify endpoint)"
          ).pipe(Effect.annotateLogs({ app_id: app.id })),
        { discard: true }
      )

      // The first fetch happens before the node reports ready; a failure is not
      // fatal (readiness says why), the periodic loop keeps trying.
      yield* refreshAll
      yield* refreshAll.pipe(
        Effect.repeat(Schedule.spaced(SCHEMA_REFRESH_INTERVAL)),
        supervised(SupervisedChild.schemaRefresh)
      )
      // An app without a schema retries sooner than the regular interval; the
      // loop never ends, since an app registered at runtime may need it later.
      yield* Effect.suspend(() => fetchEach(withoutSchema())).pipe(
        Effect.repeat(Schedule.spaced("2 seconds")),
        Effect.delay("2 seconds"),
        supervised(SupervisedChild.schemaRetry)
      )

      return AppRegistry.of({
        get: (appId) => apps.get(appId),
        refresh,
        unready: () =>
          withoutSchema().filter((app) => !app.runtime).map((app) => ({
            app: app.config.id,
            reason: app.lastError ?? "schema not fetched yet"
          })),
        all: () => [...apps.values()],
        put,
        remove: (appId) => apps.delete(appId)
      })
    })
  )
}
