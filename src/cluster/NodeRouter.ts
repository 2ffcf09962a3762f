/**
 * Reaching one specific node: what the entities and the server and admin
 * APIs ask of a node (deliver a broadcast to its subscribers, close a client's
 * connections, list its connections, read its presences of a topic, report
 * its status), and the list of live nodes.
 *
 * Calls to this node go straight to the local services. In a cluster, calls
 * to another node go to its `NodeInbox` entity, with a timeout: a dead node's
 * inbox has no runner, and the cluster would retry such a call for ever. The
 * live nodes are the healthy runners of the cluster's runner storage, read
 * every half second.
 */
import { Context, Effect, Layer, Schedule } from "effect"
import { NodeStatus } from "../admin/NodeStatus.ts"
import { RunnerStorage } from "effect/cluster"
import { GatewayConfig } from "../config/GatewayConfig.ts"
import { LocalFanout } from "../fanout/LocalFanout.ts"
import { catalogue, Metrics } from "../observability/Metrics.ts"
import { Tracing } from "../observability/Tracing.ts"
import type { Broadcast } from "../fanout/LocalFanout.ts"
import { ClientLimits } from "../ratelimit/ClientLimits.ts"
import type { ClientTokens } from "../ratelimit/RateLimiter.ts"
import { Sessions } from "../socket/Sessions.ts"
import type { ConnectionPage } from "../socket/Sessions.ts"
import { nodeShardGroup } from "./ClusterRuntime.ts"
import type { ConnectionInfo, NodeStatusMessage, PresenceEntry } from "./messages.ts"
import { NodeInbox } from "./NodeInbox.ts"
import { TopicRegistry } from "./TopicRegistry.ts"
import { SupervisedChild } from "../supervision/children.ts"
import { supervised } from "../supervision/Supervisor.ts"

export interface NodeRouterShape {
  /** Every live node of the cluster, this one included. */
  readonly nodes: Effect.Effect<ReadonlyArray<string>>
  /**
   * Whether the other nodes know this one by now: it has been a healthy
   * runner for long enough that their live-node lists include it, so that
   * broadcasts from anywhere reach its clients. Readiness waits for it.
   */
  readonly joined: () => boolean
  /** Hands broadcasts, in order, to the node's subscribers. */
  readonly deliver: (node: string, broadcasts: ReadonlyArray<Broadcast>) => Effect.Effect<void>
  /** Closes every connection of the client on the node; answers how many. */
  readonly disconnectClient: (node: string, app: string, clientId: string) => Effect.Effect<number>
  /** A page of the app's connections on the node, in `connection_id` order. */
  readonly connections: (node: string, app: string, page: ConnectionPage) => Effect.Effect<ReadonlyArray<ConnectionInfo>>
  /** The node's presences on a topic; undefined when it did not answer. */
  readonly presences: (node: string, app: string, topic: string) => Effect.Effect<ReadonlyArray<PresenceEntry> | undefined>
  /** Tells the node that the client pushes through other nodes too; answers the node's tokens left for it. */
  readonly clientShared: (node: string, app: string, clientId: string) => Effect.Effect<ClientTokens>
  /** What the node says about itself (with its history when asked); undefined when it did not answer. */
  readonly status: (node: string, withHistory: boolean) => Effect.Effect<NodeStatusMessage | undefined>
}

const NO_TOKENS: ClientTokens = { byEvent: [] }

/** How long a call to another node may take before that node counts as gone for this call. */
const NODE_CALL_TIMEOUT = "3 seconds"
const LIVE_NODES_REFRESH = "500 millis"
/** Two refreshes of every node's live list, plus margin. */
const JOIN_SETTLE_MS = 1_500

/** What this node does when asked, by a local caller or through its `NodeInbox`. */
export const localNode = Effect.gen(function*() {
  const fanout = yield* LocalFanout
  const sessions = yield* Sessions
  const topics = yield* TopicRegistry
  const clientLimits = yield* ClientLimits
  const nodeStatus = yield* NodeStatus
  const tracing = yield* Tracing
  return {
    status: (withHistory: boolean) => nodeStatus.current(withHistory),
    clientShared: (app: string, clientId: string) => Effect.sync(() => clientLimits.markShared(app, clientId)),
    // the entry point of broadcasts on the node that delivers them, another node's or this one's
    deliver: (broadcasts: ReadonlyArray<Broadcast>) =>
      Effect.sync(() => {
        for (const broadcast of broadcasts) fanout.deliver(broadcast)
      }).pipe(tracing.around("gateway.deliver", { "gateway.broadcasts": broadcasts.length }, "consumer")),
    disconnectClient: (app: string, clientId: string) => Effect.sync(() => sessions.disconnectClient(app, clientId)),
    connections: (app: string, page: ConnectionPage) => Effect.sync(() => sessions.connections(app, page)),
    presences: (app: string, topic: string) => Effect.sync(() => topics.localPresences(app, topic))
  }
})

type Inbox = ReturnType<Effect.Success<typeof NodeInbox.client>>

/** How a call for another node is made: `call` on its inbox, or `otherwise` when it cannot be. */
type OtherNode = <A>(
  node: string,
  what: string,
  call: (inbox: Inbox) => Effect.Effect<A, unknown>,
  otherwise: A
) => Effect.Effect<A>

/** Each node call, written once: this node answers itself, another one through `other`. */
const routes = (
  nodeName: string,
  local: Effect.Success<typeof localNode>,
  other: OtherNode
): Omit<NodeRouterShape, "nodes" | "joined"> => ({
  deliver: (node, broadcasts) =>
    node === nodeName ? local.deliver(broadcasts) : other(node, "delivery", (inbox) => inbox.Deliver({ broadcasts }), undefined),
  disconnectClient: (node, app, clientId) =>
    node === nodeName
      ? local.disconnectClient(app, clientId)
      : other(node, "client disconnect", (inbox) => inbox.CloseClient({ app, clientId }), 0),
  connections: (node, app, page) =>
    node === nodeName
      ? local.connections(app, page)
      : other(node, "connection listing", (inbox) => inbox.ListConnections({ app, after: page.after, limit: page.limit }), []),
  presences: (node, app, topic) =>
    node === nodeName
      ? local.presences(app, topic)
      : other<ReadonlyArray<PresenceEntry> | undefined>(
        node,
        "presence listing",
        (inbox) => inbox.TopicPresences({ app, topic }),
        undefined
      ),
  clientShared: (node, app, clientId) =>
    node === nodeName
      ? local.clientShared(app, clientId)
      : other(node, "client sharing notice", (inbox) => inbox.ClientShared({ app, clientId }), NO_TOKENS),
  status: (node, withHistory) =>
    node === nodeName
      ? local.status(withHistory)
      : other<NodeStatusMessage | undefined>(node, "status request", (inbox) => inbox.NodeStatus({ withHistory }), undefined)
})

export class NodeRouter extends Context.Service<NodeRouter, NodeRouterShape>()("realtime-gateway/cluster/NodeRouter") {
  static readonly layerSingleNode = Layer.effect(
    NodeRouter,
    Effect.gen(function*() {
      const { nodeName } = yield* GatewayConfig
      const local = yield* localNode
      // one node: no other node exists to ask
      const other: OtherNode = (node, _what, _call, otherwise) =>
        Effect.logWarning("request for an unknown node dropped").pipe(
          Effect.annotateLogs({ target_node: node }),
          Effect.as(otherwise)
        )
      return NodeRouter.of({
        nodes: Effect.succeed([nodeName]),
        joined: () => true,
        ...routes(nodeName, local, other)
      })
    })
  )

  static readonly layerCluster = Layer.effect(
      NodeRouter,
      Effect.gen(function*() {
        const { nodeName } = yield* GatewayConfig
        const local = yield* localNode
        const storage = yield* RunnerStorage.RunnerStorage
        const clientFor = yield* NodeInbox.client

        const groupPrefix = nodeShardGroup("")
        const readLiveNodes = storage.getRunners.pipe(
          Effect.map((runners) =>
            runners.flatMap(([runner, healthy]) =>
              healthy
                ? runner.groups.filter((group) => group.startsWith(groupPrefix)).map((group) => group.slice(groupPrefix.length))
                : []
            )
          )
        )
        const topics = yield* TopicRegistry
        let liveNodes: ReadonlyArray<string> = [nodeName]
        let registeredAt: number | undefined
        // the healthy runners as listed, this node included only when it is
        let listed: string | undefined
        const refresh = readLiveNodes.pipe(
          Effect.map((nodes) => {
            if (nodes.includes(nodeName)) registeredAt ??= Date.now()
            liveNodes = nodes.includes(nodeName) ? nodes : [nodeName, ...nodes]
            // A node that left may have run presence entities (restart them
            // now), and entities drop the presences of a node while it is not
            // listed (restore them when it is again).
            const membership = [...nodes].sort().join(",")
            if (listed !== undefined && membership !== listed) topics.resyncPresences()
            listed = membership
          }),
          Effect.catch((error) => Effect.logWarning("could not read the cluster's runners", String(error)))
        )
        yield* refresh
        yield* refresh.pipe(Effect.repeat(Schedule.spaced(LIVE_NODES_REFRESH)), supervised(SupervisedChild.liveNodeRefresh))
        const metrics = yield* Metrics
        const unwatchLinks = metrics.watch(catalogue.clusterNodeLinks, () => liveNodes.length - 1)
        yield* Effect.addFinalizer(() => Effect.sync(unwatchLinks))

        // another node, through its inbox, with a timeout: a dead node's inbox has no runner
        const other: OtherNode = (node, what, call, otherwise) =>
          call(clientFor(node)).pipe(
            Effect.timeoutOrElse({
              duration: NODE_CALL_TIMEOUT,
              orElse: () => Effect.fail(`no answer within ${NODE_CALL_TIMEOUT}`)
            }),
            Effect.catch((error) =>
              Effect.logWarning(`${what} to another node failed`, String(error)).pipe(
                Effect.annotateLogs({ target_node: node }),
                Effect.as(otherwise)
              )
            )
          )

        return NodeRouter.of({
          nodes: Effect.sync(() => liveNodes),
          joined: () => registeredAt !== undefined && Date.now() - registeredAt >= JOIN_SETTLE_MS,
          ...routes(nodeName, local, other)
        })
      })
    )
}

