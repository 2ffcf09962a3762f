/**
 * The node's one listening socket: HTTP requests go to the Effect router
 * (health and the server API), WebSocket upgrades go straight to the
 * transport, which drives `ws` itself so that the per-connection path stays
 * free of per-request fibers.
 */
import { createServer } from "node:http"
import type { AddressInfo } from "node:net"
import * as NodeHttpServer from "@effect/platform-node/NodeHttpServer"
import { Context, Effect, Layer } from "effect"
import { HttpRouter } from "effect/http"
import { GatewayConfig } from "../config/GatewayConfig.ts"
import { WebSocketTransport } from "../transport/WebSocketTransport.ts"

export interface HttpListenerShape {
  /** The bound port (differs from the configured one when that was 0). */
  readonly port: number
}

export class HttpListener extends Context.Service<HttpListener, HttpListenerShape>()(
  "realtime-gateway/server/HttpListener"
) {
  static readonly layer = <E, R>(routes: Layer.Layer<never, E, R>) =>
    Layer.effect(
      HttpListener,
      Effect.gen(function*() {
        const config = yield* GatewayConfig
        const transport = yield* WebSocketTransport
        const scope = yield* Effect.scope
        const httpEffect = yield* HttpRouter.toHttpEffect(routes)
        const handler = yield* NodeHttpServer.makeHandler(httpEffect, { scope })
        const server = createServer({ keepAliveTimeout: 65_000 }, handler)
        server.on("upgrade", transport.handleUpgrade)

        yield* Effect.callback<void, Error>((resume) => {
          server.once("error", (error) => resume(Effect.fail(error)))
          server.listen(config.port, config.host, () => resume(Effect.void))
        }).pipe(Effect.orDie)
        // Upgraded WebSocket connections are closed by the sessions, not here:
        // waiting for them would wait on a finalizer that runs after this one.
        yield* Effect.addFinalizer(() =>
          Effect.sync(() => {
            server.close()
            server.closeAllConnections()
          })
        )
        const port = (server.address() as AddressInfo).port
        yield* Effect.logInfo(`listening on http://${config.host}:${port}`)
        return HttpListener.of({ port })
      })
    )
}
