/**
 * This node's answer to the cluster (`cluster/LocalNode.ts`), made from the
 * socket layer's own services: its sessions, its subscriber index and
 * fan-out, and its clients' rate limits.
 */
import { Effect, Layer } from "effect"
import { LocalNode } from "../cluster/LocalNode.ts"
import { TopicRegistry } from "../cluster/TopicRegistry.ts"
import { LocalFanout } from "../fanout/LocalFanout.ts"
import { ClientLimits } from "../ratelimit/ClientLimits.ts"
import { Sessions } from "./Sessions.ts"

export const LocalNodeLive = Layer.effect(
  LocalNode,
  Effect.gen(function*() {
    const fanout = yield* LocalFanout
    const sessions = yield* Sessions
    const topics = yield* TopicRegistry
    const clientLimits = yield* ClientLimits
    return LocalNode.of({
      deliver: fanout.deliver,
      disconnectClient: sessions.disconnectClient,
      connections: sessions.connections,
      presences: topics.localPresences,
      clientShared: clientLimits.markShared
    })
  })
)
