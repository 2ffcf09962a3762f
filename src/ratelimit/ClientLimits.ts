/**
 * Push rate limits per client, wherever the client is connected (CONTRACT §5).
 *
 * The common case, a client pushing through one node, is decided locally and
 * synchronously, with no cluster call. In a cluster, a node tells the client's
 * entity on the client's first push (`Attach`); when the client turns out to
 * push through several nodes, its tokens are taken at the Client entity from
 * then on, so that its buckets hold across all its connections. A client
 * switching to shared mode may get a few more pushes than its limit at the
 * moment of the switch (what each node had taken locally before).
 */
import { Context, Effect, Layer, Schedule } from "effect"
import { Client, clientEntityId } from "../cluster/ClientEntity.ts"
import { GatewayConfig } from "../config/GatewayConfig.ts"
import { RateLimiter } from "./RateLimiter.ts"
import type { Decision, RateLimits } from "./RateLimiter.ts"

export interface ClientLimitsShape {
  /** A decision now, or an Effect when the cluster must be asked first. */
  readonly check: (app: string, clientId: string, event: string, limits: RateLimits) => Decision | Effect.Effect<Decision>
  /** Another node pushes for this client too: take its tokens at its entity from now on. */
  readonly markShared: (app: string, clientId: string) => void
  /** The client's last connection on this node closed. */
  readonly released: (app: string, clientId: string) => void
}

/** How often attached clients are re-sent to their entities (which forget them when they move). */
const REATTACH_INTERVAL = "30 seconds"

type Mode = "local" | "shared"

export class ClientLimits extends Context.Service<ClientLimits, ClientLimitsShape>()(
  "realtime-gateway/ratelimit/ClientLimits"
) {
  /** One node: every client is local. */
  static readonly layerSingleNode = Layer.effect(
    ClientLimits,
    Effect.gen(function*() {
      const limiter = yield* RateLimiter
      return ClientLimits.of({
        check: limiter.checkPush,
        markShared: () => undefined,
        released: () => undefined
      })
    })
  )

  static readonly layerCluster = Layer.effect(
    ClientLimits,
    Effect.gen(function*() {
      const { nodeName } = yield* GatewayConfig
      const limiter = yield* RateLimiter
      const clientEntity = yield* Client.client
      const runInBackground = Effect.runForkWith(yield* Effect.context<never>())
      // entity id → the client's mode on this node; absent until its first push
      const modes = new Map<string, Mode>()

      const attach = (entityId: string) =>
        clientEntity(entityId).Attach({ node: nodeName }).pipe(
          Effect.map((shared): Mode => (shared ? "shared" : "local")),
          Effect.catch((error) =>
            // without an answer, limit locally rather than refuse the push
            Effect.logWarning("client attach failed; limiting locally", String(error)).pipe(Effect.as<Mode>("local"))
          )
        )

      yield* Effect.suspend(() =>
        Effect.forEach([...modes.keys()], (entityId) =>
          attach(entityId).pipe(Effect.map((mode) => {
            if (modes.has(entityId) && mode === "shared") modes.set(entityId, mode)
          })), { concurrency: 16, discard: true })
      ).pipe(Effect.repeat(Schedule.spaced(REATTACH_INTERVAL)), Effect.delay(REATTACH_INTERVAL), Effect.forkScoped)

      const takeShared = (entityId: string, event: string, limits: RateLimits) =>
        clientEntity(entityId).TakeToken({
          event,
          limits: { default: limits.default, byEvent: [...limits.byEvent] }
        }).pipe(
          Effect.catch((error) =>
            Effect.logWarning("shared rate limit check failed; allowing the push", String(error)).pipe(
              Effect.as<Decision>({ allowed: true })
            )
          )
        )

      const check = (app: string, clientId: string, event: string, limits: RateLimits) => {
        if (limits.default === undefined && limits.byEvent.size === 0) return limiter.checkPush(app, clientId, event, limits)
        const entityId = clientEntityId(app, clientId)
        const mode = modes.get(entityId)
        if (mode === "local") return limiter.checkPush(app, clientId, event, limits)
        if (mode === "shared") return takeShared(entityId, event, limits)
        return attach(entityId).pipe(
          Effect.flatMap((attached) => {
            modes.set(entityId, attached)
            return attached === "local"
              ? Effect.sync(() => limiter.checkPush(app, clientId, event, limits))
              : takeShared(entityId, event, limits)
          })
        )
      }

      return ClientLimits.of({
        check,
        markShared: (app, clientId) => {
          const entityId = clientEntityId(app, clientId)
          if (modes.has(entityId)) modes.set(entityId, "shared")
        },
        released: (app, clientId) => {
          const entityId = clientEntityId(app, clientId)
          if (!modes.delete(entityId)) return
          runInBackground(clientEntity(entityId).Detach({ node: nodeName }).pipe(Effect.ignore))
        }
      })
    })
  )
}
