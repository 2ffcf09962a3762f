/**
 * The apps this node serves and the current channel schema of each.
 *
 * A schema is fetched at start, every five minutes, and on demand, with
 * `If-None-Match` once an `ETag` was seen. It is compiled once per version
 * (patterns, variable rules, payload validators), so the hot path only looks
 * up `app.schema`. A fetch that fails, or a document that does not parse, is
 * logged and the last good schema stays in force.
 */
import { Context, Effect, Layer, Schedule, Schema, Semaphore } from "effect"
import type { AppConfig } from "../config/GatewayConfig.ts"
import { GatewayConfig } from "../config/GatewayConfig.ts"
import { Upstream } from "../upstream/Upstream.ts"
import { loadSchemaDocument } from "./CompiledSchema.ts"
import type { CompiledAppSchema } from "./CompiledSchema.ts"
import { SupervisedChild } from "../supervision/children.ts"
import { supervised } from "../supervision/Supervisor.ts"

const SCHEMA_REFRESH_INTERVAL = "5 minutes"

/** An app as the hot path sees it; `schema` is replaced whole when a new version loads. */
export interface RegisteredApp {
  readonly config: AppConfig
  schema: CompiledAppSchema | undefined
  etag: string | undefined
  /** Why the last fetch failed, while it keeps failing; for readiness and operators. */
  lastError: string | undefined
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
  /** Apps that have never had a valid schema, with the reason. Empty when all are usable. */
  readonly unready: () => ReadonlyArray<{ readonly app: string; readonly reason: string }>
}

const headerValue = (value: string | ReadonlyArray<string> | undefined) =>
  Array.isArray(value) ? value[0] : (value as string | undefined)

export class AppRegistry extends Context.Service<AppRegistry, AppRegistryShape>()("realtime-gateway/apps/AppRegistry") {
  static readonly layer = Layer.effect(
    AppRegistry,
    Effect.gen(function*() {
      const config = yield* GatewayConfig
      const upstream = yield* Upstream
      const apps = new Map<string, RegisteredApp>(
        config.apps.map((app) => [app.id, { config: app, schema: undefined, etag: undefined, lastError: undefined }])
      )

      // one fetch per app at a time: the periodic, retry and on-demand fetches
      // could otherwise race, and an older answer overwrite a newer schema
      const fetchLocks = new Map(config.apps.map((app) => [app.id, Semaphore.makeUnsafe(1)]))

      const fetchSchema = (app: RegisteredApp) =>
        Effect.gen(function*() {
          const fail = (reason: string) => {
            app.lastError = reason
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
            return app.schema.version
          }
          if (answer.status !== 200) return yield* fail(`schema endpoint answered ${answer.status}`)

          const document = yield* Effect.try({
            try: () => JSON.parse(answer.body) as unknown,
            catch: () => "schema endpoint answered with invalid JSON"
          }).pipe(Effect.catch(fail))
          const compiled = yield* loadSchemaDocument(document).pipe(
            Effect.catch((error) => fail(`invalid schema document: ${error.reason}`))
          )
          const previous = app.schema?.version
          app.schema = compiled
          app.etag = headerValue(answer.headers["etag"])
          app.lastError = undefined
          if (previous !== compiled.version) {
            yield* Effect.logInfo("schema loaded").pipe(
              Effect.annotateLogs({ app_id: app.config.id, schema_version: compiled.version })
            )
          }
          return compiled.version
        }).pipe(fetchLocks.get(app.config.id)!.withPermits(1))

      const refresh = (appId: string) =>
        Effect.suspend((): Effect.Effect<string, SchemaFetchFailed | UnknownApp> => {
          const app = apps.get(appId)
          return app === undefined ? Effect.fail(new UnknownApp({ app: appId })) : fetchSchema(app)
        })

      const fetchEach = (some: ReadonlyArray<RegisteredApp>) =>
        Effect.forEach(some, (app) => Effect.ignore(fetchSchema(app)), { concurrency: "unbounded", discard: true })
      const refreshAll = Effect.suspend(() => fetchEach([...apps.values()]))
      const withoutSchema = () => [...apps.values()].filter((app) => app.schema === undefined)

      // The first fetch happens before the node reports ready; a failure is not
      // fatal (readiness says why), the periodic loop keeps trying.
      yield* refreshAll
      yield* refreshAll.pipe(
        Effect.repeat(Schedule.spaced(SCHEMA_REFRESH_INTERVAL)),
        supervised(SupervisedChild.schemaRefresh)
      )
      // An app without a schema retries sooner than the regular interval.
      yield* Effect.suspend(() => fetchEach(withoutSchema())).pipe(
        Effect.delay("2 seconds"),
        Effect.repeat({ until: () => withoutSchema().length === 0 }),
        supervised(SupervisedChild.schemaRetry)
      )

      return AppRegistry.of({
        get: (appId) => apps.get(appId),
        refresh,
        unready: () => withoutSchema().map((app) => ({ app: app.config.id, reason: app.lastError ?? "schema not fetched yet" }))
      })
    })
  )
}
