/**
 * This node's subscribers per topic: the local index (`<app>/<topic>` →
 * sockets) that fan-out walks. Joining and leaving only touch it, with no
 * cluster call; the node holding the topic's shard (`PublishRoute.fanOut`, or
 * its Topic entity as a fallback) sends every broadcast to every live node,
 * and a node without subscribers to the topic drops it here.
 */
import { Context, Layer } from "effect"
import { topicEntityId } from "../cluster/TopicEntity.ts"
import type { Serializer } from "../protocol/Serializer.ts"

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
   * The local subscribers a broadcast is for (hot path of fan-out; empty when there are none),
   * or `undefined` when it was delivered already (a cluster retry).
   */
  readonly subscribersFor: (broadcast: { readonly id: string; readonly app: string; readonly topic: string }) =>
    | ReadonlySet<TopicSubscriber>
    | undefined
}

interface LocalTopic {
  readonly subscribers: Set<TopicSubscriber>
  /** ids of the latest broadcasts delivered, to drop repeats; created on the first delivery */
  recentIds: Array<string> | undefined
}

const NO_SUBSCRIBERS: ReadonlySet<TopicSubscriber> = new Set()

/** Repeats arrive right after the original (a retried cluster call), so a short memory is enough. */
const RECENT_IDS = 32

export class TopicRegistry extends Context.Service<TopicRegistry, TopicRegistryShape>()(
  "realtime-gateway/fanout/TopicRegistry"
) {
  static readonly layer = Layer.sync(TopicRegistry, () => {
    const local = new Map<string, LocalTopic>()
    return TopicRegistry.of({
      subscribe: (app, topic, subscriber) => {
        const entityId = topicEntityId(app, topic)
        const existing = local.get(entityId)
        if (existing !== undefined) existing.subscribers.add(subscriber)
        else local.set(entityId, { subscribers: new Set([subscriber]), recentIds: undefined })
      },
      unsubscribe: (app, topic, subscriber) => {
        const entityId = topicEntityId(app, topic)
        const existing = local.get(entityId)
        if (existing === undefined || !existing.subscribers.delete(subscriber) || existing.subscribers.size > 0) return
        local.delete(entityId)
      },
      subscribersFor: ({ id, app, topic }) => {
        const entry = local.get(topicEntityId(app, topic))
        if (entry === undefined) return NO_SUBSCRIBERS
        const recent = (entry.recentIds ??= [])
        if (recent.includes(id)) return undefined
        if (recent.length >= RECENT_IDS) recent.shift()
        recent.push(id)
        return entry.subscribers
      }
    })
  })
}
