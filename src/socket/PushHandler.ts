/**
 * The push pipeline (CONTRACT §2, push): a client event on a joined topic is
 * checked against the app's compiled schema, then forwarded to the app, whose
 * answer decides the reply. The checks run in the contract's order and the
 * first failure is the reply; every push with a ref gets exactly one reply.
 */
import { Context, Effect, Layer, Schema } from "effect"
import type { Frame } from "../protocol/Frame.ts"
import { ReplyReason } from "../protocol/reasons.ts"
import { Upstream } from "../upstream/Upstream.ts"
import { Broadcaster } from "../fanout/Broadcaster.ts"
import type { BroadcastFailed } from "../fanout/Broadcaster.ts"
import type { UpstreamError } from "../upstream/errors.ts"
import { ClientLimits } from "../ratelimit/ClientLimits.ts"
import type { Decision } from "../ratelimit/RateLimiter.ts"
import type { Join, Session } from "./Session.ts"

/** One action of the app's answer to a forwarded message (CONTRACT §3). */
export const Action = Schema.Union([
  Schema.Struct({ action: Schema.Literal("reply"), data: Schema.optional(Schema.Unknown) }),
  Schema.Struct({
    action: Schema.Literal("broadcast"),
    event: Schema.NonEmptyString,
    data: Schema.optional(Schema.Unknown),
    topic: Schema.optional(Schema.NonEmptyString),
    exclude_sender: Schema.optional(Schema.Boolean)
  }),
  Schema.Struct({ action: Schema.Literal("noreply") }),
  Schema.Struct({ action: Schema.Literal("error"), reason: Schema.Unknown })
])
export type Action = typeof Action.Type

/**
 * Pushes of one connection waiting for the app's answer; past this the
 * connection is asked to slow down, so that a client cannot pile up work
 * (and payloads) faster than the app answers.
 */
const MAX_PUSHES_IN_FLIGHT = 256
const IN_FLIGHT_RETRY_MS = 1_000

/** The app's answer was not one the contract allows. */
class AppAnswerRefused extends Schema.TaggedError<AppAnswerRefused>()("AppAnswerRefused", { detail: Schema.String }) {
  override get message() {
    return this.detail
  }
}

/** The contract's reply reason for each way a forwarded push can fail. */
const replyReasonOf = (error: UpstreamError | AppAnswerRefused | BroadcastFailed): ReplyReason => {
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

const decodeActions = Schema.decodeUnknownEffect(
  Schema.fromJsonString(Schema.Union([Action, Schema.Array(Action)]))
)

export interface PushHandlerShape {
  readonly handle: (session: Session, frame: Frame, join: Join) => void
}

export class PushHandler extends Context.Service<PushHandler, PushHandlerShape>()("realtime-gateway/socket/PushHandler") {
  static readonly layer = Layer.effect(
    PushHandler,
    Effect.gen(function*() {
      const upstream = yield* Upstream
      const broadcaster = yield* Broadcaster
      const clientLimits = yield* ClientLimits
      const context = yield* Effect.context<never>()
      const runInBackground = Effect.runForkWith(context)

      /** Answers the push once, whatever happens after (a second answer is ignored). */
      const replyOnce = (session: Session, frame: Frame) => {
        let replied = false
        return {
          get done() {
            return replied
          },
          send: (status: "ok" | "error", response: unknown) => {
            if (replied) return
            replied = true
            session.reply(frame, status, response)
          }
        }
      }

      const applyActions = (
        session: Session,
        frame: Frame,
        actions: ReadonlyArray<Action>,
        reply: ReturnType<typeof replyOnce>
      ) =>
        Effect.gen(function*() {
          for (const action of actions) {
            switch (action.action) {
              case "reply":
                reply.send("ok", action.data === undefined ? {} : action.data)
                break
              case "error":
                reply.send("error", { reason: action.reason })
                break
              case "noreply":
                break
              case "broadcast":
                yield* broadcaster.publish({
                  app: session.app.config.id,
                  topic: action.topic ?? frame.topic,
                  event: action.event,
                  payload: action.data === undefined ? {} : action.data,
                  ...(action.exclude_sender === true ? { excludeConnectionId: session.connectionId } : {})
                })
                break
            }
          }
          reply.send("ok", {})
        })

      const callApp = (session: Session, frame: Frame) => {
        const app = session.app.config
        const identity = session.identity
        return upstream.call(app, {
          call: "message",
          method: "POST",
          url: app.messageEndpoint,
          timeoutMs: app.timeouts.messageMs,
          body: {
            app: app.id,
            event: frame.event,
            payload: frame.payload instanceof Uint8Array
              ? { binary: Buffer.from(frame.payload.buffer, frame.payload.byteOffset, frame.payload.byteLength).toString("base64") }
              : frame.payload,
            channel: frame.topic,
            ref: frame.ref,
            client_id: identity.clientId,
            client_type: identity.clientType,
            metadata: identity.metadata,
            connection_id: session.connectionId
          }
        }).pipe(
          Effect.flatMap((answer) =>
            answer.status === 200
              ? decodeActions(answer.body).pipe(
                Effect.map((decoded) => (Array.isArray(decoded) ? decoded : [decoded]) as ReadonlyArray<Action>),
                Effect.mapError(() => new AppAnswerRefused({ detail: "message endpoint answered 200 with an invalid body" }))
              )
              : Effect.fail(new AppAnswerRefused({ detail: `message endpoint answered ${answer.status}` }))
          )
        )
      }

      const forward = (session: Session, frame: Frame, reply: ReturnType<typeof replyOnce>) =>
        callApp(session, frame).pipe(
          Effect.flatMap((actions) => applyActions(session, frame, actions, reply)),
          Effect.catch((error) => {
            reply.send("error", { reason: replyReasonOf(error) })
            return Effect.logWarning("forwarded message failed", error.message).pipe(
              Effect.annotateLogs({
                app_id: session.app.config.id,
                client_id: session.identity.clientId,
                client_type: session.identity.clientType,
                connection_id: session.connectionId,
                topic: frame.topic,
                event: frame.event
              })
            )
          })
        )

      /** Rate limit decided (now or by the cluster), then forward; one answer whatever happens. */
      const process = (session: Session, frame: Frame, decision: Decision | Effect.Effect<Decision>) => {
        const reply = replyOnce(session, frame)
        const decided = Effect.isEffect(decision) ? decision : Effect.succeed(decision)
        return decided.pipe(
          Effect.flatMap((outcome) => {
            if (outcome.allowed) return forward(session, frame, reply)
            reply.send("error", { reason: ReplyReason.rateLimited, retry_after_ms: outcome.retryAfterMs })
            return Effect.void
          }),
          // every push with a ref gets exactly one answer, even after a defect
          Effect.onExit(() => Effect.sync(() => reply.send("error", { reason: ReplyReason.apiError }))),
          Effect.ensuring(Effect.sync(() => session.pushesInFlight--))
        )
      }

      const handle = (session: Session, frame: Frame, join: Join) => {
        const event = session.app.schema?.event(frame.event)
        if (event === undefined || !event.allowedOn(frame.topic)) {
          return session.replyError(frame, ReplyReason.invalidEventForChannel)
        }
        const grants = session.identity.grants
        if (!grants.allowsAll(join.match.sendPermissions) || !grants.allowsAll(event.sendPermissions(join.match.variables))) {
          return session.replyError(frame, ReplyReason.unauthorized)
        }
        const errors = frame.payload instanceof Uint8Array
          ? (event.definition.payload === undefined ? undefined : BINARY_PAYLOAD_REFUSED)
          : event.validatePayload(frame.payload)
        if (errors !== undefined) return session.replyError(frame, ReplyReason.invalidPayload, { errors })
        if (session.pushesInFlight >= MAX_PUSHES_IN_FLIGHT) {
          return session.replyError(frame, ReplyReason.rateLimited, { retry_after_ms: IN_FLIGHT_RETRY_MS })
        }
        session.pushesInFlight++
        const decision = clientLimits.check(
          session.app.config.id,
          session.identity.clientId,
          frame.event,
          session.app.schema!.rateLimits
        )
        runInBackground(process(session, frame, decision))
      }

      return PushHandler.of({ handle })
    })
  )
}
