/**
 * Delivery of a broadcast to this node's subscribers of a topic: the frame is
 * encoded once per protocol version and the same bytes are written to every
 * socket (Phoenix's "fastlane").
 */
import { Context, Effect, Layer } from "effect"
import { TopicRegistry } from "../cluster/TopicRegistry.ts"
import type { BroadcastMessage } from "../cluster/messages.ts"
import type { Serializer } from "../protocol/Serializer.ts"

export type Broadcast = BroadcastMessage

export interface LocalFanoutShape {
  /** Writes the broadcast to every local subscriber; returns how many sockets it was written to. */
  readonly deliver: (broadcast: Broadcast) => number
}

export class LocalFanout extends Context.Service<LocalFanout, LocalFanoutShape>()("realtime-gateway/fanout/LocalFanout") {
  static readonly layer = Layer.effect(
    LocalFanout,
    Effect.gen(function*() {
      const topics = yield* TopicRegistry

      const deliver = (broadcast: Broadcast) => {
        const subscribers = topics.subscribersFor(broadcast)
        if (subscribers === undefined) return 0
        // one encoding per serializer in use; almost always one or two entries
        const encoded = new Map<Serializer, { readonly bytes: Buffer; readonly binary: boolean }>()
        let written = 0
        for (const subscriber of subscribers) {
          if (subscriber.connectionId === broadcast.excludeConnectionId) continue
          let frame = encoded.get(subscriber.serializer)
          if (frame === undefined) {
            const bytes = subscriber.serializer.encodePush(null, broadcast.topic, broadcast.event, broadcast.payload)
            // a string would be UTF-8 encoded again for every socket
            frame = typeof bytes === "string" ? { bytes: Buffer.from(bytes), binary: false } : { bytes, binary: true }
            encoded.set(subscriber.serializer, frame)
          }
          subscriber.send(frame.bytes, frame.binary)
          written++
        }
        return written
      }

      return LocalFanout.of({ deliver })
    })
  )
}
