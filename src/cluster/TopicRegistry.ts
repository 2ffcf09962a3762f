/**
 * This node's subscribers and presences per topic.
 *
 * The local index (`<app>/<topic>` → sockets) is what fan-out walks; joining
 * and leaving only touch it, with no cluster call. Presences are also told to
 * the topic's entity (`Track`/`Untrack`), and every topic with presences is
 * re-sent to its entity on an interval, so that an entity that lost its state
 * (moved, crashed, reaped) is whole again without any client action.
 */
import { Context, Effect, Layer, Schedule } from "effect"
import { Sharding } from "effect/cluster"
import { GatewayConfig } from "../config/GatewayConfig.ts"
import type { Serializer } from "../protocol/Serializer.ts"
import { Topic, topicEntityId } from "./TopicEntity.ts"
import type { PresenceEntry, PresenceState } from "./messages.ts"
import { SupervisedChild } from "../supervision/children.ts"
import { supervised } from "../supervision/Supervisor.ts"
import { boundEntityCall } from "./entityCallTimeout.ts"

/** Presence re-sync period: well under the Topic entity's idle time. */
const PRESENCE_RESYNC_INTERVAL = "30 seconds"
/** Longer than a failover takes, so that a topic's entity has found its new node. */
const SYNC_TIMEOUT_MS = 15_000

/** Fan-out targets are sockets; kept abstract so the registry does not depend on the socket layer. */
export interface TopicSubscriber {
  readonly connectionId: string
  readonly serializer: Serializer
  /** Writes a WebSocket frame made by `wireFrame`, the same buffer for every subscriber. */
  sendFrame(frame: Buffer): void
  /** Whether a `presence_state` broadcast to the topic may go to this subscriber now. */
  acceptsPresenceState(topic: string): boolean
}

export interface TopicRegistryShape {
  readonly subscribe: (app: string, topic: string, subscriber: TopicSubscriber) => void
  readonly unsubscribe: (app: string, topic: string, subscriber: TopicSubscriber) => void
  /**
   * The local subscribers a broadcast is for (hot path of fan-out), or `undefined` when there are
   * none or the broadcast was delivered already (a cluster retry).
   */
  readonly subscribersFor: (broadcast: { readonly id: string; readonly app: string; readonly topic: string }) =>
    | ReadonlySet<TopicSubscriber>
    | undefined
  /** This node's presences on a topic. */
  readonly localPresences: (app: string, topic: string) => ReadonlyArray<PresenceEntry>
  /**
   * Whether a subscriber of the app may have a presence on the topic: an app
   * has presences on at most `MAX_PRESENCE_TOPICS_PER_APP` topics through this
   * node, since each keeps a Topic entity resident somewhere in the cluster.
   */
  readonly admitsPresence: (app: string, topic: string) => boolean
  /**
   * Adds a presence of a local subscriber (locally at once, at the entity when
   * run); answers the topic's whole presence state.
   */
  readonly track: (app: string, topic: string, entry: PresenceEntry) => Effect.Effect<PresenceState>
  /** Removes a presence; the Topic entity announces the leave in the background. */
  readonly untrack: (app: string, topic: string, entry: PresenceEntry) => void
  /** Who is present on a topic, cluster-wide. */
  readonly presences: (app: string, topic: string) => Effect.Effect<PresenceState, unknown>
  /**
   * Sends every local presence list to its topic's entity soon, in the
   * background, rather than at the next interval: after a node died, this
   * restarts the entities that died with it, which then bring their
   * subscribers' presence lists up to date; after a node came back, it
   * restores what the entities dropped while it was gone.
   */
  readonly resyncPresences: () => void
}

interface LocalTopic {
  readonly app: string
  readonly subscribers: Set<TopicSubscriber>
  /**
   * presence ref → entry; created on the first presence of a presence
   * channel, dropped once empty and told to the entity (so that the re-sync
   * no longer keeps the entity resident)
   */
  presences: Map<string, PresenceEntry> | undefined
  /** ids of the latest broadcasts delivered, to drop repeats; created on the first delivery */
  recentIds: Array<string> | undefined
}

/** Repeats arrive right after the original (a retried cluster call), so a short memory is enough. */
const RECENT_IDS = 32

export class TopicRegistry extends Context.Service<TopicRegistry, TopicRegistryShape>()(
  "realtime-gateway/cluster/TopicRegistry"
) {
  static readonly layer = Layer.effect(
    TopicRegistry,
    Effect.gen(function*() {
      const { nodeName, limits: { entityCallTimeoutMs, maxPresenceTopicsPerApp } } = yield* GatewayConfig
      const topicClient = yield* Topic.client
      const context = yield* Effect.context<Sharding.Sharding>()
      const runInBackground = Effect.runForkWith(context)

      const local = new Map<string, LocalTopic>()
      // app → its local topics with presences (see admitsPresence)
      const presenceTopics = new Map<string, number>()
      const countPresenceTopic = (app: string, delta: 1 | -1) => {
        const count = (presenceTopics.get(app) ?? 0) + delta
        if (count === 0) presenceTopics.delete(app)
        else presenceTopics.set(app, count)
      }
      const presencesOf = (topic: LocalTopic) => {
        if (topic.presences === undefined) {
          topic.presences = new Map()
          countPresenceTopic(topic.app, 1)
        }
        return topic.presences
      }
      const dropPresences = (topic: LocalTopic) => {
        if (topic.presences === undefined) return
        topic.presences = undefined
        countPresenceTopic(topic.app, -1)
      }

      const logFailure = (what: string, entityId: string) => (error: unknown) =>
        Effect.logWarning(`${what} failed; the next presence re-sync repairs it`, String(error)).pipe(
          Effect.annotateLogs({ topic: entityId })
        )

      const syncPresences = (entityId: string, presences: ReadonlyMap<string, PresenceEntry>) =>
        topicClient(entityId).SyncPresences({ node: nodeName, presences: [...presences.values()] }).pipe(
          // a topic whose shard has no owner yet must not hold up the others for ever
          boundEntityCall("Topic.SyncPresences", SYNC_TIMEOUT_MS),
          Effect.as(true),
          Effect.catch((error) => logFailure("presence re-sync", entityId)(error).pipe(Effect.as(false)))
        )

      const resyncAll = Effect.suspend(() =>
        Effect.forEach(
          [...local].flatMap(([entityId, topic]) => topic.presences === undefined ? [] : [[entityId, topic] as const]),
          ([entityId, topic]) => {
            const presences = topic.presences!
            return syncPresences(entityId, presences).pipe(Effect.map((answered) => {
              // the entity knows this node has none left: nothing more to re-send
              if (answered && presences.size === 0 && topic.presences === presences) dropPresences(topic)
            }))
          },
          { concurrency: 16, discard: true }
        )
      )

      // One re-sync at a time: asked for again while one runs, it runs once more after it.
      let resyncRunning = false
      let resyncAgain = false
      const resyncPresences = (): void => {
        if (resyncRunning) {
          resyncAgain = true
          return
        }
        resyncRunning = true
        runInBackground(resyncAll.pipe(Effect.ensuring(Effect.sync(() => {
          resyncRunning = false
          if (resyncAgain) {
            resyncAgain = false
            resyncPresences()
          }
        }))))
      }

      yield* resyncAll.pipe(
        Effect.repeat(Schedule.spaced(PRESENCE_RESYNC_INTERVAL)),
        Effect.delay(PRESENCE_RESYNC_INTERVAL),
        supervised(SupervisedChild.presenceResync)
      )

      const subscribe = (app: string, topic: string, subscriber: TopicSubscriber) => {
        const entityId = topicEntityId(app, topic)
        const existing = local.get(entityId)
        if (existing !== undefined) existing.subscribers.add(subscriber)
        else local.set(entityId, { app, subscribers: new Set([subscriber]), presences: undefined, recentIds: undefined })
      }

      const unsubscribe = (app: string, topic: string, subscriber: TopicSubscriber) => {
        const entityId = topicEntityId(app, topic)
        const existing = local.get(entityId)
        if (existing === undefined || !existing.subscribers.delete(subscriber) || existing.subscribers.size > 0) return
        local.delete(entityId)
        // the last subscriber leaving takes this node's last presences with it
        if (existing.presences !== undefined && existing.presences.size > 0) {
          runInBackground(syncPresences(entityId, new Map()))
        }
        dropPresences(existing)
      }

      const track = (app: string, topic: string, entry: PresenceEntry) => {
        // counted at once, so that the next join's admission sees it
        const entityId = topicEntityId(app, topic)
        const existing = local.get(entityId)
        if (existing !== undefined) presencesOf(existing).set(entry.ref, entry)
        return topicClient(entityId).Track({ node: nodeName, entry }).pipe(
          boundEntityCall("Topic.Track", entityCallTimeoutMs),
          Effect.catch((error) => logFailure("presence tracking", entityId)(error).pipe(Effect.as({})))
        )
      }

      const untrack = (app: string, topic: string, entry: PresenceEntry) => {
        const entityId = topicEntityId(app, topic)
        local.get(entityId)?.presences?.delete(entry.ref)
        runInBackground(
          topicClient(entityId).Untrack({ node: nodeName, ref: entry.ref }).pipe(
            boundEntityCall("Topic.Untrack", entityCallTimeoutMs),
            Effect.catch(logFailure("presence untracking", entityId))
          )
        )
      }

      return TopicRegistry.of({
        admitsPresence: (app, topic) =>
          local.get(topicEntityId(app, topic))?.presences !== undefined ||
          (presenceTopics.get(app) ?? 0) < maxPresenceTopicsPerApp,
        subscribe,
        unsubscribe,
        subscribersFor: ({ id, app, topic }) => {
          const entry = local.get(topicEntityId(app, topic))
          if (entry === undefined) return undefined
          const recent = (entry.recentIds ??= [])
          if (recent.includes(id)) return undefined
          if (recent.length >= RECENT_IDS) recent.shift()
          recent.push(id)
          return entry.subscribers
        },
        localPresences: (app, topic) => [...(local.get(topicEntityId(app, topic))?.presences?.values() ?? [])],
        track,
        untrack,
        presences: (app, topic) =>
          topicClient(topicEntityId(app, topic)).Presences().pipe(boundEntityCall("Topic.Presences", entityCallTimeoutMs)),
        resyncPresences
      })
    })
  )
}
