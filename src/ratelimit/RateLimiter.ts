/**
 * Admission rate limits: pushes per client, and connection attempts per
 * remote IP.
 *
 * Pushes draw from token buckets per `(app, client_id)` (the app schema's
 * `rateLimits.default`) and per `(app, client_id, event)` (its
 * `rateLimits.byEvent`). A push needs a token from every bucket that applies;
 * when one is empty the push is refused with the time until all refusing
 * buckets have a token again, and nothing is taken from any bucket. The
 * buckets belong to the client, not to a connection, so all connections of a
 * client share them. Connection attempts draw from a bucket per `(app, ip)` (IPv6: per /64)
 * holding the app's `connectionsPerIpPerMinute`, refilled over a minute.
 *
 * Checks are synchronous and return plain values: they run once per push.
 * The in-memory store (`layerMemory`) holds this node's buckets; a store that
 * coordinates a client's buckets across the cluster provides the same service.
 *
 * Limits are passed in with every check rather than configured up front, so a
 * new schema version applies from the next push: a bucket whose limit changed
 * is reconfigured in place (keeping what the client has spent), and a bucket
 * whose limit is gone is dropped. A full bucket carries no information, so a
 * periodic sweep drops full buckets and the store only holds clients that have
 * spent tokens recently.
 */
import { Clock, Context, Effect, Layer, Schedule } from "effect"
import type { RateLimit } from "../contract/SchemaDocument.ts"
import { addressKey } from "./addressKey.ts"
import * as TokenBucket from "./TokenBucket.ts"
import { SupervisedChild } from "../supervision/children.ts"
import { supervised } from "../supervision/Supervisor.ts"
import type { Supervisor } from "../supervision/Supervisor.ts"

/** The push limits of an app's current schema (structurally the compiled schema's `rateLimits`). */
export interface RateLimits {
  readonly default?: RateLimit | undefined
  readonly byEvent: ReadonlyMap<string, RateLimit>
}

/** The tokens left in a client's push buckets, to carry them over to another store. */
export interface ClientTokens {
  readonly default?: number | undefined
  readonly byEvent: ReadonlyArray<readonly [event: string, tokens: number]>
}

export type Decision = { readonly allowed: true } | { readonly allowed: false; readonly retryAfterMs: number }

export type RefusalKind = "push" | "connection"

/**
 * Refusals since start, per app and kind; push refusals also per event. A push
 * entry without `event` counts the events beyond the per-app label cap.
 */
export interface RefusalCount {
  readonly app: string
  readonly kind: RefusalKind
  readonly event?: string
  readonly count: number
}

export interface RateLimiterShape {
  /** One push of `event` by (app, clientId) under `limits` (the app's current compiled schema limits). */
  readonly checkPush: (app: string, clientId: string, event: string, limits: RateLimits) => Decision
  /** One connection attempt from `ip` for `app`; IPv6 addresses count by their /64 (see `addressKey`). */
  readonly checkConnection: (app: string, ip: string, perMinute: number) => Decision
  readonly refusals: () => ReadonlyArray<RefusalCount>
  /** The tokens left in the client's push buckets (buckets that do not exist are full and left out). */
  readonly clientTokens: (app: string, clientId: string) => ClientTokens
}

/** The in-memory store, with the housekeeping that the service leaves to its layer. */
export interface MemoryRateLimiter extends RateLimiterShape {
  /** Sets the client's push buckets to the given tokens under `limits`. */
  readonly setClientTokens: (app: string, clientId: string, tokens: ClientTokens, limits: RateLimits) => void
  /** Drops the buckets that are full again; returns how many it dropped. */
  readonly sweep: () => number
  /** Buckets held (push and connection). */
  readonly bucketCount: () => number
}

/** How often full buckets are dropped: well under a typical window, cheap at ~15k clients. */
const SWEEP_INTERVAL = "30 seconds"

const CONNECTION_WINDOW_MS = 60_000

/**
 * Distinct event names counted per app. Event names come from clients; past
 * this many, further names are counted together so the counters stay bounded.
 */
export const MAX_EVENT_LABELS_PER_APP = 256

// Shared so that an allowed check allocates nothing.
const ALLOWED: Decision = Object.freeze({ allowed: true })

interface ClientBuckets {
  default: TokenBucket.TokenBucket | undefined
  byEvent: Map<string, TokenBucket.TokenBucket> | undefined
}

interface AppRefusals {
  connections: number
  readonly pushes: Map<string, number>
  /** Push refusals of event names beyond `MAX_EVENT_LABELS_PER_APP`. */
  otherPushes: number
}

/** The bucket brought to the limit's current parameters. */
const conform = (bucket: TokenBucket.TokenBucket, limit: RateLimit, now: number): TokenBucket.TokenBucket => {
  if (!TokenBucket.hasLimit(bucket, limit.maxRequests, limit.windowMs)) {
    TokenBucket.reconfigure(bucket, limit.maxRequests, limit.windowMs, now)
  }
  return bucket
}

const makeMemory = (now: () => number = Date.now): MemoryRateLimiter => {
  // app → client_id → buckets; nested so that a check builds no key string
  const pushes = new Map<string, Map<string, ClientBuckets>>()
  // app → ip → bucket
  const connections = new Map<string, Map<string, TokenBucket.TokenBucket>>()
  const refused = new Map<string, AppRefusals>()

  const refusalsOf = (app: string): AppRefusals => {
    let entry = refused.get(app)
    if (entry === undefined) {
      entry = { connections: 0, pushes: new Map(), otherPushes: 0 }
      refused.set(app, entry)
    }
    return entry
  }

  const countPushRefusal = (app: string, event: string) => {
    const entry = refusalsOf(app)
    const count = entry.pushes.get(event)
    if (count !== undefined) entry.pushes.set(event, count + 1)
    else if (entry.pushes.size < MAX_EVENT_LABELS_PER_APP) entry.pushes.set(event, 1)
    else entry.otherPushes++
  }

  const clientEntry = (app: string, clientId: string): ClientBuckets => {
    let clients = pushes.get(app)
    if (clients === undefined) {
      clients = new Map()
      pushes.set(app, clients)
    }
    let client = clients.get(clientId)
    if (client === undefined) {
      client = { default: undefined, byEvent: undefined }
      clients.set(clientId, client)
    }
    return client
  }

  const checkPush = (app: string, clientId: string, event: string, limits: RateLimits): Decision => {
    const defaultLimit = limits.default
    const eventLimit = limits.byEvent.size === 0 ? undefined : limits.byEvent.get(event)
    const client = pushes.get(app)?.get(clientId)

    // Buckets whose limit the schema no longer has would otherwise apply
    // again, stale, if the limit came back.
    if (client !== undefined) {
      if (defaultLimit === undefined) client.default = undefined
      if (eventLimit === undefined && client.byEvent !== undefined) client.byEvent.delete(event)
    }
    if (defaultLimit === undefined && eventLimit === undefined) return ALLOWED

    const t = now()
    // A bucket that does not exist yet is full, and a limit holds at least one
    // token: it cannot refuse, and it is only created when a token is taken.
    const defaultBucket = defaultLimit === undefined || client?.default === undefined
      ? undefined
      : conform(client.default, defaultLimit, t)
    const existingEventBucket = eventLimit === undefined ? undefined : client?.byEvent?.get(event)
    const eventBucket = existingEventBucket === undefined || eventLimit === undefined
      ? undefined
      : conform(existingEventBucket, eventLimit, t)

    // Check every bucket before taking from any.
    let wait = defaultBucket === undefined ? 0 : TokenBucket.msUntilToken(defaultBucket, t)
    if (eventBucket !== undefined) wait = Math.max(wait, TokenBucket.msUntilToken(eventBucket, t))
    if (wait > 0) {
      countPushRefusal(app, event)
      return { allowed: false, retryAfterMs: wait }
    }

    if (defaultLimit !== undefined) {
      if (defaultBucket !== undefined) TokenBucket.take(defaultBucket, t)
      else {
        const bucket = TokenBucket.make(defaultLimit.maxRequests, defaultLimit.windowMs, t)
        TokenBucket.take(bucket, t)
        clientEntry(app, clientId).default = bucket
      }
    }
    if (eventLimit !== undefined) {
      if (eventBucket !== undefined) TokenBucket.take(eventBucket, t)
      else {
        const bucket = TokenBucket.make(eventLimit.maxRequests, eventLimit.windowMs, t)
        TokenBucket.take(bucket, t)
        const entry = client ?? clientEntry(app, clientId)
        if (entry.byEvent === undefined) entry.byEvent = new Map()
        entry.byEvent.set(event, bucket)
      }
    }
    return ALLOWED
  }

  const checkConnection = (app: string, remoteIp: string, perMinute: number): Decision => {
    const ip = addressKey(remoteIp)
    const t = now()
    let ips = connections.get(app)
    const existing = ips?.get(ip)
    if (existing === undefined) {
      const bucket = TokenBucket.make(perMinute, CONNECTION_WINDOW_MS, t)
      if (!TokenBucket.take(bucket, t)) {
        refusalsOf(app).connections++
        return { allowed: false, retryAfterMs: TokenBucket.msUntilToken(bucket, t) }
      }
      if (ips === undefined) {
        ips = new Map()
        connections.set(app, ips)
      }
      ips.set(ip, bucket)
      return ALLOWED
    }
    conform(existing, { maxRequests: perMinute, windowMs: CONNECTION_WINDOW_MS }, t)
    if (TokenBucket.take(existing, t)) return ALLOWED
    refusalsOf(app).connections++
    return { allowed: false, retryAfterMs: TokenBucket.msUntilToken(existing, t) }
  }

  const refusals = (): ReadonlyArray<RefusalCount> => {
    const out: Array<RefusalCount> = []
    for (const [app, entry] of refused) {
      if (entry.connections > 0) out.push({ app, kind: "connection", count: entry.connections })
      for (const [event, count] of entry.pushes) out.push({ app, kind: "push", event, count })
      if (entry.otherPushes > 0) out.push({ app, kind: "push", count: entry.otherPushes })
    }
    return out
  }

  // Deleting the current entry while iterating a Map is safe: iteration
  // continues with the next entry.
  const sweep = (): number => {
    const t = now()
    let dropped = 0
    for (const [app, clients] of pushes) {
      for (const [clientId, client] of clients) {
        if (client.default !== undefined && TokenBucket.isFull(client.default, t)) {
          client.default = undefined
          dropped++
        }
        if (client.byEvent !== undefined) {
          for (const [event, bucket] of client.byEvent) {
            if (TokenBucket.isFull(bucket, t)) {
              client.byEvent.delete(event)
              dropped++
            }
          }
          if (client.byEvent.size === 0) client.byEvent = undefined
        }
        if (client.default === undefined && client.byEvent === undefined) clients.delete(clientId)
      }
      if (clients.size === 0) pushes.delete(app)
    }
    for (const [app, ips] of connections) {
      for (const [ip, bucket] of ips) {
        if (TokenBucket.isFull(bucket, t)) {
          ips.delete(ip)
          dropped++
        }
      }
      if (ips.size === 0) connections.delete(app)
    }
    return dropped
  }

  const bucketCount = (): number => {
    let count = 0
    for (const clients of pushes.values()) {
      for (const client of clients.values()) {
        if (client.default !== undefined) count++
        if (client.byEvent !== undefined) count += client.byEvent.size
      }
    }
    for (const ips of connections.values()) count += ips.size
    return count
  }

  const clientTokens = (app: string, clientId: string): ClientTokens => {
    const client = pushes.get(app)?.get(clientId)
    const t = now()
    return {
      default: client?.default === undefined ? undefined : TokenBucket.peek(client.default, t),
      byEvent: [...(client?.byEvent ?? [])].map(([event, bucket]) => [event, TokenBucket.peek(bucket, t)] as const)
    }
  }

  const setClientTokens = (app: string, clientId: string, tokens: ClientTokens, limits: RateLimits) => {
    const t = now()
    const carried = (limit: RateLimit, left: number) => {
      const bucket = TokenBucket.make(limit.maxRequests, limit.windowMs, t)
      TokenBucket.setTokens(bucket, left, t)
      return bucket
    }
    const client = clientEntry(app, clientId)
    if (limits.default !== undefined && tokens.default !== undefined) client.default = carried(limits.default, tokens.default)
    for (const [event, left] of tokens.byEvent) {
      const limit = limits.byEvent.get(event)
      if (limit === undefined) continue
      if (client.byEvent === undefined) client.byEvent = new Map()
      client.byEvent.set(event, carried(limit, left))
    }
  }

  return { checkPush, checkConnection, refusals, sweep, bucketCount, clientTokens, setClientTokens }
}

/** Serves a store, sweeping it every `SWEEP_INTERVAL` for as long as the layer's scope lasts. */
const serveMemory = (store: MemoryRateLimiter) =>
  Effect.gen(function*() {
    yield* Effect.sync(store.sweep).pipe(
      Effect.repeat(Schedule.spaced(SWEEP_INTERVAL)),
      Effect.delay(SWEEP_INTERVAL),
      supervised(SupervisedChild.rateLimitSweep)
    )
    return RateLimiter.of({
      checkPush: store.checkPush,
      checkConnection: store.checkConnection,
      refusals: store.refusals,
      clientTokens: store.clientTokens
    })
  })

export class RateLimiter extends Context.Service<RateLimiter, RateLimiterShape>()(
  "realtime-gateway/ratelimit/RateLimiter"
) {
  /** This node's buckets in memory, timed by the `Clock`, swept every `SWEEP_INTERVAL`. */
  static readonly layerMemory: Layer.Layer<RateLimiter, never, Supervisor> = Layer.effect(
    RateLimiter,
    Effect.gen(function*() {
      const clock = yield* Clock.Clock
      return yield* serveMemory(makeMemory(() => clock.currentTimeMillisUnsafe()))
    })
  )

  /** Like `layerMemory`, with a store made by the caller (who can then inspect it). */
  static layerFromMemory(store: MemoryRateLimiter): Layer.Layer<RateLimiter, never, Supervisor> {
    return Layer.effect(RateLimiter, serveMemory(store))
  }

  /** An in-memory store without the periodic sweep; `now` defaults to `Date.now`. */
  static makeMemory(now?: () => number): MemoryRateLimiter {
    return makeMemory(now)
  }
}
