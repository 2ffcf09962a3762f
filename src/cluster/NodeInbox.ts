/**
 * The NodeInbox entity: one per node, pinned to that node by a shard group of
 * its own (`node-<name>`), so that a call to `NodeInbox(<name>)` runs on that
 * node. It is how Topic and Client entities and the server API reach one
 * specific node: deliver broadcasts to its subscribers, close a client's
 * connections, list its connections, read its presences of a topic, report
 * its status.
 *
 * A node that is dead has no runner for its group, and calls to it would be
 * retried for ever: every call through `NodeRouter` carries a timeout.
 */
import { Effect, Schema } from "effect"
import { ClusterSchema, Entity } from "effect/cluster"
import { Rpc } from "effect/rpc"
import { nodeShardGroup } from "./ClusterRuntime.ts"
import { BroadcastMessage, ClientTokensMessage, ConnectionInfo, NodeStatusMessage, PresenceEntry } from "./messages.ts"
import { localNode } from "./NodeRouter.ts"

export const Deliver = Rpc.make("Deliver", { payload: { broadcasts: Schema.Array(BroadcastMessage) } })
export const CloseClient = Rpc.make("CloseClient", {
  payload: { app: Schema.String, clientId: Schema.String },
  success: Schema.Number
})
export const ListConnections = Rpc.make("ListConnections", {
  payload: { app: Schema.String, after: Schema.optional(Schema.String), limit: Schema.Number },
  success: Schema.Array(ConnectionInfo)
})
export const TopicPresences = Rpc.make("TopicPresences", {
  payload: { app: Schema.String, topic: Schema.String },
  success: Schema.Array(PresenceEntry)
})

/** The client pushes through another node too: take its tokens at its Client entity from now on. */
export const ClientShared = Rpc.make("ClientShared", {
  payload: { app: Schema.String, clientId: Schema.String },
  success: ClientTokensMessage
})

/** What the node says about itself, for the admin API. */
export const NodeStatus = Rpc.make("NodeStatus", {
  payload: { withHistory: Schema.Boolean },
  success: NodeStatusMessage
})

export const NodeInbox = Entity.make("NodeInbox", [
  Deliver,
  CloseClient,
  ListConnections,
  TopicPresences,
  ClientShared,
  NodeStatus
]).annotate(
  ClusterSchema.ShardGroup,
  nodeShardGroup
)

export const NodeInboxLayer = NodeInbox.toLayer(
  Effect.gen(function*() {
    const local = yield* localNode
    return NodeInbox.of({
      Deliver: ({ payload }) => local.deliver(payload.broadcasts),
      CloseClient: ({ payload }) => local.disconnectClient(payload.app, payload.clientId),
      ListConnections: ({ payload }) => local.connections(payload.app, payload),
      TopicPresences: ({ payload }) => local.presences(payload.app, payload.topic),
      ClientShared: ({ payload }) => local.clientShared(payload.app, payload.clientId),
      NodeStatus: ({ payload }) => local.status(payload.withHistory)
    })
  }),
  // deliveries of different topics need not wait for each other; a topic's
  // entity sends its next batch only once this one is delivered
  { concurrency: "unbounded" }
)
