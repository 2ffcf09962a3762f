/**
 * The IPC messages exchanged by the benchmark's processes: the runner
 * (`run.ts`) with its load generators (`load.ts`), and the runner with the
 * stats agent preloaded into each measured server (`stats-agent.ts`).
 */

/** What one load generator does: a contiguous share of the connections. */
export interface LoadPlan {
  /** `ws://127.0.0.1:<port>/socket/websocket`, without the query. */
  readonly url: string
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

export type ToLoad =
  | { readonly type: "plan"; readonly plan: LoadPlan }
  | { readonly type: "go" }
  | { readonly type: "close" }

export type FromLoad =
  | { readonly type: "ready" }
  | { readonly type: "done"; readonly result: LoadResult }
  | { readonly type: "closed"; readonly result: CloseResult }

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
