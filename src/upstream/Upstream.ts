/**
 * The one HTTP boundary between the gateway and the app APIs it fronts.
 *
 * Every call to an app goes through here, so that each app gets its own
 * keep-alive connection pool, concurrency bound and circuit breaker: a slow or
 * dead app can only fail its own calls. Requests carry `x-request-id`,
 * `x-gateway-app`, `x-gateway-node`, a W3C `traceparent`, and, when the app has a
 * secret, `x-gateway-timestamp` and `x-gateway-signature` (`contract/Signature.ts`).
 *
 * The service returns raw answers and typed failures; what they mean for a
 * client (`unauthorized`, `api_timeout`, ...) is decided by the caller.
 */
import { Context, Effect, Layer, Redacted } from "effect"
import type { AppConfig } from "../config/GatewayConfig.ts"
import { signatureHeaders } from "../contract/Signature.ts"
import { GatewayConfig } from "../config/GatewayConfig.ts"
import { Metrics } from "../observability/Metrics.ts"
import type { AppMetrics, BreakerState, CallOutcome } from "../observability/Metrics.ts"
import { newRequestId, newTraceparent, Tracing } from "../observability/Tracing.ts"
import type { TraceSpan } from "../observability/Tracing.ts"
import type { UpstreamCall, UpstreamError } from "./errors.ts"
import { UpstreamOverloaded, UpstreamTimeout, UpstreamUnreachable } from "./errors.ts"
import { GATEWAY_VERSION } from "../server/version.ts"
import { Http1Pool } from "./Http1Pool.ts"
import { NotificationQueue } from "./NotificationQueue.ts"
import { TaskQueue } from "./TaskQueue.ts"
import { SupervisedChild } from "../supervision/children.ts"
import { Supervisor } from "../supervision/Supervisor.ts"

export interface UpstreamRequest {
  readonly call: UpstreamCall
  readonly method: "GET" | "POST"
  readonly url: string
  /** JSON value sent as the body (POST only). */
  readonly body?: unknown
  readonly headers?: Readonly<Record<string, string>>
  readonly timeoutMs: number
  /**
   * When this many calls of this kind are already in flight for the app, fail
   * at once with `UpstreamOverloaded` instead of queueing: for calls where a
   * queue would only make a storm worse (auth during a reconnect storm).
   */
  readonly maxInFlight?: number
  /**
   * Who the call is made for (a client id, a remote address): the circuit
   * breaker opens only on failures of several distinct callers, so that one
   * client cannot shut the app's door on everyone. Calls the gateway makes
   * for itself (schema fetches) leave it out.
   */
  readonly caller?: string
  /** The span this call is part of; the call's own span is its child, and its `traceparent` goes to the app. */
  readonly parent?: TraceSpan
}

export interface UpstreamAnswer {
  readonly status: number
  readonly headers: Readonly<Record<string, string | ReadonlyArray<string> | undefined>>
  readonly body: string
}

/** The outcome of one call: a failure, or else the answer. */
export type UpstreamCallback = (error: UpstreamError | undefined, answer: UpstreamAnswer | undefined) => void

export interface UpstreamShape {
  /** Performs one call; non-2xx answers are returned, not failed: the caller knows what they mean. */
  readonly call: (app: AppConfig, request: UpstreamRequest) => Effect.Effect<UpstreamAnswer, UpstreamError>
  /**
   * `call` for the hot paths, which run outside any fiber (auth of every
   * connection, every push): no fiber or promise per call. `done` is called
   * exactly once, with the failure or with the answer, unless the returned
   * function abandons the call first. It may be called before `send` returns
   * (circuit breaker open, `maxInFlight` reached).
   */
  readonly send: (app: AppConfig, request: UpstreamRequest, done: UpstreamCallback) => () => void
  /**
   * Fire-and-forget POST to the app's notify endpoint (nothing when it has
   * none) with bounded retries; never blocks the caller. When an app already
   * has too many notifications pending, new ones are dropped (and counted)
   * rather than queued without bound.
   */
  readonly notify: (app: AppConfig, body: unknown) => void
  /**
   * Forgets the app's pool (connections, breakers, pending notifications), so
   * that its next call starts afresh with the settings it carries. `finish`:
   * calls already made end on the old connections (the app was changed).
   * `stop`: calls in flight or waiting fail now (the app was removed).
   */
  readonly retire: (appId: string, how: "finish" | "stop") => void
}

/** Bytes accepted in an answer; larger answers fail the call. */
const MAX_ANSWER_BYTES = 4 * 1024 * 1024
/** Pushes and notifications (and their connections) per app on the wire at once; further ones wait for a place in the gateway. */
const MAX_IN_FLIGHT_PER_APP = 256
/** Notifications of one app on the wire at once: a quarter of the places they share with pushes, so that a burst of them leaves the rest to pushes. */
const NOTIFY_CONCURRENCY = 64
/** How long a stopping node waits for the notifications still pending. */
const NOTIFY_DRAIN_MS = 5_000
/** How long a stopping node then waits for the calls still in flight. */
const CLOSE_GRACE_MS = 3_000
/** About 1 KiB each while pending. */
const MAX_PENDING_NOTIFICATIONS = 50_000
/** How long an unused connection to an app is kept, unless the app announces less. */
const IDLE_CONNECTION_MS = 30_000
const NOTIFY_FIRST_RETRY_MS = 200
const NOTIFY_TIMEOUT_MS = 5_000
const BREAKER_FAILURE_THRESHOLD = 5
/** Distinct callers among those consecutive failures before the breaker opens. */
const BREAKER_DISTINCT_CALLERS = 3
const BREAKER_OPEN_MS = 5_000
/** Schema fetches of one app on the wire at once (their own places, never behind pushes). */
const SCHEMA_CONCURRENCY = 2
const NOTIFY_ATTEMPTS = 3

const USER_AGENT = `realtime-gateway/${GATEWAY_VERSION}`

/**
 * Opens on evidence that the app is down, never on what one client can cause:
 * only a call that got no answer (no connection, a reset, a timeout) or a
 * 502/503/504 counts as a failure; any other answer, a 500 included, shows the
 * app up and closes the count. It opens after `BREAKER_FAILURE_THRESHOLD`
 * consecutive failures from at least `BREAKER_DISTINCT_CALLERS` distinct
 * callers (a call without a caller counts as one of its own), and lets one
 * trial call through once the open period has passed; a success closes it again.
 * Time is monotonic (`performance.now()`): a wall-clock step cannot hold it open.
 */
class CircuitBreaker {
  private failures = 0
  private readonly failingCallers = new Set<string>()
  private anonymousFailures = 0
  private open = false
  private openUntil = 0
  private trialInFlight = false

  admit(now: number): boolean {
    if (!this.open) return true
    if (now < this.openUntil || this.trialInFlight) return false
    this.trialInFlight = true
    return true
  }

  succeeded(): void {
    this.failures = 0
    this.failingCallers.clear()
    this.anonymousFailures = 0
    this.open = false
    this.trialInFlight = false
  }

  failed(now: number, caller: string | undefined): void {
    this.trialInFlight = false
    if (this.open) {
      // the trial failed (or a call admitted before it opened): another open period
      this.openUntil = now + BREAKER_OPEN_MS
      return
    }
    this.failures++
    if (caller === undefined) this.anonymousFailures++
    else if (this.failingCallers.size < BREAKER_DISTINCT_CALLERS) this.failingCallers.add(caller)
    if (
      this.failures >= BREAKER_FAILURE_THRESHOLD &&
      this.failingCallers.size + this.anonymousFailures >= BREAKER_DISTINCT_CALLERS
    ) {
      this.open = true
      this.openUntil = now + BREAKER_OPEN_MS
    }
  }

  /** The call was abandoned (its caller went away): it proves nothing either way. */
  abandoned(): void {
    this.trialInFlight = false
  }

  /** 0 closed, 1 open, 2 half-open: the open period is over and the next call is the trial. */
  state(now: number): BreakerState {
    if (!this.open) return 0
    return now < this.openUntil || this.trialInFlight ? 1 : 2
  }
}

/** Answers that say the app (or the proxy in front of it) is down, rather than that one call went wrong. */
const isDownStatus = (status: number) => status === 502 || status === 503 || status === 504

/** Calls that fail fast while their app fails; notifications are only retried. */
type GuardedCall = Exclude<UpstreamCall, "notify">

interface AppPool {
  /** Keep-alive connections to each of the app's origins (its endpoints may live on several), one per call on the wire. */
  readonly connections: Map<string, Http1Pool>
  /**
   * Calls wait here for one of the app's places on the wire, so that a call
   * that timed out or was abandoned while waiting never goes out. Auth and
   * schema calls have places of their own: a hanging message endpoint that
   * holds every place of the pushes never keeps a new connection waiting.
   */
  readonly queues: Record<UpstreamCall, TaskQueue>
  /** One per call kind: a client that makes the message endpoint fail must not block auth or schema fetches. */
  readonly breakers: Record<GuardedCall, CircuitBreaker>
  readonly inFlight: Map<UpstreamCall, number>
  readonly notifications: NotificationQueue<UpstreamRequest>
  readonly metrics: AppMetrics
  /** Retired with `stop`: nothing more goes out. */
  stopped: boolean
  /** Stops reporting the breakers' states (the pool was retired). */
  readonly unwatchBreakers: Array<() => void>
}

const noop = () => {}

const CALL_SPAN_NAMES: Record<UpstreamCall, string> = {
  auth: "app.auth",
  message: "app.message",
  schema: "app.schema",
  notify: "app.notify"
}

/** The metrics outcome of a finished call: its answer's status class, or how it failed. */
const callOutcome = (error: UpstreamError | undefined, answer: UpstreamAnswer | undefined): CallOutcome => {
  if (error === undefined) return answer!.status < 400 ? "ok" : answer!.status < 500 ? "rejected" : "error_status"
  switch (error._tag) {
    case "UpstreamTimeout":
      return "timeout"
    case "UpstreamOverloaded":
      return "overloaded"
    default:
      return "unreachable"
  }
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
      const metrics = yield* Metrics
      const tracing = yield* Tracing
      const pools = new Map<string, AppPool>()
      const runInBackground = Effect.runForkWith(yield* Effect.context<never>())
      const supervisor = yield* Supervisor

      const logDefect = (app: AppConfig) => (error: unknown) =>
        runInBackground(Effect.logError("unexpected error in a call to the app", String(error)).pipe(
          Effect.annotateLogs({ app_id: app.id })
        ))

      // A stopping node still owes the apps the notifications of the
      // connections it just closed: they get a few seconds, and the calls
      // still in flight a few more, before the pools are torn down; the node
      // must still hand its shards over within its 30 s.
      const connectionsOf = (all: ReadonlyArray<AppPool>) => all.flatMap((pool) => [...pool.connections.values()])
      const atMost = (ms: number, work: () => Promise<unknown>) =>
        Effect.promise(work).pipe(Effect.timeoutOrElse({ duration: ms, orElse: () => Effect.void }))
      yield* Effect.addFinalizer(() => {
        const all = [...pools.values()]
        return atMost(NOTIFY_DRAIN_MS, () => Promise.all(all.map((pool) => pool.notifications.drained()))).pipe(
          Effect.andThen(atMost(CLOSE_GRACE_MS, () => Promise.all(connectionsOf(all).map((origin) => origin.close())))),
          Effect.andThen(Effect.sync(() => connectionsOf(all).forEach((origin) => origin.destroy())))
        )
      })

      const poolFor = (app: AppConfig): AppPool => {
        let pool = pools.get(app.id)
        if (pool === undefined) {
          // notifications share the pushes' places: they are few at once (NOTIFY_CONCURRENCY) and can wait
          const pushesAndNotifications = new TaskQueue(MAX_IN_FLIGHT_PER_APP, logDefect(app))
          const appMetrics = metrics.forApp(app.id)
          pool = {
            connections: new Map(),
            queues: {
              message: pushesAndNotifications,
              notify: pushesAndNotifications,
              // auth calls are bounded before they get here (`maxInFlight`), so they never wait
              auth: new TaskQueue(app.rateLimits.maxConcurrentAuth, logDefect(app)),
              schema: new TaskQueue(SCHEMA_CONCURRENCY, logDefect(app))
            },
            breakers: {
              schema: new CircuitBreaker(),
              auth: new CircuitBreaker(),
              message: new CircuitBreaker()
            },
            inFlight: new Map(),
            notifications: new NotificationQueue<UpstreamRequest>({
              concurrency: NOTIFY_CONCURRENCY,
              capacity: MAX_PENDING_NOTIFICATIONS,
              attempts: NOTIFY_ATTEMPTS,
              firstRetryMs: NOTIFY_FIRST_RETRY_MS,
              // no breaker: retries are few and bounded, and a notification is never worth failing fast for
              post: (request, done) =>
                exchange(app, pool!, request, undefined, (error, answer) =>
                  done(error?.message ?? (answer!.status >= 500 ? `answered ${answer!.status}` : undefined))),
              onDropped: (dropped, reason) =>
                runInBackground(
                  Effect.logWarning(`app notification dropped (${dropped} so far): ${reason}`).pipe(
                    Effect.annotateLogs({ app_id: app.id })
                  )
                ),
              countDropped: (why) => appMetrics.notificationsDropped(why, 1),
              onDefect: (error) => supervisor.reportFailure(SupervisedChild.notificationDelivery, error)
            }),
            metrics: appMetrics,
            stopped: false,
            unwatchBreakers: []
          }
          for (const call of ["schema", "auth", "message"] as const) {
            const breaker = pool.breakers[call]
            pool.unwatchBreakers.push(appMetrics.watchBreaker(call, () => breaker.state(performance.now())))
          }
          pools.set(app.id, pool)
        }
        return pool
      }

      const headersFor = (
        app: AppConfig,
        body: string | undefined,
        extra: Readonly<Record<string, string>> | undefined,
        span: TraceSpan
      ) => {
        const headers: Record<string, string> = {
          "user-agent": USER_AGENT,
          "x-request-id": newRequestId(),
          "x-gateway-app": app.id,
          "x-gateway-node": config.nodeName,
          ...extra,
          // the call's own span, so that the app's spans join the trace; untraced, a fresh id (or the notification's)
          traceparent: tracing.enabled ? span.traceparent() : extra?.["traceparent"] ?? newTraceparent()
        }
        if (body !== undefined) headers["content-type"] = "application/json"
        if (app.secret !== undefined) Object.assign(headers, signatureHeaders(Redacted.value(app.secret), body ?? ""))
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

      const connectionsTo = (app: AppConfig, pool: AppPool, origin: string) => {
        let connections = pool.connections.get(origin)
        if (connections === undefined) {
          connections = new Http1Pool({
            origin,
            // a call holds its place while its connection is made: no longer than the call may take
            connectTimeoutMs: Math.min(app.timeouts.authMs, app.timeouts.messageMs, app.timeouts.schemaMs),
            maxAnswerBytes: MAX_ANSWER_BYTES,
            idleMs: IDLE_CONNECTION_MS
          })
          pool.connections.set(origin, connections)
        }
        return connections
      }

      /**
       * One call, in plain callbacks: no promise, stream or fiber per call,
       * since this runs for every push and every connection. `done` is called
       * exactly once; the returned function abandons the call (its caller
       * went away).
       *
       * With a breaker, the timeout bounds the whole call, the wait for its
       * turn included, since a client is waiting for it. Without one
       * (notifications), it counts from the moment the request is written: a
       * notification waiting for its turn never reached the app, and retrying
       * it would only grow the backlog.
       */
      const exchange = (
        app: AppConfig,
        pool: AppPool,
        request: UpstreamRequest,
        breaker: CircuitBreaker | undefined,
        done: UpstreamCallback
      ): (() => void) => {
        // everything that could throw comes before the breaker is asked, so that its trial is never stuck
        const body = request.body === undefined ? undefined : JSON.stringify(request.body)
        const { origin, path } = targetOf(request.url)
        const connections = connectionsTo(app, pool, origin)
        const span = tracing.start(CALL_SPAN_NAMES[request.call], "client", request.parent)
        const text = connections.format(request.method, path, headersFor(app, body, request.headers, span), body)
        if (breaker !== undefined && !breaker.admit(performance.now())) {
          pool.metrics.appCall(request.call, "breaker_open", 0)
          span.end("circuit breaker open")
          done(new UpstreamUnreachable({ app: app.id, call: request.call, detail: "circuit breaker open" }), undefined)
          return noop
        }
        const startedAt = performance.now()
        let abandonRequest: (() => void) | undefined
        let finished = false
        const finish = (error: UpstreamError | undefined, answer: UpstreamAnswer | undefined, outcome: "ok" | "failed" | "abandoned") => {
          if (finished) return
          finished = true
          clearTimeout(timer)
          if (breaker !== undefined) {
            if (outcome === "ok") breaker.succeeded()
            else if (outcome === "failed") breaker.failed(performance.now(), request.caller)
            else breaker.abandoned()
          }
          if (outcome === "abandoned") {
            span.attribute("gateway.abandoned", true)
            span.end()
            return
          }
          pool.metrics.appCall(request.call, callOutcome(error, answer), (performance.now() - startedAt) / 1000)
          if (answer !== undefined) span.attribute("http.response.status_code", answer.status)
          span.end(error?.message ?? (answer!.status >= 500 ? `answered ${answer!.status}` : undefined))
          try {
            done(error, answer)
          } catch (defect) {
            // a caller's bug must not unwind into the HTTP client (and its pooled connection)
            logDefect(app)(defect)
          }
        }
        const timedOut = () => {
          // finished first: abandoning the request reports an error, which must not count instead
          finish(new UpstreamTimeout({ app: app.id, call: request.call, timeoutMs: request.timeoutMs }), undefined, "failed")
          abandonRequest?.()
        }
        let timer = breaker === undefined ? undefined : setTimeout(timedOut, request.timeoutMs)
        pool.queues[request.call].add((release) => {
          // timed out or abandoned while waiting for its turn: it never goes out
          if (finished) return release()
          if (pool.stopped) {
            release()
            return finish(new UpstreamUnreachable({ app: app.id, call: request.call, detail: "app removed" }), undefined, "failed")
          }
          if (timer === undefined) timer = setTimeout(timedOut, request.timeoutMs)
          // a push may have been acted on before the app dropped the connection: never sent twice
          abandonRequest = connections.send(text, request.call !== "message", (error, answer) => {
            release()
            if (error !== undefined) {
              finish(new UpstreamUnreachable({ app: app.id, call: request.call, detail: errorDetail(error) }), undefined, "failed")
            } else {
              finish(undefined, answer, isDownStatus(answer!.status) ? "failed" : "ok")
            }
          })
        })
        return () => {
          if (finished) return
          finish(undefined, undefined, "abandoned")
          abandonRequest?.()
        }
      }

      const send = (app: AppConfig, request: UpstreamRequest, done: UpstreamCallback): (() => void) => {
        const pool = poolFor(app)
        const breaker = request.call === "notify" ? undefined : pool.breakers[request.call]
        const limit = request.maxInFlight
        if (limit === undefined) return exchange(app, pool, request, breaker, done)
        const inFlight = pool.inFlight.get(request.call) ?? 0
        if (inFlight >= limit) {
          pool.metrics.appCall(request.call, "overloaded", 0)
          done(new UpstreamOverloaded({ app: app.id, call: request.call, limit }), undefined)
          return noop
        }
        pool.inFlight.set(request.call, inFlight + 1)
        let counted = true
        const leave = () => {
          if (!counted) return
          counted = false
          pool.inFlight.set(request.call, pool.inFlight.get(request.call)! - 1)
        }
        let abandon: () => void
        try {
          abandon = exchange(app, pool, request, breaker, (error, answer) => {
            leave()
            done(error, answer)
          })
        } catch (error) {
          leave()
          throw error
        }
        return () => {
          leave()
          abandon()
        }
      }

      const call = (app: AppConfig, request: UpstreamRequest) =>
        Effect.callback<UpstreamAnswer, UpstreamError>((resume) => {
          const abandon = send(
            app,
            request,
            (error, answer) => resume(error === undefined ? Effect.succeed(answer!) : Effect.fail(error))
          )
          return Effect.sync(abandon)
        })

      const notify = (app: AppConfig, body: unknown) => {
        const url = app.notifyEndpoint
        if (url === undefined) return
        const pool = poolFor(app)
        // one trace for all attempts of one notification: traced, each attempt is a span under this one
        const queued = tracing.start("gateway.notify", "producer")
        queued.end()
        pool.notifications.add({
          call: "notify",
          method: "POST",
          url,
          body,
          ...(tracing.enabled ? { parent: queued } : { headers: { traceparent: newTraceparent() } }),
          timeoutMs: NOTIFY_TIMEOUT_MS
        })
      }

      const retire = (appId: string, how: "finish" | "stop") => {
        const pool = pools.get(appId)
        if (pool === undefined) return
        pools.delete(appId)
        for (const unwatch of pool.unwatchBreakers) unwatch()
        const connections = [...pool.connections.values()]
        if (how === "stop") {
          pool.stopped = true
          for (const origin of connections) origin.destroy()
        } else {
          for (const origin of connections) void origin.close()
        }
      }

      return Upstream.of({ call, send, notify, retire })
    })
  )
}
