/**
 * The whole gateway as one layer: every capability's service, wired in one
 * place. `main.ts` launches it; integration tests build it on an ephemeral
 * port. Read bottom-up, the layers below are built in dependency order: the
 * config and cluster runtime, the app boundary, topics, sessions, the entities
 * (registered before any traffic), and last the listener.
 */
import { Effect, Layer } from "effect"
import { AdminRoutes } from "./admin/AdminRoutes.ts"
import { NodeStatus } from "./admin/NodeStatus.ts"
import { RuntimeApps } from "./admin/RuntimeApps.ts"
import { HealthRoutes } from "./api/HealthRoutes.ts"
import { MetricsRoutes } from "./api/MetricsRoutes.ts"
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
import { EventLoop } from "./observability/EventLoop.ts"
import * as Logging from "./observability/Logging.ts"
import { Metrics } from "./observability/Metrics.ts"
import { Tracing } from "./observability/Tracing.ts"
import { Presence } from "./presence/Presence.ts"
import { ClientLimits } from "./ratelimit/ClientLimits.ts"
import { RateLimiter } from "./ratelimit/RateLimiter.ts"
import { DrainOnShutdown } from "./server/Drain.ts"
import { HttpListener } from "./server/HttpListener.ts"
import { Lifecycle } from "./server/Lifecycle.ts"
import { PushHandler } from "./socket/PushHandler.ts"
import { LocalNodeLive } from "./socket/LocalNodeLive.ts"
import { Sessions } from "./socket/Sessions.ts"
import { Supervisor } from "./supervision/Supervisor.ts"
import { WebSocketTransport } from "./transport/WebSocketTransport.ts"
import { Upstream } from "./upstream/Upstream.ts"

export const makeGatewayLayer = (config: GatewayConfigShape) => {
  const clustered = config.databaseUrl !== undefined
  const capacity = { maxEntities: config.limits.maxEntities, entityIdleMs: config.limits.entityIdleMs }
  const runtime = clustered
    ? layerPostgres({
      databaseUrl: config.databaseUrl!,
      host: config.cluster.host,
      port: config.cluster.port,
      secret: config.cluster.secret!,
      tls: config.cluster.tls,
      node: config.nodeName,
      ...capacity
    })
    : layerSingleNode({ host: config.cluster.host, port: config.cluster.port, ...capacity })
  const base = Layer.mergeAll(
    runtime,
    Lifecycle.layer,
    PublishRoute.layer,
    (config.metrics ? Metrics.layer : Metrics.layerDisabled).pipe(Layer.provideMerge(EventLoop.layer))
  ).pipe(
    Layer.provideMerge(Supervisor.layer),
    Layer.provideMerge(Layer.succeed(GatewayConfig, config))
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
  const admin = Layer.mergeAll(
    NodeStatus.layer,
    clustered ? RuntimeApps.layerPostgres(config.databaseUrl!) : RuntimeApps.layerMemory
  )
  const tracing = config.otlpEndpoint === undefined
    ? Tracing.layerOff
    : Tracing.layerOtlp({ endpoint: config.otlpEndpoint, nodeName: config.nodeName })
  const edge = HttpListener.layer(Layer.mergeAll(HealthRoutes, MetricsRoutes, ServerApiRoutes, AdminRoutes)).pipe(
    Layer.provideMerge(WebSocketTransport.layer)
  )

  return DrainOnShutdown.pipe(
    Layer.provideMerge(edge),
    Layer.provideMerge(entities),
    Layer.provideMerge(LocalNodeLive),
    Layer.provideMerge(admin),
    Layer.provideMerge(sessions),
    Layer.provideMerge(topics),
    Layer.provideMerge(appBoundary),
    Layer.provideMerge(limits),
    Layer.provideMerge(base),
    Layer.provideMerge(tracing),
    Layer.provide(Logging.layer({ nodeName: config.nodeName, format: config.log.format, level: config.log.level }))
  )
}

/**
 * Runs a gateway layer until interrupted (SIGTERM, SIGINT) or until its
 * supervisor gives up: then the gateway shuts down as on SIGTERM (drain
 * included) and this fails, so that the process exits non-zero.
 */
export const serveGateway = <E, R>(gateway: Layer.Layer<Supervisor, E, R>) =>
  Effect.flatMap(Supervisor, (supervisor) => supervisor.awaitEscalation).pipe(Effect.provide(gateway))
