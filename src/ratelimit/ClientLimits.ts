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
import { toMessage } from "../cluster/messages.ts"
import type { RateLimitsMessage } from "../cluster/messages.ts"
import { GatewayConfig } from "../config/GatewayConfig.ts"
import { RateLimiter } from "./RateLimiter.ts"
import type { ClientTokens, Decision, RateLimits } from "./RateLimiter.ts"
import { SupervisedChild } from "../supervision/children.ts"
import { supervised } from "../supervision/Supervisor.ts"
import { boundEntityCall } from "../cluster/entityCallTimeout.ts"

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
      const { nodeName, limits: { entityCallTimeoutMs } } = yield* GatewayConfig
      const limiter = yield* RateLimiter
      const clientEntity = yield* Client.client
      const runInBackground = Effect.runForkWith(yield* Effect.context<never>())
      // entity id → the client's mode on this node and its latest limits;
      // absent until its first push, "attaching" while its entity is asked
      const modes = new Map<string, { mode: Mode | "attaching"; app: string; clientId: string; limits: RateLimits }>()

      const detach = (entityId: string) =>
        runInBackground(clientEntity(entityId).Detach({ node: nodeName }).pipe(
          boundEntityCall("Client.Detach", entityCallTimeoutMs),
          Effect.ignore
        ))

      const attach = (entityId: string, limits: RateLimits) =>
        clientEntity(entityId).Attach({ node: nodeName, limits: toMessage(limits) }).pipe(
          boundEntityCall("Client.Attach", entityCallTimeoutMs),
          Effect.map((shared): Mode => (shared ? "shared" : "local")),
          Effect.catch((error) =>
            // without an answer, limit locally rather than refuse the push
            Effect.logWarning("client attach failed; limiting locally", String(error)).pipe(Effect.as<Mode>("local"))
          )
        )

      // Re-attach the clients whose limits still carry information, so that
      // their entity (which forgets them when it moves) knows them; a local
      // client whose buckets are full again is forgotten instead, so that its
      // entity can be reaped.
      const reattach = Effect.suspend(() =>
        Effect.forEach([...modes], ([entityId, entry]) => {
          if (entry.mode === "attaching") return Effect.void
          const tokens = limiter.clientTokens(entry.app, entry.clientId)
          if (entry.mode === "local" && tokens.default === undefined && tokens.byEvent.length === 0) {
            modes.delete(entityId)
            detach(entityId)
            return Effect.void
          }
          return attach(entityId, entry.limits).pipe(Effect.map((mode) => {
            const current = modes.get(entityId)
            if (current !== undefined && mode === "shared") current.mode = mode
          }))
        }, { concurrency: 16, discard: true })
      )
      yield* reattach.pipe(Effect.repeat(Schedule.spaced(REATTACH_INTERVAL)), Effect.delay(REATTACH_INTERVAL), supervised(SupervisedChild.clientReattach))

      // a push only touches the default bucket and its event's: the rest of the table need not travel
      const limitsOfEvent = (limits: RateLimits, event: string): RateLimitsMessage => {
        const eventLimit = limits.byEvent.get(event)
        return { default: limits.default, byEvent: eventLimit === undefined ? [] : [[event, eventLimit]] }
      }

      const takeShared = (entityId: string, event: string, limits: RateLimits) =>
        clientEntity(entityId).TakeToken({ event, limits: limitsOfEvent(limits, event) }).pipe(
          boundEntityCall("Client.TakeToken", entityCallTimeoutMs),
          Effect.map(({ decision, shared }) => {
            // the other nodes are gone: back to deciding here
            const current = modes.get(entityId)
            if (!shared && current !== undefined) current.mode = "local"
            return decision as Decision
          }),
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
        if (known !== undefined && known.mode !== "attaching") {
          known.limits = limits
          return known.mode === "local" ? limiter.checkPush(app, clientId, event, limits) : takeShared(entityId, event, limits)
        }
        const entry = known ?? { mode: "attaching" as const, app, clientId, limits }
        modes.set(entityId, entry)
        return attach(entityId, limits).pipe(
          Effect.flatMap((attached) => {
            // the client's last connection here may have closed meanwhile
            if (modes.get(entityId) !== entry) detach(entityId)
            else entry.mode = attached
            return attached === "local"
              ? Effect.sync(() => limiter.checkPush(app, clientId, event, limits))
              : takeShared(entityId, event, limits)
          })
        )
      }

      return ClientLimits.of({
        check,
        markShared: (app, clientId) => {
          const known = modes.get(clientEntityId(app, clientId))
          if (known !== undefined) known.mode = "shared"
          return limiter.clientTokens(app, clientId)
        },
        released: (app, clientId) => {
          const entityId = clientEntityId(app, clientId)
          if (modes.delete(entityId)) detach(entityId)
        }
      })
    })
  )
}
