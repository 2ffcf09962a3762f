/**
 * A typed client of the gateway's server API (CONTRACT §4), for an app's own
 * code: broadcast, disconnect a client, list connections, read a topic's
 * presence, refresh the app's schema.
 *
 * Every method resolves, never rejects: with `Result.succeed(answer)`, the
 * answer decoded with the contract's Schema, or `Result.fail(error)`, one of
 * {@link ServerApiRefused} (the gateway answered with a refusal: its status,
 * reason and problems), {@link ServerApiUnreachable} (no answer) or
 * {@link ServerApiInvalidAnswer} (an answer outside the contract).
 */
import { Result, Schema } from "effect"
import type { BroadcastRequest } from "../contract/ServerApi.ts"
import {
  ApiError,
  BroadcastAnswer,
  ConnectionsAnswer,
  DisconnectAnswer,
  PresenceAnswer,
  SchemaRefreshAnswer
} from "../contract/ServerApi.ts"
import type { ConnectionInfo, PresenceState } from "../contract/ServerApi.ts"

/** The contract's refusal (`reason`: `unauthorized`, `unknown_app`, `invalid_body`, `broadcast_failed`, ...) with its status. */
export class ServerApiRefused extends Schema.TaggedError<ServerApiRefused>()("ServerApiRefused", {
  status: Schema.Number,
  ...ApiError.fields
}) {
  override get message() {
    return `the gateway refused the call (${this.status} ${this.reason})`
  }
}

export class ServerApiUnreachable extends Schema.TaggedError<ServerApiUnreachable>()("ServerApiUnreachable", {
  detail: Schema.String
}) {
  override get message() {
    return `the gateway could not be reached: ${this.detail}`
  }
}

export class ServerApiInvalidAnswer extends Schema.TaggedError<ServerApiInvalidAnswer>()("ServerApiInvalidAnswer", {
  status: Schema.Number,
  detail: Schema.String
}) {
  override get message() {
    return `the gateway answered ${this.status} outside the contract: ${this.detail}`
  }
}

export type ServerApiError = ServerApiRefused | ServerApiUnreachable | ServerApiInvalidAnswer

export type ServerApiResult<A> = Promise<Result.Result<A, ServerApiError>>

export interface ServerApiClientOptions {
  /** The gateway's base URL, e.g. `https://gateway.example`. */
  readonly url: string
  /** The app's id on the gateway. */
  readonly app: string
  /** The app's secret (`<APP>_SECRET`), sent as the bearer token. */
  readonly secret: string
  /** Per call; 10 s when omitted. */
  readonly timeoutMs?: number
  /** Another `fetch` (a test double, a proxy agent). */
  readonly fetch?: typeof globalThis.fetch
}

export interface ServerApiClient {
  /** Delivers each broadcast to every subscriber of its topic on every node, in the order given. */
  broadcast(broadcasts: typeof BroadcastRequest.Encoded | ReadonlyArray<typeof BroadcastRequest.Encoded>): ServerApiResult<number>
  /** Closes every connection of the client on every node; the number closed. */
  disconnect(clientId: string): ServerApiResult<number>
  /** Every live connection of the app. */
  connections(): ServerApiResult<ReadonlyArray<ConnectionInfo>>
  /** Who is present on a topic, in Phoenix's presence-state form. */
  presence(topic: string): ServerApiResult<PresenceState>
  /** Makes the gateway fetch the app's schema now; the version in force. */
  refreshSchema(): ServerApiResult<string>
}

const DEFAULT_TIMEOUT_MS = 10_000

const decodeApiError = Schema.decodeUnknownResult(ApiError)

export const makeServerApiClient = (options: ServerApiClientOptions): ServerApiClient => {
  const base = `${options.url.replace(/\/+$/, "")}/api/apps/${encodeURIComponent(options.app)}`
  const fetchImpl = options.fetch ?? globalThis.fetch
  const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS

  const call = async <S extends Schema.Top & { readonly DecodingServices: never }, A>(
    method: string,
    path: string,
    success: S,
    pick: (answer: S["Type"]) => A,
    body?: unknown
  ): ServerApiResult<A> => {
    let response: Response
    let text: string
    try {
      response = await fetchImpl(base + path, {
        method,
        headers: {
          authorization: `Bearer ${options.secret}`,
          ...(body === undefined ? {} : { "content-type": "application/json" })
        },
        ...(body === undefined ? {} : { body: JSON.stringify(body) }),
        signal: AbortSignal.timeout(timeoutMs)
      })
      text = await response.text()
    } catch (error) {
      return Result.fail(new ServerApiUnreachable({ detail: error instanceof Error ? error.message : String(error) }))
    }
    let value: unknown
    try {
      value = JSON.parse(text)
    } catch {
      return Result.fail(new ServerApiInvalidAnswer({ status: response.status, detail: "the body is not JSON" }))
    }
    if (!response.ok) {
      const refusal = decodeApiError(value)
      return Result.fail(
        Result.isSuccess(refusal)
          ? new ServerApiRefused({ status: response.status, ...refusal.success })
          : new ServerApiInvalidAnswer({ status: response.status, detail: "a refusal without a reason" })
      )
    }
    const decoded = Schema.decodeUnknownResult(success as S & Schema.ConstraintDecoder<unknown>)(value)
    return Result.isSuccess(decoded)
      ? Result.succeed(pick(decoded.success))
      : Result.fail(new ServerApiInvalidAnswer({ status: response.status, detail: decoded.failure.message }))
  }

  return {
    broadcast: (broadcasts) => call("POST", "/broadcast", BroadcastAnswer, (answer) => answer.accepted, broadcasts),
    disconnect: (clientId) =>
      call("DELETE", `/clients/${encodeURIComponent(clientId)}`, DisconnectAnswer, (answer) => answer.disconnected),
    connections: async () => {
      // every page, in the gateway's order (node, then connection id)
      const all: Array<ConnectionInfo> = []
      let cursor: string | null = null
      do {
        const query: string = cursor === null ? "" : `?cursor=${encodeURIComponent(cursor)}`
        const page = await call("GET", `/connections${query}`, ConnectionsAnswer, (answer) => answer)
        if (Result.isFailure(page)) return Result.fail(page.failure)
        all.push(...page.success.connections)
        cursor = page.success.next_cursor
      } while (cursor !== null)
      return Result.succeed(all)
    },
    presence: (topic) =>
      call("GET", `/topics/${encodeURIComponent(topic)}/presence`, PresenceAnswer, (answer) => answer.presences),
    refreshSchema: () => call("POST", "/schema/refresh", SchemaRefreshAnswer, (answer) => answer.version)
  }
}
