/**
 * The Client entity: one per `(app, client_id)` in the whole cluster, the
 * address of "this client, wherever it is connected". Disconnecting a client
 * (logout, revoked token) goes through it to every live node, each of which
 * closes its own connections of the client.
 *
 * It keeps no per-connection state: nodes do not register connections with
 * it, because an entity per connected client (~16 KiB, ~0.4 ms to start) would
 * cost more than the connection itself, and asking the handful of nodes is
 * cheap for a call as rare as a disconnect.
 */
import { Effect, Schema } from "effect"
import { Entity } from "effect/cluster"
import { Rpc } from "effect/rpc"
import { NodeRouter } from "./NodeRouter.ts"

/** Closes every connection of the client on every node; answers how many were closed. */
export const DisconnectClient = Rpc.make("DisconnectClient", { success: Schema.Number })

export const Client = Entity.make("Client", [DisconnectClient])

/** Entity ids are `<app>/<client_id>`: app ids cannot contain `/`. */
export const clientEntityId = (app: string, clientId: string) => `${app}/${clientId}`

export const ClientEntityLayer = Client.toLayer(
  Effect.gen(function*() {
    const address = yield* Entity.CurrentAddress
    const separator = address.entityId.indexOf("/")
    const app = address.entityId.slice(0, separator)
    const clientId = address.entityId.slice(separator + 1)
    const router = yield* NodeRouter

    return Client.of({
      DisconnectClient: () =>
        router.nodes.pipe(
          Effect.flatMap((nodes) =>
            Effect.forEach(nodes, (node) => router.disconnectClient(node, app, clientId), { concurrency: "unbounded" })
          ),
          Effect.map((counts) => counts.reduce((sum, count) => sum + count, 0))
        )
    })
  })
)
