/**
 * The Client entity: one per `(app, client_id)` in the whole cluster. It knows
 * through which nodes, and which connections, a client is connected, so that
 * the app can disconnect every connection of a client (logout, revoked token)
 * with one call, whichever node it asks.
 *
 * Like the Topic entity, its state is only what nodes tell it: each node sends
 * its complete list of the client's connections when it changes and again on
 * an interval, so the state is rebuilt after any move. A per-node sequence
 * number keeps a late, older list from overwriting a newer one.
 */
import { Effect, Schema } from "effect"
import { Entity } from "effect/cluster"
import { Rpc } from "effect/rpc"
import { NodeRouter } from "./NodeRouter.ts"

export const SyncConnections = Rpc.make("SyncConnections", {
  payload: { node: Schema.String, seq: Schema.Number, connectionIds: Schema.Array(Schema.String) }
})
export const ClientConnections = Rpc.make("ClientConnections", {
  success: Schema.Array(Schema.Struct({ node: Schema.String, connectionIds: Schema.Array(Schema.String) }))
})
/** Closes every connection of the client on every node; answers how many were closed. */
export const DisconnectClient = Rpc.make("DisconnectClient", { success: Schema.Number })

export const Client = Entity.make("Client", [SyncConnections, ClientConnections, DisconnectClient])

/** Longer than the re-sync interval, so that a connected client's entity is never reaped. */
export const CLIENT_ENTITY_MAX_IDLE = "2 minutes"

/** Entity ids are `<app>/<client_id>`: app ids cannot contain `/`. */
export const clientEntityId = (app: string, clientId: string) => `${app}/${clientId}`

export const ClientEntityLayer = Client.toLayer(
  Effect.gen(function*() {
    const address = yield* Entity.CurrentAddress
    const separator = address.entityId.indexOf("/")
    const app = address.entityId.slice(0, separator)
    const clientId = address.entityId.slice(separator + 1)
    const router = yield* NodeRouter

    // node → { seq of the newest list, the list }
    const byNode = new Map<string, { readonly seq: number; readonly connectionIds: ReadonlyArray<string> }>()

    return Client.of({
      SyncConnections: ({ payload: { node, seq, connectionIds } }) =>
        Effect.sync(() => {
          const current = byNode.get(node)
          if (current !== undefined && seq < current.seq) return
          byNode.set(node, { seq, connectionIds })
        }),
      ClientConnections: () =>
        Effect.sync(() =>
          [...byNode]
            .filter(([, { connectionIds }]) => connectionIds.length > 0)
            .map(([node, { connectionIds }]) => ({ node, connectionIds }))
        ),
      DisconnectClient: () =>
        Effect.forEach(
          [...byNode].filter(([, { connectionIds }]) => connectionIds.length > 0).map(([node]) => node),
          (node) => router.disconnectClient(node, app, clientId),
          { concurrency: "unbounded" }
        ).pipe(Effect.map((counts) => counts.reduce((sum, count) => sum + count, 0)))
    })
  }),
  { maxIdleTime: CLIENT_ENTITY_MAX_IDLE }
)
