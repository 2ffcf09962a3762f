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
 * - `shardLockExpiration` 8 s: a dead runner's shards are free after at most
 *   this (PostgreSQL also drops its advisory locks as soon as its session
 *   dies), leaving room within the 10 s for the new owner to start; it must
 *   exceed the worst event-loop stall, or two live copies of an entity could
 *   exist for a moment;
 * - `shardLockRefreshInterval` 2 s: four refreshes per expiration period;
 * - `refreshAssignmentsInterval` and `runnerHealthCheckInterval` 1 s: the
 *   survivors notice a dead runner and take its shards within seconds.
 *
 * Runners speak newline-delimited JSON: every entity message here is JSON
 * already (broadcast payloads come from JSON bodies), and V8's JSON codec cost
 * measured ~15 % less cluster CPU per cross-node broadcast than the Schema
 * binary codec.
 */
import * as NodeClusterSocket from "@effect/platform-node-shared/NodeClusterSocket"
import { Layer, Option } from "effect"
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
import { RpcSerialization } from "effect/rpc"
import { PgClient } from "@effect/sql-pg"
import { Redacted } from "effect"

/** The shard group that pins a node's own entity (the node router's inbox) to that node. */
export const nodeShardGroup = (node: string) => `node-${node}`

export const CLUSTER_TIMINGS = {
  shardLockExpiration: "8 seconds",
  shardLockRefreshInterval: "2 seconds",
  refreshAssignmentsInterval: "1 second",
  runnerHealthCheckInterval: "1 second"
} as const

/** Shards per group; each node's own group needs very few, the default group a few per node. */
const SHARDS_PER_GROUP = 64

export const layerSingleNode = (options: { readonly host: string; readonly port: number }) =>
  Sharding.layer.pipe(
    Layer.provideMerge(Runners.layerNoop),
    Layer.provideMerge(MessageStorage.layerNoop),
    Layer.provide([RunnerStorage.layerMemory, RunnerHealth.layerNoop]),
    Layer.provide(ShardingConfig.layer({ runnerAddress: Option.some(RunnerAddress.make(options.host, options.port)) }))
  )

export interface ClusterOptions {
  readonly databaseUrl: Redacted.Redacted<string>
  readonly host: string
  readonly port: number
  /** This node's name; one of `nodes`. */
  readonly node: string
  /** Every node's name: each owns a shard group, and the list must be the same on every node. */
  readonly nodes: ReadonlyArray<string>
}

export const layerPostgres = (options: ClusterOptions) => {
  const shardingConfig = ShardingConfig.layer({
    runnerAddress: Option.some(RunnerAddress.make(options.host, options.port)),
    availableShardGroups: ["default", ...options.nodes.map(nodeShardGroup)],
    assignedShardGroups: ["default", nodeShardGroup(options.node)],
    shardsPerGroup: SHARDS_PER_GROUP,
    ...CLUSTER_TIMINGS
  })
  const runnerHealth = RunnerHealth.layerPing.pipe(
    Layer.provide(Runners.layerRpc),
    Layer.provide(NodeClusterSocket.layerClientProtocol)
  )
  const storage = SqlRunnerStorage.layer.pipe(
    Layer.orDie,
    Layer.provide(PgClient.layer({ url: options.databaseUrl, applicationName: `realtime-gateway ${options.node}` }))
  )
  return SocketRunner.layer.pipe(
    Layer.provide([NodeClusterSocket.layerSocketServer, NodeClusterSocket.layerClientProtocol]),
    Layer.provide(runnerHealth),
    Layer.provideMerge(MessageStorage.layerNoop),
    Layer.provideMerge(storage),
    Layer.provide(shardingConfig),
    Layer.provide(RpcSerialization.layerNdjson)
  )
}
