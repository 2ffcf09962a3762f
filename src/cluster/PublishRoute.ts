/**
 * The cheap way from a publishing node to a topic's entity: when the entity's
 * shard is owned by another node this one has a link to, the broadcast goes
 * over that link and the owner calls the entity in its own process, instead
 * of an effect/cluster call between runners (which cost several times more
 * CPU on both ends, per message).
 *
 * Both ends are bound late, because they are made by services built in the
 * opposite order: the `Broadcaster` (built with the sessions) publishes and
 * says how a forwarded broadcast is published here; the `NodeRouter` (built
 * after the sessions, since it calls into them) says how to reach the owner.
 * Until the router is there, and whenever it knows no route, the caller uses
 * the effect/cluster call: a route is only ever a shortcut.
 */
import { Context, Effect, Layer } from "effect"

/** A broadcast on its way to its topic's entity. */
export interface ForwardedPublish {
  readonly app: string
  readonly topic: string
  readonly id: string
  readonly event: string
  readonly payload: unknown
  readonly excludeConnectionId: string | undefined
}

export interface PublishRouteShape {
  /** Sends the broadcast to the node that owns `shard`; false when no route is known or it failed. */
  readonly forward: (shard: number, publish: ForwardedPublish) => Effect.Effect<boolean>
  /** Publishes a broadcast another node forwarded here. */
  readonly publishHere: (publish: ForwardedPublish) => Effect.Effect<void, unknown>
  readonly setForwarder: (forward: PublishRouteShape["forward"]) => void
  readonly setPublisher: (publish: PublishRouteShape["publishHere"]) => void
}

export class PublishRoute extends Context.Service<PublishRoute, PublishRouteShape>()("realtime-gateway/cluster/PublishRoute") {
  static readonly layer = Layer.sync(PublishRoute, () => {
    let forward: PublishRouteShape["forward"] = () => Effect.succeed(false)
    let publishHere: PublishRouteShape["publishHere"] = () => Effect.fail("this node does not publish yet")
    return PublishRoute.of({
      forward: (shard, publish) => Effect.suspend(() => forward(shard, publish)),
      publishHere: (publish) => Effect.suspend(() => publishHere(publish)),
      setForwarder: (next) => {
        forward = next
      },
      setPublisher: (next) => {
        publishHere = next
      }
    })
  })
}
