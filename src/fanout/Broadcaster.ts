/**
 * The entry point of every broadcast, whether an app's answer or the server
 * API asked for it: it goes through the topic's entity, whose single mailbox
 * gives every subscriber, on every node, the same order.
 *
 * A call that fails while the cluster moves the topic's shard is retried (the
 * broadcast keeps its id, so a node that got it already drops the repeat);
 * one that still fails is reported to the caller, never silently dropped.
 */
import { Context, Effect, Layer, Schedule, Schema } from "effect"
import { makeIdSource } from "../cluster/entityIds.ts"
import { Topic, topicEntityId } from "../cluster/TopicEntity.ts"
import type { Broadcast } from "./LocalFanout.ts"
import { boundEntityCall } from "../cluster/entityCallTimeout.ts"

export class BroadcastFailed extends Schema.TaggedError<BroadcastFailed>()("BroadcastFailed", {
  app: Schema.String,
  topic: Schema.String,
  detail: Schema.String
}) {
  override get message() {
    return this.detail
  }
}

/** Events an app may broadcast: `phx_` events are the protocol's own (a broadcast `phx_close` would close channels). */
export { AppEventName, isAppEventName } from "../contract/Messages.ts"

export interface BroadcasterShape {
  readonly publish: (broadcast: Omit<Broadcast, "id">) => Effect.Effect<void, BroadcastFailed>
}

/** Retries within about a second, which covers a shard handover; then the whole call gives up. */
const PUBLISH_RETRY = { schedule: Schedule.exponential("50 millis"), times: 4 } as const
/**
 * Longer than other entity calls (`ENTITY_CALL_TIMEOUT_MS`): a publish may
 * start the topic's entity on another node, retry through a handover, and
 * waits for every node's inbox (up to a second); on a busy node all of that
 * measured more than 5 s.
 */
const PUBLISH_TIMEOUT_MS = 8_000

export class Broadcaster extends Context.Service<Broadcaster, BroadcasterShape>()("realtime-gateway/fanout/Broadcaster") {
  static readonly layer = Layer.effect(
    Broadcaster,
    Effect.gen(function*() {
      const topicClient = yield* Topic.client
      const nextId = makeIdSource()
      return Broadcaster.of({
        publish: ({ app, topic, event, payload, excludeConnectionId }) =>
          topicClient(topicEntityId(app, topic)).Publish({
            id: nextId(),
            event,
            payload,
            excludeConnectionId
          }).pipe(
            Effect.retry(PUBLISH_RETRY),
            boundEntityCall("Topic.Publish", PUBLISH_TIMEOUT_MS),
            Effect.catch((error) => {
              const failure = new BroadcastFailed({ app, topic, detail: String(error) })
              return Effect.logWarning("broadcast failed", failure.detail).pipe(
                Effect.annotateLogs({ app_id: app, topic }),
                Effect.andThen(Effect.fail(failure))
              )
            })
          )
      })
    })
  )
}
