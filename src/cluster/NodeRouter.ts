/**
 * Reaching other nodes: what the entities and the server API ask of a node
 * (deliver broadcasts to its subscribers, close a client's connections, list
 * its connections, read its presences of a topic, note a shared client,
 * report its status), and the list of live nodes.
 *
 * Calls for this node go straight to `LocalNode`. In a cluster, the others
 * are found in PostgreSQL: every healthy runner registered there (effect/
 * cluster's runner storage) is dialed on its cluster port and linked
 * (`NodeLink`, authenticated by `ClusterPort`); the live nodes are this one
 * and those with an open link, known by the name each gives in its hello. A
 * starting node reads the registrations at once and links to every node; each
 * of them links back as soon as it hears the newcomer's hello, so the
 * registrations are read again only every 10 s, as a safety net (a link that
 * failed, a runner that left without closing its links). A node whose link
 * breaks drops out of the live nodes at once. No list of nodes is configured
 * anywhere.
 */
import { Context, Effect, Layer, Schedule, Schema } from "effect"
import { RunnerStorage, Sharding, ShardId, ShardingConfig } from "effect/cluster"
import { GatewayConfig } from "../config/GatewayConfig.ts"
import { catalogue, Metrics } from "../observability/Metrics.ts"
import { Tracing } from "../observability/Tracing.ts"
import type { ClientTokens } from "../ratelimit/RateLimiter.ts"
import { SupervisedChild } from "../supervision/children.ts"
import { supervised } from "../supervision/Supervisor.ts"
import { ClusterPort } from "./ClusterPort.ts"
import { LocalNode } from "./LocalNode.ts"
import type { ConnectionPage, LocalNodeShape } from "./LocalNode.ts"
import { ClientTokensMessage, ConnectionInfo, NodeStatusMessage, PresenceEntry } from "./messages.ts"
import type { BroadcastMessage } from "./messages.ts"
import { decodeDelivery, deliveryTuple, DeliveryTuple, encodeDelivery, fromDeliveryTuple, LinkConnection } from "./NodeLink.ts"
import { PublishRoute } from "./PublishRoute.ts"
import type { PublishRouteShape } from "./PublishRoute.ts"

export interface NodeRouterShape {
  /** Every live node of the cluster, this one included. */
  readonly nodes: Effect.Effect<ReadonlyArray<string>>
  /**
   * Whether the other nodes know this one by now (every live node has linked
   * to it), so that broadcasts from anywhere reach its clients. Readiness
   * waits for it.
   */
  readonly joined: () => boolean
  /**
   * Hands a broadcast to every live node's subscribers: this node's at once,
   * the others' through their links, in call order per node.
   */
  readonly broadcast: (broadcast: BroadcastMessage) => void
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

/** How long a request to another node may take before that node counts as gone for it. */
const REQUEST_TIMEOUT_MS = 3_000
/** Links are made on hellos; the registrations are read this often as a safety net… */
const DISCOVERY_INTERVAL = "10 seconds"
/** …and this often until this node sees itself registered (readiness waits for that). */
const REGISTRATION_POLL = "500 millis"
/** How often this node checks which shards it owns, and tells its peers when that changed. */
const SHARD_ADVERTISE_INTERVAL = "1 second"
/** Every entity of the gateway lives in effect/cluster's default shard group. */
const ENTITY_SHARD_GROUP = "default"
/** A node listed for this long counts as joined even if a listed peer never linked back (a stale registration). */
const JOIN_WAIT_LIMIT_MS = 5_000

/** The requests one node makes of another: arguments and answer, each a Schema. */
const Requests = {
  disconnectClient: { args: Schema.Tuple([Schema.String, Schema.String]), answer: Schema.Number },
  connections: {
    args: Schema.Tuple([Schema.String, Schema.NullOr(Schema.String), Schema.Number]),
    answer: Schema.Array(ConnectionInfo)
  },
  presences: { args: Schema.Tuple([Schema.String, Schema.String]), answer: Schema.Array(PresenceEntry) },
  clientShared: { args: Schema.Tuple([Schema.String, Schema.String]), answer: ClientTokensMessage },
  status: { args: Schema.Tuple([Schema.Boolean]), answer: NodeStatusMessage },
  /** A broadcast for the topic's entity, which runs on the node asked (see `PublishRoute`). */
  publish: { args: DeliveryTuple, answer: Schema.Null }
} as const
type Method = keyof typeof Requests

const decodeArgs = Object.fromEntries(
  Object.entries(Requests).map(([method, { args }]) => [method, Schema.decodeUnknownSync(args as Schema.Codec<unknown>)])
) as Record<Method, (value: unknown) => ReadonlyArray<unknown>>
const decodeAnswer = Object.fromEntries(
  Object.entries(Requests).map(([method, { answer }]) => [method, Schema.decodeUnknownSync(answer as Schema.Codec<unknown>)])
) as Record<Method, (value: unknown) => unknown>

/** What a node answers to a request from another: a value, or an effect for the answer. */
const answerRequest = (
  local: LocalNodeShape,
  route: PublishRouteShape,
  method: Method,
  args: ReadonlyArray<unknown>
): unknown => {
  const [a, b] = args as ReadonlyArray<string>
  switch (method) {
    case "disconnectClient":
      return local.disconnectClient(a!, b!)
    case "connections":
      return local.connections(a!, { after: (args[1] as string | null) ?? undefined, limit: args[2] as number })
    case "presences":
      return local.presences(a!, b!)
    case "clientShared":
      return local.clientShared(a!, b!)
    case "status":
      return local.status(args[0] as boolean)
    case "publish":
      return Effect.as(route.publishHere(fromDeliveryTuple(args as typeof DeliveryTuple.Type)), null)
  }
}

/** How a request for another node is made, with what to answer when it cannot be. */
type Ask = <A>(node: string, method: Method, args: ReadonlyArray<unknown>, otherwise: A) => Effect.Effect<A>

/** Each node call, written once: this node answers itself, another one through `ask`. */
const routes = (nodeName: string, local: LocalNodeShape, ask: Ask): Omit<NodeRouterShape, "nodes" | "joined" | "broadcast"> => ({
  disconnectClient: (node, app, clientId) =>
    node === nodeName ? Effect.sync(() => local.disconnectClient(app, clientId)) : ask(node, "disconnectClient", [app, clientId], 0),
  connections: (node, app, page) =>
    node === nodeName
      ? Effect.sync(() => local.connections(app, page))
      : ask<ReadonlyArray<ConnectionInfo>>(node, "connections", [app, page.after ?? null, page.limit], []),
  presences: (node, app, topic) =>
    node === nodeName
      ? Effect.sync(() => local.presences(app, topic))
      : ask<ReadonlyArray<PresenceEntry> | undefined>(node, "presences", [app, topic], undefined),
  clientShared: (node, app, clientId) =>
    node === nodeName ? Effect.sync(() => local.clientShared(app, clientId)) : ask(node, "clientShared", [app, clientId], NO_TOKENS),
  status: (node, withHistory) =>
    node === nodeName
      ? local.status(withHistory)
      : ask<NodeStatusMessage | undefined>(node, "status", [withHistory], undefined)
})

/** A link this node dialed: its deliveries and requests go out on it. */
interface OutgoingLink {
  readonly address: string
  connection: LinkConnection | undefined
  /** The peer's name, once its hello arrived. */
  node: string | undefined
  /** The shard list this node last told the peer. */
  shardsSent: string | undefined
  readonly pending: Map<number, (answer: { readonly ok: true; readonly value: unknown } | { readonly ok: false; readonly reason: string }) => void>
}

export class NodeRouter extends Context.Service<NodeRouter, NodeRouterShape>()("realtime-gateway/cluster/NodeRouter") {
  static readonly layerSingleNode = Layer.effect(
    NodeRouter,
    Effect.gen(function*() {
      const { nodeName } = yield* GatewayConfig
      const local = yield* LocalNode
      const route = yield* PublishRoute
      route.setRouter({
        forward: () => Effect.succeed(false),
        fanOut: (publish) => {
          local.deliver(publish)
          return true
        }
      })
      // one node: no other node exists to ask
      const ask: Ask = (node, _method, _args, otherwise) =>
        Effect.logWarning("request for an unknown node dropped").pipe(
          Effect.annotateLogs({ target_node: node }),
          Effect.as(otherwise)
        )
      return NodeRouter.of({
        nodes: Effect.succeed([nodeName]),
        joined: () => true,
        broadcast: local.deliver,
        ...routes(nodeName, local, ask)
      })
    })
  )

  static readonly layerCluster = Layer.effect(
    NodeRouter,
    Effect.gen(function*() {
      const { nodeName, cluster } = yield* GatewayConfig
      const local = yield* LocalNode
      const port = yield* ClusterPort
      const storage = yield* RunnerStorage.RunnerStorage
      const route = yield* PublishRoute
      const sharding = yield* Sharding.Sharding
      const tracing = yield* Tracing
      const { shardsPerGroup } = yield* ShardingConfig.ShardingConfig
      const runAnswer = Effect.runPromiseWith(yield* Effect.context<never>())
      const runLog = Effect.runForkWith(yield* Effect.context<never>())
      const log = (level: "info" | "warn", message: string, node: string | undefined, address: string) =>
        runLog(
          (level === "info" ? Effect.logInfo(message) : Effect.logWarning(message)).pipe(
            Effect.annotateLogs({ target_node: node ?? "unknown", peer: address })
          )
        )

      const selfAddress = `${cluster.host}:${cluster.port}`
      const outgoing = new Map<string, OutgoingLink>()
      /** Names of the nodes that linked to this one. */
      const incoming = new Map<string, number>()
      /** shard of the default group → the node that said it owns it, over its link to this one */
      const shardOwners = new Map<number, string>()
      let liveNodes: ReadonlyArray<string> = [nodeName]
      let liveLinks: ReadonlyArray<LinkConnection> = []
      /** the link each live node is reached by (the first that said its name, in dialing order) */
      let linkToNode = new Map<string, OutgoingLink>()
      let listedPeers: ReadonlyArray<string> = []
      let registeredAt: number | undefined
      let membership = nodeName
      let nextRequestId = 0
      let stopping = false

      /** Recomputes the live nodes after a link opened or closed. */
      const linksChanged = () => {
        linkToNode = new Map()
        for (const link of outgoing.values()) {
          if (link.node === undefined || link.connection === undefined || link.node === nodeName || linkToNode.has(link.node)) continue
          linkToNode.set(link.node, link)
        }
        liveNodes = [nodeName, ...linkToNode.keys()]
        liveLinks = [...linkToNode.values()].map((link) => link.connection!)
        const next = [...liveNodes].sort().join(",")
        if (next !== membership) local.liveNodesChanged()
        membership = next
      }

      const openLink = (address: string) => {
        const link: OutgoingLink = { address, connection: undefined, node: undefined, shardsSent: undefined, pending: new Map() }
        outgoing.set(address, link)
        const [host, portText] = [address.slice(0, address.lastIndexOf(":")), address.slice(address.lastIndexOf(":") + 1)]
        port.dial(host, Number(portText), "link").then(
          (connection) => {
            if (outgoing.get(address) !== link) return connection.destroy()
            const linkConnection = new LinkConnection(connection, (node) => {
              if (link.node !== undefined) return
              link.node = node
              log("info", "node link open", node, address)
              linksChanged()
            })
            link.connection = linkConnection
            linkConnection.handlers = {
              onMessage: (message) => {
                const resolve = link.pending.get(message[1] as number)
                if (resolve === undefined) return
                link.pending.delete(message[1] as number)
                if (message[0] === "a") resolve({ ok: true, value: message[2] })
                else resolve({ ok: false, reason: String(message[2]) })
              },
              onClose: (reason) => {
                if (outgoing.get(address) === link) outgoing.delete(address)
                for (const resolve of link.pending.values()) resolve({ ok: false, reason: `the link closed: ${reason}` })
                link.pending.clear()
                if (link.node !== undefined) {
                  log(stopping ? "info" : "warn", `node link closed: ${reason}`, link.node, address)
                  linksChanged()
                }
              }
            }
            linkConnection.send(["h", nodeName, selfAddress])
          },
          (error: unknown) => {
            // the next discovery round dials again, while the runner is listed
            if (outgoing.get(address) === link) outgoing.delete(address)
            runLog(Effect.logDebug("could not link to a node", String(error)).pipe(Effect.annotateLogs({ peer: address })))
          }
        )
      }

      // requests from nodes that linked to this one
      port.acceptLinks((connection) => {
        let peer: string | undefined
        const link: LinkConnection = new LinkConnection(connection, (node, address) => {
          if (peer !== undefined) return
          peer = node
          // a node that links to this one is linked back at once, without waiting for the next read of the registrations
          if (address !== undefined && address !== selfAddress && !outgoing.has(address) && !stopping) openLink(address)
          incoming.set(node, (incoming.get(node) ?? 0) + 1)
          link.handlers = {
            onMessage: (message) => {
              if (message[0] === "d" && Array.isArray(message[1])) {
                // the entry point of another node's broadcasts on this one
                const span = tracing.start("gateway.deliver", "consumer")
                for (const item of message[1]) {
                  const broadcast = decodeDelivery(item)
                  if (broadcast !== undefined) local.deliver(broadcast)
                }
                if (tracing.enabled) {
                  span.attribute("gateway.broadcasts", message[1].length)
                  span.attribute("gateway.from_node", node)
                }
                span.end()
              } else if (message[0] === "q" && typeof message[1] === "number" && Object.hasOwn(Requests, message[2] as string)) {
                const method = message[2] as Method
                const requestId = message[1]
                try {
                  const answer = answerRequest(local, route, method, decodeArgs[method](message[3]))
                  if (!Effect.isEffect(answer)) link.send(["a", requestId, answer])
                  else {
                    runAnswer(answer as Effect.Effect<unknown, unknown>).then(
                      (value) => link.send(["a", requestId, value]),
                      (error: unknown) => link.send(["f", requestId, String(error)])
                    )
                  }
                } catch (error) {
                  link.send(["f", requestId, String(error)])
                }
              } else if (message[0] === "s" && Array.isArray(message[1])) {
                for (const [shard, owner] of shardOwners) if (owner === node) shardOwners.delete(shard)
                for (const shard of message[1]) if (typeof shard === "number") shardOwners.set(shard, node)
              } else {
                link.close("a message this node does not know")
              }
            },
            onClose: () => {
              const count = (incoming.get(node) ?? 1) - 1
              if (count > 0) return incoming.set(node, count)
              incoming.delete(node)
              for (const [shard, owner] of shardOwners) if (owner === node) shardOwners.delete(shard)
            }
          }
          link.send(["h", nodeName, selfAddress])
        })
      })

      /** Tells every linked node which shards this one owns, when that changed for it. */
      const advertiseShards = () => {
        const owned: Array<number> = []
        for (let shard = 1; shard <= shardsPerGroup; shard++) {
          if (sharding.hasShardId(ShardId.make(ENTITY_SHARD_GROUP, shard))) owned.push(shard)
        }
        const key = owned.join(",")
        for (const link of outgoing.values()) {
          if (link.node === undefined || link.connection === undefined || link.shardsSent === key) continue
          link.shardsSent = key
          link.connection.send(["s", owned])
        }
      }

      const discover = storage.getRunners.pipe(
        Effect.map((runners) => {
          const listed = new Set<string>()
          let selfListed = false
          for (const [runner, healthy] of runners) {
            if (!healthy) continue
            const address = `${runner.address.host}:${runner.address.port}`
            if (address === selfAddress) selfListed = true
            else listed.add(address)
          }
          if (selfListed) registeredAt ??= Date.now()
          listedPeers = [...listed]
          for (const address of listed) if (!outgoing.has(address)) openLink(address)
          for (const [address, link] of outgoing) {
            if (!listed.has(address)) {
              outgoing.delete(address)
              link.connection?.close("the node is no longer a healthy runner")
              if (link.node !== undefined) linksChanged()
            }
          }
        }),
        Effect.catch((error) => Effect.logWarning("could not read the cluster's runners", String(error)))
      )
      if (cluster.staticNodeListIgnored) {
        yield* Effect.logWarning("CLUSTER_NODES is set and ignored: nodes find each other in PostgreSQL (DATABASE_URL)")
      }
      yield* discover
      const discoveryLoop = Effect.sleep(REGISTRATION_POLL).pipe(
        Effect.andThen(discover),
        Effect.repeat({ until: () => registeredAt !== undefined }),
        Effect.andThen(discover.pipe(Effect.repeat(Schedule.spaced(DISCOVERY_INTERVAL))))
      )
      yield* discoveryLoop.pipe(supervised(SupervisedChild.liveNodeRefresh))
      const shardAdvertising = Effect.sync(advertiseShards).pipe(Effect.repeat(Schedule.spaced(SHARD_ADVERTISE_INTERVAL)))
      yield* shardAdvertising.pipe(supervised(SupervisedChild.shardAdvertising))
      const metrics = yield* Metrics
      const unwatchLinks = metrics.watch(catalogue.clusterNodeLinks, () => liveLinks.length)
      yield* Effect.addFinalizer(() => Effect.sync(unwatchLinks))
      yield* Effect.addFinalizer(() =>
        Effect.sync(() => {
          stopping = true
          for (const link of outgoing.values()) link.connection?.close("this node stops")
          outgoing.clear()
        })
      )

      const request = (node: string, method: Method, args: ReadonlyArray<unknown>) =>
        Effect.callback<unknown, string>((resume) => {
          const link = linkToNode.get(node)
          if (link === undefined || link.connection?.isOpen !== true) return resume(Effect.fail("no link to the node"))
          const id = nextRequestId++
          const timer = setTimeout(() => {
            link.pending.delete(id)
            resume(Effect.fail(`no answer within ${REQUEST_TIMEOUT_MS} ms`))
          }, REQUEST_TIMEOUT_MS)
          link.pending.set(id, (answer) => {
            clearTimeout(timer)
            if (!answer.ok) return resume(Effect.fail(answer.reason))
            try {
              resume(Effect.succeed(decodeAnswer[method](answer.value)))
            } catch (error) {
              resume(Effect.fail(`an answer that does not fit: ${String(error)}`))
            }
          })
          link.connection!.send(["q", id, method, args])
          return Effect.sync(() => {
            clearTimeout(timer)
            link.pending.delete(id)
          })
        })

      const ask: Ask = (node, method, args, otherwise) =>
        request(node, method, args).pipe(
          Effect.catch((reason) =>
            Effect.logWarning(`${method} request to another node failed`, reason).pipe(
              Effect.annotateLogs({ target_node: node }),
              Effect.as(otherwise as unknown)
            )
          )
        ) as Effect.Effect<typeof otherwise>

      const broadcast = (broadcast: BroadcastMessage) => {
        local.deliver(broadcast)
        if (liveLinks.length === 0) return
        const encoded = encodeDelivery(broadcast)
        for (const link of liveLinks) link.sendDelivery(encoded)
      }

      route.setRouter({
        forward: (shard, publish) => {
          const owner = shardOwners.get(shard)
          if (owner === undefined) return Effect.succeed(false)
          return request(owner, "publish", deliveryTuple(publish)).pipe(
            Effect.as(true),
            Effect.catch((reason) =>
              Effect.logDebug("a broadcast forwarded to its topic's node failed; calling the entity instead", reason).pipe(
                Effect.annotateLogs({ target_node: owner }),
                Effect.as(false)
              )
            )
          )
        },
        fanOut: (publish) => {
          broadcast(publish)
          return true
        }
      })

      return NodeRouter.of({
        nodes: Effect.sync(() => liveNodes),
        joined: () => {
          if (registeredAt === undefined) return false
          if (Date.now() - registeredAt >= JOIN_WAIT_LIMIT_MS) return true
          // every listed peer is linked both ways
          return listedPeers.every((address) => {
            const node = outgoing.get(address)?.node
            return node !== undefined && incoming.has(node)
          })
        },
        broadcast,
        ...routes(nodeName, local, ask)
      })
    })
  )
}
