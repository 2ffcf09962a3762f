/**
 * The push pipeline (CONTRACT §2, push): a client event on a joined topic is
 * checked against the app's compiled schema, then forwarded to the app, whose
 * answer decides the reply. The checks run in the contract's order and the
 * first failure is the reply; every push with a ref gets exactly one reply.
 */
import { Cause, Context, Effect, Layer, Schema } from "effect"
import { PAYLOAD_TOO_DEEP } from "../protocol/Frame.ts"
import type { Frame } from "../protocol/Frame.ts"
import { LogSampler } from "../observability/Logging.ts"
import { NO_SPAN, Tracing } from "../observability/Tracing.ts"
import type { TraceSpan } from "../observability/Tracing.ts"
import { MAX_JSON_DEPTH } from "../protocol/json.ts"
import { ReplyReason } from "../protocol/reasons.ts"
import { Upstream } from "../upstream/Upstream.ts"
import { Broadcaster } from "../fanout/Broadcaster.ts"
import type { BroadcastFailed } from "../fanout/Broadcaster.ts"
import type { UpstreamError } from "../upstream/errors.ts"
import { ClientLimits } from "../ratelimit/ClientLimits.ts"
import { GatewayConfig } from "../config/GatewayConfig.ts"
import type { Decision } from "../ratelimit/RateLimiter.ts"
import { parseMessageAnswer } from "./Actions.ts"
import { binaryPayload } from "../contract/Messages.ts"
import type { Action } from "../contract/Messages.ts"
import type { Join, SendCheck, Session } from "./Session.ts"
import type { CompiledEvent } from "../apps/CompiledSchema.ts"

/**
 * Pushes of one connection waiting for the app's answer; past this (or past
 * the connection's bytes in flight, or its app's pushes or bytes in flight on
 * this node) the push is asked to slow down, so that a client cannot pile up
 * work and payloads faster than the app answers, nor one app's clients all
 * of the node's memory.
 */
const MAX_PUSHES_IN_FLIGHT = 256
const IN_FLIGHT_RETRY_MS = 1_000

/** What one app's pushes hold on this node while they wait for it. */
interface AppInFlight {
  pushes: number
  bytes: number
}

/** The app's answer was not one the contract allows. */
class AppAnswerRefused extends Schema.TaggedError<AppAnswerRefused>()("AppAnswerRefused", { detail: Schema.String }) {
  override get message() {
    return this.detail
  }
}

type PushFailure = UpstreamError | AppAnswerRefused | BroadcastFailed

/** The contract's reply reason for each way a forwarded push can fail. */
const replyReasonOf = (error: PushFailure): ReplyReason => {
  switch (error._tag) {
    case "UpstreamTimeout":
      return ReplyReason.apiTimeout
    case "BroadcastFailed":
      return ReplyReason.broadcastFailed
    default:
      return ReplyReason.apiError
  }
}

/** A JSON Schema describes JSON: binary pushes go only to events without a payload schema. */
const BINARY_PAYLOAD_REFUSED = [{ path: "", message: "binary payload, but the event's payload schema expects JSON" }]

/** The `reason` label of pushes the app answered with an `error` action (its own reasons are not labels). */
const APP_ERROR_REASON = "app_error"

const TOO_DEEP_REFUSED = [{ path: "", message: `nested deeper than ${MAX_JSON_DEPTH} levels` }]

/**
 * One push on its way through the app: it is answered exactly once (a second
 * answer is ignored) and, when it ends, it is answered if it was not yet and
 * leaves the connection's in-flight count.
 */
class PushInFlight {
  readonly session: Session
  readonly frame: Frame
  private readonly bytes: number
  private readonly app: AppInFlight
  /** The push's span, ended with it. */
  readonly span: TraceSpan
  /** The span of the app's actions, while they are applied. */
  actionsSpan: TraceSpan = NO_SPAN
  private replied = false
  private ended = false

  constructor(session: Session, frame: Frame, bytes: number, app: AppInFlight, span: TraceSpan) {
    this.session = session
    this.frame = frame
    this.bytes = bytes
    this.app = app
    this.span = span
    session.pushesInFlight++
    session.pushBytesInFlight += bytes
    app.pushes++
    app.bytes += bytes
  }

  reply(status: "ok" | "error", response: unknown): void {
    if (this.replied) return
    this.replied = true
    this.session.reply(this.frame, status, response)
  }

  end(status: "ok" | "error", response: unknown): void {
    if (this.ended) return
    this.ended = true
    this.session.pushesInFlight--
    this.session.pushBytesInFlight -= this.bytes
    this.app.pushes--
    this.app.bytes -= this.bytes
    this.reply(status, response)
    const failure = status === "error" ? (response as { readonly reason?: string }).reason ?? "error" : undefined
    this.actionsSpan.end(failure)
    this.span.end(failure)
  }
}

export interface PushHandlerShape {
  /** `bytes`: the size of the frame as received, what the push holds while it waits for the app. */
  readonly handle: (session: Session, frame: Frame, join: Join, bytes: number) => void
}

/**
 * The push path runs in plain callbacks, outside any fiber: it is the
 * gateway's hottest path after fan-out, and a fiber per push cost more than
 * the rest of the gateway's work on it. Effects run only where a service
 * needs them (a broadcast action, a shared rate limit, a log line).
 */
export class PushHandler extends Context.Service<PushHandler, PushHandlerShape>()("realtime-gateway/socket/PushHandler") {
  static readonly layer = Layer.effect(
    PushHandler,
    Effect.gen(function*() {
      const upstream = yield* Upstream
      const broadcaster = yield* Broadcaster
      const clientLimits = yield* ClientLimits
      const { limits } = yield* GatewayConfig
      const inFlightByApp = new Map<string, AppInFlight>()
      const inFlightOf = (app: string) => {
        let entry = inFlightByApp.get(app)
        if (entry === undefined) inFlightByApp.set(app, entry = { pushes: 0, bytes: 0 })
        return entry
      }
      const tracing = yield* Tracing
      const runCallback = Effect.runCallbackWith(yield* Effect.context<never>())
      // an app that fails fails every push: its lines are sampled
      const sampler = new LogSampler(runCallback, { level: "Warn" })

      const annotations = (push: PushInFlight) => ({
        app_id: push.session.app.config.id,
        client_id: push.session.identity.clientId,
        client_type: push.session.identity.clientType,
        connection_id: push.session.connectionId,
        topic: push.frame.topic,
        event: push.frame.event
      })

      const failed = (push: PushInFlight, error: PushFailure) => {
        const reason = replyReasonOf(error)
        push.session.metrics.pushRefused(reason)
        push.end("error", { reason })
        if (!sampler.admit("forwarded message failed")) return
        runCallback(Effect.logWarning("forwarded message failed", error.message).pipe(Effect.annotateLogs(annotations(push))))
      }

      /** A bug must cost this push only: it is answered `api_error` and logged. */
      const defect = (push: PushInFlight, cause: unknown) => {
        push.session.metrics.pushRefused(ReplyReason.apiError)
        push.end("error", { reason: ReplyReason.apiError })
        if (!sampler.admit("push failed unexpectedly")) return
        runCallback(Effect.logError("push failed unexpectedly", cause).pipe(Effect.annotateLogs(annotations(push))))
      }

      /** Applies the actions from `index` on, in order; a broadcast is awaited before the next action. */
      const applyActions = (push: PushInFlight, actions: ReadonlyArray<Action>, index: number): void => {
        if (index === 0) push.actionsSpan = tracing.start("gateway.push.actions", "internal", push.span)
        for (let i = index; i < actions.length; i++) {
          const action = actions[i]!
          switch (action.action) {
            case "reply":
              push.reply("ok", action.data === undefined ? {} : action.data)
              break
            case "error":
              push.session.metrics.pushRefused(APP_ERROR_REASON)
              push.reply("error", { reason: action.reason })
              break
            case "noreply":
              break
            case "broadcast":
              push.session.metrics.broadcast("app_action")
              runCallback(
                withinSpan(push.actionsSpan, broadcaster.publish({
                  app: push.session.app.config.id,
                  topic: action.topic ?? push.frame.topic,
                  event: action.event,
                  payload: action.data === undefined ? {} : action.data,
                  ...(action.exclude_sender === true ? { excludeConnectionId: push.session.connectionId } : {})
                })),
                {
                  onExit: (exit) => {
                    try {
                      if (exit._tag === "Success") return applyActions(push, actions, i + 1)
                      const error = exit.cause.reasons.find(Cause.isFailReason)
                      return error === undefined ? defect(push, Cause.pretty(exit.cause)) : failed(push, error.error)
                    } catch (cause) {
                      defect(push, cause)
                    }
                  }
                }
              )
              return
          }
        }
        push.end("ok", {})
      }

      const forward = (push: PushInFlight) => {
        const { session, frame } = push
        const app = session.app.config
        const identity = session.identity
        upstream.send(app, {
          call: "message",
          method: "POST",
          url: app.messageEndpoint,
          timeoutMs: app.timeouts.messageMs,
          parent: push.span,
          body: {
            app: app.id,
            event: frame.event,
            payload: frame.payload instanceof Uint8Array ? binaryPayload(frame.payload) : frame.payload,
            channel: frame.topic,
            ref: frame.ref,
            client_id: identity.clientId,
            client_type: identity.clientType,
            metadata: identity.metadata,
            connection_id: session.connectionId
          },
          caller: identity.clientId
        }, (error, answer) => {
          try {
            if (error !== undefined) return failed(push, error)
            if (answer!.status !== 200) {
              return failed(push, new AppAnswerRefused({ detail: `message endpoint answered ${answer!.status}` }))
            }
            const actions = parseMessageAnswer(answer!.body)
            if (actions === undefined) {
              return failed(push, new AppAnswerRefused({ detail: "message endpoint answered 200 with an invalid body" }))
            }
            applyActions(push, actions, 0)
          } catch (cause) {
            defect(push, cause)
          }
        })
      }

      const decided = (push: PushInFlight, decision: Decision) => {
        if (!decision.allowed) {
          push.session.metrics.rateLimited("push")
          push.session.metrics.pushRefused(ReplyReason.rateLimited)
          return push.end("error", { reason: ReplyReason.rateLimited, retry_after_ms: decision.retryAfterMs })
        }
        forward(push)
      }

      /** Whether the join may send the event; fixed for the join, the event and the connection, so worked out once. */
      const sendCheck = (session: Session, topic: string, join: Join, event: CompiledEvent): SendCheck => {
        let check = join.sendChecks?.get(event)
        if (check === undefined) {
          const grants = session.identity.grants
          check = !event.allowedOn(topic)
            ? ReplyReason.invalidEventForChannel
            : !grants.allowsAll(join.match.sendPermissions) || !grants.allowsAll(event.sendPermissions(join.match.variables))
            ? ReplyReason.unauthorized
            : "allowed"
          // weak: the events of a replaced schema version go with it
          ;(join.sendChecks ??= new WeakMap()).set(event, check)
        }
        return check
      }

      /** Effect code run for a push (a broadcast action) joins its trace. */
      const withinSpan = <A, E>(span: TraceSpan, effect: Effect.Effect<A, E>): Effect.Effect<A, E> =>
        span.effectSpan === undefined ? effect : Effect.withParentSpan(effect, span.effectSpan)

      const refuse = (
        session: Session,
        frame: Frame,
        span: TraceSpan,
        reason: ReplyReason,
        extra?: Record<string, unknown>
      ) => {
        session.metrics.pushRefused(reason)
        session.replyError(frame, reason, extra)
        span.end(reason)
      }

      /** A push that failed a check of its own: its validation span and its push span end with the reason. */
      const invalid = (
        session: Session,
        frame: Frame,
        span: TraceSpan,
        validation: TraceSpan,
        reason: ReplyReason,
        extra?: Record<string, unknown>
      ) => {
        validation.end(reason)
        refuse(session, frame, span, reason, extra)
      }

      const handle = (session: Session, frame: Frame, join: Join, bytes: number) => {
        const span = tracing.start("gateway.push", "server")
        const validation = tracing.start("gateway.push.validate", "internal", span)
        if (tracing.enabled) {
          session.annotate(span, frame.topic)
          span.attribute("gateway.event", frame.event)
        }
        const event = session.app.schema?.event(frame.event)
        session.metrics.messageIn(event)
        if (event === undefined) return invalid(session, frame, span, validation, ReplyReason.invalidEventForChannel)
        const check = sendCheck(session, frame.topic, join, event)
        if (check !== "allowed") return invalid(session, frame, span, validation, check)
        const errors = frame.payload === PAYLOAD_TOO_DEEP
          ? TOO_DEEP_REFUSED
          : frame.payload instanceof Uint8Array
          ? (event.definition.payload === undefined ? undefined : BINARY_PAYLOAD_REFUSED)
          : event.validatePayload(frame.payload)
        if (errors !== undefined) return invalid(session, frame, span, validation, ReplyReason.invalidPayload, { errors })
        validation.end()
        const app = inFlightOf(session.app.config.id)
        if (session.pushesInFlight >= MAX_PUSHES_IN_FLIGHT || app.pushes >= limits.maxAppPushesInFlight) {
          session.metrics.rateLimited("pushes_in_flight")
          return refuse(session, frame, span, ReplyReason.rateLimited, { retry_after_ms: IN_FLIGHT_RETRY_MS })
        }
        if (
          session.pushBytesInFlight + bytes > limits.maxPushBytesInFlight ||
          app.bytes + bytes > limits.maxAppPushBytesInFlight
        ) {
          session.metrics.rateLimited("push_bytes_in_flight")
          return refuse(session, frame, span, ReplyReason.rateLimited, { retry_after_ms: IN_FLIGHT_RETRY_MS })
        }
        const push = new PushInFlight(session, frame, bytes, app, span)
        const decision = clientLimits.check(
          session.app.config.id,
          session.identity.clientId,
          frame.event,
          session.app.schema!.rateLimits
        )
        if (!Effect.isEffect(decision)) return decided(push, decision)
        runCallback(decision, {
          onExit: (exit) => {
            try {
              if (exit._tag === "Success") decided(push, exit.value)
              else defect(push, Cause.pretty(exit.cause))
            } catch (cause) {
              defect(push, cause)
            }
          }
        })
      }

      return PushHandler.of({ handle })
    })
  )
}
