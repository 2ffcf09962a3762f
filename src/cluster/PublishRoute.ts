/**
 * The cheap way from a publishing node to the node that sequences a topic's
 * broadcasts: the node holding the topic's shard, where its Topic entity runs.
 *
 * - On that node, a broadcast is handed to every node's subscribers at once
 *   (`fanOut`), in the order broadcasts arrive there, as the entity itself
 *   does with its presence diffs; it does not pass through the entity's
 *   mailbox, since a call to an entity, even within one process, cost more
 *   CPU than the whole rest of a broadcast's hop.
 * - On another node, it goes over the node link to that node (`forward`).
 * - Without a known route (a shard moving, a link down), an effect/cluster
 *   call to the Topic entity: a route is only ever a shortcut.
 *
 * The ends are bound late, because they are made by services built in the
 * opposite order: the `Broadcaster` (built with the sessions) publishes and
 * says how a forwarded broadcast is published here; the `NodeRouter` (built
 * after the sessions, since it calls into them) says how to reach the other
 * nodes.
 */
import { Context, Effect, Layer } from "effect"
import type { BroadcastMessage } from "./messages.ts"

export interface PublishRouteShape {
  /** Sends the broadcast to the node that owns `shard`; false when no route is known or it failed. */
  readonly forward: (shard: number, publish: BroadcastMessage) => Effect.Effect<boolean>
  /** Hands the broadcast to every live node's subscribers now; false when this node cannot yet. */
  readonly fanOut: (publish: BroadcastMessage) => boolean
  /** Publishes a broadcast another node forwarded here. */
  readonly publishHere: (publish: BroadcastMessage) => Effect.Effect<void, unknown>
  readonly setRouter: (router: Pick<PublishRouteShape, "forward" | "fanOut">) => void
  readonly setPublisher: (publish: PublishRouteShape["publishHere"]) => void
}

export class PublishRoute extends Context.Service<PublishRoute, PublishRouteShape>()("realtime-gateway/cluster/PublishRoute") {
  static readonly layer = Layer.sync(PublishRoute, () => {
    let router: Pick<PublishRouteShape, "forward" | "fanOut"> = { forward: () => Effect.succeed(false), fanOut: () => false }
    let publishHere: PublishRouteShape["publishHere"] = () => Effect.fail("this node does not publish yet")
    return PublishRoute.of({
      forward: (shard, publish) => Effect.suspend(() => router.forward(shard, publish)),
      fanOut: (publish) => router.fanOut(publish),
      publishHere: (publish) => Effect.suspend(() => publishHere(publish)),
      setRouter: (next) => {
        router = next
      },
      setPublisher: (next) => {
        publishHere = next
      }
    })
  })
}
