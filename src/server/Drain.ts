/**
 * Graceful shutdown (CONTRACT §7): on SIGTERM the node turns readiness to 503,
 * refuses new connections, and closes its clients with 1012 ("service
 * restart", which the `phoenix` client reconnects after) spread evenly over
 * the drain window, so that they do not all reconnect elsewhere at once (the
 * client's backoff has no jitter). Then the rest of the gateway shuts down and
 * the cluster hands this node's shards over.
 *
 * It is a finalizer of a layer built after the listener, so it runs first on
 * shutdown, while health checks can still see the 503.
 */
import { Effect, Layer } from "effect"
import { GatewayConfig } from "../config/GatewayConfig.ts"
import { CloseCode } from "../protocol/constants.ts"
import { Sessions } from "../socket/Sessions.ts"
import { WebSocketTransport } from "../transport/WebSocketTransport.ts"
import { HttpListener } from "./HttpListener.ts"
import { Lifecycle } from "./Lifecycle.ts"

/** How often a slice of the connections is closed during the drain window. */
const DRAIN_STEP_MS = 100
/**
 * How long the drain then waits for the clients to answer the closing
 * handshake: a connection counts as closed (and the app is notified of it)
 * only then, and the app calls must still be there to carry the notice.
 */
const CLOSING_HANDSHAKE_WAIT_MS = 5_000
/** The contract's bound from SIGTERM to exit, whatever the shutdown still waits for. */
const EXIT_DEADLINE_MS = 30_000

const drain = Effect.gen(function*() {
  const { limits } = yield* GatewayConfig
  const lifecycle = yield* Lifecycle
  const transport = yield* WebSocketTransport
  const sessions = yield* Sessions
  lifecycle.startDraining()
  transport.stopAccepting()
  setTimeout(() => {
    process.stderr.write("shutdown did not finish within 30 s; exiting\n")
    process.exit(1)
  }, EXIT_DEADLINE_MS).unref()
  const open = [...sessions.all()]
  yield* Effect.logInfo(`draining: closing ${open.length} connections over ${limits.drainWindowMs} ms`)
  const steps = Math.max(1, Math.floor(limits.drainWindowMs / DRAIN_STEP_MS))
  const perStep = Math.ceil(open.length / steps)
  for (let start = 0; start < open.length; start += perStep) {
    for (const session of open.slice(start, start + perStep)) session.close(CloseCode.serviceRestart, "server restart")
    if (start + perStep < open.length) yield* Effect.sleep(DRAIN_STEP_MS)
  }
  const handshakesFrom = Date.now()
  while (sessions.count() > 0 && Date.now() - handshakesFrom < CLOSING_HANDSHAKE_WAIT_MS) yield* Effect.sleep(DRAIN_STEP_MS)
  yield* Effect.logInfo("drained; shutting down")
})

/** Runs `drain` when the gateway shuts down; needs the listener so that it is finalized before it. */
export const DrainOnShutdown = Layer.effectDiscard(
  Effect.gen(function*() {
    yield* HttpListener
    const context = yield* Effect.context<GatewayConfig | Lifecycle | WebSocketTransport | Sessions>()
    yield* Effect.addFinalizer(() => drain.pipe(Effect.provide(context)))
  })
)
