/**
 * Reaching one specific node: what the entities and the server API ask of a
 * node (deliver a broadcast to its subscribers, close a client's connections,
 * list its connections), and the list of live nodes.
 *
 * On a single node every target is this node, so each call goes straight to
 * the local services.
 */
import { Context, Effect, Layer, Schema } from "effect"
import { GatewayConfig } from "../config/GatewayConfig.ts"
import { LocalFanout } from "../fanout/LocalFanout.ts"
import type { Broadcast } from "../fanout/LocalFanout.ts"
import { Sessions } from "../socket/Sessions.ts"

/** One live connection, as the server API lists it (CONTRACT §4). */
export const ConnectionInfo = Schema.Struct({
  connection_id: Schema.String,
  client_id: Schema.String,
  client_type: Schema.String,
  metadata: Schema.Record(Schema.String, Schema.Unknown),
  node: Schema.String,
  connected_at: Schema.String,
  last_ping: Schema.String,
  topics: Schema.Array(Schema.String)
})
export type ConnectionInfo = typeof ConnectionInfo.Type

export interface NodeRouterShape {
  /** Every live node of the cluster, this one included. */
  readonly nodes: Effect.Effect<ReadonlyArray<string>>
  readonly deliver: (node: string, broadcast: Broadcast) => Effect.Effect<void>
  /** Closes every connection of the client on the node; answers how many. */
  readonly disconnectClient: (node: string, app: string, clientId: string) => Effect.Effect<number>
  readonly connections: (node: string, app: string) => Effect.Effect<ReadonlyArray<ConnectionInfo>>
}

export class NodeRouter extends Context.Service<NodeRouter, NodeRouterShape>()("realtime-gateway/cluster/NodeRouter") {
  static readonly layerSingleNode = Layer.effect(
    NodeRouter,
    Effect.gen(function*() {
      const { nodeName } = yield* GatewayConfig
      const fanout = yield* LocalFanout
      const sessions = yield* Sessions
      const unknownNode = (node: string) =>
        Effect.logWarning("request for an unknown node dropped").pipe(Effect.annotateLogs({ target_node: node }))
      return NodeRouter.of({
        nodes: Effect.succeed([nodeName]),
        deliver: (node, broadcast) =>
          node === nodeName ? Effect.sync(() => void fanout.deliver(broadcast)) : unknownNode(node),
        disconnectClient: (node, app, clientId) =>
          node === nodeName ? Effect.sync(() => sessions.disconnectClient(app, clientId)) : unknownNode(node).pipe(Effect.as(0)),
        connections: (node, app) =>
          node === nodeName ? Effect.sync(() => sessions.connections(app)) : unknownNode(node).pipe(Effect.as([]))
      })
    })
  )
}
