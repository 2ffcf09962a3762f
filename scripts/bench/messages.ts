/**
 * The IPC messages exchanged by the benchmark's processes: the runner
 * (`run.ts`) with its connection load generators (`load.ts`), its push load
 * generators (`push-load.ts`) and the fake app process (`app-server.ts`), and
 * the runner with the stats agent preloaded into each measured server and the
 * app process (`stats-agent.ts`).
 */

/** What one load generator does: a contiguous share of the connections. */
export interface LoadPlan {
  /** `ws://127.0.0.1:<port>/socket/websocket`, without the query. */
  readonly url: string
  /**
   * Several servers (the nodes of a cluster), each such a URL: connection n
   * goes to `urls[n mod urls.length]` (its target), instead of `url`; the
   * broadcast arrivals are then also timed per target.
   */
  readonly urls?: ReadonlyArray<string>
  readonly app: string
  readonly clientType: string
  /** Global index of this generator's first connection (token `bench-<index>`). */
  readonly firstIndex: number
  readonly count: number
  /** Connection attempts (connect + join) in flight at once in this generator. */
  readonly concurrency: number
  /** Source addresses, used round-robin; all in 127.0.0.0/8. */
  readonly localAddresses: ReadonlyArray<string>
  /** 0: connection n joins `room:<n>`; otherwise `room:<n mod topics>`. */
  readonly topics: number
  /** Limit for one connection's connect + join. */
  readonly attemptTimeoutMs: number
  readonly heartbeatIntervalMs: number
  /**
   * Broadcast frames with this event and a payload `{seq, t, …}` received on
   * joined connections are counted and timed per `seq` (see `arrivals`).
   */
  readonly broadcastEvent: string
  /** The generator closes everything and exits by itself after this long. */
  readonly lifetimeMs: number
}

/** A load generator's report once every attempt has succeeded or failed. */
export interface LoadResult {
  readonly attempted: number
  readonly joined: number
  /** Failure reason → count (e.g. `http 503 over_capacity`, `timeout`). */
  readonly failures: Readonly<Record<string, number>>
  /** Epoch milliseconds (sub-millisecond precision) of the first attempt. */
  readonly firstAttemptAt: number
  /** Epoch milliseconds of the last join ok; `firstAttemptAt` when none joined. */
  readonly lastJoinAt: number
  /** Connect + join time of every joined connection, in milliseconds. */
  readonly latenciesMs: ReadonlyArray<number>
}

/** A load generator's report after it closed its connections. */
export interface CloseResult {
  /** Joined connections that the server closed before the generator did. */
  readonly droppedWhileIdle: Readonly<Record<string, number>>
  /** Connections still not closed after the close timeout, then terminated. */
  readonly terminated: number
}

/** When the subscribers of a generator got one broadcast. */
export interface BroadcastArrival {
  readonly seq: number
  /** Connections of this generator that received it. */
  readonly count: number
  /** Epoch milliseconds of the first and the last arrival. */
  readonly firstAt: number
  readonly lastAt: number
  /**
   * With several targets (`LoadPlan.urls`): per target, how many of this
   * generator's connections to it received the broadcast and the last arrival
   * among them (0 when none did).
   */
  readonly byTarget?: ReadonlyArray<{ readonly count: number; readonly lastAt: number }>
}

/** A generator's broadcast arrivals since the previous reset. */
export interface ArrivalsResult {
  /** Broadcast frames received, over all connections. */
  readonly delivered: number
  /** This process's CPU time (user + system) so far, microseconds. */
  readonly cpuUs: number
  /** Per broadcast, when asked for `detail`. */
  readonly broadcasts?: ReadonlyArray<BroadcastArrival>
}

export type ToLoad =
  | { readonly type: "plan"; readonly plan: LoadPlan }
  | { readonly type: "go" }
  /** Open and join `count` further connections, indexes from `firstIndex`; answered by `done`. */
  | { readonly type: "more"; readonly firstIndex: number; readonly count: number }
  /** Send a heartbeat on every joined connection now (restarting the heartbeat period). */
  | { readonly type: "heartbeat" }
  /** Report the broadcast arrivals; then forget them when `reset`. */
  | { readonly type: "arrivals"; readonly id: number; readonly detail: boolean; readonly reset: boolean }
  | { readonly type: "close" }

export type FromLoad =
  | { readonly type: "ready" }
  | { readonly type: "done"; readonly result: LoadResult }
  | { readonly type: "heartbeats-sent"; readonly count: number }
  | { readonly type: "arrivals"; readonly id: number; readonly result: ArrivalsResult }
  | { readonly type: "closed"; readonly result: CloseResult }

// ---------------------------------------------------------------------------
// The fake app process
// ---------------------------------------------------------------------------

export type ToApp = { readonly type: "app-calls"; readonly id: number }

export interface AppCallsReply {
  readonly type: "app-calls"
  readonly id: number
  /** Calls received since the previous question, by kind (`notify` by event). */
  readonly counts: Readonly<Record<string, number>>
}

export type FromApp = { readonly type: "app-ready"; readonly url: string } | AppCallsReply

// ---------------------------------------------------------------------------
// Push load generators
// ---------------------------------------------------------------------------

/** What one push load generator does. */
export interface PushPlan {
  /** `ws://127.0.0.1:<port>/socket/websocket`, without the query. */
  readonly url: string
  readonly app: string
  readonly clientType: string
  /** The app's message endpoint, called directly for the reference figures. */
  readonly messageUrl: string
  /** Client n uses token `bench-<n>` and topic `room:<n>`; this generator's first n. */
  readonly firstIndex: number
  readonly localAddresses: ReadonlyArray<string>
  readonly event: string
  /** Size of the JSON payload of every push, in bytes. */
  readonly payloadBytes: number
  readonly attemptTimeoutMs: number
  /** One round trip that takes longer counts as an error. */
  readonly roundTripTimeoutMs: number
  readonly heartbeatIntervalMs: number
  readonly lifetimeMs: number
}

/** Where a round trip goes: through the gateway, or straight to the app's message endpoint. */
export type PushTarget = "gateway" | "direct"

export interface SequentialResult {
  /** Round-trip times after the warm-up, milliseconds. */
  readonly gatewayMs: ReadonlyArray<number>
  readonly directMs: ReadonlyArray<number>
  /** Failure reason → count. */
  readonly errors: Readonly<Record<string, number>>
  readonly durationMs: number
}

export interface ConcurrentResult {
  readonly target: PushTarget
  readonly clients: number
  /** Round trips completed inside the window. */
  readonly roundTrips: number
  readonly errors: Readonly<Record<string, number>>
  /** Their round-trip times, milliseconds. */
  readonly latenciesMs: ReadonlyArray<number>
  /** The window as this generator saw it (epoch milliseconds). */
  readonly windowStart: number
  readonly windowEnd: number
  /** This process's CPU time over the window, microseconds. */
  readonly cpuUs: number
}

export type ToPush =
  | { readonly type: "plan"; readonly plan: PushPlan }
  /** Open and join clients until there are `clients`; answered by `connected`. */
  | { readonly type: "connect"; readonly clients: number }
  /**
   * Client 0 alone, one round trip at a time, alternating blocks of `block`
   * round trips through the gateway and straight to the app, until
   * `roundTrips` of each were timed (after `warmup` of each) or `maxMs` passed.
   */
  | {
    readonly type: "sequential"
    readonly roundTrips: number
    readonly warmup: number
    readonly block: number
    readonly maxMs: number
  }
  /**
   * `clients` clients, one round trip in flight each, from `startAt` (epoch
   * ms); round trips completed in [startAt + warmupMs, + durationMs) count.
   */
  | {
    readonly type: "concurrent"
    readonly target: PushTarget
    readonly clients: number
    readonly startAt: number
    readonly warmupMs: number
    readonly durationMs: number
  }
  | { readonly type: "close" }

export type FromPush =
  | { readonly type: "ready" }
  | { readonly type: "connected"; readonly joined: number; readonly failures: Readonly<Record<string, number>> }
  | { readonly type: "sequential"; readonly result: SequentialResult }
  | { readonly type: "concurrent"; readonly result: ConcurrentResult }
  | { readonly type: "closed" }

/** A server process's own view of its resources. */
export interface ServerStats {
  readonly pid: number
  /** Epoch milliseconds. */
  readonly at: number
  readonly gcForced: boolean
  readonly rssBytes: number
  /** Peak RSS of the process so far. */
  readonly maxRssBytes: number
  readonly heapUsedBytes: number
  readonly heapTotalBytes: number
  readonly externalBytes: number
  readonly arrayBuffersBytes: number
  readonly cpuUserUs: number
  readonly cpuSystemUs: number
}

export interface StatsRequest {
  readonly type: "bench-stats"
  readonly id: number
  /** Run a full garbage collection first (needs `--expose-gc`). */
  readonly gc: boolean
}

export interface StatsReply {
  readonly type: "bench-stats"
  readonly id: number
  readonly stats: ServerStats
}

export const isStatsRequest = (message: unknown): message is StatsRequest =>
  typeof message === "object" && message !== null && (message as { type?: unknown }).type === "bench-stats" &&
  typeof (message as { id?: unknown }).id === "number"
