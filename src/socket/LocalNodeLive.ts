/**
 * This node's answer to the cluster (`cluster/LocalNode.ts`), made from the
 * socket layer's own services and those it uses: its sessions, fan-out,
 * presences, its clients' rate limits and its status.
 */
import { Effect, Layer } from "effect"
import { NodeStatus } from "../admin/NodeStatus.ts"
import { LocalNode } from "../cluster/LocalNode.ts"
import { LocalFanout } from "../fanout/LocalFanout.ts"
import { Presence } from "../presence/Presence.ts"
import { ClientLimits } from "../ratelimit/ClientLimits.ts"
import { Sessions } from "./Sessions.ts"

export const LocalNodeLive = Layer.effect(
  LocalNode,
  Effect.gen(function*() {
    const fanout = yield* LocalFanout
    const sessions = yield* Sessions
    const presence = yield* Presence
    const clientLimits = yield* ClientLimits
    const nodeStatus = yield* NodeStatus
    return LocalNode.of({
      deliver: fanout.deliver,
      disconnectClient: sessions.disconnectClient,
      connections: sessions.connections,
      presences: presence.localPresences,
      clientShared: clientLimits.markShared,
      status: nodeStatus.current,
      liveNodesChanged: presence.resync
    })
  })
)
