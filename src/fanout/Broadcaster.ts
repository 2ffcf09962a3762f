/**
 * The entry point of every broadcast, whether an app's answer or the server
 * API asked for it: it is sequenced on the node that holds the topic's shard
 * (where its Topic entity runs), which hands it to every subscriber on every
 * node in one order. On that node it is fanned out at once; from another node
 * it travels over the node link to it (`PublishRoute`), and only without one
 * through an effect/cluster call to the entity.
 *
 * A call that fails while the cluster moves the topic's shard is retried (the
 * broadcast keeps its id, so a node that got it already drops the repeat);
 * one that still fails is reported to the caller, never silently dropped.
 */
import { Context, Effect, Layer, Schedule, Schema } from "effect"
import { EntityId, Sharding } from "effect/cluster"
import { makeIdSource } from "../cluster/entityIds.ts"
import { PublishRoute } from "../cluster/PublishRoute.ts"
import { Topic, topicEntityId } from "../cluster/TopicEntity.ts"
import type { Broadcast } from "./LocalFanout.ts"
import { boundEntityCall } from "../cluster/entityCallTimeout.ts"
import { Tracing } from "../observability/Tracing.ts"

export class BroadcastFailed extends Schema.TaggedError<BroadcastFailed>()("BroadcastFailed", {
  app: Schema.String,
  topic: Schema.String,
  detail: Schema.String
}) {
  override get message() {
    return this.detail
  }
}

export interface BroadcasterShape {
  readonly publish: (broadcast: Omit<Broadcast, "id">) => Effect.Effect<void, BroadcastFailed>
}

/** Retries within about a second, which covers a shard handover; then the whole call gives up. */
const PUBLISH_RETRY = { schedule: Schedule.exponential("50 millis"), times: 4 } as const
/**
 * Longer than other entity calls (`ENTITY_CALL_TIMEOUT_MS`): a publish may
 * start the topic's entity on another node and retry through a handover; on
 * a busy node that measured more than 5 s.
 */
const PUBLISH_TIMEOUT_MS = 8_000

export class Broadcaster extends Context.Service<Broadcaster, BroadcasterShape>()("realtime-gateway/fanout/Broadcaster") {
  static readonly layer = Layer.effect(
    Broadcaster,
    Effect.gen(function*() {
      const topicClient = yield* Topic.client
      const sharding = yield* Sharding.Sharding
      const route = yield* PublishRoute
      const tracing = yield* Tracing
      const nextId = makeIdSource()

      const callEntity = (publish: Broadcast) =>
        topicClient(topicEntityId(publish.app, publish.topic)).Publish({
          id: publish.id,
          event: publish.event,
          payload: publish.payload,
          excludeConnectionId: publish.excludeConnectionId
        })
      const shardOf = (publish: Broadcast) => {
        const entityId = EntityId.make(topicEntityId(publish.app, publish.topic))
        return sharding.getShardId(entityId, Topic.getShardGroup(entityId))
      }
      /** Fanned out at once from this node, the topic's; through the entity when this node cannot yet. */
      const fanOutOrCall = (publish: Broadcast) => route.fanOut(publish) ? Effect.void : callEntity(publish)
      /** On the topic's own node, fanned out at once; else through the entity. */
      const publishHere = (publish: Broadcast) =>
        sharding.hasShardId(shardOf(publish)) ? fanOutOrCall(publish) : callEntity(publish)
      route.setPublisher(publishHere)

      /** Sequenced here when this node holds the topic, over a node link when another does, else an entity call. */
      const deliverToEntity = (publish: Broadcast) => {
        const shard = shardOf(publish)
        if (sharding.hasShardId(shard)) return fanOutOrCall(publish)
        return Effect.flatMap(route.forward(shard.id, publish), (forwarded) => forwarded ? Effect.void : callEntity(publish))
      }
      /** Over a link or an entity call: retried through a shard move, and bounded in time. */
      const deliverElsewhere = (publish: Broadcast) =>
        Effect.suspend(() => deliverToEntity(publish)).pipe(
          Effect.retry(PUBLISH_RETRY),
          boundEntityCall("Topic.Publish", PUBLISH_TIMEOUT_MS)
        )

      return Broadcaster.of({
        publish: ({ app, topic, event, payload, excludeConnectionId }) => {
          // one id for every try, so that a node that got the broadcast already drops a repeat;
          // the route is chosen again on each try (the topic's shard may have moved)
          const publish = { app, topic, id: nextId(), event, payload, excludeConnectionId }
          // on the topic's own node (every broadcast of a single node) it is fanned out at once:
          // nothing to wait for, so no retry and no timeout race
          const here = () => sharding.hasShardId(shardOf(publish)) && route.fanOut(publish)
          return Effect.suspend(() => here() ? Effect.void : deliverElsewhere(publish)).pipe(
            tracing.around("gateway.publish", { "gateway.app_id": app, "gateway.topic": topic, "gateway.event": event }, "producer"),
            Effect.catch((error) => {
              const failure = new BroadcastFailed({ app, topic, detail: String(error) })
              return Effect.logWarning("broadcast failed", failure.detail).pipe(
                Effect.annotateLogs({ app_id: app, topic }),
                Effect.andThen(Effect.fail(failure))
              )
            })
          )
        }
      })
    })
  )
}
