/**
 * The WebSocket endpoint `/socket/websocket`: everything that happens before a
 * connection becomes a session. It reads the query (`app`, `token`,
 * `client_type`, `vsn`) or the `authToken` sub-protocol, checks the app, the
 * Origin and the node's capacity, passes the token to the app's auth endpoint,
 * and only then completes the upgrade. Every refusal is an HTTP status with a
 * JSON `{"reason": ...}` body (CONTRACT §2), so a client never sees a socket
 * that opens and closes at once.
 */
import { STATUS_CODES } from "node:http"
import type { IncomingMessage } from "node:http"
import type { Duplex } from "node:stream"
import { Context, Effect, Layer } from "effect"
import { WebSocketServer } from "ws"
import { AppRegistry } from "../apps/AppRegistry.ts"
import type { RegisteredApp } from "../apps/AppRegistry.ts"
import { Auth } from "../auth/Auth.ts"
import type { AuthError, Identity } from "../auth/Auth.ts"
import { GatewayConfig } from "../config/GatewayConfig.ts"
import { LogSampler } from "../observability/Logging.ts"
import { Metrics } from "../observability/Metrics.ts"
import { Tracing } from "../observability/Tracing.ts"
import type { TraceSpan } from "../observability/Tracing.ts"
import { UpgradeRejection } from "../protocol/reasons.ts"
import { serializerFor } from "../protocol/Serializer.ts"
import type { Serializer } from "../protocol/Serializer.ts"
import { RateLimiter } from "../ratelimit/RateLimiter.ts"
import { Sessions } from "../socket/Sessions.ts"

export const SOCKET_PATH = "/socket/websocket"
/** The sub-protocol the `phoenix` client offers alongside its token, and that we answer with. */
const PHOENIX_SUBPROTOCOL = "phoenix"
const TOKEN_SUBPROTOCOL_PREFIX = "base64url.bearer.phx."

export interface WebSocketTransportShape {
  readonly handleUpgrade: (request: IncomingMessage, socket: Duplex, head: Buffer) => void
  /** Stops accepting connections (drain); refusals then say `over_capacity`. */
  readonly stopAccepting: () => void
}

const rejectionResponse = (rejection: UpgradeRejection): string => {
  const body = JSON.stringify({ reason: rejection.reason })
  return `HTTP/1.1 ${rejection.status} ${STATUS_CODES[rejection.status]}\r\n` +
    "Content-Type: application/json\r\n" +
    `Content-Length: ${Buffer.byteLength(body)}\r\n` +
    "Connection: close\r\n\r\n" +
    body
}

// made once: refusals come in storms (reconnects, floods)
const rejectionResponses = new Map<UpgradeRejection, string>(
  Object.values(UpgradeRejection).map((rejection) => [rejection, rejectionResponse(rejection)])
)

const reject = (socket: Duplex, rejection: UpgradeRejection) => {
  if (socket.destroyed) return
  socket.end(rejectionResponses.get(rejection)!)
}

/** The token from the `authToken` sub-protocol, when the client used it. */
const tokenFromSubprotocols = (header: string | undefined): string | undefined => {
  if (header === undefined) return undefined
  for (const entry of header.split(",")) {
    const protocol = entry.trim()
    if (protocol.startsWith(TOKEN_SUBPROTOCOL_PREFIX)) {
      return Buffer.from(protocol.slice(TOKEN_SUBPROTOCOL_PREFIX.length), "base64url").toString("utf8")
    }
  }
  return undefined
}

function destroySocket(this: Duplex) {
  this.destroy()
}

/** The socket's peer, or behind a trusted proxy the last address it appended to `X-Forwarded-For`. */
const remoteIpOf = (request: IncomingMessage, trustProxy: boolean) => {
  const forwarded = trustProxy ? request.headers["x-forwarded-for"] : undefined
  if (typeof forwarded === "string" && forwarded !== "") {
    const last = forwarded.slice(forwarded.lastIndexOf(",") + 1).trim()
    if (last !== "") return last
  }
  return request.socket.remoteAddress ?? "unknown"
}

const rejectionFor = (error: AuthError): UpgradeRejection => {
  switch (error._tag) {
    case "Unauthorized":
      return UpgradeRejection.unauthorized
    case "AuthOverloaded":
      return UpgradeRejection.overCapacity
    case "AuthServiceUnavailable":
      return UpgradeRejection.authServiceError
  }
}

export class WebSocketTransport extends Context.Service<WebSocketTransport, WebSocketTransportShape>()(
  "realtime-gateway/transport/WebSocketTransport"
) {
  static readonly layer = Layer.effect(
    WebSocketTransport,
    Effect.gen(function*() {
      const config = yield* GatewayConfig
      const apps = yield* AppRegistry
      const auth = yield* Auth
      const sessions = yield* Sessions
      const limiter = yield* RateLimiter
      const metrics = yield* Metrics
      const tracing = yield* Tracing
      const context = yield* Effect.context<never>()
      const runCallback = Effect.runCallbackWith(context)

      // a line per refused upgrade, sampled per reason: refusals come in storms
      const sampler = new LogSampler(runCallback, { level: "Warn" })
      /**
       * Refuses the upgrade with `rejection`, counted and logged. `app` is set
       * once the app is known: an app id a client made up is never logged
       * or counted.
       */
      const refuse = (
        request: IncomingMessage,
        socket: Duplex,
        span: TraceSpan,
        rejection: UpgradeRejection,
        app?: RegisteredApp
      ) => {
        metrics.connectionRefused(rejection.reason)
        span.end(rejection.reason)
        reject(socket, rejection)
        const message = `upgrade refused: ${rejection.reason}`
        if (!sampler.admit(message)) return
        runCallback(Effect.logWarning(message).pipe(Effect.annotateLogs({
          reason: rejection.reason,
          status: rejection.status,
          remote_ip: remoteIpOf(request, config.trustProxy),
          ...(app === undefined ? {} : { app_id: app.config.id })
        })))
      }
      let accepting = true
      let upgradesInFlight = 0

      const server = new WebSocketServer({
        noServer: true,
        maxPayload: config.limits.maxFrameBytes,
        perMessageDeflate: false,
        clientTracking: false,
        // the protocol decoder checks text frames' UTF-8 itself (1007 when invalid)
        skipUTF8Validation: true,
        handleProtocols: (protocols) => (protocols.has(PHOENIX_SUBPROTOCOL) ? PHOENIX_SUBPROTOCOL : false)
      })
      yield* Effect.addFinalizer(() => Effect.sync(() => server.close()))

      const complete = (
        request: IncomingMessage,
        socket: Duplex,
        head: Buffer,
        app: RegisteredApp,
        identity: Identity,
        serializer: Serializer,
        remoteIp: string,
        span: TraceSpan
      ) => {
        // the node may have started draining while the token was checked
        if (!accepting) return refuse(request, socket, span, UpgradeRejection.overCapacity, app)
        socket.off("error", destroySocket)
        server.handleUpgrade(request, socket, head, (ws) => {
          const session = sessions.open({ socket: ws, stream: socket, app, identity, serializer, remoteIp })
          span.attribute("gateway.client_id", identity.clientId)
          span.attribute("gateway.connection_id", session.connectionId)
          span.end()
        })
      }

      const handleUpgrade = (request: IncomingMessage, socket: Duplex, head: Buffer) => {
        // until `ws` owns the socket, an error (a reset during auth) just drops it
        socket.on("error", destroySocket)
        try {
          admit(request, socket, head)
        } catch (error) {
          // whatever a request carries, it costs at most its own connection
          socket.destroy()
          runCallback(Effect.logError("unexpected error handling an upgrade", String(error)))
        }
      }

      const admit = (request: IncomingMessage, socket: Duplex, head: Buffer) => {
        // upgrade and auth: a root span, ended when the upgrade completes or is refused
        const span = tracing.start("gateway.connect", "server")
        // the request target as sent (origin-form): split by hand, a URL object per upgrade costs more than all of this
        const target = request.url ?? "/"
        const queryAt = target.indexOf("?")
        if ((queryAt < 0 ? target : target.slice(0, queryAt)) !== SOCKET_PATH) {
          return refuse(request, socket, span, UpgradeRejection.notFound)
        }
        if (!accepting) return refuse(request, socket, span, UpgradeRejection.overCapacity)

        const params = new URLSearchParams(queryAt < 0 ? "" : target.slice(queryAt + 1))
        const appId = params.get("app")
        const token = tokenFromSubprotocols(request.headers["sec-websocket-protocol"]) ?? params.get("token")
        if (appId === null || appId === "" || token === null || token === "") {
          return refuse(request, socket, span, UpgradeRejection.missingParams)
        }
        const serializer = serializerFor(params.get("vsn") ?? undefined)
        if (serializer === undefined) return refuse(request, socket, span, UpgradeRejection.unsupportedVsn)

        const app = apps.get(appId)
        if (app === undefined) return refuse(request, socket, span, UpgradeRejection.unknownApp)
        span.attribute("gateway.app_id", app.config.id)
        const origin = request.headers.origin
        const allowedOrigins = app.config.allowedOrigins
        if (origin !== undefined && allowedOrigins !== undefined && !allowedOrigins.includes(origin)) {
          return refuse(request, socket, span, UpgradeRejection.originNotAllowed, app)
        }
        const remoteIp = remoteIpOf(request, config.trustProxy)
        if (!limiter.checkConnection(app.config.id, remoteIp, app.config.rateLimits.connectionsPerIpPerMinute).allowed) {
          metrics.forApp(app.config.id).rateLimited("connections_per_ip")
          return refuse(request, socket, span, UpgradeRejection.rateLimited, app)
        }
        if (sessions.count() + upgradesInFlight >= config.limits.maxConnections) {
          return refuse(request, socket, span, UpgradeRejection.overCapacity, app)
        }
        if (app.schema === undefined) return refuse(request, socket, span, UpgradeRejection.schemaUnavailable, app)

        upgradesInFlight++
        const clientType = params.get("client_type") || "unknown"
        // A client that gives up while its token is being checked costs no more
        // work. Whichever comes first, the answer or the close, settles the upgrade.
        let settled = false
        const settle = () => {
          if (settled) return false
          settled = true
          upgradesInFlight--
          socket.off("end", onEarlyClose)
          socket.off("close", onEarlyClose)
          return true
        }
        let abandon: (() => void) | undefined
        const onEarlyClose = () => {
          if (!settle()) return
          abandon?.()
          socket.destroy()
          span.end("the client went away during auth")
        }
        // registered first, since the check may also end synchronously; a
        // client that half-closes (FIN) gets "end", one that resets "close"
        socket.once("end", onEarlyClose)
        socket.once("close", onEarlyClose)
        abandon = auth.authenticate(app.config, {
          token,
          clientType,
          remoteIp,
          userAgent: request.headers["user-agent"] ?? "",
          span
        }, (error, identity) => {
          if (!settle()) return
          try {
            if (error?._tag === "AuthServiceUnavailable" && sampler.admit("auth call failed")) {
              runCallback(Effect.logWarning("auth call failed", error.detail).pipe(Effect.annotateLogs({ app_id: app.config.id })))
            }
            if (socket.destroyed) return span.end("the client went away during auth")
            if (error !== undefined) {
              const rejection = rejectionFor(error)
              metrics.forApp(app.config.id).authFailed(rejection.reason)
              return refuse(request, socket, span, rejection, app)
            }
            complete(request, socket, head, app, identity!, serializer, remoteIp, span)
          } catch (defect) {
            socket.destroy()
            runCallback(Effect.logError("unexpected error completing an upgrade", String(defect)))
          }
        })
      }

      return WebSocketTransport.of({
        handleUpgrade,
        stopAccepting: () => {
          accepting = false
        }
      })
    })
  )
}
