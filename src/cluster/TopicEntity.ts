/**
 * The Topic entity: one per `(app, topic)` in the whole cluster, a single
 * mailbox that knows which nodes have local subscribers to the topic.
 *
 * Its state is only what nodes tell it, so it can be lost at any time (a move,
 * a crash, idle reaping) and is rebuilt by the nodes re-registering their
 * topics on an interval (`TopicRegistry`). An entity whose topic no node
 * subscribes to stops receiving those re-registrations and is reaped.
 *
 * Registrations carry a per-node sequence number so that a late `Unsubscribe`
 * never undoes a newer `Subscribe` from the same node.
 */
import { Effect, Schema } from "effect"
import { Entity } from "effect/cluster"
import { Rpc } from "effect/rpc"
import { NodeDelivery } from "../fanout/NodeDelivery.ts"

const Registration = { node: Schema.String, seq: Schema.Number }

export const Subscribe = Rpc.make("Subscribe", { payload: Registration })
export const Unsubscribe = Rpc.make("Unsubscribe", { payload: Registration })
export const Nodes = Rpc.make("Nodes", { success: Schema.Array(Schema.String) })
/** A broadcast to every subscriber: the entity's single mailbox gives all subscribers one order. */
export const Publish = Rpc.make("Publish", {
  payload: {
    event: Schema.String,
    payload: Schema.Unknown,
    excludeConnectionId: Schema.optional(Schema.String)
  }
})

export const Topic = Entity.make("Topic", [Subscribe, Unsubscribe, Nodes, Publish])

/** Longer than the re-registration interval, so that a topic with subscribers is never reaped. */
export const TOPIC_ENTITY_MAX_IDLE = "2 minutes"

/** Entity ids are `<app>/<topic>`: app ids cannot contain `/`, topics may. */
export const topicEntityId = (app: string, topic: string) => `${app}/${topic}`

export const TopicEntityLayer = Topic.toLayer(
  Effect.gen(function*() {
    const address = yield* Entity.CurrentAddress
    const separator = address.entityId.indexOf("/")
    const app = address.entityId.slice(0, separator)
    const topic = address.entityId.slice(separator + 1)
    const delivery = yield* NodeDelivery
    // node → the sequence number of its newest registration; present = subscribed
    const subscribed = new Map<string, number>()
    // node → the sequence number of its newest unsubscription
    const unsubscribed = new Map<string, number>()

    return Topic.of({
      Subscribe: ({ payload: { node, seq } }) =>
        Effect.sync(() => {
          if (seq < (unsubscribed.get(node) ?? -1) || seq < (subscribed.get(node) ?? -1)) return
          subscribed.set(node, seq)
        }),
      Unsubscribe: ({ payload: { node, seq } }) =>
        Effect.sync(() => {
          if (seq < (subscribed.get(node) ?? -1)) return
          subscribed.delete(node)
          unsubscribed.set(node, seq)
        }),
      Nodes: () => Effect.sync(() => [...subscribed.keys()]),
      Publish: ({ payload }) =>
        Effect.forEach(
          subscribed.keys(),
          (node) => delivery.deliver(node, { app, topic, ...payload }),
          { concurrency: "unbounded", discard: true }
        )
    })
  }),
  { maxIdleTime: TOPIC_ENTITY_MAX_IDLE }
)
