/**
 * An app behind the gateway, defined with Effect Schema (`realtime-gateway/app`).
 *
 * The app declares its channels and events once: each event's payload is an
 * Effect Schema, and from it come the payload's JSON Schema in the document
 * the gateway fetches, the payload's type in the message handler, and the
 * decoding of what arrives. {@link defineApp} returns:
 *
 * - `document` and `etag`: the channel-schema document to serve;
 * - `fetch`: a standard `(Request) => Promise<Response>` handler serving the
 *   four calls the gateway makes (schema, auth, message, notify), which runs
 *   as it is on Bun (`Bun.serve`), Deno (`Deno.serve`) and Node (`serve` of
 *   this package, or any adapter);
 * - `routes`: the same four calls as an Effect `HttpRouter` layer.
 *
 * Every call is checked as CONTRACT §3 says: the signature and its timestamp
 * (when the app has a secret), the request body against the contract's
 * Schema (400 with the problems otherwise), the payload against the event's
 * Schema, and the handler's answer against the contract before it is sent.
 * A handler refuses with {@link MessageRefused} / {@link AuthRefused} (thrown,
 * or failed in an Effect); anything else it throws is answered 500, which the
 * gateway turns into `api_error` / `auth_service_error`.
 */
import { defaultPaths } from "../contract/Endpoints.ts"
import type { CallKind } from "../contract/Endpoints.ts"
import { createHash } from "node:crypto"
import { Cause, Effect, Exit, Result, Schema } from "effect"
import { HttpEffect, HttpRouter } from "effect/http"
import { AuthAnswer, AuthRequest } from "../contract/Auth.ts"
import { MessageActions, MessageRequest } from "../contract/Messages.ts"
import type { Action } from "../contract/Messages.ts"
import { Notification } from "../contract/Notifications.ts"
import { describeIssue } from "../contract/Problems.ts"
import type { Problem } from "../contract/Problems.ts"
import type { ChannelDefinition, RateLimit, SchemaDocumentInput, SchemaEventInput } from "../contract/SchemaDocument.ts"
import { etagMatches } from "../contract/SchemaDocument.ts"
import { SIGNATURE_HEADER, TIMESTAMP_HEADER, verifySignature } from "../contract/Signature.ts"

// ---------------------------------------------------------------------------
// Definitions
// ---------------------------------------------------------------------------

/** A payload Schema: decoded from JSON (its `Schema.toCodecJson` form), needing no services. */
export type PayloadSchema = Schema.Top & { readonly DecodingServices: never }

/** A channel as the schema document lists it (`{var}` segments, `*` wildcards, variable rules, permissions, presence). */
export type Channel = typeof ChannelDefinition.Encoded

/** A channel on `pattern`; see CONTRACT §2 for patterns, variable rules and permission templates. */
export const channel = (pattern: string, definition: Omit<Channel, "pattern"> = {}): Channel => ({ pattern, ...definition })

/** An event a client may push, and what the app does with it. */
export interface Event<P extends PayloadSchema> {
  /** Channel patterns the event may be pushed on (`["*"]` for any topic). */
  readonly channels: ReadonlyArray<string>
  readonly payload: P
  readonly description?: string
  /** Permission templates the pusher must hold, filled with the topic's variables. */
  readonly permissions?: { readonly send?: ReadonlyArray<string> }
  /** This event's own rate limit per client (`rateLimits.byEvent`), on top of the app's default. */
  readonly rateLimit?: RateLimit
}

/** Declares an event; the same object, with its payload type kept for the handlers. */
export const event = <P extends PayloadSchema>(definition: Event<P>): Event<P> => definition

/** A push forwarded by the gateway, its payload decoded with the event's Schema. */
export type Message<P extends PayloadSchema> = Omit<MessageRequest, "payload"> & { readonly payload: P["Type"] }

/** What a message handler answers: one action or several, in order. */
export type Answer = typeof Action.Encoded | ReadonlyArray<typeof Action.Encoded>

/** The push is answered `ok` with `data`. */
export const reply = (data?: unknown): typeof Action.Encoded =>
  data === undefined ? { action: "reply" } : { action: "reply", data }

/** `event` with `data` goes to every subscriber of `topic` (default: the pushed topic); the push is answered `ok` `{}`. */
export const broadcast = (
  event: string,
  data: unknown,
  options: { readonly topic?: string; readonly excludeSender?: boolean } = {}
): typeof Action.Encoded => ({
  action: "broadcast",
  event,
  data,
  ...(options.topic === undefined ? {} : { topic: options.topic }),
  ...(options.excludeSender === undefined ? {} : { exclude_sender: options.excludeSender })
})

/** The push is answered `ok` `{}`. */
export const noreply = (): typeof Action.Encoded => ({ action: "noreply" })

/** Refuses a push: the client gets `error` `{reason}`. Throw it, or fail an Effect with it. */
export class MessageRefused extends Schema.TaggedError<MessageRefused>()("MessageRefused", {
  reason: Schema.String
}) {}

/** Refuses a connection: 401 (the default) or 403; the client's upgrade gets `unauthorized`. */
export class AuthRefused extends Schema.TaggedError<AuthRefused>()("AuthRefused", {
  status: Schema.Literals([401, 403])
}) {}

/** A handler's result: a value, a promise of it, or an Effect that needs nothing. */
export type Handled<A, E = never> = A | Promise<A> | Effect.Effect<A, E>

// the calls and their default paths are the contract's; the SDK's users import them from here
export { defaultPaths }
export type { CallKind }

export type Events = Readonly<Record<string, Event<PayloadSchema>>>

export interface AppDefinition<E extends Events> {
  /** The schema document's version; change it when channels or events change. */
  readonly version: string
  readonly channels: ReadonlyArray<Channel>
  readonly events: E
  /** Every client's push limit across its connections (`rateLimits.default`). */
  readonly rateLimit?: RateLimit
  /**
   * The secret shared with the gateway (`<APP>_SECRET`): when set, every call
   * must carry a valid signature whose timestamp is within the tolerance.
   */
  readonly secret?: string | undefined
  /** Seconds either way; 300 (CONTRACT §3) when omitted. */
  readonly signatureToleranceSeconds?: number
  /** Who the token belongs to; `null` refuses with 401. */
  readonly auth: (request: AuthRequest) => Handled<typeof AuthAnswer.Encoded | null, AuthRefused>
  /** One handler per event, its payload typed by the event's Schema. */
  readonly messages: { readonly [K in keyof E]: (message: Message<E[K]["payload"]>) => Handled<Answer, MessageRefused> }
  /** Connections and joins, as the gateway reports them; omit to answer them without doing anything. */
  readonly notify?: (notification: Notification) => Handled<void>
  /** Paths when the gateway is configured with other endpoints. */
  readonly paths?: Partial<Readonly<Record<CallKind, string>>>
  /** A call was refused for its signature, or a handler failed unexpectedly or answered outside the contract (default: `console.error`). */
  readonly onError?: (call: CallKind, error: unknown) => void
}

export interface RealtimeApp<E extends Events = Events> {
  /** The events as defined, so that clients' pushes can be typed by their Schemas (see the test kit's `pushEvent`). */
  readonly events: E
  /** The channel-schema document (CONTRACT §3), payloads as JSON Schema 2020-12. */
  readonly document: SchemaDocumentInput
  /** A strong ETag of the document's JSON. */
  readonly etag: string
  readonly paths: Readonly<Record<CallKind, string>>
  /** The app's HTTP side as a standard fetch handler (Bun, Deno, Node). */
  readonly fetch: (request: Request) => Promise<Response>
  /** The app's HTTP side as routes of an Effect `HttpRouter` (merge it into the app's router layers). */
  readonly routes: ReturnType<typeof routesOf>
}

// ---------------------------------------------------------------------------
// The schema document
// ---------------------------------------------------------------------------

const JSON_SCHEMA_2020_12 = "https://json-schema.org/draft/2020-12/schema"

/**
 * The JSON Schema of what the payload Schema decodes from JSON (its
 * `Schema.toCodecJson` form), as one self-contained 2020-12 document.
 */
export const payloadJsonSchema = (payload: PayloadSchema): Record<string, unknown> => {
  const { schema, definitions } = Schema.toJsonSchemaDocument(payload)
  return {
    $schema: JSON_SCHEMA_2020_12,
    ...schema,
    ...(Object.keys(definitions).length === 0 ? {} : { $defs: definitions })
  }
}

const documentOf = <E extends Events>(definition: AppDefinition<E>): SchemaDocumentInput => {
  const byEvent: Record<string, RateLimit> = {}
  const events = Object.entries(definition.events).map(([name, event]): SchemaEventInput => {
    if (event.rateLimit !== undefined) byEvent[name] = event.rateLimit
    return {
      name,
      allowedChannels: event.channels,
      payload: payloadJsonSchema(event.payload),
      ...(event.description === undefined ? {} : { description: event.description }),
      ...(event.permissions === undefined ? {} : { permissions: event.permissions })
    }
  })
  const rateLimits = {
    ...(definition.rateLimit === undefined ? {} : { default: definition.rateLimit }),
    ...(Object.keys(byEvent).length === 0 ? {} : { byEvent })
  }
  return {
    version: definition.version,
    channels: definition.channels,
    events,
    ...(Object.keys(rateLimits).length === 0 ? {} : { rateLimits })
  }
}

// ---------------------------------------------------------------------------
// Handling the calls
// ---------------------------------------------------------------------------

/** Bodies past this are refused before they are read (the gateway's frames are at most 1 MiB). */
const MAX_BODY_BYTES = 8 * 1024 * 1024

const json = (status: number, body: unknown, headers: Record<string, string> = {}): Response =>
  new Response(JSON.stringify(body), { status, headers: { "content-type": "application/json", ...headers } })

const refusal = (status: number, reason: string, errors?: ReadonlyArray<Problem>): Response =>
  json(status, errors === undefined ? { reason } : { reason, errors })

/** The handler's outcome: its value, or its failure (a refusal or anything thrown). */
const run = <A, E>(handled: () => Handled<A, E>): Promise<Exit.Exit<A, unknown>> => {
  try {
    const value = handled()
    if (Effect.isEffect(value)) return Effect.runPromiseExit(value as Effect.Effect<A, E>)
    return Promise.resolve(value).then(Exit.succeed, Exit.fail)
  } catch (error) {
    return Promise.resolve(Exit.fail(error))
  }
}

/** What a failed handler failed with: its error (a refusal, or what it threw), else its defect. */
const failureOf = (exit: Exit.Failure<unknown, unknown>): unknown => Cause.squash(exit.cause)

const decoderOf = <S extends PayloadSchema>(schema: S) =>
  Schema.decodeUnknownResult(schema as S & Schema.ConstraintDecoder<unknown>, { errors: "all" })

const decodeAuthRequest = decoderOf(AuthRequest)
const decodeMessageRequest = decoderOf(MessageRequest)
const decodeNotification = decoderOf(Notification)
const checkAuthAnswer = decoderOf(AuthAnswer)
const checkActions = decoderOf(MessageActions)

/** The four calls as routes, each answered by the fetch handler. */
const routesOf = (paths: Readonly<Record<CallKind, string>>, fetch: (request: Request) => Promise<Response>) => {
  const served = HttpEffect.fromWebHandler(fetch)
  const route = (method: "GET" | "POST", path: string) => HttpRouter.route(method, path as HttpRouter.PathInput, served)
  return HttpRouter.addAll([
    route("GET", paths.schema),
    route("POST", paths.auth),
    route("POST", paths.message),
    route("POST", paths.notify)
  ])
}

/** Defines an app: its schema document, and its HTTP side as a fetch handler and an `HttpRouter` layer. */
export const defineApp = <const E extends Events>(definition: AppDefinition<E>): RealtimeApp<E> => {
  const document = documentOf(definition)
  const documentBody = JSON.stringify(document)
  const etag = `"${createHash("sha256").update(documentBody).digest("hex").slice(0, 32)}"`
  const paths: Readonly<Record<CallKind, string>> = { ...defaultPaths, ...definition.paths }
  const kindOfPath = new Map<string, CallKind>(Object.entries(paths).map(([kind, path]) => [path, kind as CallKind]))
  const onError = definition.onError ??
    ((call, error) => console.error(`realtime app, ${call} call:`, error))
  const payloadDecoders = new Map(
    Object.entries(definition.events).map(([name, event]) => [name, decoderOf(Schema.toCodecJson(event.payload))])
  )
  const handlers = definition.messages as Readonly<Record<string, (message: Message<PayloadSchema>) => Handled<Answer, MessageRefused>>>

  const answerSchema = (request: Request): Response => {
    if (etagMatches(request.headers.get("if-none-match") ?? undefined, etag)) {
      return new Response(null, { status: 304, headers: { etag } })
    }
    return new Response(documentBody, { status: 200, headers: { "content-type": "application/json", etag } })
  }

  /** A handler's answer as a 200 once the contract's Schema accepts it; otherwise a 500, reported. */
  const checkedAnswer = (
    call: CallKind,
    answer: unknown,
    check: (answer: unknown) => Result.Result<unknown, Schema.SchemaError>,
    what: string
  ): Response => {
    const checked = check(answer)
    if (Result.isSuccess(checked)) return json(200, answer)
    onError(call, new Error(`${what} is outside the contract: ${checked.failure.message}`))
    return refusal(500, "invalid_answer")
  }

  const answerAuth = async (body: unknown): Promise<Response> => {
    const decoded = decodeAuthRequest(body)
    if (decoded._tag === "Failure") return refusal(400, "invalid_body", describeIssue(decoded.failure.issue))
    const exit = await run(() => definition.auth(decoded.success))
    if (Exit.isFailure(exit)) {
      const error = failureOf(exit)
      if (error instanceof AuthRefused) return refusal(error.status, "unauthorized")
      onError("auth", error)
      return refusal(500, "auth_failed")
    }
    if (exit.value === null) return refusal(401, "unauthorized")
    return checkedAnswer("auth", exit.value, checkAuthAnswer, "the auth answer")
  }

  const answerMessage = async (body: unknown): Promise<Response> => {
    const decoded = decodeMessageRequest(body)
    if (decoded._tag === "Failure") return refusal(400, "invalid_body", describeIssue(decoded.failure.issue))
    const message = decoded.success
    const decodePayload = payloadDecoders.get(message.event)
    const handler = Object.hasOwn(handlers, message.event) ? handlers[message.event] : undefined
    // the gateway only forwards events of the document; these answers guard direct calls
    if (decodePayload === undefined || handler === undefined) return json(200, { action: "error", reason: "unknown_event" })
    const payload = decodePayload(message.payload)
    if (payload._tag === "Failure") return json(200, { action: "error", reason: "invalid_payload" })
    const exit = await run(() => handler({ ...message, payload: payload.success }))
    if (Exit.isFailure(exit)) {
      const error = failureOf(exit)
      if (error instanceof MessageRefused) return json(200, { action: "error", reason: error.reason })
      onError("message", error)
      return refusal(500, "message_failed")
    }
    return checkedAnswer("message", exit.value, checkActions, `the answer to "${message.event}"`)
  }

  const answerNotify = async (body: unknown): Promise<Response> => {
    const decoded = decodeNotification(body)
    if (decoded._tag === "Failure") return refusal(400, "invalid_body", describeIssue(decoded.failure.issue))
    const notify = definition.notify
    if (notify !== undefined) {
      const exit = await run(() => notify(decoded.success))
      if (Exit.isFailure(exit)) {
        onError("notify", failureOf(exit))
        // a 5xx makes the gateway try again, a few times
        return refusal(500, "notify_failed")
      }
    }
    return json(200, {})
  }

  const fetch = async (request: Request): Promise<Response> => {
    const kind = kindOfPath.get(new URL(request.url).pathname)
    if (kind === undefined) return refusal(404, "not_found")
    const method = kind === "schema" ? "GET" : "POST"
    if (request.method !== method) return json(405, { reason: "method_not_allowed" }, { allow: method })
    if (Number(request.headers.get("content-length") ?? 0) > MAX_BODY_BYTES) return refusal(413, "body_too_large")
    const rawBody = kind === "schema" ? "" : await request.text()
    if (definition.secret !== undefined) {
      const problem = verifySignature(
        definition.secret,
        rawBody,
        request.headers.get(TIMESTAMP_HEADER),
        request.headers.get(SIGNATURE_HEADER),
        { toleranceSeconds: definition.signatureToleranceSeconds }
      )
      if (problem !== undefined) {
        // a wrong secret on either side looks like this on every call: worth a line in the app's log
        onError(kind, new Error(`refused a call without a valid signature (${problem})`))
        return refusal(401, problem)
      }
    }
    if (kind === "schema") return answerSchema(request)
    let body: unknown
    try {
      body = JSON.parse(rawBody)
    } catch {
      return refusal(400, "invalid_json")
    }
    switch (kind) {
      case "auth":
        return answerAuth(body)
      case "message":
        return answerMessage(body)
      case "notify":
        return answerNotify(body)
    }
  }

  return { events: definition.events, document, etag, paths, fetch, routes: routesOf(paths, fetch) }
}
