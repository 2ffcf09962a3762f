/**
 * The whole gateway as one layer: every capability's service, wired in one
 * place. `main.ts` launches it; integration tests build it on an ephemeral
 * port. Read bottom-up, the layers below are built in dependency order: the
 * config and cluster runtime, the app boundary, topics, sessions, the entities
 * (registered before any traffic), and last the listener.
 */
import { Layer } from "effect"
import { HealthRoutes } from "./api/HealthRoutes.ts"
import { ServerApiRoutes } from "./api/ServerApiRoutes.ts"
import { AppRegistry } from "./apps/AppRegistry.ts"
import { Auth } from "./auth/Auth.ts"
import { ClientEntityLayer } from "./cluster/ClientEntity.ts"
import { layerPostgres, layerSingleNode } from "./cluster/ClusterRuntime.ts"
import { NodeRouter } from "./cluster/NodeRouter.ts"
import { PublishRoute } from "./cluster/PublishRoute.ts"
import { TopicEntityLayer } from "./cluster/TopicEntity.ts"
import { GatewayConfig } from "./config/GatewayConfig.ts"
import type { GatewayConfigShape } from "./config/GatewayConfig.ts"
import { Broadcaster } from "./fanout/Broadcaster.ts"
import { LocalFanout } from "./fanout/LocalFanout.ts"
import { TopicRegistry } from "./fanout/TopicRegistry.ts"
import * as Logging from "./observability/Logging.ts"
import { Presence } from "./presence/Presence.ts"
import { ClientLimits } from "./ratelimit/ClientLimits.ts"
import { RateLimiter } from "./ratelimit/RateLimiter.ts"
import { DrainOnShutdown } from "./server/Drain.ts"
import { HttpListener } from "./server/HttpListener.ts"
import { Lifecycle } from "./server/Lifecycle.ts"
import { PushHandler } from "./socket/PushHandler.ts"
import { LocalNodeLive } from "./socket/LocalNodeLive.ts"
import { Sessions } from "./socket/Sessions.ts"
import { WebSocketTransport } from "./transport/WebSocketTransport.ts"
import { Upstream } from "./upstream/Upstream.ts"

export const makeGatewayLayer = (config: GatewayConfigShape) => {
  const clustered = config.databaseUrl !== undefined
  const runtime = clustered
    ? layerPostgres({
      databaseUrl: config.databaseUrl!,
      host: config.cluster.host,
      port: config.cluster.port,
      secret: config.cluster.secret!,
      tls: config.cluster.tls,
      node: config.nodeName
    })
    : layerSingleNode({ host: config.cluster.host, port: config.cluster.port })
  const base = Layer.mergeAll(
    Layer.succeed(GatewayConfig, config),
    runtime,
    Lifecycle.layer,
    PublishRoute.layer
  )
  const limits = (clustered ? ClientLimits.layerCluster : ClientLimits.layerSingleNode).pipe(
    Layer.provideMerge(RateLimiter.layerMemory)
  )
  const appBoundary = Layer.mergeAll(AppRegistry.layer, Auth.layer).pipe(Layer.provideMerge(Upstream.layer))
  const topics = Layer.mergeAll(LocalFanout.layer, Presence.layer).pipe(Layer.provideMerge(TopicRegistry.layer))
  const sessions = Sessions.layer.pipe(Layer.provideMerge(PushHandler.layer), Layer.provideMerge(Broadcaster.layer))
  const entities = clustered
    ? Layer.mergeAll(TopicEntityLayer, ClientEntityLayer).pipe(Layer.provideMerge(NodeRouter.layerCluster))
    : Layer.mergeAll(TopicEntityLayer, ClientEntityLayer).pipe(Layer.provideMerge(NodeRouter.layerSingleNode))
  const edge = HttpListener.layer(Layer.mergeAll(HealthRoutes, ServerApiRoutes)).pipe(
    Layer.provideMerge(WebSocketTransport.layer)
  )

  return DrainOnShutdown.pipe(
    Layer.provideMerge(edge),
    Layer.provideMerge(entities),
    Layer.provideMerge(LocalNodeLive),
    Layer.provideMerge(sessions),
    Layer.provideMerge(topics),
    Layer.provideMerge(appBoundary),
    Layer.provideMerge(limits),
    Layer.provideMerge(base),
    Layer.provide(Logging.layer({ nodeName: config.nodeName, format: config.log.format, level: config.log.level }))
  )
}
