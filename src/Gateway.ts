/**
 * The whole gateway as one layer: every capability's service, wired in one
 * place. `main.ts` launches it; integration tests build it on an ephemeral
 * port. Reading this file top to bottom shows what depends on what.
 */
import { Layer } from "effect"
import { HealthRoutes } from "./api/HealthRoutes.ts"
import { AppRegistry } from "./apps/AppRegistry.ts"
import { Auth } from "./auth/Auth.ts"
import { layerSingleNode } from "./cluster/ClusterRuntime.ts"
import { TopicEntityLayer } from "./cluster/TopicEntity.ts"
import { TopicRegistry } from "./cluster/TopicRegistry.ts"
import { GatewayConfig } from "./config/GatewayConfig.ts"
import type { GatewayConfigShape } from "./config/GatewayConfig.ts"
import { Broadcaster } from "./fanout/Broadcaster.ts"
import { LocalFanout } from "./fanout/LocalFanout.ts"
import { NodeDelivery } from "./fanout/NodeDelivery.ts"
import * as Logging from "./observability/Logging.ts"
import { HttpListener } from "./server/HttpListener.ts"
import { Lifecycle } from "./server/Lifecycle.ts"
import { RateLimiter } from "./ratelimit/RateLimiter.ts"
import { PushHandler } from "./socket/PushHandler.ts"
import { Sessions } from "./socket/Sessions.ts"
import { Upstream } from "./upstream/Upstream.ts"
import { WebSocketTransport } from "./transport/WebSocketTransport.ts"

export const makeGatewayLayer = (config: GatewayConfigShape) => {
  const base = Layer.mergeAll(
    Layer.succeed(GatewayConfig, config),
    layerSingleNode({ host: config.cluster.host, port: config.cluster.port }),
    Lifecycle.layer,
    RateLimiter.layerMemory
  )

  // topics: the node-local index and the Topic entities it registers with
  const topics = TopicRegistry.layer
  const fanout = LocalFanout.layer.pipe(Layer.provideMerge(topics))
  const entities = TopicEntityLayer.pipe(Layer.provide(NodeDelivery.layerSingleNode), Layer.provideMerge(fanout))

  // the app boundary
  const upstream = Upstream.layer
  const apps = Layer.mergeAll(AppRegistry.layer, Auth.layer).pipe(Layer.provideMerge(upstream))

  // connections
  const sessions = Sessions.layer.pipe(
    Layer.provide(PushHandler.layer.pipe(Layer.provide(Broadcaster.layer)))
  )
  const transport = WebSocketTransport.layer.pipe(Layer.provideMerge(sessions))
  const listener = HttpListener.layer(HealthRoutes)

  return listener.pipe(
    Layer.provideMerge(transport),
    Layer.provideMerge(Layer.mergeAll(apps, entities)),
    Layer.provideMerge(base),
    Layer.provide(Logging.layer({ nodeName: config.nodeName, format: config.log.format, level: config.log.level }))
  )
}
