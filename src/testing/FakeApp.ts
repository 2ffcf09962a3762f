/**
 * A scriptable fake of an app backend, for app teams' (and the gateway's own)
 * integration tests.
 *
 * It serves the four calls the gateway makes on an app (schema, auth, message,
 * notify) on 127.0.0.1 with an ephemeral port, records every request it gets,
 * and lets a test change each endpoint's behaviour at any time: a different
 * schema (with a new ETag), a token table or custom auth handler, a custom
 * message handler, and failure switches (an HTTP status, a request that never
 * answers, invalid JSON, a dropped connection, a slow answer).
 *
 * Besides `node:http`, it uses only the contract (`contract/`: the shapes'
 * types and the signature check), not the gateway's internals: it checks the
 * gateway from the outside, as a real app would see it.
 */
import { callKinds, defaultPaths } from "../contract/Endpoints.ts"
import type { CallKind } from "../contract/Endpoints.ts"
import { createServer } from "node:http"
import type { IncomingHttpHeaders, IncomingMessage, ServerResponse } from "node:http"
import type { AddressInfo } from "node:net"
import type { AuthAnswer, AuthRequest } from "../contract/Auth.ts"
import type { Action, MessageRequest } from "../contract/Messages.ts"
import type { Notification, NotifyEvent as ContractNotifyEvent } from "../contract/Notifications.ts"
import type {
  ChannelDefinition,
  EventInput,
  RateLimit as ContractRateLimit,
  SchemaDocumentInput,
  VariableRule
} from "../contract/SchemaDocument.ts"
import { etagMatches } from "../contract/SchemaDocument.ts"
import { SIGNATURE_HEADER, TIMESTAMP_HEADER, verifySignature } from "../contract/Signature.ts"
import type { SignatureProblem } from "../contract/Signature.ts"

// ---------------------------------------------------------------------------
// Contract types (as the gateway sends and expects them, from `contract/`)
// ---------------------------------------------------------------------------

// the kit's users import the calls and their default paths from here
export { callKinds, defaultPaths }
export type { CallKind }

// The contract's shapes under the names this kit has always used.

/** A channel-schema document as an app writes it. */
export type SchemaDocument = SchemaDocumentInput
export type SchemaChannel = typeof ChannelDefinition.Encoded
export type SchemaEvent = typeof EventInput.Encoded
export type SchemaVariable = typeof VariableRule.Encoded
export type RateLimit = typeof ContractRateLimit.Encoded
export type AuthRequestBody = AuthRequest
/** A successful auth answer. */
export type AuthIdentity = typeof AuthAnswer.Encoded
export type MessageRequestBody = MessageRequest
export type MessageAction = typeof Action.Encoded
export type NotifyEvent = ContractNotifyEvent
export type NotifyRequestBody = Notification

/** Parsed request body by call kind. */
export interface RequestBodies {
  readonly schema: undefined
  readonly auth: AuthRequestBody
  readonly message: MessageRequestBody
  readonly notify: NotifyRequestBody
  readonly other: unknown
}

/** `other` is a request to a path (or with a method) the fake does not serve; it gets a 404/405. */
export type RecordedKind = CallKind | "other"

export interface RecordedRequest<K extends RecordedKind = RecordedKind> {
  /** Position in `requests`, so a test can ask for requests after a given point. */
  readonly seq: number
  readonly kind: K
  readonly method: string
  /** Path without the query string. */
  readonly path: string
  /** Path with the query string, as received. */
  readonly url: string
  /** Header names are lower case (Node's convention). */
  readonly headers: IncomingHttpHeaders
  readonly rawBody: string
  /**
   * The body parsed as JSON, exactly as the gateway sent it (not validated
   * against the contract); `undefined` when the body is empty or not JSON.
   */
  readonly body: RequestBodies[K]
  /** `Date.now()` when the body was fully received. */
  readonly at: number
  /**
   * Set only when the fake has a `secret`: whether `x-gateway-signature` matched
   * `x-gateway-timestamp` and the body, with the timestamp within the tolerance.
   */
  readonly signatureValid?: boolean
  /** Why the signature was refused, when it was. */
  readonly signatureProblem?: SignatureProblem
}

// ---------------------------------------------------------------------------
// Behaviour knobs
// ---------------------------------------------------------------------------

/** An answer given verbatim: `json` is serialised, otherwise `body` is sent as is. */
export interface FakeResponse {
  readonly status: number
  readonly json?: unknown
  readonly body?: string
  readonly headers?: Readonly<Record<string, string>>
}

/**
 * How an endpoint misbehaves:
 * - `{status, body?}`: answer with that status (and raw body);
 * - `"hang"`: read the request and never answer, until `close()`;
 * - `"garbage"`: 200 with a body that is not JSON;
 * - `"destroy"`: drop the TCP connection without answering;
 * - `{delayMs}`: answer normally, but only after the delay;
 * - `"ok"`: back to normal.
 */
export type FailureMode =
  | "ok"
  | "hang"
  | "garbage"
  | "destroy"
  | { readonly status: number; readonly body?: string; readonly headers?: Readonly<Record<string, string>> }
  | { readonly delayMs: number }

export interface FailOptions {
  /** Misbehave only for this many requests, then go back to normal. */
  readonly times?: number
}

export type Awaitable<A> = A | Promise<A>

/** `null` answers 401. */
export type AuthHandler = (
  body: AuthRequestBody,
  request: RecordedRequest<"auth">
) => Awaitable<AuthIdentity | FakeResponse | null | undefined>

/** Token → identity (200) or verbatim answer; unknown tokens get a 401. */
export type TokenTable = Readonly<Record<string, AuthIdentity | FakeResponse>>

export type MessageHandler = (
  body: MessageRequestBody,
  request: RecordedRequest<"message">
) => Awaitable<MessageAction | ReadonlyArray<MessageAction> | FakeResponse>

export interface FakeAppOptions {
  /** Initial schema; `defaultSchema` when omitted. */
  readonly schema?: SchemaDocument
  /** Initial auth behaviour; the `defaultTokens` table when omitted. */
  readonly auth?: AuthHandler | TokenTable
  /** Initial message handler; echoes the payload as a reply when omitted. */
  readonly messageHandler?: MessageHandler
  /** When set, `x-gateway-timestamp` and `x-gateway-signature` are checked and the outcome recorded in `signatureValid`. */
  readonly secret?: string
  /** With a `secret`, answer 401 to requests whose signature is missing, wrong or stale (default: only record). */
  readonly enforceSignature?: boolean
  /** How far a signed call's timestamp may be from this clock; 300 s (CONTRACT §3) when omitted. */
  readonly signatureToleranceSeconds?: number
  /** Endpoint paths, when the app under test is configured with non-default ones. */
  readonly paths?: Partial<Readonly<Record<CallKind, string>>>
}

export interface FakeApp {
  /** Base URL, e.g. `http://127.0.0.1:40123`. */
  readonly url: string
  readonly port: number
  /** Full URL of each endpoint. */
  readonly endpoints: Readonly<Record<CallKind, string>>
  readonly paths: Readonly<Record<CallKind, string>>
  /** Every request received so far, in arrival order (a live array). */
  readonly requests: ReadonlyArray<RecordedRequest>
  /** The requests of one kind so far. */
  requestsOf<K extends RecordedKind>(kind: K): ReadonlyArray<RecordedRequest<K>>
  /**
   * Resolves with the first request of `kind` matching `predicate`, among those
   * already recorded or, failing that, the next ones; rejects after `timeoutMs`
   * (default 5000) or when the fake is closed.
   */
  waitFor<K extends RecordedKind>(
    kind: K,
    predicate?: (request: RecordedRequest<K>) => boolean,
    timeoutMs?: number
  ): Promise<RecordedRequest<K>>
  /** Forgets the recorded requests (sequence numbers keep growing). */
  clearRequests(): void
  /** The schema currently served and its ETag. */
  readonly schema: SchemaDocument | string
  readonly etag: string
  /** Serves a new schema under a new ETag; returns the ETag. */
  setSchema(doc: SchemaDocument): string
  /** Serves an arbitrary body (e.g. an invalid schema) under a new ETag; returns the ETag. */
  setSchemaRaw(body: string): string
  setAuth(auth: AuthHandler | TokenTable): void
  setMessageHandler(handler: MessageHandler): void
  fail(kind: CallKind, mode: FailureMode, options?: FailOptions): void
  /** Answers the hanging requests' sockets with a reset, closes every connection and the server. */
  close(): Promise<void>
}

// ---------------------------------------------------------------------------
// Defaults
// ---------------------------------------------------------------------------

/** A small schema covering public rooms with presence and private per-user channels. */
export const defaultSchema: SchemaDocument = {
  version: "1",
  channels: [
    {
      pattern: "room:{room_id}",
      description: "Public room; any authenticated client may join",
      variables: { room_id: { type: "string", pattern: "^[A-Za-z0-9_-]{1,64}$" } },
      presence: true
    },
    {
      pattern: "user:{user_id}",
      description: "Private channel of one user",
      variables: { user_id: { type: "string" } },
      permissions: { join: ["user:{user_id}"] }
    }
  ],
  events: [
    { name: "echo", allowedChannels: ["room:*", "user:*"] },
    { name: "shout", allowedChannels: ["room:*"] }
  ]
}

export const defaultTokens: TokenTable = {
  "token-alice": { client_id: "alice", client_type: "web", metadata: { name: "Alice" }, permissions: ["user:alice"] },
  "token-bob": { client_id: "bob", client_type: "web", metadata: { name: "Bob" }, permissions: ["user:bob"] }
}

/** The default message handler: reply with the payload it got. */
export const echoHandler: MessageHandler = (body) => ({ action: "reply", data: body.payload })

const garbageBody = "{\"action\": \"reply\", \"data\": <this is not json"

// ---------------------------------------------------------------------------
// Implementation
// ---------------------------------------------------------------------------

interface Waiter {
  readonly kind: RecordedKind
  readonly predicate: (request: RecordedRequest) => boolean
  readonly resolve: (request: RecordedRequest) => void
  readonly reject: (error: Error) => void
  readonly timer: NodeJS.Timeout
}

interface ActiveFailure {
  readonly mode: Exclude<FailureMode, "ok">
  remaining: number
}

const isFakeResponse = (value: unknown): value is FakeResponse =>
  typeof value === "object" && value !== null && !Array.isArray(value) &&
  typeof (value as { status?: unknown }).status === "number"

const isIdentity = (value: unknown): value is AuthIdentity =>
  typeof value === "object" && value !== null && "client_id" in value

const parseJson = (raw: string): unknown => {
  if (raw.length === 0) return undefined
  try {
    return JSON.parse(raw)
  } catch {
    return undefined
  }
}

const headerValue = (headers: IncomingHttpHeaders, name: string): string | undefined => {
  const value = headers[name]
  return Array.isArray(value) ? value[0] : value
}

export const startFakeApp = async (options: FakeAppOptions = {}): Promise<FakeApp> => {
  const paths: Record<CallKind, string> = { ...defaultPaths, ...options.paths }
  const secret = options.secret
  const requests: Array<RecordedRequest> = []
  const waiters = new Set<Waiter>()
  const failures = new Map<CallKind, ActiveFailure>()
  const pendingTimers = new Set<NodeJS.Timeout>()
  let seq = 0
  let closed = false

  let schema: SchemaDocument | string = options.schema ?? defaultSchema
  let schemaBody = typeof schema === "string" ? schema : JSON.stringify(schema)
  let etagCounter = 1
  let etag = `"fake-schema-${etagCounter}"`
  const bumpSchema = (doc: SchemaDocument | string): string => {
    schema = doc
    schemaBody = typeof doc === "string" ? doc : JSON.stringify(doc)
    etagCounter += 1
    etag = `"fake-schema-${etagCounter}"`
    return etag
  }

  let auth: AuthHandler | TokenTable = options.auth ?? defaultTokens
  let messageHandler: MessageHandler = options.messageHandler ?? echoHandler

  const kindOf = (method: string, path: string): RecordedKind => {
    for (const kind of callKinds) {
      if (paths[kind] === path) {
        const expectedMethod = kind === "schema" ? "GET" : "POST"
        return method === expectedMethod ? kind : "other"
      }
    }
    return "other"
  }

  const record = (request: RecordedRequest): void => {
    requests.push(request)
    for (const waiter of waiters) {
      if (waiter.kind === request.kind && waiter.predicate(request)) {
        waiters.delete(waiter)
        clearTimeout(waiter.timer)
        waiter.resolve(request)
      }
    }
  }

  const send = (
    res: ServerResponse,
    status: number,
    body: string,
    headers: Readonly<Record<string, string>> = {}
  ): void => {
    if (res.writableEnded || res.destroyed) return
    res.writeHead(status, {
      "content-type": "application/json",
      "content-length": Buffer.byteLength(body),
      ...headers
    })
    res.end(body)
  }

  const sendJson = (res: ServerResponse, status: number, value: unknown): void =>
    send(res, status, JSON.stringify(value))

  const sendFakeResponse = (res: ServerResponse, response: FakeResponse): void =>
    send(
      res,
      response.status,
      response.json !== undefined ? JSON.stringify(response.json) : (response.body ?? ""),
      response.headers
    )

  const answerSchema = (req: RecordedRequest, res: ServerResponse): void => {
    if (etagMatches(headerValue(req.headers, "if-none-match"), etag)) {
      res.writeHead(304, { etag })
      res.end()
      return
    }
    send(res, 200, schemaBody, { etag })
  }

  const answerAuth = async (req: RecordedRequest<"auth">, res: ServerResponse): Promise<void> => {
    const body = req.body
    let outcome: AuthIdentity | FakeResponse | null | undefined
    if (typeof auth === "function") {
      outcome = await auth(body, req)
    } else {
      const token = typeof body === "object" && body !== null ? body.token : undefined
      outcome = typeof token === "string" && Object.hasOwn(auth, token) ? auth[token] : null
    }
    if (outcome === null || outcome === undefined) {
      sendJson(res, 401, { error: "unauthorized" })
    } else if (isIdentity(outcome)) {
      sendJson(res, 200, outcome)
    } else {
      sendFakeResponse(res, outcome)
    }
  }

  const answerMessage = async (req: RecordedRequest<"message">, res: ServerResponse): Promise<void> => {
    const outcome = await messageHandler(req.body, req)
    if (isFakeResponse(outcome)) sendFakeResponse(res, outcome)
    else sendJson(res, 200, outcome)
  }

  const answer = async (req: RecordedRequest, res: ServerResponse): Promise<void> => {
    switch (req.kind) {
      case "schema":
        return answerSchema(req, res)
      case "auth":
        return answerAuth(req as RecordedRequest<"auth">, res)
      case "message":
        return answerMessage(req as RecordedRequest<"message">, res)
      case "notify":
        return sendJson(res, 200, {})
      case "other": {
        const known = callKinds.some((kind) => paths[kind] === req.path)
        return sendJson(res, known ? 405 : 404, { error: known ? "method not allowed" : "not found" })
      }
    }
  }

  const answerSafely = (req: RecordedRequest, res: ServerResponse): void => {
    answer(req, res).catch((error: unknown) => {
      // A throwing handler is a bug in the test; answer 500 so the gateway sees an app failure.
      sendJson(res, 500, { error: error instanceof Error ? error.message : String(error) })
    })
  }

  const takeFailure = (kind: RecordedKind): Exclude<FailureMode, "ok"> | undefined => {
    if (kind === "other") return undefined
    const failure = failures.get(kind)
    if (failure === undefined) return undefined
    failure.remaining -= 1
    if (failure.remaining <= 0) failures.delete(kind)
    return failure.mode
  }

  const handle = (incoming: IncomingMessage, res: ServerResponse, rawBody: string): void => {
    const method = incoming.method ?? "GET"
    const url = incoming.url ?? "/"
    const path = url.split("?")[0] ?? url
    const kind = kindOf(method, path)
    const signatureProblem = secret === undefined ? undefined : verifySignature(
      secret,
      rawBody,
      headerValue(incoming.headers, TIMESTAMP_HEADER),
      headerValue(incoming.headers, SIGNATURE_HEADER),
      { toleranceSeconds: options.signatureToleranceSeconds }
    )
    const signatureValid = secret === undefined ? undefined : signatureProblem === undefined
    seq += 1
    const request: RecordedRequest = {
      seq,
      kind,
      method,
      path,
      url,
      headers: incoming.headers,
      rawBody,
      body: parseJson(rawBody) as RequestBodies[RecordedKind],
      at: Date.now(),
      ...(signatureValid === undefined ? {} : { signatureValid }),
      ...(signatureProblem === undefined ? {} : { signatureProblem })
    }
    record(request)

    if (signatureProblem !== undefined && options.enforceSignature === true) {
      sendJson(res, 401, { error: signatureProblem })
      return
    }

    const failure = takeFailure(kind)
    if (failure === undefined) {
      answerSafely(request, res)
    } else if (failure === "hang") {
      // Nothing to do: close() destroys the connection.
    } else if (failure === "garbage") {
      send(res, 200, garbageBody)
    } else if (failure === "destroy") {
      incoming.socket.destroy()
    } else if ("delayMs" in failure) {
      const timer = setTimeout(() => {
        pendingTimers.delete(timer)
        answerSafely(request, res)
      }, failure.delayMs)
      pendingTimers.add(timer)
    } else {
      send(res, failure.status, failure.body ?? JSON.stringify({ error: `fake failure ${failure.status}` }), failure.headers)
    }
  }

  const server = createServer((incoming, res) => {
    const chunks: Array<Buffer> = []
    incoming.on("data", (chunk: Buffer) => chunks.push(chunk))
    incoming.on("end", () => handle(incoming, res, Buffer.concat(chunks).toString("utf8")))
  })
  // Longer than typical client pool idle timeouts, so the gateway's pooled
  // connections are not closed under it between a test's calls.
  server.keepAliveTimeout = 60_000

  await new Promise<void>((resolve, reject) => {
    server.once("error", reject)
    server.listen(0, "127.0.0.1", () => {
      server.off("error", reject)
      resolve()
    })
  })
  const port = (server.address() as AddressInfo).port
  const baseUrl = `http://127.0.0.1:${port}`
  const endpoints: Record<CallKind, string> = {
    schema: baseUrl + paths.schema,
    auth: baseUrl + paths.auth,
    message: baseUrl + paths.message,
    notify: baseUrl + paths.notify
  }

  const app: FakeApp = {
    url: baseUrl,
    port,
    endpoints,
    paths,
    requests,
    requestsOf: <K extends RecordedKind>(kind: K) =>
      requests.filter((request): request is RecordedRequest<K> => request.kind === kind),
    waitFor: <K extends RecordedKind>(
      kind: K,
      predicate: (request: RecordedRequest<K>) => boolean = () => true,
      timeoutMs = 5000
    ): Promise<RecordedRequest<K>> => {
      const matches = (request: RecordedRequest): request is RecordedRequest<K> =>
        request.kind === kind && predicate(request as RecordedRequest<K>)
      const found = requests.find(matches)
      if (found !== undefined) return Promise.resolve(found)
      if (closed) return Promise.reject(new Error(`fake app closed while waiting for a ${kind} request`))
      return new Promise<RecordedRequest<K>>((resolve, reject) => {
        const waiter: Waiter = {
          kind,
          predicate: (request) => predicate(request as RecordedRequest<K>),
          resolve: (request) => resolve(request as RecordedRequest<K>),
          reject,
          timer: setTimeout(() => {
            waiters.delete(waiter)
            const seen = requests.map((r) => `${r.kind} ${r.method} ${r.url}`).join("; ") || "none"
            reject(new Error(`no matching ${kind} request within ${timeoutMs}ms (received: ${seen})`))
          }, timeoutMs)
        }
        waiters.add(waiter)
      })
    },
    clearRequests: () => {
      requests.length = 0
    },
    get schema() {
      return schema
    },
    get etag() {
      return etag
    },
    setSchema: (doc) => bumpSchema(doc),
    setSchemaRaw: (body) => bumpSchema(body),
    setAuth: (next) => {
      auth = next
    },
    setMessageHandler: (handler) => {
      messageHandler = handler
    },
    fail: (kind, mode, failOptions = {}) => {
      if (mode === "ok") failures.delete(kind)
      else failures.set(kind, { mode, remaining: failOptions.times ?? Number.POSITIVE_INFINITY })
    },
    close: async () => {
      if (closed) return
      closed = true
      for (const timer of pendingTimers) clearTimeout(timer)
      pendingTimers.clear()
      for (const waiter of waiters) {
        clearTimeout(waiter.timer)
        waiter.reject(new Error(`fake app closed while waiting for a ${waiter.kind} request`))
      }
      waiters.clear()
      const done = new Promise<void>((resolve) => server.close(() => resolve()))
      // Hanging and delayed requests, and idle keep-alive connections, would otherwise keep close() waiting.
      server.closeAllConnections()
      await done
    }
  }
  return app
}
