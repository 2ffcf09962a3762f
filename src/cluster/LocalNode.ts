/**
 * What the cluster asks of this node's own connections: deliver broadcasts to
 * its subscribers, close a client's connections, list its connections, read
 * its presences of a topic, note that a client pushes through another node
 * too, report its status, and hear that the live nodes changed. The socket layer provides it (`socket/LocalNodeLive.ts`); the
 * cluster layer only calls it, so that dependencies point one way.
 */
import { Context } from "effect"
import type { Effect } from "effect"
import type { ClientTokens } from "../ratelimit/RateLimiter.ts"
import type { BroadcastMessage, ConnectionInfo, NodeStatusMessage, PresenceEntry } from "./messages.ts"

/** Where a listing of connections resumes (the last `connection_id` already listed) and how many it takes. */
export interface ConnectionPage {
  readonly after?: string | undefined
  readonly limit: number
}

export interface LocalNodeShape {
  /** Writes the broadcast to this node's subscribers of its topic (a repeat is dropped). */
  readonly deliver: (broadcast: BroadcastMessage) => void
  /** Closes every connection of the client here; answers how many. */
  readonly disconnectClient: (app: string, clientId: string) => number
  /** The app's connections here in `connection_id` order, those after `page.after` (when set), at most `page.limit`. */
  readonly connections: (app: string, page: ConnectionPage) => ReadonlyArray<ConnectionInfo>
  readonly presences: (app: string, topic: string) => ReadonlyArray<PresenceEntry>
  /** The client pushes through another node too: answers the tokens it has left here. */
  readonly clientShared: (app: string, clientId: string) => ClientTokens
  /** What this node says about itself, with its recent history when asked (the admin API). */
  readonly status: (withHistory: boolean) => Effect.Effect<NodeStatusMessage>
  /**
   * The live nodes changed: a node that left may have run presence entities
   * (restart them now), and entities drop the presences of a node while it
   * is not live (restore them when it is again).
   */
  readonly liveNodesChanged: () => void
}

export class LocalNode extends Context.Service<LocalNode, LocalNodeShape>()("realtime-gateway/cluster/LocalNode") {}
