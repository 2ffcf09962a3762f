/**
 * Every long-lived piece of background work of the gateway, by the name the
 * supervisor logs it under and readiness reports it by. This is the one list:
 * a new loop gets its name here and is forked with `supervised(name)`.
 */
export const SupervisedChild = {
  /** Re-fetches every app's schema on an interval (`AppRegistry`). */
  schemaRefresh: "schema refresh",
  /** Retries apps that have no schema yet, sooner than the interval (an app registered at runtime may need it later). */
  schemaRetry: "schema retry",
  /** Drops TCP connections that did not send their first request head in time (`HttpListener`). */
  requestHeadSweep: "request-head sweep",
  /** Closes connections idle past `IDLE_TIMEOUT_MS` (`Sessions`). */
  idleSweep: "idle sweep",
  /** Drops rate-limit buckets that are full again (`RateLimiter`). */
  rateLimitSweep: "rate-limit sweep",
  /** Re-sends attached clients to their Client entities (`ClientLimits`, cluster). */
  clientReattach: "client re-attach",
  /** Reads the healthy runners from the cluster's storage and links to new ones (`NodeRouter`, cluster). */
  liveNodeRefresh: "live-node refresh",
  /** Tells linked nodes which shards this one owns, for broadcasts routed to their topic's node (`NodeRouter`, cluster). */
  shardAdvertising: "shard advertising",
  /** Re-sends this node's presences to their Topic entities (`Presence`). */
  presenceResync: "presence re-sync",
  /** In each presence topic's entity: the presences of nodes that died leave (`TopicEntity`). */
  presenceDeadNodeCheck: "presence dead-node check",
  /** Applies apps registered, changed or removed at runtime on any node (`RuntimeApps`, cluster). */
  runtimeAppsSync: "runtime apps sync",
  /** Samples this node's figures into its 15-minute history (`NodeStatus`). */
  nodeStatusSample: "node status sample",
  /** Reads event-loop lag and utilisation once a second for the metrics and the node status (`EventLoop`). */
  eventLoopSample: "event-loop sample",
  /**
   * App notifications on their way out (`Upstream`): callbacks, not a fiber; a
   * defect fails only the notification it happened in and is reported here.
   */
  notificationDelivery: "notification delivery"
} as const

export type SupervisedChildName = typeof SupervisedChild[keyof typeof SupervisedChild]
