/**
 * This node's subscribers and presences per topic, and their registration
 * with the Topic entities of the cluster.
 *
 * The local index (`<app>/<topic>` → sockets) is what fan-out walks; the Topic
 * entity only learns that this node has subscribers, and which presences the
 * node holds. The entity is told when the first local subscriber arrives and
 * when the last one leaves, and every topic is re-registered (with its
 * presences) on an interval, so that an entity that lost its state (moved,
 * crashed, reaped) is whole again without any client action.
 */
import { Context, Effect, Fiber, Layer, Schedule } from "effect"
import { Sharding } from "effect/cluster"
import { GatewayConfig } from "../config/GatewayConfig.ts"
import type { Serializer } from "../protocol/Serializer.ts"
import { Topic, topicEntityId } from "./TopicEntity.ts"
import type { PresenceEntry, PresenceState } from "./TopicEntity.ts"

/** Re-registration period: well under the Topic entity's idle time. */
export const TOPIC_REREGISTER_INTERVAL = "30 seconds"

/** Fan-out targets are sockets; kept abstract so the registry does not depend on the socket layer. */
export interface TopicSubscriber {
  readonly connectionId: string
  readonly serializer: Serializer
  /** Writes an already encoded frame; `binary` says which WebSocket frame type carries it. */
  send(data: string | Buffer, binary?: boolean): void
}

export interface TopicRegistryShape {
  /**
   * Adds a local subscriber. Completes once the Topic entity knows this node
   * subscribes (at once when the node already had subscribers to the topic).
   */
  readonly subscribe: (app: string, topic: string, subscriber: TopicSubscriber) => Effect.Effect<void>
  /** Removes a local subscriber; tells the Topic entity in the background when it was the last. */
  readonly unsubscribe: (app: string, topic: string, subscriber: TopicSubscriber) => void
  /** The local subscribers of a topic (hot path of fan-out). */
  readonly subscribers: (app: string, topic: string) => ReadonlySet<TopicSubscriber> | undefined
  /** Adds a presence of a local subscriber; answers the topic's whole presence state. */
  readonly track: (app: string, topic: string, entry: PresenceEntry) => Effect.Effect<PresenceState>
  /** Removes a presence; the Topic entity announces the leave in the background. */
  readonly untrack: (app: string, topic: string, entry: PresenceEntry) => void
  /** Who is present on a topic, cluster-wide. */
  readonly presences: (app: string, topic: string) => Effect.Effect<PresenceState>
  /** The nodes the Topic entity knows to have subscribers. */
  readonly nodes: (app: string, topic: string) => Effect.Effect<ReadonlyArray<string>>
  readonly topicCount: () => number
}

interface LocalTopic {
  readonly subscribers: Set<TopicSubscriber>
  /** presence ref → entry; created on the first presence of a presence channel */
  presences: Map<string, PresenceEntry> | undefined
}

export class TopicRegistry extends Context.Service<TopicRegistry, TopicRegistryShape>()(
  "realtime-gateway/cluster/TopicRegistry"
) {
  static readonly layer = Layer.effect(
    TopicRegistry,
    Effect.gen(function*() {
      const { nodeName } = yield* GatewayConfig
      const topicClient = yield* Topic.client
      const context = yield* Effect.context<Sharding.Sharding>()
      const runInBackground = Effect.runForkWith(context)

      const local = new Map<string, LocalTopic>()
      // first registrations still in flight, so that a second joiner waits for them too
      const registering = new Map<string, Fiber.Fiber<void>>()
      let seq = 0

      const logFailure = (what: string, entityId: string) => (error: unknown) =>
        Effect.logWarning(`${what} failed; the next re-registration repairs it`, String(error)).pipe(
          Effect.annotateLogs({ topic: entityId })
        )

      const register = (entityId: string) => {
        const presences = local.get(entityId)?.presences
        return topicClient(entityId).Subscribe({
          node: nodeName,
          seq: seq++,
          ...(presences === undefined ? {} : { presences: [...presences.values()] })
        }).pipe(Effect.catch(logFailure("topic registration", entityId)))
      }

      yield* Effect.suspend(() => Effect.forEach([...local.keys()], register, { concurrency: 16, discard: true })).pipe(
        Effect.repeat(Schedule.spaced(TOPIC_REREGISTER_INTERVAL)),
        Effect.delay(TOPIC_REREGISTER_INTERVAL),
        Effect.forkScoped
      )

      const subscribe = (app: string, topic: string, subscriber: TopicSubscriber) =>
        Effect.suspend(() => {
          const entityId = topicEntityId(app, topic)
          const existing = local.get(entityId)
          if (existing !== undefined) {
            existing.subscribers.add(subscriber)
            const inFlight = registering.get(entityId)
            return inFlight === undefined ? Effect.void : Fiber.join(inFlight)
          }
          local.set(entityId, { subscribers: new Set([subscriber]), presences: undefined })
          const fiber = runInBackground(
            register(entityId).pipe(Effect.ensuring(Effect.sync(() => registering.delete(entityId))))
          )
          if (fiber.pollUnsafe() === undefined) registering.set(entityId, fiber)
          return Fiber.join(fiber)
        })

      const unsubscribe = (app: string, topic: string, subscriber: TopicSubscriber) => {
        const entityId = topicEntityId(app, topic)
        const existing = local.get(entityId)
        if (existing === undefined || !existing.subscribers.delete(subscriber) || existing.subscribers.size > 0) return
        local.delete(entityId)
        runInBackground(
          topicClient(entityId).Unsubscribe({ node: nodeName, seq: seq++ }).pipe(
            Effect.catch(logFailure("topic unregistration", entityId))
          )
        )
      }

      const track = (app: string, topic: string, entry: PresenceEntry) =>
        Effect.suspend(() => {
          const entityId = topicEntityId(app, topic)
          const existing = local.get(entityId)
          if (existing !== undefined) (existing.presences ??= new Map()).set(entry.ref, entry)
          return topicClient(entityId).Track({ node: nodeName, entry }).pipe(
            Effect.catch((error) => logFailure("presence tracking", entityId)(error).pipe(Effect.as({})))
          )
        })

      const untrack = (app: string, topic: string, entry: PresenceEntry) => {
        const entityId = topicEntityId(app, topic)
        local.get(entityId)?.presences?.delete(entry.ref)
        runInBackground(
          topicClient(entityId).Untrack({ node: nodeName, key: entry.key, ref: entry.ref }).pipe(
            Effect.catch(logFailure("presence untracking", entityId))
          )
        )
      }

      return TopicRegistry.of({
        subscribe,
        unsubscribe,
        subscribers: (app, topic) => local.get(topicEntityId(app, topic))?.subscribers,
        track,
        untrack,
        presences: (app, topic) => topicClient(topicEntityId(app, topic)).Presences().pipe(Effect.orDie),
        nodes: (app, topic) => topicClient(topicEntityId(app, topic)).Nodes().pipe(Effect.orDie),
        topicCount: () => local.size
      })
    })
  )
}
