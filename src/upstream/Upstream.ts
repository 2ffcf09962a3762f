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
import { Context, Effect, Layer, Redacted } from "effect"
import { Agent } from "undici"
import type { AppConfig } from "../config/GatewayConfig.ts"
import { GatewayConfig } from "../config/GatewayConfig.ts"
import { newTraceparent } from "../observability/Tracing.ts"
import type { UpstreamCall, UpstreamError } from "./errors.ts"
import { UpstreamOverloaded, UpstreamTimeout, UpstreamUnreachable } from "./errors.ts"

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
  /**
   * Fire-and-forget POST with bounded retries; never blocks the caller. When
   * an app already has too many notifications pending, new ones are dropped
   * (and counted) rather than queued without bound.
   */
  readonly notify: (app: AppConfig, url: string, body: unknown) => void
}

/** Bytes accepted in an answer; larger answers fail the call. */
const MAX_ANSWER_BYTES = 4 * 1024 * 1024
/** Connections per app; further calls queue for one. */
const MAX_IN_FLIGHT_PER_APP = 256
const MAX_PENDING_NOTIFICATIONS = 10_000
const NOTIFY_FIRST_RETRY_MS = 200
const NOTIFY_TIMEOUT_MS = 5_000
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

  /** The call was abandoned (its caller went away): it proves nothing either way. */
  abandoned(): void {
    this.trialInFlight = false
  }
}

interface AppPool {
  /** Keep-alive connections to the app; requests beyond its connection bound queue here. */
  readonly agent: Agent
  /** One per call kind: a client that makes the message endpoint fail must not block auth or schema fetches. */
  readonly breakers: Record<UpstreamCall, CircuitBreaker>
  readonly inFlight: Map<UpstreamCall, number>
  pendingNotifications: number
  droppedNotifications: number
}

const sign = (secret: Redacted.Redacted<string>, body: string) =>
  `sha256=${createHmac("sha256", Redacted.value(secret)).update(body).digest("hex")}`

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
      const runInBackground = Effect.runForkWith(yield* Effect.context<never>())

      yield* Effect.addFinalizer(() =>
        Effect.promise(() => Promise.allSettled([...pools.values()].map((pool) => pool.agent.close())))
      )

      const poolFor = (appId: string): AppPool => {
        let pool = pools.get(appId)
        if (pool === undefined) {
          pool = {
            agent: new Agent({
              keepAliveTimeout: 30_000,
              connections: MAX_IN_FLIGHT_PER_APP,
              maxResponseSize: MAX_ANSWER_BYTES
            }),
            breakers: {
              schema: new CircuitBreaker(),
              auth: new CircuitBreaker(),
              message: new CircuitBreaker(),
              notify: new CircuitBreaker()
            },
            inFlight: new Map(),
            pendingNotifications: 0,
            droppedNotifications: 0
          }
          pools.set(appId, pool)
        }
        return pool
      }

      const headersFor = (app: AppConfig, body: string | undefined, extra: Readonly<Record<string, string>> | undefined) => {
        const headers: Record<string, string> = {
          "user-agent": USER_AGENT,
          "x-request-id": randomUUID(),
          "x-gateway-app": app.id,
          "x-gateway-node": config.nodeName,
          traceparent: newTraceparent(),
          ...extra
        }
        if (body !== undefined) headers["content-type"] = "application/json"
        if (app.secret !== undefined) headers["x-gateway-signature"] = sign(app.secret, body ?? "")
        return headers
      }

      // endpoints are few and fixed per app: parse each URL once
      const targets = new Map<string, { readonly origin: string; readonly path: string }>()
      const targetOf = (endpoint: string) => {
        let target = targets.get(endpoint)
        if (target === undefined) {
          const url = new URL(endpoint)
          target = { origin: url.origin, path: `${url.pathname}${url.search}` }
          targets.set(endpoint, target)
        }
        return target
      }

      const requestOptions = (request: UpstreamRequest, headers: Record<string, string>, body: string | undefined) => {
        const { origin, path } = targetOf(request.url)
        return { origin, path, method: request.method, headers, body: body ?? null }
      }

      const send = (app: AppConfig, pool: AppPool, request: UpstreamRequest) =>
        Effect.suspend((): Effect.Effect<UpstreamAnswer, UpstreamError> => {
          const breaker = pool.breakers[request.call]
          if (!breaker.admit(Date.now())) {
            return Effect.fail(new UpstreamUnreachable({ app: app.id, call: request.call, detail: "circuit breaker open" }))
          }
          const body = request.body === undefined ? undefined : JSON.stringify(request.body)
          const headers = headersFor(app, body, request.headers)
          // The timeout is a plain timer aborting the request: an Effect-level
          // timeout races a second fiber per call, measurably slower on the
          // connect path. It covers the wait for a pooled connection too.
          let timedOut = false
          return Effect.tryPromise({
            try: async (interrupted) => {
              const controller = new AbortController()
              const abort = () => controller.abort()
              interrupted.addEventListener("abort", abort, { once: true })
              const timer = setTimeout(() => {
                timedOut = true
                abort()
              }, request.timeoutMs)
              try {
                const response = await pool.agent.request({
                  ...requestOptions(request, headers, body),
                  signal: controller.signal
                })
                const text = await response.body.text()
                return { status: response.statusCode, headers: response.headers, body: text } satisfies UpstreamAnswer
              } finally {
                clearTimeout(timer)
                interrupted.removeEventListener("abort", abort)
              }
            },
            catch: (cause): UpstreamError =>
              timedOut
                ? new UpstreamTimeout({ app: app.id, call: request.call, timeoutMs: request.timeoutMs })
                : new UpstreamUnreachable({ app: app.id, call: request.call, detail: errorDetail(cause) })
          }).pipe(
            Effect.onExit((exit) =>
              Effect.sync(() => {
                if (exit._tag === "Success") {
                  if (exit.value.status < 500) breaker.succeeded()
                  else breaker.failed(Date.now())
                } else if (exit.cause.reasons.some((reason) => reason._tag === "Fail")) breaker.failed(Date.now())
                else breaker.abandoned()
              })
            )
          )
        })

      const call = (app: AppConfig, request: UpstreamRequest) => send(app, poolFor(app.id), request)

      const callBounded = (app: AppConfig, request: UpstreamRequest, limit: number) =>
        Effect.suspend((): Effect.Effect<UpstreamAnswer, UpstreamError> => {
          const pool = poolFor(app.id)
          const current = pool.inFlight.get(request.call) ?? 0
          if (current >= limit) {
            return Effect.fail(new UpstreamOverloaded({ app: app.id, call: request.call, limit }))
          }
          pool.inFlight.set(request.call, current + 1)
          return send(app, pool, request).pipe(
            Effect.ensuring(Effect.sync(() => pool.inFlight.set(request.call, (pool.inFlight.get(request.call) ?? 1) - 1)))
          )
        })

      // Notifications run outside any fiber: they are many (several per
      // connection), nobody waits for them, and a promise chain with timers for
      // the retries is all they need.
      const notify = (app: AppConfig, url: string, body: unknown) => {
        const pool = poolFor(app.id)
        if (pool.pendingNotifications >= MAX_PENDING_NOTIFICATIONS) {
          // one line per thousand, so that a dead app does not flood the logs
          if (pool.droppedNotifications++ % 1000 === 0) {
            runInBackground(
              Effect.logWarning(
                `app notifications dropped: ${MAX_PENDING_NOTIFICATIONS} already pending (${pool.droppedNotifications} dropped so far)`
              ).pipe(Effect.annotateLogs({ app_id: app.id }))
            )
          }
          return
        }
        pool.pendingNotifications++
        const json = JSON.stringify(body)
        const request: UpstreamRequest = { call: "notify", method: "POST", url, timeoutMs: NOTIFY_TIMEOUT_MS }
        const traceparent = newTraceparent()
        const attempt = (remaining: number, delayMs: number): void => {
          const options = requestOptions(request, headersFor(app, json, { traceparent }), json)
          pool.agent.request({ ...options, headersTimeout: request.timeoutMs, bodyTimeout: request.timeoutMs }).then(
            async (response) => {
              await response.body.dump()
              if (response.statusCode >= 500) throw new Error(`answered ${response.statusCode}`)
              pool.pendingNotifications--
            }
          ).catch((error: unknown) => {
            if (remaining > 1) {
              setTimeout(() => attempt(remaining - 1, delayMs * 2), delayMs).unref()
              return
            }
            pool.pendingNotifications--
            runInBackground(
              Effect.logWarning("app notification dropped after retries", errorDetail(error)).pipe(
                Effect.annotateLogs({ app_id: app.id })
              )
            )
          })
        }
        attempt(NOTIFY_ATTEMPTS, NOTIFY_FIRST_RETRY_MS)
      }

      return Upstream.of({ call, callBounded, notify })
    })
  )
}
