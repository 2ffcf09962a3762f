/**
 * Whether this node reaches the cluster's storage (PostgreSQL), for readiness
 * (CONTRACT §8). Without it the node cannot renew its shard locks nor take
 * new shards, so entity calls may go unanswered until their timeout: a load
 * balancer should send new clients elsewhere while it lasts.
 *
 * It makes no query of its own: it watches the two that effect/cluster makes
 * anyway, the read of the runners (every `refreshAssignmentsInterval`, 1 s)
 * and the refresh of this runner's heartbeat and shard locks (every 1.5 s,
 * also while the locks are lost, as effect/cluster's probe of the storage).
 * A separate probe cost each node a query a second at rest and told nothing
 * these two do not.
 *
 * A single node keeps its runner storage in memory and is always reachable.
 */
import { performance } from "node:perf_hooks"
import { Cause, Context, Effect, Exit, Layer } from "effect"
import { RunnerStorage } from "effect/cluster"

export interface ClusterStorageHealthShape {
  /** Why the storage counts as unreachable now, or undefined while it answers. */
  readonly unreachable: () => string | undefined
}

/** A watched call unanswered for this long counts as unreachable (a frozen server answers nothing at all). */
const ANSWER_WITHIN_MS = 2_000

/** An interrupted call that had waited this long was given up on for its slowness. */
const INTERRUPTED_AFTER_MS = 1_000

type WatchedCall = "getRunners" | "refresh"

export class ClusterStorageHealth extends Context.Service<ClusterStorageHealth, ClusterStorageHealthShape>()(
  "realtime-gateway/cluster/ClusterStorageHealth"
) {
  static readonly layerSingleNode = Layer.succeed(ClusterStorageHealth, ClusterStorageHealth.of({ unreachable: () => undefined }))

  /**
   * The runner storage it is given, with its periodic calls watched, and the
   * health read from them: unreachable while the last attempt of either call
   * failed, or one has been waiting for an answer longer than
   * {@link ANSWER_WITHIN_MS}.
   */
  static readonly layerWatching = Layer.effectContext(
    Effect.gen(function*() {
      const storage = yield* RunnerStorage.RunnerStorage
      /** Why the last attempt of each call failed; absent once it answered. */
      const failures = new Map<WatchedCall, string>()
      /** When each attempt still waiting for its answer started. */
      const waiting = new Set<{ readonly since: number }>()

      const unreachable = () => {
        const now = performance.now()
        for (const attempt of waiting) {
          if (now - attempt.since >= ANSWER_WITHIN_MS) {
            return `cluster storage (PostgreSQL) unreachable: no answer within ${ANSWER_WITHIN_MS / 1000} s`
          }
        }
        for (const reason of failures.values()) return `cluster storage (PostgreSQL) unreachable: ${reason}`
        return undefined
      }

      const watched = <A, E>(call: WatchedCall, effect: Effect.Effect<A, E>) =>
        Effect.suspend(() => {
          const attempt = { since: performance.now() }
          waiting.add(attempt)
          return Effect.onExit(effect, (exit) =>
            Effect.suspend(() => {
              waiting.delete(attempt)
              const wasReachable = failures.size === 0
              if (Exit.isSuccess(exit)) failures.delete(call)
              else if (!Cause.hasInterruptsOnly(exit.cause)) failures.set(call, String(Cause.squash(exit.cause)))
              else {
                // effect/cluster gives up on a call that takes too long by interrupting it; a quick
                // interruption is the node stopping, which says nothing about the storage
                const waited = performance.now() - attempt.since
                if (waited >= INTERRUPTED_AFTER_MS) failures.set(call, `no answer within ${Math.round(waited)} ms`)
              }
              if (wasReachable && failures.size > 0) {
                return Effect.logError("cluster storage (PostgreSQL) unreachable; not ready", failures.get(call))
              }
              if (!wasReachable && failures.size === 0) return Effect.logInfo("cluster storage (PostgreSQL) reachable again")
              return Effect.void
            }))
        })

      const watchedStorage = RunnerStorage.RunnerStorage.of({
        ...storage,
        getRunners: watched("getRunners", storage.getRunners),
        refresh: (address, shardIds) => watched("refresh", storage.refresh(address, shardIds))
      })
      return Context.make(RunnerStorage.RunnerStorage, watchedStorage).pipe(
        Context.add(ClusterStorageHealth, ClusterStorageHealth.of({ unreachable }))
      )
    })
  )
}
