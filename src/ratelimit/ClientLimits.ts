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
import type { ClientTokens, Decision, RateLimits } from "./RateLimiter.ts"

export interface ClientLimitsShape {
  /** A decision now, or an Effect when the cluster must be asked first. */
  readonly check: (app: string, clientId: string, event: string, limits: RateLimits) => Decision | Effect.Effect<Decision>
  /**
   * Another node pushes for this client too: take its tokens at its entity
   * from now on. Answers the tokens this node had left for it, which the
   * entity carries over.
   */
  readonly markShared: (app: string, clientId: string) => ClientTokens
  /** The client's last connection on this node closed. */
  readonly released: (app: string, clientId: string) => void
}

/** How often attached clients are re-sent to their entities (which forget them when they move). */
const REATTACH_INTERVAL = "30 seconds"

type Mode = "local" | "shared"

const toMessage = (limits: RateLimits) => ({ default: limits.default, byEvent: [...limits.byEvent] })

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
        markShared: limiter.clientTokens,
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
      // entity id → the client's mode on this node and its latest limits; absent until its first push
      const modes = new Map<string, { mode: Mode; limits: RateLimits }>()

      const attach = (entityId: string, limits: RateLimits) =>
        clientEntity(entityId).Attach({ node: nodeName, limits: toMessage(limits) }).pipe(
          Effect.map((shared): Mode => (shared ? "shared" : "local")),
          Effect.catch((error) =>
            // without an answer, limit locally rather than refuse the push
            Effect.logWarning("client attach failed; limiting locally", String(error)).pipe(Effect.as<Mode>("local"))
          )
        )

      yield* Effect.suspend(() =>
        Effect.forEach([...modes], ([entityId, { limits }]) =>
          attach(entityId, limits).pipe(Effect.map((mode) => {
            const current = modes.get(entityId)
            if (current !== undefined && mode === "shared") current.mode = mode
          })), { concurrency: 16, discard: true })
      ).pipe(Effect.repeat(Schedule.spaced(REATTACH_INTERVAL)), Effect.delay(REATTACH_INTERVAL), Effect.forkScoped)

      const takeShared = (entityId: string, event: string, limits: RateLimits) =>
        clientEntity(entityId).TakeToken({ event, limits: toMessage(limits) }).pipe(
          Effect.catch((error) =>
            Effect.logWarning("shared rate limit check failed; allowing the push", String(error)).pipe(
              Effect.as<Decision>({ allowed: true })
            )
          )
        )

      const check = (app: string, clientId: string, event: string, limits: RateLimits) => {
        if (limits.default === undefined && limits.byEvent.size === 0) return limiter.checkPush(app, clientId, event, limits)
        const entityId = clientEntityId(app, clientId)
        const known = modes.get(entityId)
        if (known !== undefined) {
          known.limits = limits
          return known.mode === "local" ? limiter.checkPush(app, clientId, event, limits) : takeShared(entityId, event, limits)
        }
        return attach(entityId, limits).pipe(
          Effect.flatMap((attached) => {
            modes.set(entityId, { mode: attached, limits })
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
          const known = modes.get(entityId)
          if (known !== undefined) known.mode = "shared"
          return limiter.clientTokens(app, clientId)
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
