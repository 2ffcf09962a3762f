/**
 * Delivery of a broadcast to this node's subscribers of a topic: the frame is
 * encoded once per protocol version and the same bytes are written to every
 * socket (Phoenix's "fastlane").
 */
import { Context, Effect, Layer } from "effect"
import { TopicRegistry } from "../cluster/TopicRegistry.ts"
import type { BroadcastMessage } from "../cluster/messages.ts"
import { V2 } from "../protocol/Serializer.ts"
import type { Serializer } from "../protocol/Serializer.ts"

interface EncodedFrame {
  readonly bytes: Buffer
  readonly binary: boolean
}

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

      const encode = (serializer: Serializer, broadcast: Broadcast): EncodedFrame => {
        const bytes = serializer.encodePush(null, broadcast.topic, broadcast.event, broadcast.payload)
        // a string would be UTF-8 encoded again for every socket
        return typeof bytes === "string" ? { bytes: Buffer.from(bytes), binary: false } : { bytes, binary: true }
      }

      const deliver = (broadcast: Broadcast) => {
        const subscribers = topics.subscribersFor(broadcast)
        if (subscribers === undefined) return 0
        // one encoding per protocol version in use (there are two), made on first need
        let v1: EncodedFrame | undefined
        let v2: EncodedFrame | undefined
        let written = 0
        for (const subscriber of subscribers) {
          if (subscriber.connectionId === broadcast.excludeConnectionId) continue
          const frame = subscriber.serializer === V2
            ? (v2 ??= encode(V2, broadcast))
            : (v1 ??= encode(subscriber.serializer, broadcast))
          subscriber.send(frame.bytes, frame.binary)
          written++
        }
        return written
      }

      return LocalFanout.of({ deliver })
    })
  )
}
