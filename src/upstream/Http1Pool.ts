/**
 * Keep-alive HTTP/1.1 connections to one app origin: the client under every
 * call the gateway makes to an app.
 *
 * It does only what those calls need (one request at a time per connection,
 * string bodies, answers read whole), because every connection and every push
 * makes one: a request goes out in a single write, and the answer is read by
 * a small parser (status line, headers, then a body delimited by
 * `Content-Length`, chunked encoding or the end of the connection). In place
 * of undici's dispatch, it took the gateway's CPU per connection on the
 * connect benchmark (an auth call and two notifications each) from 415–507 µs
 * to 279–330 µs; most of what a call still costs is its two system calls.
 *
 * How many requests are on the wire at once is the caller's business (the
 * upstream's `TaskQueue` per app); the pool opens a connection whenever none
 * is idle. Idle connections are kept for `idleMs`, or for what the app
 * announces in `Keep-Alive: timeout=N` less a margin, so that the app does not
 * close one just as a request is written to it.
 */
import { isIP, Socket } from "node:net"
import { connect as connectTls } from "node:tls"
import type { ConnectionOptions } from "node:tls"

export interface HttpAnswer {
  readonly status: number
  readonly headers: Readonly<Record<string, string | ReadonlyArray<string>>>
  readonly body: string
}

/** Called exactly once per request: with why it failed, or with the answer. */
export type HttpCallback = (error: Error | undefined, answer: HttpAnswer | undefined) => void

export interface Http1PoolOptions {
  /** `http:` or `https:` origin, as `URL.origin` gives it. */
  readonly origin: string
  readonly connectTimeoutMs: number
  /** Bytes of body accepted in an answer, chunked framing included; a larger one fails the request. */
  readonly maxAnswerBytes: number
  /** How long an unused connection is kept when the app does not say. */
  readonly idleMs: number
  /** For `https:` origins, added to the defaults (a test's own CA). */
  readonly tls?: ConnectionOptions
}

/** Taken off what the app announces, so that a connection is never reused just as the app closes it. */
const KEEP_ALIVE_MARGIN_MS = 2_000
/** Status lines, headers and trailers of an answer (interim answers included), at most: node's own limit. */
const MAX_HEAD_BYTES = 16 * 1024
/** A chunk-size line (with extensions) or a trailer line, at most. */
const MAX_LINE_BYTES = 4 * 1024

const HEADER_NAME = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/
const UNSAFE_HEADER_VALUE = /[\r\n\0]/
const CHUNK_SIZE = /^[0-9a-fA-F]{1,8}$/
const CONTENT_LENGTH = /^\d{1,15}$/
const KEEP_ALIVE_TIMEOUT = /(?:^|[,;\s])timeout=(\d+)/i

/**
 * The text of one request, head and body, ready for a single write. Throws a
 * `TypeError` for a header that would break the request's framing.
 */
export const formatRequest = (
  method: "GET" | "POST",
  host: string,
  path: string,
  headers: Readonly<Record<string, string>>,
  body: string | undefined
): string => {
  let text = `${method} ${path} HTTP/1.1\r\nhost: ${host}\r\n`
  for (const name in headers) {
    const value = headers[name]!
    if (!HEADER_NAME.test(name) || UNSAFE_HEADER_VALUE.test(value)) {
      throw new TypeError(`invalid request header ${JSON.stringify(name)}`)
    }
    text += `${name}: ${value}\r\n`
  }
  if (body === undefined) return `${text}\r\n`
  return `${text}content-length: ${Buffer.byteLength(body)}\r\n\r\n${body}`
}

class MalformedAnswer extends Error {
  override readonly name = "MalformedAnswer"
}

const isSpace = (char: number) => char === 32 || char === 9

/** The status code of a status line, 100 to 599; 0 when it is not one. */
const statusCode = (line: string): number => {
  const hundreds = line.charCodeAt(9) - 48
  const tens = line.charCodeAt(10) - 48
  const units = line.charCodeAt(11) - 48
  if (hundreds < 1 || hundreds > 5 || tens < 0 || tens > 9 || units < 0 || units > 9) return 0
  return hundreds * 100 + tens * 10 + units
}

/**
 * The bytes, copied out when they are a small part of a larger read buffer:
 * kept as a view, a few bytes of body would hold the whole buffer in memory
 * until the answer is complete.
 */
const ownBytes = (part: Buffer): Buffer => (part.length * 2 < part.buffer.byteLength ? Buffer.from(part) : part)

/** Where an answer's reader is. */
const Phase = {
  Head: 0,
  Fixed: 1,
  ChunkSize: 2,
  ChunkData: 3,
  ChunkEnd: 4,
  Trailers: 5,
  UntilClose: 6,
  Done: 7
} as const
type Phase = typeof Phase[keyof typeof Phase]

/** Reads one answer at a time from a connection's bytes. */
class AnswerReader {
  status = 0
  headers: Record<string, string | Array<string>> = {}
  /** Whether the connection may carry another request after this answer. */
  reusable = true
  /** What the app announced in `Keep-Alive: timeout=N`, in milliseconds. */
  keepAliveMs: number | undefined
  private phase: Phase = Phase.Head
  /** Bytes of a line (head, chunk size, trailer) not complete yet. */
  private pending: Buffer | undefined
  /** Bytes left of the body or of the current chunk. */
  private remaining = 0
  private parts: Array<Buffer> = []
  private size = 0
  /** Bytes of heads and trailers read so far. */
  private headBytes = 0
  private readonly maxBytes: number

  constructor(maxBytes: number) {
    this.maxBytes = maxBytes
  }

  reset(): void {
    this.status = 0
    this.headers = {}
    this.reusable = true
    this.keepAliveMs = undefined
    this.phase = Phase.Head
    this.pending = undefined
    this.parts = []
    this.size = 0
    this.headBytes = 0
  }

  /** Whether any byte of an answer (an interim one included) arrived. */
  get started(): boolean {
    return this.headBytes > 0 || this.phase !== Phase.Head || this.pending !== undefined
  }

  body(): string {
    return this.parts.length === 1 ? this.parts[0]!.toString() : Buffer.concat(this.parts).toString()
  }

  /** Takes the next bytes; true once the answer is complete. Throws `MalformedAnswer`. */
  feed(chunk: Buffer): boolean {
    let data = chunk
    if (this.pending !== undefined) {
      data = Buffer.concat([this.pending, chunk])
      this.pending = undefined
    }
    let at = 0
    while (at < data.length) {
      switch (this.phase) {
        case Phase.Head: {
          const end = data.indexOf("\r\n\r\n", at, "latin1")
          if (end < 0) {
            // lines ended by a bare LF would never end the head: the call would wait for its timeout
            if (data.indexOf("\n\n", at, "latin1") >= 0) throw new MalformedAnswer("answer lines not ended by CRLF")
            return this.keep(data, at, MAX_HEAD_BYTES - this.headBytes, "answer head")
          }
          this.countHead(end + 4 - at)
          this.readHead(data.toString("latin1", at, end))
          at = end + 4
          break
        }
        case Phase.Fixed:
        case Phase.ChunkData: {
          const end = Math.min(data.length, at + this.remaining)
          this.take(data.subarray(at, end))
          this.remaining -= end - at
          at = end
          if (this.remaining === 0) this.phase = this.phase === Phase.Fixed ? Phase.Done : Phase.ChunkEnd
          break
        }
        case Phase.UntilClose:
          this.take(at === 0 ? data : data.subarray(at))
          return false
        case Phase.ChunkEnd: {
          if (data.length - at < 2) return this.keep(data, at, 2, "chunk")
          if (data[at] !== 13 || data[at + 1] !== 10) throw new MalformedAnswer("chunk not followed by CRLF")
          this.countBody(2)
          at += 2
          this.phase = Phase.ChunkSize
          break
        }
        case Phase.ChunkSize:
        case Phase.Trailers: {
          const end = data.indexOf("\r\n", at, "latin1")
          if (end < 0) return this.keep(data, at, MAX_LINE_BYTES, "chunk line")
          const line = data.toString("latin1", at, end)
          at = end + 2
          if (this.phase === Phase.Trailers) {
            this.countHead(line.length + 2)
            if (line === "") this.phase = Phase.Done
          } else {
            // framing counts as body: else tiny chunks with long extensions make an endless answer
            this.countBody(line.length + 2)
            const semicolon = line.indexOf(";")
            const digits = (semicolon < 0 ? line : line.slice(0, semicolon)).trim()
            if (!CHUNK_SIZE.test(digits)) throw new MalformedAnswer("invalid chunk size")
            this.remaining = parseInt(digits, 16)
            this.phase = this.remaining === 0 ? Phase.Trailers : Phase.ChunkData
          }
          break
        }
        case Phase.Done:
          break
      }
      if (this.phase === Phase.Done) {
        // bytes after the answer were never asked for: the connection cannot be trusted again
        if (at < data.length) this.reusable = false
        return true
      }
    }
    return this.phase === Phase.Done
  }

  /** The app closed its side: completes a body that runs until then. */
  end(): boolean {
    if (this.phase !== Phase.UntilClose) return false
    this.phase = Phase.Done
    return true
  }

  private keep(data: Buffer, at: number, limit: number, what: string): false {
    if (data.length - at > limit) throw new MalformedAnswer(`${what} too large`)
    this.pending = ownBytes(data.subarray(at))
    return false
  }

  private countHead(bytes: number): void {
    this.headBytes += bytes
    if (this.headBytes > MAX_HEAD_BYTES) throw new MalformedAnswer("answer head too large")
  }

  private countBody(bytes: number): void {
    this.size += bytes
    if (this.size > this.maxBytes) throw new MalformedAnswer(`answer body larger than ${this.maxBytes} bytes`)
  }

  private take(part: Buffer): void {
    this.countBody(part.length)
    this.parts.push(ownBytes(part))
  }

  private readHead(head: string): void {
    // "HTTP/1.x SSS reason", read by position: this runs for every call
    const statusEnd = head.indexOf("\r\n")
    const statusLength = statusEnd < 0 ? head.length : statusEnd
    const code = statusLength >= 12 && head.startsWith("HTTP/1.") && head.charCodeAt(8) === 32 &&
        (statusLength === 12 || head.charCodeAt(12) === 32)
      ? statusCode(head)
      : 0
    const minor = head.charCodeAt(7)
    if (code === 0 || (minor !== 48 && minor !== 49) || UNSAFE_HEADER_VALUE.test(head.slice(13, statusLength))) {
      throw new MalformedAnswer("not an HTTP/1.x answer")
    }
    const headers: Record<string, string | Array<string>> = {}
    let at = statusEnd < 0 ? head.length : statusEnd + 2
    while (at < head.length) {
      let end = head.indexOf("\r\n", at)
      if (end < 0) end = head.length
      const colon = head.indexOf(":", at)
      // refused like node does: no name, white space around it (a line starting with it continues the
      // previous one: obsolete folding), or a bare CR, LF or NUL in the value
      if (colon <= at || colon >= end || !HEADER_NAME.test(head.slice(at, colon))) throw new MalformedAnswer("malformed header line")
      let from = colon + 1
      let to = end
      while (from < to && isSpace(head.charCodeAt(from))) from++
      while (to > from && isSpace(head.charCodeAt(to - 1))) to--
      const value = head.slice(from, to)
      if (UNSAFE_HEADER_VALUE.test(value)) throw new MalformedAnswer("malformed header line")
      const name = head.slice(at, colon).toLowerCase()
      at = end + 2
      // assigning it would set the object's prototype
      if (name === "__proto__") continue
      const previous = Object.hasOwn(headers, name) ? headers[name] : undefined
      headers[name] = previous === undefined ? value : typeof previous === "string" ? [previous, value] : [...previous, value]
    }
    if (code === 101) throw new MalformedAnswer("the app switched protocols")
    // 100 Continue, 103 Early Hints: the answer follows
    if (code < 200) return
    this.status = code
    this.headers = headers
    const connection = String(headers["connection"] ?? "").toLowerCase()
    this.reusable = minor === 49 ? !connection.includes("close") : connection.includes("keep-alive")
    const keepAlive = KEEP_ALIVE_TIMEOUT.exec(String(headers["keep-alive"] ?? ""))
    if (keepAlive !== null) this.keepAliveMs = Number(keepAlive[1]) * 1000
    const transferEncoding = headers["transfer-encoding"]
    const contentLength = headers["content-length"]
    if (code === 204 || code === 304) {
      // never a body, whatever the headers say
      this.phase = Phase.Done
    } else if (transferEncoding !== undefined) {
      // both lengths, or chunks from HTTP/1.0: read as the RFC says, but not trusted with another request
      if (contentLength !== undefined || minor === 48) this.reusable = false
      if (/(?:^|,)\s*chunked\s*$/i.test(String(transferEncoding))) {
        this.phase = Phase.ChunkSize
      } else {
        this.phase = Phase.UntilClose
        this.reusable = false
      }
    } else if (contentLength !== undefined) {
      if (typeof contentLength !== "string" || !CONTENT_LENGTH.test(contentLength)) {
        throw new MalformedAnswer("invalid content-length")
      }
      this.remaining = Number(contentLength)
      if (this.remaining > this.maxBytes) throw new MalformedAnswer(`answer body larger than ${this.maxBytes} bytes`)
      this.phase = this.remaining === 0 ? Phase.Done : Phase.Fixed
    } else {
      this.phase = Phase.UntilClose
      this.reusable = false
    }
  }
}

/** One request, from `send` until it is answered or fails. */
interface Exchange {
  readonly text: string
  readonly replayable: boolean
  readonly done: HttpCallback
  /** The connection carrying it: after a retry, the second one. */
  connection: Connection | undefined
}

/** One connection to the app, carrying one request at a time. */
class Connection {
  readonly socket: Socket
  private readonly pool: Http1Pool
  private readonly reader: AnswerReader
  private connectTimer: NodeJS.Timeout | undefined
  private exchange: Exchange | undefined
  /** Whether it carried an answer before the current request. */
  private reused = false
  /** Why the gateway closed it; otherwise the app (or the network) did. */
  private closedBecause: Error | undefined
  private failure: Error | undefined

  constructor(pool: Http1Pool, socket: Socket, maxAnswerBytes: number, connectTimeoutMs: number) {
    this.pool = pool
    this.socket = socket
    this.reader = new AnswerReader(maxAnswerBytes)
    socket.setNoDelay(true)
    // the whole of the connect (and TLS handshake), not a pause in it
    this.connectTimer = setTimeout(() => this.close(new Error(`connect timed out after ${connectTimeoutMs} ms`)), connectTimeoutMs)
    socket.once(pool.secure ? "secureConnect" : "connect", () => {
      clearTimeout(this.connectTimer)
      this.connectTimer = undefined
    })
    socket.on("timeout", () => this.close(undefined))
    socket.on("data", (chunk: Buffer) => this.received(chunk))
    socket.on("end", () => this.ended())
    socket.on("error", (error) => {
      this.failure = error
    })
    socket.on("close", () => this.closed())
  }

  get open(): boolean {
    return !this.socket.destroyed
  }

  send(exchange: Exchange): void {
    this.exchange = exchange
    exchange.connection = this
    this.reader.reset()
    this.socket.write(exchange.text)
  }

  abandon(exchange: Exchange): void {
    if (this.exchange === exchange) this.close(new Error("abandoned"))
  }

  /** Closed by the gateway; `reason` is what the request in flight, if any, fails with. */
  close(reason: Error | undefined): void {
    this.closedBecause ??= reason ?? new Error("closed by the gateway")
    this.socket.destroy()
  }

  /** Kept for another request, until `ms` from now. */
  park(ms: number): void {
    this.socket.setTimeout(ms)
  }

  /** Taken from the idle connections for a request. */
  unpark(): void {
    this.socket.setTimeout(0)
    this.reused = true
  }

  private received(chunk: Buffer): void {
    // nothing was asked: an app that talks out of turn cannot be trusted with the next request
    if (this.exchange === undefined) return this.close(undefined)
    let complete: boolean
    try {
      complete = this.reader.feed(chunk)
    } catch (error) {
      return this.close(error as Error)
    }
    if (complete) this.answered()
  }

  private ended(): void {
    if (this.exchange !== undefined && this.reader.end()) return this.answered()
    this.socket.destroy()
  }

  private answered(): void {
    const { done } = this.exchange!
    this.exchange = undefined
    const reader = this.reader
    const answer: HttpAnswer = { status: reader.status, headers: reader.headers, body: reader.body() }
    // handed back before the caller hears, so that the caller's next request can take it
    if (reader.reusable) this.pool.parked(this, reader.keepAliveMs)
    else this.close(undefined)
    done(undefined, answer)
  }

  private closed(): void {
    clearTimeout(this.connectTimer)
    this.pool.gone(this)
    const exchange = this.exchange
    if (exchange === undefined) return
    this.exchange = undefined
    if (this.closedBecause !== undefined) return exchange.done(this.closedBecause, undefined)
    // A kept connection the app closed before a byte of the answer: most
    // likely closed while idle, as the request went out. See `send`.
    if (exchange.replayable && this.reused && !this.reader.started) return this.pool.retry(exchange)
    const reason = this.failure ??
      new Error(this.reader.started ? "the app closed the connection mid-answer" : "the app closed the connection before answering")
    exchange.done(reason, undefined)
  }
}

export class Http1Pool {
  readonly secure: boolean
  private readonly options: Http1PoolOptions
  private readonly host: string
  private readonly port: number
  private readonly hostHeader: string
  private readonly all = new Set<Connection>()
  /** Most recently parked last: it is the one taken next, so the others can expire. */
  private readonly idle: Array<Connection> = []
  private closing = false
  private onEmpty: Array<() => void> = []
  /** The last TLS session, resumed by the next connection. */
  private tlsSession: Buffer | undefined

  constructor(options: Http1PoolOptions) {
    const url = new URL(options.origin)
    if (url.protocol !== "http:" && url.protocol !== "https:") throw new TypeError(`unsupported protocol ${url.protocol}`)
    this.options = options
    this.secure = url.protocol === "https:"
    this.host = url.hostname.startsWith("[") ? url.hostname.slice(1, -1) : url.hostname
    this.port = url.port === "" ? (this.secure ? 443 : 80) : Number(url.port)
    this.hostHeader = url.host
  }

  /** Connections kept for the next request. */
  get idleCount(): number {
    return this.idle.length
  }

  /** The request text for `send`; see `formatRequest`. */
  format(method: "GET" | "POST", path: string, headers: Readonly<Record<string, string>>, body: string | undefined) {
    return formatRequest(method, this.hostHeader, path, headers, body)
  }

  /**
   * Sends one request on an idle connection or a new one. `done` is called
   * exactly once, possibly before `send` returns; the returned function
   * abandons the request (its connection is closed, `done` gets the error).
   *
   * A `replayable` request (one the app may safely see twice) whose kept
   * connection turns out to have been closed by the app (no byte of an
   * answer, the connection gone) is sent once more on a new connection: most
   * likely the app closed it while idle and never read the request. Others
   * fail: the app may have acted on them before it went away.
   */
  send(text: string, replayable: boolean, done: HttpCallback): () => void {
    const exchange: Exchange = { text, replayable, done, connection: undefined }
    let connection = this.idle.pop()
    // one the app closed a moment ago may still be listed
    while (connection !== undefined && !connection.open) connection = this.idle.pop()
    if (connection === undefined) {
      this.dispatch(exchange)
    } else {
      connection.unpark()
      connection.send(exchange)
    }
    return () => exchange.connection?.abandon(exchange)
  }

  /** @internal Sends a request again, on a new connection. */
  retry(exchange: Exchange): void {
    exchange.connection = undefined
    this.dispatch(exchange)
  }

  /** Sends a request on a new connection. */
  private dispatch(exchange: Exchange): void {
    if (this.closing) return exchange.done(new Error("the connection pool is closed"), undefined)
    let connection: Connection
    try {
      connection = this.open()
    } catch (error) {
      return exchange.done(error as Error, undefined)
    }
    connection.send(exchange)
  }

  /** Resolves once no request is in flight; idle connections close at once, busy ones after their answer. */
  close(): Promise<void> {
    this.closing = true
    for (const connection of this.idle.splice(0)) connection.close(undefined)
    if (this.all.size === 0) return Promise.resolve()
    return new Promise((resolve) => this.onEmpty.push(resolve))
  }

  /** Closes every connection now; requests in flight fail. */
  destroy(): void {
    this.closing = true
    const reason = new Error("the gateway closed its connections to the app (shutting down)")
    for (const connection of this.all) connection.close(reason)
  }

  /** @internal A connection's answer is complete and it may carry another request. */
  parked(connection: Connection, announcedMs: number | undefined): void {
    const ms = announcedMs === undefined ? this.options.idleMs : Math.min(this.options.idleMs, announcedMs - KEEP_ALIVE_MARGIN_MS)
    if (this.closing || ms <= 0) return connection.close(undefined)
    connection.park(ms)
    this.idle.push(connection)
  }

  /** @internal A connection closed, for whatever reason. */
  gone(connection: Connection): void {
    this.all.delete(connection)
    const index = this.idle.lastIndexOf(connection)
    if (index >= 0) this.idle.splice(index, 1)
    if (this.all.size > 0 || this.onEmpty.length === 0) return
    const waiting = this.onEmpty
    this.onEmpty = []
    for (const resolve of waiting) resolve()
  }

  private open(): Connection {
    let socket: Socket
    if (this.secure) {
      const tls = connectTls({
        host: this.host,
        port: this.port,
        ALPNProtocols: ["http/1.1"],
        ...(isIP(this.host) === 0 ? { servername: this.host } : {}),
        ...(this.tlsSession === undefined ? {} : { session: this.tlsSession }),
        ...this.options.tls
      })
      tls.on("session", (session: Buffer) => {
        this.tlsSession = session
      })
      socket = tls
    } else {
      socket = new Socket().connect({ host: this.host, port: this.port })
    }
    const connection = new Connection(this, socket, this.options.maxAnswerBytes, this.options.connectTimeoutMs)
    this.all.add(connection)
    return connection
  }
}
