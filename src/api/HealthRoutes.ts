/**
 * Health endpoints for load balancers and orchestrators (CONTRACT §8):
 * `/health` (what this node is), `/health/live` (the process answers) and
 * `/health/ready` (503 with reasons until every app has a schema and the
 * cluster runtime is up, while draining, while the cluster's storage is
 * unreachable, and once the supervisor gave up).
 */
import { Effect } from "effect"
import { HttpRouter, HttpServerResponse } from "effect/http"
import { AppRegistry } from "../apps/AppRegistry.ts"
import { ClusterStorageHealth } from "../cluster/ClusterStorageHealth.ts"
import { NodeRouter } from "../cluster/NodeRouter.ts"
import { GatewayConfig } from "../config/GatewayConfig.ts"
import { Lifecycle } from "../server/Lifecycle.ts"
import { GATEWAY_VERSION } from "../server/version.ts"
import { Supervisor } from "../supervision/Supervisor.ts"

export const HealthRoutes = HttpRouter.use(Effect.fnUntraced(function*(router) {
  const config = yield* GatewayConfig
  const apps = yield* AppRegistry
  const lifecycle = yield* Lifecycle
  const nodeRouter = yield* NodeRouter
  const supervisor = yield* Supervisor
  const storageHealth = yield* ClusterStorageHealth
  const startedAt = Date.now()

  yield* router.add("GET", "/health", () =>
    Effect.succeed(HttpServerResponse.jsonUnsafe({
      status: lifecycle.draining() ? "draining" : "ok",
      node: config.nodeName,
      version: GATEWAY_VERSION,
      uptime_s: Math.floor((Date.now() - startedAt) / 1000)
    })))

  yield* router.add("GET", "/health/live", () => Effect.succeed(HttpServerResponse.jsonUnsafe({ status: "ok" })))

  yield* router.add("GET", "/health/ready", () =>
    Effect.sync(() => {
      const reasons = [
        ...(lifecycle.draining() ? ["draining"] : []),
        ...[supervisor.escalation(), storageHealth.unreachable()].filter((reason) => reason !== undefined),
        ...(nodeRouter.joined() ? [] : ["joining the cluster"]),
        ...apps.unready().map(({ app, reason }) => `app ${app}: ${reason}`)
      ]
      return reasons.length === 0
        ? HttpServerResponse.jsonUnsafe({ status: "ready", node: config.nodeName })
        : HttpServerResponse.jsonUnsafe({ status: "not_ready", node: config.nodeName, reasons }, { status: 503 })
    }))
}))
