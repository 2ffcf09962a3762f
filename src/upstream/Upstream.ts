/**
 * The one HTTP boundary between the gateway and the app APIs it fronts.
 *
 * Every call to an app goes through here, so that each app gets its own
 * keep-alive connection pool, concurrency bound and circuit breaker: a slow or
 * dead app can only fail its own calls. Requests carry `x-request-id`,
 * `x-gateway-app`, `x-gateway-node`, a W3C `traceparent`, and, when the app has a
 * secret, `x-gateway-signature: sha256=<hex HMAC-SHA256 of the raw body>`.
 *
 * The service returns raw answers and typed failures; what they mean for a
 * client (`unauthorized`, `api_timeout`, ...) is decided by the caller.
 */
import { createHmac, randomUUID } from "node:crypto"
import { Context, Effect, Layer, Redacted, Schedule, Semaphore } from "effect"
import { Agent } from "undici"
import type { AppConfig } from "../config/GatewayConfig.ts"
import { GatewayConfig } from "../config/GatewayConfig.ts"
import type { UpstreamCall, UpstreamError } from "./errors.ts"
import { UpstreamBadAnswer, UpstreamOverloaded, UpstreamTimeout, UpstreamUnreachable } from "./errors.ts"

export interface UpstreamRequest {
  readonly call: UpstreamCall
  readonly method: "GET" | "POST"
  readonly url: string
  /** JSON value sent as the body (POST only). */
  readonly body?: unknown
  readonly headers?: Readonly<Record<string, string>>
  readonly timeoutMs: number
}

export interface UpstreamAnswer {
  readonly status: number
  readonly headers: Readonly<Record<string, string | ReadonlyArray<string> | undefined>>
  readonly body: string
}

export interface UpstreamShape {
  /** Performs one call; non-2xx answers are returned, not failed: the caller knows what they mean. */
  readonly call: (app: AppConfig, request: UpstreamRequest) => Effect.Effect<UpstreamAnswer, UpstreamError>
  /**
   * Like `call`, but fails fast with `UpstreamOverloaded` when `limit` calls of
   * this kind are already in flight for the app, instead of queueing. Used where
   * queueing would only make a storm worse (auth during a reconnect storm).
   */
  readonly callBounded: (
    app: AppConfig,
    request: UpstreamRequest,
    limit: number
  ) => Effect.Effect<UpstreamAnswer, UpstreamError>
  /** Fire-and-forget POST with bounded retries; never blocks the caller. */
  readonly notify: (app: AppConfig, url: string, body: unknown) => Effect.Effect<void>
  /** Drops the pool of an app that was removed or reconfigured. */
  readonly forget: (appId: string) => Effect.Effect<void>
}

/** Bytes accepted in an answer; larger answers are garbage for our purposes. */
const MAX_ANSWER_BYTES = 4 * 1024 * 1024
/** Concurrent calls per app before further calls queue. */
const MAX_IN_FLIGHT_PER_APP = 256
const BREAKER_FAILURE_THRESHOLD = 5
const BREAKER_OPEN_MS = 5_000
const NOTIFY_ATTEMPTS = 3

const USER_AGENT = "realtime-gateway/0.1"

/**
 * Opens after consecutive failures (no answer, or 5xx) and lets one trial call
 * through once the open period has passed; a success closes it again.
 */
class CircuitBreaker {
  private failures = 0
  private openUntil = 0
  private trialInFlight = false

  admit(now: number): boolean {
    if (this.failures < BREAKER_FAILURE_THRESHOLD) return true
    if (now < this.openUntil || this.trialInFlight) return false
    this.trialInFlight = true
    return true
  }

  succeeded(): void {
    this.failures = 0
    this.trialInFlight = false
  }

  failed(now: number): void {
    this.failures++
    this.trialInFlight = false
    if (this.failures >= BREAKER_FAILURE_THRESHOLD) this.openUntil = now + BREAKER_OPEN_MS
  }
}

interface AppPool {
  readonly agent: Agent
  readonly permits: Semaphore.Semaphore
  readonly breaker: CircuitBreaker
  readonly inFlight: Map<UpstreamCall, number>
}

const sign = (secret: Redacted.Redacted<string>, body: string) =>
  `sha256=${createHmac("sha256", Redacted.value(secret)).update(body).digest("hex")}`

const readBody = async (body: AsyncIterable<Buffer> & { destroy(): unknown }): Promise<string> => {
  const chunks: Array<Buffer> = []
  let size = 0
  for await (const chunk of body) {
    size += chunk.length
    if (size > MAX_ANSWER_BYTES) {
      body.destroy()
      throw new Error(`answer larger than ${MAX_ANSWER_BYTES} bytes`)
    }
    chunks.push(chunk)
  }
  return Buffer.concat(chunks).toString("utf8")
}

const errorDetail = (cause: unknown): string => {
  if (cause instanceof Error) {
    const code = (cause as { code?: unknown }).code
    return typeof code === "string" ? `${code}: ${cause.message}` : cause.message
  }
  return String(cause)
}

export class Upstream extends Context.Service<Upstream, UpstreamShape>()("realtime-gateway/upstream/Upstream") {
  static readonly layer = Layer.effect(
    Upstream,
    Effect.gen(function*() {
      const config = yield* GatewayConfig
      const pools = new Map<string, AppPool>()

      yield* Effect.addFinalizer(() =>
        Effect.promise(() => Promise.allSettled([...pools.values()].map((pool) => pool.agent.close())))
      )

      const poolFor = (appId: string): AppPool => {
        let pool = pools.get(appId)
        if (pool === undefined) {
          pool = {
            agent: new Agent({ keepAliveTimeout: 30_000, connections: MAX_IN_FLIGHT_PER_APP, pipelining: 1 }),
            permits: Semaphore.makeUnsafe(MAX_IN_FLIGHT_PER_APP),
            breaker: new CircuitBreaker(),
            inFlight: new Map()
          }
          pools.set(appId, pool)
        }
        return pool
      }

      const send = (app: AppConfig, pool: AppPool, request: UpstreamRequest) =>
        Effect.gen(function*() {
          const span = yield* Effect.currentSpan.pipe(Effect.orElseSucceed(() => undefined))
          const body = request.body === undefined ? undefined : JSON.stringify(request.body)
          const headers: Record<string, string> = {
            "user-agent": USER_AGENT,
            "x-request-id": randomUUID(),
            "x-gateway-app": app.id,
            "x-gateway-node": config.nodeName,
            ...request.headers
          }
          if (span !== undefined) headers.traceparent = `00-${span.traceId}-${span.spanId}-01`
          if (body !== undefined) headers["content-type"] = "application/json"
          if (app.secret !== undefined) headers["x-gateway-signature"] = sign(app.secret, body ?? "")

          if (!pool.breaker.admit(Date.now())) {
            return yield* new UpstreamUnreachable({ app: app.id, call: request.call, detail: "circuit breaker open" })
          }
          const answer = yield* Effect.tryPromise({
            try: async (signal) => {
              const response = await pool.agent.request({
                origin: new URL(request.url).origin,
                path: request.url.slice(new URL(request.url).origin.length) || "/",
                method: request.method,
                headers,
                body: body ?? null,
                signal
              })
              return {
                status: response.statusCode,
                headers: response.headers,
                body: await readBody(response.body)
              } satisfies UpstreamAnswer
            },
            catch: (cause) => new UpstreamUnreachable({ app: app.id, call: request.call, detail: errorDetail(cause) })
          }).pipe(
            Effect.timeoutOrElse({
              duration: request.timeoutMs,
              orElse: () => Effect.fail(new UpstreamTimeout({ app: app.id, call: request.call, timeoutMs: request.timeoutMs }))
            }),
            Effect.tapError(() => Effect.sync(() => pool.breaker.failed(Date.now())))
          )
          if (answer.status >= 500) pool.breaker.failed(Date.now())
          else pool.breaker.succeeded()
          return answer
        }).pipe(Effect.withSpan(`upstream.${request.call}`, { attributes: { app_id: app.id } }))

      const call = (app: AppConfig, request: UpstreamRequest) => {
        const pool = poolFor(app.id)
        return pool.permits.withPermits(1)(send(app, pool, request))
      }

      const callBounded = (app: AppConfig, request: UpstreamRequest, limit: number) =>
        Effect.suspend((): Effect.Effect<UpstreamAnswer, UpstreamError> => {
          const pool = poolFor(app.id)
          const current = pool.inFlight.get(request.call) ?? 0
          if (current >= limit) {
            return Effect.fail(new UpstreamOverloaded({ app: app.id, call: request.call, limit }))
          }
          pool.inFlight.set(request.call, current + 1)
          return call(app, request).pipe(
            Effect.ensuring(Effect.sync(() => pool.inFlight.set(request.call, (pool.inFlight.get(request.call) ?? 1) - 1)))
          )
        })

      const notify = (app: AppConfig, url: string, body: unknown) =>
        call(app, { call: "notify", method: "POST", url, body, timeoutMs: app.timeouts.authMs }).pipe(
          Effect.flatMap((answer) =>
            answer.status >= 500
              ? Effect.fail(new UpstreamBadAnswer({ app: app.id, call: "notify", status: answer.status, detail: "server error" }))
              : Effect.void
          ),
          Effect.retry({ schedule: Schedule.exponential("200 millis"), times: NOTIFY_ATTEMPTS - 1 }),
          Effect.catch((error) =>
            Effect.logWarning("app notification dropped after retries", error.message).pipe(
              Effect.annotateLogs({ app_id: app.id })
            )
          ),
          Effect.forkDetach,
          Effect.asVoid
        )

      const forget = (appId: string) =>
        Effect.suspend(() => {
          const pool = pools.get(appId)
          pools.delete(appId)
          return pool === undefined ? Effect.void : Effect.promise(() => pool.agent.close())
        })

      return Upstream.of({ call, callBounded, notify, forget })
    })
  )
}
