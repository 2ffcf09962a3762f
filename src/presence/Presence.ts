/**
 * Presence: who is present on a topic, cluster-wide.
 *
 * This node keeps its own presences per topic and tells each topic's entity
 * (`Track`/`Untrack`), which holds the presences of every node and announces
 * joins and leaves (`presence_diff`) in order with the topic's broadcasts.
 * Every topic with presences here is re-sent to its entity on an interval, and
 * at once when the live nodes change, so that an entity that lost its state
 * (moved, crashed, reaped) is whole again without any client action.
 */
import { Context, Effect, Layer, Schedule, Semaphore } from "effect"
import { Sharding } from "effect/cluster"
import { Topic, topicEntityId } from "../cluster/TopicEntity.ts"
import type { PresenceEntry, PresenceState } from "../cluster/messages.ts"
import { boundEntityCall } from "../cluster/entityCallTimeout.ts"
import { GatewayConfig } from "../config/GatewayConfig.ts"
import { SupervisedChild } from "../supervision/children.ts"
import { supervised } from "../supervision/Supervisor.ts"

/** Presence re-sync period: well under the Topic entity's idle time. */
const PRESENCE_RESYNC_INTERVAL = "30 seconds"
/** Longer than a failover takes, so that a topic's entity has found its new node. */
const SYNC_TIMEOUT_MS = 15_000

export interface PresenceShape {
  /**
   * Whether a subscriber of the app may have a presence on the topic: an app
   * has presences on at most `MAX_PRESENCE_TOPICS_PER_APP` topics through this
   * node, since each keeps a Topic entity resident somewhere in the cluster.
   */
  readonly admitsPresence: (app: string, topic: string) => boolean
  /**
   * Adds a presence of a local subscriber (here at once, so that the next
   * join's admission counts it; at the entity when run); answers the topic's
   * whole presence state.
   */
  readonly track: (app: string, topic: string, entry: PresenceEntry) => Effect.Effect<PresenceState>
  /** Removes a presence; the Topic entity announces the leave in the background. */
  readonly untrack: (app: string, topic: string, entry: PresenceEntry) => void
  /** Who is present on a topic, cluster-wide. */
  readonly presences: (app: string, topic: string) => Effect.Effect<PresenceState, unknown>
  /** This node's presences on a topic. */
  readonly localPresences: (app: string, topic: string) => ReadonlyArray<PresenceEntry>
  /**
   * Sends every local presence list to its topic's entity soon, in the
   * background, rather than at the next interval: after a node died, this
   * restarts the entities that died with it, which then bring their
   * subscribers' presence lists up to date; after a node came back, it
   * restores what the entities dropped while it was gone.
   */
  readonly resync: () => void
}

export class Presence extends Context.Service<Presence, PresenceShape>()("realtime-gateway/presence/Presence") {
  static readonly layer = Layer.effect(
    Presence,
    Effect.gen(function*() {
      const { nodeName, limits: { entityCallTimeoutMs, maxPresenceTopicsPerApp } } = yield* GatewayConfig
      const topicClient = yield* Topic.client
      const runInBackground = Effect.runForkWith(yield* Effect.context<Sharding.Sharding>())

      /** `<app>/<topic>` → presence ref → entry; a topic leaves it with its last presence, so re-syncs stop keeping its entity */
      const local = new Map<string, Map<string, PresenceEntry>>()
      /** app → how many of its topics are in `local` (see `admitsPresence`) */
      const topicsByApp = new Map<string, number>()
      const countTopic = (app: string, delta: 1 | -1) => {
        const count = (topicsByApp.get(app) ?? 0) + delta
        if (count === 0) topicsByApp.delete(app)
        else topicsByApp.set(app, count)
      }

      const logFailure = (what: string, entityId: string) => (error: unknown) =>
        Effect.logWarning(`${what} failed; the next presence re-sync repairs it`, String(error)).pipe(
          Effect.annotateLogs({ topic: entityId })
        )

      const syncPresences = (entityId: string, presences: ReadonlyMap<string, PresenceEntry>) =>
        topicClient(entityId).SyncPresences({ node: nodeName, presences: [...presences.values()] }).pipe(
          // a topic whose shard has no owner yet must not hold up the others for ever
          boundEntityCall("Topic.SyncPresences", SYNC_TIMEOUT_MS),
          Effect.catch(logFailure("presence re-sync", entityId))
        )

      // One re-sync at a time, the periodic one included
      const oneAtATime = Semaphore.makeUnsafe(1)
      const resyncAll = oneAtATime.withPermit(Effect.suspend(() =>
        Effect.forEach([...local], ([entityId, presences]) => syncPresences(entityId, presences), {
          concurrency: 16,
          discard: true
        })
      ))

      // Asked for again while one runs, it runs once more after it.
      let resyncRunning = false
      let resyncAgain = false
      const resync = (): void => {
        if (resyncRunning) {
          resyncAgain = true
          return
        }
        resyncRunning = true
        runInBackground(resyncAll.pipe(Effect.ensuring(Effect.sync(() => {
          resyncRunning = false
          if (resyncAgain) {
            resyncAgain = false
            resync()
          }
        }))))
      }

      const resyncLoop = resyncAll.pipe(Effect.repeat(Schedule.spaced(PRESENCE_RESYNC_INTERVAL)), Effect.delay(PRESENCE_RESYNC_INTERVAL))
      yield* resyncLoop.pipe(supervised(SupervisedChild.presenceResync))

      return Presence.of({
        admitsPresence: (app, topic) =>
          local.has(topicEntityId(app, topic)) || (topicsByApp.get(app) ?? 0) < maxPresenceTopicsPerApp,
        track: (app, topic, entry) => {
          const entityId = topicEntityId(app, topic)
          let entries = local.get(entityId)
          if (entries === undefined) {
            local.set(entityId, entries = new Map())
            countTopic(app, 1)
          }
          entries.set(entry.ref, entry)
          return topicClient(entityId).Track({ node: nodeName, entry }).pipe(
            boundEntityCall("Topic.Track", entityCallTimeoutMs),
            Effect.catch((error) => logFailure("presence tracking", entityId)(error).pipe(Effect.as({})))
          )
        },
        untrack: (app, topic, entry) => {
          const entityId = topicEntityId(app, topic)
          const entries = local.get(entityId)
          if (entries === undefined) return
          entries.delete(entry.ref)
          if (entries.size === 0) {
            local.delete(entityId)
            countTopic(app, -1)
          }
          runInBackground(
            topicClient(entityId).Untrack({ node: nodeName, ref: entry.ref }).pipe(
              boundEntityCall("Topic.Untrack", entityCallTimeoutMs),
              Effect.catch(logFailure("presence untracking", entityId))
            )
          )
        },
        presences: (app, topic) =>
          topicClient(topicEntityId(app, topic)).Presences().pipe(boundEntityCall("Topic.Presences", entityCallTimeoutMs)),
        localPresences: (app, topic) => [...(local.get(topicEntityId(app, topic))?.values() ?? [])],
        resync
      })
    })
  )
}
