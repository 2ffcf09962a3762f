/**
 * The node's one listening socket: HTTP requests go to the Effect router
 * (health and the server API), WebSocket upgrades go straight to the
 * transport, which drives `ws` itself so that the per-connection path stays
 * free of per-request fibers.
 *
 * Two things no client may do to it: hold connections open without ever
 * finishing a request head (each new connection must send its first head
 * within `requestHeadTimeoutMs`, and at most `maxPendingRequestHeads` may be
 * at it at once; Node's own `headersTimeout` never fires on a head that is
 * half sent), and kill it with accept errors (running out of file
 * descriptors): those are logged, at most one line per interval with a
 * count, and the listener goes on.
 */
import { createServer } from "node:http"
import type { IncomingMessage } from "node:http"
import type { AddressInfo, Socket } from "node:net"
import type { Duplex } from "node:stream"
import * as NodeHttpServer from "@effect/platform-node/NodeHttpServer"
import { Context, Effect, Layer, Schedule } from "effect"
import { HttpRouter } from "effect/http"
import { GatewayConfig } from "../config/GatewayConfig.ts"
import { monotonicMs } from "../socket/Session.ts"
import { WebSocketTransport } from "../transport/WebSocketTransport.ts"
import { SupervisedChild } from "../supervision/children.ts"
import { supervised } from "../supervision/Supervisor.ts"

/** Accept errors are reported at most once per this interval, with how many there were. */
const ACCEPT_ERROR_REPORT_MS = 10_000

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
        const runCallback = Effect.runCallbackWith(yield* Effect.context<never>())
        const httpEffect = yield* HttpRouter.toHttpEffect(routes)
        const handler = yield* NodeHttpServer.makeHandler(httpEffect, { scope })
        const server = createServer({ keepAliveTimeout: 65_000 }, handler)
        const { requestHeadTimeoutMs, maxPendingRequestHeads } = config.limits

        // new connection → when it was accepted, until its first request head is read
        const awaitingHead = new Map<Duplex, number>()
        // no listener per connection: one that closes before its head is forgotten by the sweep, or at the cap
        const forgetClosed = () => {
          for (const socket of awaitingHead.keys()) if (socket.destroyed) awaitingHead.delete(socket)
        }
        server.on("connection", (socket: Socket) => {
          if (awaitingHead.size >= maxPendingRequestHeads) forgetClosed()
          if (awaitingHead.size >= maxPendingRequestHeads) return socket.destroy()
          awaitingHead.set(socket, monotonicMs())
        })
        server.on("request", (request: IncomingMessage) => awaitingHead.delete(request.socket))
        server.on("upgrade", (request: IncomingMessage, socket: Duplex, head: Buffer) => {
          awaitingHead.delete(socket)
          transport.handleUpgrade(request, socket, head)
        })
        // one sweep rather than a timer per connection: drops the late ones and forgets the closed ones
        yield* Effect.sync(() => {
          const deadline = monotonicMs() - requestHeadTimeoutMs
          for (const [socket, acceptedAt] of awaitingHead) {
            if (socket.destroyed) awaitingHead.delete(socket)
            else if (acceptedAt <= deadline) {
              awaitingHead.delete(socket)
              socket.destroy()
            }
          }
        }).pipe(Effect.repeat(Schedule.spaced(Math.min(1_000, requestHeadTimeoutMs))), supervised(SupervisedChild.requestHeadSweep))

        yield* Effect.callback<void, Error>((resume) => {
          const failed = (error: Error) => resume(Effect.fail(error))
          server.once("error", failed)
          server.listen(config.port, config.host, () => {
            server.off("error", failed)
            resume(Effect.void)
          })
        }).pipe(Effect.orDie)

        // Past the start, an error of the listening socket is a failed accept
        // (EMFILE, ENFILE, ENOBUFS): the connection is lost, the listener is not.
        let acceptErrors = 0
        let lastReportAt: number | undefined
        server.on("error", (error: NodeJS.ErrnoException) => {
          acceptErrors++
          const now = monotonicMs()
          if (lastReportAt !== undefined && now - lastReportAt < ACCEPT_ERROR_REPORT_MS) return
          lastReportAt = now
          const count = acceptErrors
          acceptErrors = 0
          runCallback(Effect.logError(
            `listener could not accept ${count} connection(s): ${error.code ?? error.message}` +
              " (file descriptors exhausted? raise LimitNOFILE / ulimit -n, or lower MAX_CONNECTIONS)"
          ))
        })
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
