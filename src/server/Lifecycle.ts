/**
 * Node lifecycle state shared by readiness and the transport: whether the node
 * is draining (shutting down gracefully) and so refuses new connections.
 */
import { Context, Effect, Layer } from "effect"

export interface LifecycleShape {
  readonly draining: () => boolean
  readonly startDraining: () => void
}

export class Lifecycle extends Context.Service<Lifecycle, LifecycleShape>()("realtime-gateway/server/Lifecycle") {
  static readonly layer = Layer.effect(
    Lifecycle,
    Effect.sync(() => {
      let draining = false
      return Lifecycle.of({
        draining: () => draining,
        startDraining: () => {
          draining = true
        }
      })
    })
  )
}
