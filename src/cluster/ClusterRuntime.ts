/**
 * The effect/cluster runtime the entities run on.
 *
 * A single node is the same program as a cluster: one runner that owns every
 * shard, in-memory runner storage and no runner network, so `npm start` needs
 * no database and binds no cluster port.
 *
 * With `DATABASE_URL`, runners talk over TCP (`CLUSTER_HOST:CLUSTER_PORT`) and
 * PostgreSQL holds runner registrations and shard locks, nothing else: entity
 * messages are volatile (no message storage), since every piece of entity
 * state here is rebuilt by the nodes.
 *
 * Sharding settings are always passed from our own config, never read from the
 * environment (`ShardingConfig.layerFromEnv` would take our HTTP `PORT` for
 * the runner port). The timings are chosen for failover within the contract's
 * 10 s (see docs/cluster.md):
 * - the survivors notice a dead runner through the health check, which runs
 *   on one runner (a cluster singleton) every `runnerHealthCheckInterval`
 *   (2 s) and pings each runner: up to 3 tries, 250 ms apart, 5 s each, so a
 *   dead runner (connection refused) counts as dead within about 2.5 s
 *   (effect's default is 6 tries of up to 10 s). A live runner busy enough to
 *   miss 5 s pings three times running is not declared dead. Every 1 s, its
 *   pings were the largest part of what an idle cluster spends;
 * - a runner that stops heart-beating (frozen, machine lost, or the dead one
 *   ran the health check itself) drops out when its heartbeat is
 *   `shardLockExpiration` old: 5 s bounds that case (measured 9–11 s to
 *   failover with 8 s, 1–5 s in the common case). The lease is refreshed
 *   every `shardLockRefreshInterval`, so an event-loop stall of more than
 *   about 3.5 s (5 − 1.5) loses it, and for a moment two live copies of an
 *   entity could exist;
 * - `shardLockRefreshInterval` 1.5 s: also the time a refresh may take before
 *   the runner gives its shards up as unsafe;
 * - `refreshAssignmentsInterval` 1 s: the survivors take a dead runner's
 *   shards within a second of it being marked unhealthy.
 *
 * Runners speak newline-delimited JSON: every entity message here is JSON
 * already (broadcast payloads come from JSON bodies), and V8's JSON codec cost
 * measured ~15 % less cluster CPU per cross-node broadcast than the Schema
 * binary codec.
 */
import { Effect, Layer, Option, Schedule } from "effect"
import {
  MessageStorage,
  RunnerAddress,
  RunnerHealth,
  Runners,
  RunnerStorage,
  Sharding,
  ShardingConfig,
  SocketRunner,
  SqlRunnerStorage
} from "effect/cluster"
import { RpcClient, RpcSerialization } from "effect/rpc"
import * as Socket from "effect/socket/Socket"
import * as SocketServer from "effect/socket/SocketServer"
import { PgClient } from "@effect/sql-pg"
import type { Redacted } from "effect"
import { ClusterPort, runnerSocket } from "./ClusterPort.ts"
import { ClusterStorageHealth } from "./ClusterStorageHealth.ts"
import type { ClusterPortOptions } from "./ClusterPort.ts"

/**
 * Shared by one node and a cluster. A call to an entity in this process is not
 * encoded and decoded as if it crossed to another (effect's default): that
 * round trip through the Schemas was a large share of a broadcast's CPU.
 * Calls between processes are still encoded, and the multi-process tests
 * catch a value that does not fit its Schema.
 */
const LOCAL_CALLS = { simulateRemoteSerialization: false } as const

const CLUSTER_TIMINGS = {
  shardLockExpiration: "5 seconds",
  shardLockRefreshInterval: "1500 millis",
  refreshAssignmentsInterval: "1 second",
  runnerHealthCheckInterval: "2 seconds"
} as const

/** Pings a runner as the health check does (see above), with tries short enough for failover within 10 s. */
const runnerHealthByPing = Layer.effect(
  RunnerHealth.RunnerHealth,
  Effect.gen(function*() {
    const runners = yield* Runners.Runners
    return RunnerHealth.RunnerHealth.of({
      isAlive: (address) =>
        runners.ping(address).pipe(
          Effect.timeout("5 seconds"),
          Effect.retry({ times: 2, schedule: Schedule.spaced("250 millis") }),
          Effect.isSuccess
        )
    })
  })
)

/** Shards of the one group: a few per node, spread by effect/cluster's hash ring. */
const SHARDS_PER_GROUP = 64

/** What bounds the entities resident on a node (see docs/cluster.md, entity capacity). */
export interface EntityCapacity {
  /** Entities resident at once on this node; past it, calls that would start one fail (`MailboxFull`). */
  readonly maxEntities: number
  /** An entity without a message for this long is released. */
  readonly entityIdleMs: number
}

const capacitySettings = (capacity: EntityCapacity) => ({
  maxResidentEntities: capacity.maxEntities,
  entityMaxIdleTime: capacity.entityIdleMs
})

export const layerSingleNode = (options: { readonly host: string; readonly port: number } & EntityCapacity) =>
  Sharding.layer.pipe(
    Layer.provideMerge(ClusterStorageHealth.layerSingleNode),
    Layer.provideMerge(Runners.layerNoop),
    Layer.provideMerge(MessageStorage.layerNoop),
    Layer.provide([RunnerStorage.layerMemory, RunnerHealth.layerNoop]),
    Layer.provide(ShardingConfig.layer({
      runnerAddress: Option.some(RunnerAddress.make(options.host, options.port)),
      ...capacitySettings(options),
      ...LOCAL_CALLS
    }))
  )

export interface ClusterOptions extends EntityCapacity, ClusterPortOptions {
  readonly databaseUrl: Redacted.Redacted<string>
  /** This node's name, for PostgreSQL's view of its connections. */
  readonly node: string
}

/** effect/cluster's runner protocol over the cluster port's authenticated connections. */
const runnerTransport = Layer.mergeAll(
  Layer.effect(SocketServer.SocketServer, Effect.map(ClusterPort, (port) => port.runnerServer)),
  Layer.effect(
    Runners.RpcClientProtocol,
    Effect.gen(function*() {
      const port = yield* ClusterPort
      const serialization = yield* RpcSerialization.RpcSerialization
      return {
        codecFor: serialization.codecFor,
        make: (address: RunnerAddress.RunnerAddress) =>
          Effect.flatMap(runnerSocket(port, address.host, address.port), (socket) =>
            RpcClient.makeProtocolSocket().pipe(
              Effect.provideService(Socket.Socket, socket),
              Effect.provideService(RpcSerialization.RpcSerialization, serialization)
            ))
      }
    })
  )
)

export const layerPostgres = (options: ClusterOptions) => {
  const shardingConfig = ShardingConfig.layer({
    runnerAddress: Option.some(RunnerAddress.make(options.host, options.port)),
    shardsPerGroup: SHARDS_PER_GROUP,
    ...LOCAL_CALLS,
    ...CLUSTER_TIMINGS,
    ...capacitySettings(options)
  })
  // the storage's own periodic calls tell readiness whether PostgreSQL answers (no probe of our own)
  const storage = ClusterStorageHealth.layerWatching.pipe(
    Layer.provide(SqlRunnerStorage.layer.pipe(
      Layer.orDie,
      Layer.provide(PgClient.layer({ url: options.databaseUrl, applicationName: `realtime-gateway ${options.node}` }))
    ))
  )
  const port = ClusterPort.layer(options)
  const transport = runnerTransport.pipe(Layer.provideMerge(port))
  const runnerHealth = runnerHealthByPing.pipe(Layer.provide(Runners.layerRpc))
  return SocketRunner.layer.pipe(
    Layer.provide(runnerHealth),
    Layer.provideMerge(transport),
    Layer.provideMerge(MessageStorage.layerNoop),
    Layer.provideMerge(storage),
    Layer.provideMerge(shardingConfig),
    Layer.provide(RpcSerialization.layerNdjson)
  )
}
