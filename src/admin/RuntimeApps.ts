/**
 * Apps registered, changed or removed at runtime through the admin API.
 *
 * A change is applied the same way on every node: the app registry takes the
 * new settings (and fetches the schema when it has none or its endpoint
 * moved), the app's upstream pool is started afresh; a removal also closes
 * the app's connections on the node and stops its calls to the app.
 *
 * On a single node (`layerMemory`) the change lives in this process only and
 * is gone after a restart. In a cluster (`layerPostgres`) it is written to the
 * `gateway_runtime_apps` table, and the same statement notifies every node
 * (PostgreSQL `NOTIFY`), which reads the table again when told: a change made
 * through one node is in force on all of them within milliseconds, and no
 * node queries anything while nothing changes. Every node also reads the table
 * each time it starts listening (a lost listening connection is opened again
 * a second later) and every {@link SAFETY_READ_INTERVAL}, for a notification
 * lost without its connection closing. A node that starts (or restarts)
 * applies every change before it opens its listener. Removals stay as rows
 * without settings, so that an app of the configuration file stays removed
 * after a restart.
 */
import { Context, Effect, Layer, Queue, Redacted, Result, Schedule, Schema } from "effect"
import { PgClient } from "@effect/sql-pg"
import { AppRegistry } from "../apps/AppRegistry.ts"
import type { RegisteredApp } from "../apps/AppRegistry.ts"
import { decodeAppConfig, formatConfigProblem, GatewayConfig } from "../config/GatewayConfig.ts"
import type { AppConfig } from "../config/GatewayConfig.ts"
import { parseAnyDepth } from "../protocol/json.ts"
import { Sessions } from "../socket/Sessions.ts"
import { Upstream } from "../upstream/Upstream.ts"
import { SupervisedChild } from "../supervision/children.ts"
import { supervised } from "../supervision/Supervisor.ts"

/** The runtime change could not be kept (PostgreSQL unreachable or refusing). */
export class RuntimeAppsUnavailable extends Schema.TaggedError<RuntimeAppsUnavailable>()("RuntimeAppsUnavailable", {
  detail: Schema.String
}) {}

export interface RuntimeAppsShape {
  /** Where changes are kept: this process only, or PostgreSQL for every node and restart. */
  readonly keptIn: "memory" | "postgresql"
  /**
   * Registers or changes an app; `settings` is its JSON as the config file
   * holds it (already decoded into `config`), kept to be decoded again by
   * the other nodes and after restarts.
   */
  readonly put: (config: AppConfig, settings: unknown) => Effect.Effect<RegisteredApp, RuntimeAppsUnavailable>
  /** Removes an app on every node; answers whether this node knew it. */
  readonly remove: (appId: string) => Effect.Effect<boolean, RuntimeAppsUnavailable>
}

/** The PostgreSQL notification channel a change is announced on. */
const CHANGES_CHANNEL = "gateway_runtime_apps"
/** Each node reads the table this often even without a notification: a safety net, not the way changes travel. */
const SAFETY_READ_INTERVAL = "10 seconds"
/** After the listening connection is lost, the next one is opened (and the table read) this much later. */
const RELISTEN_DELAY = "1 second"

/** What every node does with a change, wherever it was made. */
const applier = Effect.gen(function*() {
  const registry = yield* AppRegistry
  const sessions = yield* Sessions
  const upstream = yield* Upstream
  return {
    put: (config: AppConfig) =>
      Effect.suspend(() => {
        upstream.retire(config.id, "finish")
        return registry.put(config)
      }).pipe(Effect.tap(Effect.logInfo("app registered or changed at runtime")), Effect.annotateLogs({ app_id: config.id })),
    remove: (appId: string) =>
      Effect.suspend(() => {
        const known = registry.remove(appId)
        const closed = sessions.closeApp(appId)
        upstream.retire(appId, "stop")
        return Effect.as(
          known ? Effect.logInfo(`app removed at runtime; ${closed} connections closed`) : Effect.void,
          known
        )
      }).pipe(Effect.annotateLogs({ app_id: appId }))
  }
})

interface StoredChange {
  readonly id: string
  readonly revision: string
  /** The app's settings as JSON text; `null` for a removal. */
  readonly settings: string | null
}

export class RuntimeApps extends Context.Service<RuntimeApps, RuntimeAppsShape>()("realtime-gateway/admin/RuntimeApps") {
  static readonly layerMemory = Layer.effect(
    RuntimeApps,
    Effect.gen(function*() {
      const apply = yield* applier
      return RuntimeApps.of({
        keptIn: "memory",
        put: (config) => apply.put(config),
        remove: (appId) => apply.remove(appId)
      })
    })
  )

  static readonly layerPostgres = (databaseUrl: Redacted.Redacted<string>) =>
    Layer.effect(
      RuntimeApps,
      Effect.gen(function*() {
        const config = yield* GatewayConfig
        const apply = yield* applier
        const sql = yield* PgClient.PgClient
        const unavailable = (error: unknown) => new RuntimeAppsUnavailable({ detail: String(error) })

        // Nodes starting together race to create the table; the loser's
        // statement fails on the catalog and succeeds when tried again.
        yield* sql`CREATE TABLE IF NOT EXISTS gateway_runtime_apps (
          id text PRIMARY KEY,
          revision bigint NOT NULL,
          settings text
        )`.pipe(
          Effect.andThen(sql`CREATE SEQUENCE IF NOT EXISTS gateway_runtime_apps_revision`),
          Effect.retry({ times: 5, schedule: Schedule.spaced("200 millis") }),
          Effect.orDie
        )

        // the revision of every change applied here, by app
        const applied = new Map<string, string>()

        const applyStored = (change: StoredChange) =>
          Effect.gen(function*() {
            applied.set(change.id, change.revision)
            if (change.settings === null) return yield* Effect.asVoid(apply.remove(change.id))
            const decoded = decodeAppConfig(parseAnyDepth(change.settings), config.allowedOrigins)
            if (Result.isFailure(decoded)) {
              return yield* Effect.logError(
                "stored runtime app is invalid for this version; ignored",
                decoded.failure.problems.map(formatConfigProblem).join("; ")
              ).pipe(Effect.annotateLogs({ app_id: change.id }))
            }
            yield* apply.put(decoded.success)
          })

        const sync = sql<StoredChange>`SELECT id, revision::text AS revision, settings FROM gateway_runtime_apps`.pipe(
          Effect.flatMap((rows) =>
            Effect.forEach(rows.filter((row) => applied.get(row.id) !== row.revision), applyStored, { discard: true })
          )
        )
        // before the listener opens: a (re)started node serves runtime apps at once
        yield* sync.pipe(Effect.orDie)
        const syncOrWarn = sync.pipe(
          Effect.catch((error) => Effect.logWarning("could not read the runtime apps from PostgreSQL", String(error)))
        )
        // Reads the table once listening (what changed while it was not), then
        // on every notification (all that arrived together at once) and at the
        // safety interval; ends when the listening connection is lost.
        const followChanges = Effect.scoped(Effect.gen(function*() {
          const notifications = yield* sql.listen(CHANGES_CHANNEL)
          yield* syncOrWarn
          while (true) {
            yield* Queue.take(notifications).pipe(
              Effect.andThen(Queue.clear(notifications)),
              Effect.timeoutOption(SAFETY_READ_INTERVAL)
            )
            yield* syncOrWarn
          }
        }))
        const syncLoop = followChanges.pipe(
          Effect.catch((error) => Effect.logWarning("stopped listening for runtime app changes in PostgreSQL", String(error))),
          Effect.andThen(Effect.sleep(RELISTEN_DELAY)),
          Effect.forever
        )
        yield* syncLoop.pipe(supervised(SupervisedChild.runtimeAppsSync))

        // the notification is sent when the change commits, with it
        const write = (appId: string, settings: string | null) =>
          sql<{ revision: string }>`WITH changed AS (
              INSERT INTO gateway_runtime_apps (id, revision, settings)
              VALUES (${appId}, nextval('gateway_runtime_apps_revision'), ${settings})
              ON CONFLICT (id) DO UPDATE SET revision = excluded.revision, settings = excluded.settings
              RETURNING revision::text AS revision
            )
            SELECT revision, pg_notify(${CHANGES_CHANNEL}, revision) FROM changed`.pipe(
            Effect.map((rows) => applied.set(appId, rows[0]!.revision)),
            Effect.mapError(unavailable)
          )

        return RuntimeApps.of({
          keptIn: "postgresql",
          put: (app, settings) => write(app.id, JSON.stringify(settings)).pipe(Effect.andThen(apply.put(app))),
          remove: (appId) => write(appId, null).pipe(Effect.andThen(apply.remove(appId)))
        })
      })
    ).pipe(Layer.provide(Layer.orDie(PgClient.layer({ url: databaseUrl, applicationName: "realtime-gateway runtime apps" }))))
}
