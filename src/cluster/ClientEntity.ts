/**
 * The Client entity: one per `(app, client_id)` in the whole cluster, the
 * address of "this client, wherever it is connected".
 *
 * - Disconnecting a client (logout, revoked token) goes through it to every
 *   live node, each of which closes its own connections of the client.
 * - Rate limits: a client's token buckets hold across all its connections. A
 *   node checks a client's pushes locally, with no cluster call, as long as
 *   the client pushes through that node only. Nodes `Attach` a client here on
 *   its first push; once a second node attaches, every attached node is told
 *   the client is shared, and from then on takes its tokens here.
 *
 * Nodes do not register connections: an entity per connected client (~16 KiB,
 * ~0.4 ms to start) would cost more than the connection itself. Only clients
 * that push under a limit are attached, and only while their buckets are not
 * full again: nodes re-send those attachments on an interval (so they survive
 * a move) and forget the others (so their entities are reaped). Nodes that are
 * no longer live are forgotten here, and a client left on one node goes back
 * to being limited there.
 */
import { Effect, Schema } from "effect"
import { Entity } from "effect/cluster"
import { Rpc } from "effect/rpc"
import { appScopedId, parseAppScopedId } from "./entityIds.ts"
import { RateLimiter } from "../ratelimit/RateLimiter.ts"
import { DecisionMessage, fromMessage, RateLimitsMessage } from "./messages.ts"
import { NodeRouter } from "./NodeRouter.ts"

/** Closes every connection of the client on every node; answers how many were closed. */
export const DisconnectClient = Rpc.make("DisconnectClient", { success: Schema.Number })
/** This node has the client pushing through it; answers whether other nodes do too. */
export const Attach = Rpc.make("Attach", {
  payload: { node: Schema.String, limits: RateLimitsMessage },
  success: Schema.Boolean
})
export const Detach = Rpc.make("Detach", { payload: { node: Schema.String } })
/**
 * One push by a shared client, checked against its buckets held here; also
 * answers whether the client is still shared (its other nodes may be gone).
 */
export const TakeToken = Rpc.make("TakeToken", {
  payload: { event: Schema.String, limits: RateLimitsMessage },
  success: Schema.Struct({ decision: DecisionMessage, shared: Schema.Boolean })
})

export const Client = Entity.make("Client", [DisconnectClient, Attach, Detach, TakeToken])

export const clientEntityId = appScopedId

// Released after `ENTITY_IDLE_MS` without a message (the sharding config),
// longer than the nodes' re-attach interval, so that an attached client keeps its state.
export const ClientEntityLayer = Client.toLayer(
  Effect.gen(function*() {
    const { app, key: clientId } = parseAppScopedId((yield* Entity.CurrentAddress).entityId)
    const router = yield* NodeRouter
    const attached = new Set<string>()
    const buckets = RateLimiter.makeMemory()
    const forgetDeadNodes = router.nodes.pipe(
      Effect.map((live) => {
        for (const node of attached) if (!live.includes(node)) attached.delete(node)
      })
    )

    return Client.of({
      DisconnectClient: () =>
        router.nodes.pipe(
          Effect.flatMap((nodes) =>
            Effect.forEach(nodes, (node) => router.disconnectClient(node, app, clientId), { concurrency: "unbounded" })
          ),
          Effect.map((counts) => counts.reduce((sum, count) => sum + count, 0))
        ),
      Attach: ({ payload: { node, limits } }) =>
        Effect.gen(function*() {
          yield* forgetDeadNodes
          const isNew = !attached.has(node)
          attached.add(node)
          if (attached.size < 2) return false
          if (!isNew || attached.size > 2) return true
          // The client turns shared now: the node it pushed through so far
          // switches to taking tokens here, and its buckets come along.
          const [first] = [...attached].filter((other) => other !== node)
          const tokens = yield* router.clientShared(first!, app, clientId)
          buckets.setClientTokens(app, clientId, tokens, fromMessage(limits))
          return true
        }),
      Detach: ({ payload: { node } }) => Effect.sync(() => void attached.delete(node)),
      TakeToken: ({ payload: { event, limits } }) =>
        forgetDeadNodes.pipe(
          Effect.map(() => ({
            decision: buckets.checkPush(app, clientId, event, fromMessage(limits)),
            shared: attached.size > 1
          }))
        )
    })
  })
)
