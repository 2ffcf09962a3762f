/**
 * The entry point of every broadcast, whether an app's answer or the server
 * API asked for it: it goes through the topic's entity, whose single mailbox
 * gives every subscriber, on every node, the same order.
 *
 * A call that fails while the cluster moves the topic's shard is retried (the
 * broadcast keeps its id, so a node that got it already drops the repeat);
 * one that still fails is reported to the caller, never silently dropped.
 */
import { randomBytes } from "node:crypto"
import { Context, Effect, Layer, Schedule, Schema } from "effect"
import { Topic, topicEntityId } from "../cluster/TopicEntity.ts"
import type { Broadcast } from "./LocalFanout.ts"

export class BroadcastFailed extends Schema.TaggedError<BroadcastFailed>()("BroadcastFailed", {
  app: Schema.String,
  topic: Schema.String,
  detail: Schema.String
}) {}

export interface BroadcasterShape {
  readonly publish: (broadcast: Omit<Broadcast, "id">) => Effect.Effect<void, BroadcastFailed>
}

/** Retries within about a second, which covers a shard handover; then the whole call gives up. */
const PUBLISH_RETRY = { schedule: Schedule.exponential("50 millis"), times: 4 } as const
const PUBLISH_TIMEOUT = "8 seconds"

export class Broadcaster extends Context.Service<Broadcaster, BroadcasterShape>()("realtime-gateway/fanout/Broadcaster") {
  static readonly layer = Layer.effect(
    Broadcaster,
    Effect.gen(function*() {
      const topicClient = yield* Topic.client
      // ids unique across nodes and restarts, without a random draw per broadcast
      const idPrefix = `${randomBytes(6).toString("base64url")}-`
      let published = 0
      return Broadcaster.of({
        publish: ({ app, topic, event, payload, excludeConnectionId }) =>
          topicClient(topicEntityId(app, topic)).Publish({
            id: `${idPrefix}${(published++).toString(36)}`,
            event,
            payload,
            excludeConnectionId
          }).pipe(
            Effect.retry(PUBLISH_RETRY),
            Effect.timeoutOrElse({
              duration: PUBLISH_TIMEOUT,
              orElse: () => Effect.fail(`no answer from the topic's entity within ${PUBLISH_TIMEOUT}`)
            }),
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
