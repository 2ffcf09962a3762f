/**
 * Promise helpers for driving the gateway from tests with the official
 * `phoenix` JavaScript client, the same client browsers use, plus raw `ws`
 * helpers for what that client hides (the HTTP answer to a refused upgrade,
 * exact frames, close codes).
 *
 * The phoenix client is built for browsers: it reconnects and rejoins forever
 * on its own. Here reconnecting is off by default and a failed join stops its
 * rejoin timer, so a failing test ends with an error instead of spinning, and
 * every wait has a timeout.
 */
import { Socket } from "phoenix"
import type { Channel, PushStatus } from "phoenix"
import WebSocket from "ws"
import type { ClientOptions } from "ws"
import type { IncomingHttpHeaders, IncomingMessage } from "node:http"

const defaultWaitMs = 5000

// ---------------------------------------------------------------------------
// Refused upgrades
// ---------------------------------------------------------------------------

/** The gateway answers a refused upgrade with an HTTP status and `{"reason": ...}`. */
export interface UpgradeRejectionBody {
  readonly reason: string
  readonly [key: string]: unknown
}

export interface UpgradeRejection {
  readonly status: number
  readonly headers: IncomingHttpHeaders
  readonly body: UpgradeRejectionBody
  readonly rawBody: string
}

interface RawRejection {
  readonly status: number
  readonly headers: IncomingHttpHeaders
  readonly rawBody: string
}

/** Why a socket did not open: the HTTP answer when the upgrade was refused, else the close details. */
export class SocketConnectError extends Error {
  /** HTTP status of the refused upgrade (only known with the `ws` transport). */
  readonly status: number | undefined
  /** Parsed JSON body of the refused upgrade, or the raw text when it is not JSON. */
  readonly body: unknown
  /** WebSocket close code, when the connection closed before opening. */
  readonly code: number | undefined
  readonly reason: string | undefined

  constructor(
    message: string,
    details: { status?: number; body?: unknown; code?: number; reason?: string } = {}
  ) {
    super(message)
    this.name = "SocketConnectError"
    this.status = details.status
    this.body = details.body
    this.code = details.code
    this.reason = details.reason
  }
}

const parseMaybeJson = (raw: string): unknown => {
  try {
    return JSON.parse(raw)
  } catch {
    return raw
  }
}

/**
 * Reads the body of a refused upgrade, then aborts the handshake so the
 * socket emits its usual error and close events. Without a listener `ws`
 * would abort on its own, but the body would be lost.
 */
const captureRejection = (ws: WebSocket, onRejection: (rejection: RawRejection) => void): void => {
  ws.on("unexpected-response", (_request, response: IncomingMessage) => {
    const chunks: Array<Buffer> = []
    const finish = () => {
      onRejection({
        status: response.statusCode ?? 0,
        headers: response.headers,
        rawBody: Buffer.concat(chunks).toString("utf8")
      })
      ws.terminate()
    }
    response.on("data", (chunk: Buffer) => chunks.push(chunk))
    response.once("end", finish)
    response.once("error", finish)
  })
}

const withTimeout = <A>(
  what: string | (() => string),
  timeoutMs: number,
  run: (resolve: (value: A) => void, reject: (error: unknown) => void) => void,
  onTimeout: () => void = () => {}
): Promise<A> =>
  new Promise<A>((resolve, reject) => {
    const timer = setTimeout(() => {
      onTimeout()
      reject(new Error(`${typeof what === "string" ? what : what()} did not happen within ${timeoutMs}ms`))
    }, timeoutMs)
    run(
      (value) => {
        clearTimeout(timer)
        resolve(value)
      },
      (error) => {
        clearTimeout(timer)
        reject(error)
      }
    )
  })

/**
 * Attempts a WebSocket upgrade that is expected to be refused and resolves with
 * the HTTP status and JSON body of the refusal; rejects if the upgrade succeeds
 * or the body is not JSON with a `reason`.
 */
export const upgradeRejection = (
  url: string,
  headers: Readonly<Record<string, string>> = {},
  protocols: ReadonlyArray<string> = [],
  timeoutMs: number = defaultWaitMs
): Promise<UpgradeRejection> => {
  const ws = new WebSocket(url, [...protocols], { headers: { ...headers } })
  return withTimeout<UpgradeRejection>(`refusal of the upgrade to ${url}`, timeoutMs, (resolve, reject) => {
    captureRejection(ws, ({ status, headers: responseHeaders, rawBody }) => {
      const body = parseMaybeJson(rawBody)
      if (typeof body === "object" && body !== null && typeof (body as { reason?: unknown }).reason === "string") {
        resolve({ status, headers: responseHeaders, body: body as UpgradeRejectionBody, rawBody })
      } else {
        reject(new Error(`upgrade refused with ${status}, but the body is not {"reason": ...}: ${rawBody}`))
      }
    })
    ws.on("open", () => {
      ws.close()
      reject(new Error(`the upgrade to ${url} was accepted`))
    })
    // After a refusal, ws reports the aborted handshake as an error too; the promise is settled by then.
    ws.on("error", (error) => reject(error))
  }, () => ws.terminate())
}

// ---------------------------------------------------------------------------
// Raw sockets
// ---------------------------------------------------------------------------

export interface CloseInfo {
  readonly code: number
  readonly reason: string
}

export type RawFrame = string | Buffer

export interface RawSocket {
  readonly ws: WebSocket
  /** The sub-protocol the server selected ("" when none). */
  readonly protocol: string
  /** Every frame received so far (text frames as strings, binary ones as Buffers). */
  readonly frames: ReadonlyArray<RawFrame>
  /** Sends a string as is, anything else as JSON (a Phoenix v2 frame is an array). */
  send(frame: unknown): void
  /** The next frame not yet taken by `nextFrame`/`nextJson`, waiting for it if needed. */
  nextFrame(timeoutMs?: number): Promise<RawFrame>
  nextJson<T = unknown>(timeoutMs?: number): Promise<T>
  /** Resolves when the connection closes, with the close code and reason. */
  readonly closed: Promise<CloseInfo>
  close(code?: number, reason?: string): Promise<CloseInfo>
}

/**
 * Opens a plain `ws` connection; resolves once open, rejects with a
 * `SocketConnectError` carrying the HTTP status and body if the upgrade is refused.
 */
export const rawSocket = (
  url: string,
  protocols: ReadonlyArray<string> = [],
  headers: Readonly<Record<string, string>> = {},
  timeoutMs: number = defaultWaitMs
): Promise<RawSocket> => {
  const ws = new WebSocket(url, [...protocols], { headers: { ...headers } })
  const frames: Array<RawFrame> = []
  let taken = 0
  let closeInfo: CloseInfo | undefined
  const frameWaiters = new Set<() => void>()
  let rejection: RawRejection | undefined
  captureRejection(ws, (r) => {
    rejection = r
  })

  const closed = new Promise<CloseInfo>((resolve) => {
    ws.on("close", (code, reason) => {
      closeInfo = { code, reason: reason.toString("utf8") }
      resolve(closeInfo)
      for (const wake of frameWaiters) wake()
    })
  })
  ws.on("message", (data, isBinary) => {
    const buffer = Buffer.isBuffer(data) ? data : Array.isArray(data) ? Buffer.concat(data) : Buffer.from(data)
    frames.push(isBinary ? buffer : buffer.toString("utf8"))
    for (const wake of frameWaiters) wake()
  })

  const nextFrame = (waitMs: number = defaultWaitMs): Promise<RawFrame> => {
    let wake: () => void = () => {}
    return withTimeout<RawFrame>("next frame", waitMs, (resolve, reject) => {
      wake = () => {
        const frame = frames[taken]
        if (frame !== undefined) {
          taken += 1
          frameWaiters.delete(wake)
          resolve(frame)
        } else if (closeInfo !== undefined) {
          frameWaiters.delete(wake)
          reject(new Error(`socket closed (${closeInfo.code} ${closeInfo.reason}) before the next frame`))
        }
      }
      frameWaiters.add(wake)
      wake()
    }, () => frameWaiters.delete(wake))
  }

  const socket: RawSocket = {
    ws,
    get protocol() {
      return ws.protocol
    },
    frames,
    send: (frame) => ws.send(typeof frame === "string" ? frame : JSON.stringify(frame)),
    nextFrame,
    nextJson: async <T>(waitMs?: number): Promise<T> => {
      const frame = await nextFrame(waitMs)
      return JSON.parse(typeof frame === "string" ? frame : frame.toString("utf8")) as T
    },
    closed,
    close: (code, reason) => {
      if (ws.readyState !== WebSocket.CLOSED) ws.close(code, reason)
      return closed
    }
  }

  return withTimeout<RawSocket>(`opening ${url}`, timeoutMs, (resolve, reject) => {
    ws.once("open", () => resolve(socket))
    let lastError: Error | undefined
    ws.on("error", (error) => {
      lastError = error
    })
    void closed.then(({ code, reason }) => {
      if (rejection !== undefined) {
        reject(new SocketConnectError(`upgrade refused with HTTP ${rejection.status}: ${rejection.rawBody}`, {
          status: rejection.status,
          body: parseMaybeJson(rejection.rawBody),
          code,
          reason
        }))
      } else {
        reject(new SocketConnectError(`socket closed before opening (${code})${lastError ? `: ${lastError.message}` : ""}`, {
          code,
          reason
        }))
      }
    })
  }, () => ws.terminate())
}

// ---------------------------------------------------------------------------
// Phoenix client
// ---------------------------------------------------------------------------

export interface ConnectOptions {
  /** Sent as the `app` query parameter. */
  readonly app: string
  /** Sent as the `token` query parameter (omit it to test a missing token or to use `authToken`). */
  readonly token?: string
  /** Sent as the `client_type` query parameter. */
  readonly clientType?: string
  /** Protocol version; the client's default is "2.0.0". */
  readonly vsn?: string
  /** Token sent as the `base64url.bearer.phx.<b64url>` sub-protocol instead of a query parameter. */
  readonly authToken?: string
  /** `Origin` header of the upgrade request (needs the `ws` transport). */
  readonly origin?: string
  /** Extra headers of the upgrade request (needs the `ws` transport). */
  readonly headers?: Readonly<Record<string, string>>
  /** Extra query parameters. */
  readonly params?: Readonly<Record<string, string>>
  /**
   * `ws` (default) can send headers and reports the HTTP status and body of a
   * refused upgrade; `native` uses Node's global WebSocket, as a browser would.
   */
  readonly transport?: "ws" | "native"
  /** Let the client reconnect after a close, as in a browser (default false). */
  readonly reconnect?: boolean
  /** How long to wait for the connection to open (default 5000ms). */
  readonly timeoutMs?: number
  /** Default timeout of joins and pushes, in ms (the client's default is 10000). */
  readonly pushTimeoutMs?: number
  readonly heartbeatIntervalMs?: number
  /** Logs the client's internal events, e.g. `(kind, msg, data) => console.log(kind, msg, data)`. */
  readonly logger?: (kind: string, message: string, data: unknown) => void
}

export interface JoinOptions {
  readonly timeoutMs?: number
  /** Let the client retry a refused or timed-out join, as in a browser (default false). */
  readonly rejoin?: boolean
}

export interface JoinResult<R = unknown> {
  readonly status: "ok" | "error"
  readonly response: R
  readonly channel: Channel
}

export interface PushResult<R = unknown> {
  readonly status: PushStatus
  readonly response: R
}

export interface SocketCloseInfo extends CloseInfo {
  readonly wasClean: boolean
}

export interface ConnectedSocket {
  /** The underlying phoenix client socket. */
  readonly socket: Socket
  /** Resolves when the connection closes after having opened. */
  readonly closed: Promise<SocketCloseInfo>
  join<R = unknown>(topic: string, payload?: object, options?: JoinOptions): Promise<JoinResult<R>>
  /** Disconnects (no reconnect) and resolves once the connection is closed. */
  close(code?: number, reason?: string): Promise<void>
}

/** `ws` transport whose upgrade request carries the given headers and reports refusals. */
const makeWsTransport = (
  clientOptions: ClientOptions,
  onCreated: (ws: WebSocket) => void
) =>
  class GatewayTestTransport extends WebSocket {
    constructor(url: string, protocols?: string | Array<string>) {
      super(url, protocols, clientOptions)
      onCreated(this)
    }
  }

/**
 * The phoenix client appends `/websocket` to the endpoint and its own query,
 * so accept the full socket URL too and move any query into `params`.
 */
const splitEndpoint = (url: string): { endpoint: string; query: Record<string, string> } => {
  const parsed = new URL(url)
  const query: Record<string, string> = {}
  parsed.searchParams.forEach((value, key) => {
    query[key] = value
  })
  parsed.search = ""
  parsed.hash = ""
  const endpoint = parsed.toString().replace(/\/$/, "").replace(/\/websocket$/, "")
  return { endpoint, query }
}

const closeDetails = (event: unknown): SocketCloseInfo => {
  const e = (typeof event === "object" && event !== null ? event : {}) as {
    code?: unknown
    reason?: unknown
    wasClean?: unknown
  }
  return {
    code: typeof e.code === "number" ? e.code : 1006,
    reason: typeof e.reason === "string" ? e.reason : "",
    wasClean: e.wasClean === true
  }
}

const errorMessage = (error: unknown): string => {
  if (error instanceof Error) return error.message
  if (typeof error === "object" && error !== null && "message" in error) return String(error.message)
  return String(error)
}

/**
 * Connects a phoenix client socket to the gateway. `url` is the socket
 * endpoint, e.g. `ws://127.0.0.1:4000/socket` (a trailing `/websocket` is
 * accepted). Resolves once open; rejects with a `SocketConnectError` otherwise.
 */
export const connectSocket = (url: string, options: ConnectOptions): Promise<ConnectedSocket> => {
  const { endpoint, query } = splitEndpoint(url)
  const params: Record<string, string> = { ...query, app: options.app, ...options.params }
  if (options.token !== undefined) params["token"] = options.token
  if (options.clientType !== undefined) params["client_type"] = options.clientType
  const reconnect = options.reconnect === true
  const timeoutMs = options.timeoutMs ?? defaultWaitMs

  let lastRejection: RawRejection | undefined
  let transport: new (endpoint: string) => object
  if (options.transport === "native") {
    if (options.origin !== undefined || options.headers !== undefined) {
      throw new Error("connectSocket: origin and headers need the ws transport")
    }
    transport = globalThis.WebSocket
  } else {
    const headers: Record<string, string> = { ...options.headers }
    const clientOptions: ClientOptions = options.origin === undefined
      ? { headers }
      : { headers, origin: options.origin }
    transport = makeWsTransport(clientOptions, (ws) => {
      lastRejection = undefined
      captureRejection(ws, (rejection) => {
        lastRejection = rejection
      })
    })
  }

  const socket = new Socket(endpoint, {
    params,
    transport,
    ...(options.vsn === undefined ? {} : { vsn: options.vsn }),
    ...(options.authToken === undefined ? {} : { authToken: options.authToken }),
    ...(options.pushTimeoutMs === undefined ? {} : { timeout: options.pushTimeoutMs }),
    ...(options.heartbeatIntervalMs === undefined ? {} : { heartbeatIntervalMs: options.heartbeatIntervalMs }),
    ...(options.logger === undefined ? {} : { logger: options.logger })
  })

  let opened = false
  let resolveClosed: (info: SocketCloseInfo) => void = () => {}
  const closed = new Promise<SocketCloseInfo>((resolve) => {
    resolveClosed = resolve
  })
  const connected: ConnectedSocket = {
    socket,
    closed,
    join: (topic, payload, joinOptions) => join(socket, topic, payload, joinOptions),
    close: async (code, reason) => {
      if (!opened) {
        socket.disconnect()
        return
      }
      const wasOpen = socket.isConnected()
      socket.disconnect(undefined, code, reason)
      if (wasOpen) await closed
    }
  }

  return withTimeout<ConnectedSocket>(`opening ${endpoint}/websocket`, timeoutMs, (resolve, reject) => {
    let lastError: unknown
    socket.onOpen(() => {
      opened = true
      resolve(connected)
    })
    socket.onError((error) => {
      lastError = error
    })
    socket.onClose((event) => {
      const info = closeDetails(event)
      if (opened) {
        resolveClosed(info)
        // The client has already scheduled a reconnect; disconnect() cancels it.
        if (!reconnect) socket.disconnect()
        return
      }
      if (reconnect) return
      socket.disconnect()
      const rejection = lastRejection
      if (rejection !== undefined) {
        reject(new SocketConnectError(`upgrade refused with HTTP ${rejection.status}: ${rejection.rawBody}`, {
          status: rejection.status,
          body: parseMaybeJson(rejection.rawBody),
          code: info.code,
          reason: info.reason
        }))
      } else {
        const cause = lastError === undefined ? "" : `: ${errorMessage(lastError)}`
        reject(new SocketConnectError(`socket closed before opening (${info.code})${cause}`, {
          code: info.code,
          reason: info.reason
        }))
      }
    })
    socket.connect()
  }, () => socket.disconnect())
}

/**
 * Stops a channel's rejoin timer and detaches it from its socket. The client
 * has no public way to give up on a join short of `leave()`, which would also
 * send a `phx_leave` the test did not ask for.
 */
const abandon = (socket: Socket, channel: Channel): void => {
  const timer = (channel as unknown as { rejoinTimer?: { reset(): void } }).rejoinTimer
  if (timer !== undefined) {
    timer.reset()
    socket.remove(channel)
  } else {
    channel.leave()
  }
}

/**
 * Joins `topic` and resolves with the server's answer (`ok` or `error` with
 * its `{reason}`); rejects if no answer comes within the timeout.
 */
export const join = <R = unknown>(
  socket: ConnectedSocket | Socket,
  topic: string,
  payload: object = {},
  options: JoinOptions = {}
): Promise<JoinResult<R>> => {
  const phoenixSocket = socket instanceof Socket ? socket : socket.socket
  const channel = phoenixSocket.channel(topic, payload)
  const rejoin = options.rejoin === true
  return new Promise<JoinResult<R>>((resolve, reject) => {
    const push = options.timeoutMs === undefined ? channel.join() : channel.join(options.timeoutMs)
    push
      .receive("ok", (response: R) => resolve({ status: "ok", response, channel }))
      .receive("error", (response: R) => {
        if (!rejoin) abandon(phoenixSocket, channel)
        resolve({ status: "error", response, channel })
      })
      .receive("timeout", () => {
        if (!rejoin) abandon(phoenixSocket, channel)
        reject(new Error(`join of ${topic} timed out`))
      })
  })
}

/** Pushes an event and resolves with whichever comes first: `ok`, `error` or `timeout`. */
export const push = <R = unknown>(
  channel: Channel,
  event: string,
  payload: object = {},
  timeoutMs?: number
): Promise<PushResult<R>> =>
  new Promise<PushResult<R>>((resolve) => {
    const sent = timeoutMs === undefined ? channel.push(event, payload) : channel.push(event, payload, timeoutMs)
    sent
      .receive("ok", (response: R) => resolve({ status: "ok", response }))
      .receive("error", (response: R) => resolve({ status: "error", response }))
      .receive("timeout", (response: R) => resolve({ status: "timeout", response }))
  })

/** Resolves with the payload of the next `event` received on the channel. */
export const nextMessage = <T = unknown>(
  channel: Channel,
  event: string,
  timeoutMs: number = defaultWaitMs
): Promise<T> => {
  let ref: number | undefined
  const unsubscribe = () => {
    if (ref !== undefined) channel.off(event, ref)
  }
  return withTimeout<T>(`"${event}" on ${channel.topic}`, timeoutMs, (resolve) => {
    ref = channel.on(event, (payload: T) => {
      unsubscribe()
      resolve(payload)
    })
  }, unsubscribe)
}

export interface Collector<T> {
  /** Payloads received so far, in order (a live array). */
  readonly items: ReadonlyArray<T>
  /** Resolves once at least `count` payloads were received. */
  until(count: number, timeoutMs?: number): Promise<ReadonlyArray<T>>
  /** Stops collecting. */
  stop(): void
}

/** Collects every payload of `event` on the channel from now on. */
export const collect = <T = unknown>(channel: Channel, event: string): Collector<T> => {
  const items: Array<T> = []
  const wakers = new Set<() => void>()
  const ref = channel.on(event, (payload: T) => {
    items.push(payload)
    for (const wake of wakers) wake()
  })
  return {
    items,
    until: (count, timeoutMs = defaultWaitMs) => {
      let wake: () => void = () => {}
      return withTimeout<ReadonlyArray<T>>(() => `${count} "${event}" on ${channel.topic} (got ${items.length})`, timeoutMs, (resolve) => {
        wake = () => {
          if (items.length >= count) {
            wakers.delete(wake)
            resolve(items)
          }
        }
        wakers.add(wake)
        wake()
      }, () => wakers.delete(wake))
    },
    stop: () => channel.off(event, ref)
  }
}
