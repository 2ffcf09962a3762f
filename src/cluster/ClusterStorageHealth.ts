/**
 * Whether this node reaches the cluster's storage (PostgreSQL), for readiness
 * (CONTRACT §8). Without it the node cannot renew its shard locks nor take
 * new shards, so entity calls may go unanswered until their timeout: a load
 * balancer should send new clients elsewhere while it lasts.
 *
 * A single node keeps its runner storage in memory and is always reachable.
 */
import { Context, Effect, Layer, Schedule } from "effect"
import { RunnerStorage } from "effect/cluster"
import { SupervisedChild } from "../supervision/children.ts"
import { supervised } from "../supervision/Supervisor.ts"

export interface ClusterStorageHealthShape {
  /** Why the storage counts as unreachable now, or undefined while it answers. */
  readonly unreachable: () => string | undefined
}

/** How often the storage is read. */
const PROBE_INTERVAL = "1 second"
/** A read slower than this counts as unreachable (a frozen server answers nothing at all). */
const PROBE_TIMEOUT = "2 seconds"

export class ClusterStorageHealth extends Context.Service<ClusterStorageHealth, ClusterStorageHealthShape>()(
  "realtime-gateway/cluster/ClusterStorageHealth"
) {
  static readonly layerSingleNode = Layer.succeed(ClusterStorageHealth, ClusterStorageHealth.of({ unreachable: () => undefined }))

  static readonly layerCluster = Layer.effect(
    ClusterStorageHealth,
    Effect.gen(function*() {
      const storage = yield* RunnerStorage.RunnerStorage
      let failure: string | undefined
      const probe = storage.getRunners.pipe(
        Effect.timeoutOrElse({ duration: PROBE_TIMEOUT, orElse: () => Effect.fail(`no answer within ${PROBE_TIMEOUT}`) }),
        Effect.matchEffect({
          onSuccess: () => {
            if (failure === undefined) return Effect.void
            failure = undefined
            return Effect.logInfo("cluster storage (PostgreSQL) reachable again")
          },
          onFailure: (error) => {
            const first = failure === undefined
            failure = `cluster storage (PostgreSQL) unreachable: ${String(error)}`
            return first ? Effect.logError("cluster storage (PostgreSQL) unreachable; not ready", String(error)) : Effect.void
          }
        })
      )
      yield* probe.pipe(Effect.repeat(Schedule.spaced(PROBE_INTERVAL)), supervised(SupervisedChild.storageProbe))
      return ClusterStorageHealth.of({ unreachable: () => failure })
    })
  )
}
