/**
 * Delivery of a broadcast to this node's subscribers of a topic: the message
 * is encoded and framed once per protocol version and the same bytes are
 * written to every socket (Phoenix's "fastlane").
 */
import { Context, Effect, Layer } from "effect"
import { AppRegistry } from "../apps/AppRegistry.ts"
import { Metrics } from "../observability/Metrics.ts"
import type { PresenceEvent } from "../observability/Metrics.ts"
import { TopicRegistry } from "./TopicRegistry.ts"
import type { BroadcastMessage } from "../cluster/messages.ts"
import { Event } from "../protocol/constants.ts"
import { V2 } from "../protocol/Serializer.ts"
import type { Serializer } from "../protocol/Serializer.ts"
import { wireFrame } from "../transport/WireFrame.ts"

export type Broadcast = BroadcastMessage

export interface LocalFanoutShape {
  /** Writes the broadcast to every local subscriber. */
  readonly deliver: (broadcast: Broadcast) => void
}

export class LocalFanout extends Context.Service<LocalFanout, LocalFanoutShape>()("realtime-gateway/fanout/LocalFanout") {
  static readonly layer = Layer.effect(
    LocalFanout,
    Effect.gen(function*() {
      const topics = yield* TopicRegistry
      const apps = yield* AppRegistry
      const metrics = yield* Metrics
      const runInBackground = Effect.runForkWith(yield* Effect.context<never>())

      const encode = (serializer: Serializer, broadcast: Broadcast): Buffer =>
        wireFrame(serializer.encodePush(null, broadcast.topic, broadcast.event, broadcast.payload))

      const deliverNow = (broadcast: Broadcast): void => {
        const subscribers = topics.subscribersFor(broadcast)
        // a repeat of a broadcast delivered already is neither written nor counted again
        if (subscribers === undefined) return
        const appMetrics = metrics.forApp(broadcast.app)
        appMetrics.delivered()
        // one encoding per protocol version in use (there are two), made on first need
        let v1: Buffer | undefined
        let v2: Buffer | undefined
        // a whole presence state is not for joins still waiting for their own
        const presenceState = broadcast.event === Event.presenceState
        let written = 0
        for (const subscriber of subscribers) {
          if (subscriber.connectionId === broadcast.excludeConnectionId) continue
          if (presenceState && !subscriber.acceptsPresenceState(broadcast.topic)) continue
          const frame = subscriber.serializer === V2
            ? (v2 ??= encode(V2, broadcast))
            : (v1 ??= encode(subscriber.serializer, broadcast))
          subscriber.sendFrame(frame)
          written++
        }
        if (written === 0) return
        appMetrics.messagesOut(
          presenceState || broadcast.event === Event.presenceDiff
            ? broadcast.event as PresenceEvent
            : apps.get(broadcast.app)?.schema?.event(broadcast.event),
          written
        )
      }

      // Callers deliver batches: one broadcast that cannot be encoded must not
      // cost the others of its batch, nor stop the topic's lane that sent it.
      const deliver = (broadcast: Broadcast): void => {
        try {
          deliverNow(broadcast)
        } catch (error) {
          runInBackground(
            Effect.logError("a broadcast could not be encoded; it was not delivered", String(error)).pipe(
              Effect.annotateLogs({ app_id: broadcast.app, topic: broadcast.topic, event: broadcast.event })
            )
          )
        }
      }

      return LocalFanout.of({ deliver })
    })
  )
}
