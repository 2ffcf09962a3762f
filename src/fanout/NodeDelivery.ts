/**
 * How a Topic entity hands a broadcast to one node that has subscribers.
 *
 * On a single node every subscriber is local, so delivery is a direct call
 * into `LocalFanout`.
 */
import { Context, Effect, Layer } from "effect"
import { GatewayConfig } from "../config/GatewayConfig.ts"
import { LocalFanout } from "./LocalFanout.ts"
import type { Broadcast } from "./LocalFanout.ts"

export interface NodeDeliveryShape {
  readonly deliver: (node: string, broadcast: Broadcast) => Effect.Effect<void>
}

export class NodeDelivery extends Context.Service<NodeDelivery, NodeDeliveryShape>()("realtime-gateway/fanout/NodeDelivery") {
  static readonly layerSingleNode = Layer.effect(
    NodeDelivery,
    Effect.gen(function*() {
      const { nodeName } = yield* GatewayConfig
      const fanout = yield* LocalFanout
      return NodeDelivery.of({
        deliver: (node, broadcast) =>
          node === nodeName
            ? Effect.sync(() => void fanout.deliver(broadcast))
            : Effect.logWarning("broadcast for an unknown node dropped").pipe(Effect.annotateLogs({ target_node: node }))
      })
    })
  )
}
