/**
 * The effect/cluster runtime the entities run on.
 *
 * A single node is the same program as a cluster: one runner that owns every
 * shard, in-memory runner storage and no runner network, so `npm start` needs
 * no database and binds no cluster port. Sharding settings are always passed
 * from our own config, never read from the environment (`ShardingConfig.
 * layerFromEnv` would take our HTTP `PORT` for the runner port).
 */
import { Layer, Option } from "effect"
import {
  MessageStorage,
  RunnerAddress,
  RunnerHealth,
  Runners,
  RunnerStorage,
  Sharding,
  ShardingConfig
} from "effect/cluster"

export const layerSingleNode = (options: { readonly host: string; readonly port: number }) =>
  Sharding.layer.pipe(
    Layer.provideMerge(Runners.layerNoop),
    Layer.provideMerge(MessageStorage.layerNoop),
    Layer.provide([RunnerStorage.layerMemory, RunnerHealth.layerNoop]),
    Layer.provide(
      ShardingConfig.layer({ runnerAddress: Option.some(RunnerAddress.make(options.host, options.port)) })
    )
  )
