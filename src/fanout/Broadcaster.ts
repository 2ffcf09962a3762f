/**
 * The entry point of every broadcast, whether an app's answer or the server
 * API asked for it: it goes through the topic's entity, whose single mailbox
 * gives every subscriber, on every node, the same order.
 */
import { randomBytes } from "node:crypto"
import { Context, Effect, Layer } from "effect"
import { Topic, topicEntityId } from "../cluster/TopicEntity.ts"
import type { Broadcast } from "./LocalFanout.ts"

export interface BroadcasterShape {
  readonly publish: (broadcast: Omit<Broadcast, "id">) => Effect.Effect<void>
}

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
            Effect.catch((error) =>
              Effect.logWarning("broadcast failed", String(error)).pipe(Effect.annotateLogs({ app_id: app, topic }))
            )
          )
      })
    })
  )
}
