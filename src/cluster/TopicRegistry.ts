/**
 * This node's subscribers per topic, and their registration with the Topic
 * entities of the cluster.
 *
 * The local index (`<app>/<topic>` → sockets) is what fan-out walks; the Topic
 * entity only learns that this node has subscribers. The entity is told when
 * the first local subscriber arrives and when the last one leaves, and every
 * topic is re-registered on an interval so that an entity that lost its state
 * (moved, crashed, reaped) is whole again without any client action.
 */
import { Context, Effect, Fiber, Layer, Schedule } from "effect"
import { Sharding } from "effect/cluster"
import { GatewayConfig } from "../config/GatewayConfig.ts"
import type { Serializer } from "../protocol/Serializer.ts"
import { Topic, topicEntityId } from "./TopicEntity.ts"

/** Re-registration period: well under the Topic entity's idle time. */
export const TOPIC_REREGISTER_INTERVAL = "30 seconds"

export interface TopicRegistryShape<Subscriber> {
  /**
   * Adds a local subscriber. Completes once the Topic entity knows this node
   * subscribes (at once when the node already had subscribers to the topic).
   */
  readonly subscribe: (app: string, topic: string, subscriber: Subscriber) => Effect.Effect<void>
  /** Removes a local subscriber; tells the Topic entity in the background when it was the last. */
  readonly unsubscribe: (app: string, topic: string, subscriber: Subscriber) => void
  /** The local subscribers of a topic (hot path of fan-out). */
  readonly subscribers: (app: string, topic: string) => ReadonlySet<Subscriber> | undefined
  /** The nodes the Topic entity knows to have subscribers. */
  readonly nodes: (app: string, topic: string) => Effect.Effect<ReadonlyArray<string>>
  readonly topicCount: () => number
}

/** Fan-out targets are sockets; kept abstract so the registry does not depend on the socket layer. */
export interface TopicSubscriber {
  readonly connectionId: string
  readonly serializer: Serializer
  /** Writes an already encoded frame; `binary` says which WebSocket frame type carries it. */
  send(data: string | Buffer, binary?: boolean): void
}

export class TopicRegistry extends Context.Service<TopicRegistry, TopicRegistryShape<TopicSubscriber>>()(
  "realtime-gateway/cluster/TopicRegistry"
) {
  static readonly layer = Layer.effect(
    TopicRegistry,
    Effect.gen(function*() {
      const { nodeName } = yield* GatewayConfig
      const topicClient = yield* Topic.client
      const context = yield* Effect.context<Sharding.Sharding>()
      const runInBackground = Effect.runForkWith(context)

      const local = new Map<string, Set<TopicSubscriber>>()
      // first registrations still in flight, so that a second joiner waits for them too
      const registering = new Map<string, Fiber.Fiber<void>>()
      let seq = 0

      const register = (entityId: string) =>
        topicClient(entityId).Subscribe({ node: nodeName, seq: seq++ }).pipe(
          Effect.catch((error) =>
            Effect.logWarning("topic registration failed; the next re-registration retries", String(error)).pipe(
              Effect.annotateLogs({ topic: entityId })
            )
          )
        )

      const unregister = (entityId: string) =>
        topicClient(entityId).Unsubscribe({ node: nodeName, seq: seq++ }).pipe(Effect.ignore)

      yield* Effect.suspend(() => Effect.forEach([...local.keys()], register, { concurrency: 16, discard: true })).pipe(
        Effect.repeat(Schedule.spaced(TOPIC_REREGISTER_INTERVAL)),
        Effect.delay(TOPIC_REREGISTER_INTERVAL),
        Effect.forkScoped
      )

      return TopicRegistry.of({
        subscribe: (app, topic, subscriber) =>
          Effect.suspend(() => {
            const entityId = topicEntityId(app, topic)
            const existing = local.get(entityId)
            if (existing !== undefined) {
              existing.add(subscriber)
              const inFlight = registering.get(entityId)
              return inFlight === undefined ? Effect.void : Fiber.join(inFlight)
            }
            local.set(entityId, new Set([subscriber]))
            const fiber = runInBackground(
              register(entityId).pipe(Effect.ensuring(Effect.sync(() => registering.delete(entityId))))
            )
            if (fiber.pollUnsafe() === undefined) registering.set(entityId, fiber)
            return Fiber.join(fiber)
          }),
        unsubscribe: (app, topic, subscriber) => {
          const entityId = topicEntityId(app, topic)
          const existing = local.get(entityId)
          if (existing === undefined || !existing.delete(subscriber) || existing.size > 0) return
          local.delete(entityId)
          runInBackground(unregister(entityId))
        },
        subscribers: (app, topic) => local.get(topicEntityId(app, topic)),
        nodes: (app, topic) => topicClient(topicEntityId(app, topic)).Nodes().pipe(Effect.orDie),
        topicCount: () => local.size
      })
    })
  )
}
