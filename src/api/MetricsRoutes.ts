/**
 * `GET /metrics`: this node's metrics in the Prometheus text format
 * (CONTRACT §8), for a Prometheus scraping every node.
 */
import { Effect } from "effect"
import { HttpRouter, HttpServerResponse } from "effect/http"
import { Metrics } from "../observability/Metrics.ts"

const CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

export const MetricsRoutes = HttpRouter.use(Effect.fnUntraced(function*(router) {
  const metrics = yield* Metrics
  yield* router.add("GET", "/metrics", () =>
    Effect.sync(() => HttpServerResponse.text(metrics.render(), { contentType: CONTENT_TYPE })))
}))
