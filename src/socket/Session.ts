/**
 * One client connection after a successful upgrade: it multiplexes channels
 * over the socket, answers heartbeats, enforces the per-connection channel cap
 * and rate limits (frames of any kind, joins and leaves, channel churn), and
 * answers every push that carries a ref exactly once.
 *
 * Sessions are plain objects driven by `ws` events, not fibers: a node holds
 * many thousands of them, so each keeps only its own state and one reference
 * to the node-wide `SessionHub` that holds the shared services.
 */
import type { Duplex } from "node:stream"
import { WebSocket } from "ws"
import type { RegisteredApp } from "../apps/AppRegistry.ts"
import type { ChannelMatch, CompiledEvent } from "../apps/CompiledSchema.ts"
import type { Identity } from "../auth/Auth.ts"
import type { PresenceEntry } from "../cluster/messages.ts"
import type { NotifyEvent } from "../contract/Notifications.ts"
import type { AppMetrics, ClosedBy } from "../observability/Metrics.ts"
import type { TraceSpan, TracingShape } from "../observability/Tracing.ts"
import { CloseCode, Event, MAX_BINARY_FIELD_BYTES, PHOENIX_TOPIC } from "../protocol/constants.ts"
import type { Frame } from "../protocol/Frame.ts"
import { ReplyReason } from "../protocol/reasons.ts"
import type { Serializer } from "../protocol/Serializer.ts"
import * as TokenBucket from "../ratelimit/TokenBucket.ts"
import { wireFrame } from "../transport/WireFrame.ts"

/** Longest topic a client may join (also the V2 binary frame's limit for a topic field). */
const MAX_TOPIC_LENGTH = MAX_BINARY_FIELD_BYTES

/**
 * Milliseconds of a monotonic clock, whole (token buckets count in whole ms):
 * idle times and rate limits must not jump when the wall clock is stepped.
 */
export const monotonicMs = (): number => Math.floor(performance.now())

/** A per-connection rate: `capacity` tokens (the burst), refilled evenly over `windowMs`. */
export interface BucketLimit {
  readonly capacity: number
  readonly windowMs: number
}

export const bucketLimit = (perSecond: number, burst: number): BucketLimit => ({
  capacity: burst,
  windowMs: Math.max(1, Math.round((burst * 1000) / perSecond))
})

/** Lifecycle events the app is notified of (CONTRACT §3, notify). */
export type LifecycleEvent = NotifyEvent

/** Node-wide services and limits every session uses; one instance per node. */
export interface SessionHub {
  readonly maxChannelsPerConnection: number
  readonly maxOutboxBytes: number
  /** Frames of any kind; past it the connection is closed (1008). */
  readonly frameLimit: BucketLimit
  /** Joins (refused past it) and leaves (which spend a token but are never refused). */
  readonly joinLimit: BucketLimit
  /** Leaves and re-joins of a joined topic; past it joins are refused (see `join`). */
  readonly churnLimit: BucketLimit
  readonly tracing: TracingShape
  readonly subscribe: (session: Session, topic: string) => void
  readonly unsubscribe: (session: Session, topic: string) => void
  /** Whether the session's app may have one more presence on the topic (a bound per app and node). */
  readonly admitsPresence: (session: Session, topic: string) => boolean
  /** Makes the join present on its presence channel and sends the joiner `presence_state`. */
  readonly track: (session: Session, topic: string, join: Join) => void
  readonly untrack: (session: Session, topic: string, join: Join) => void
  readonly notify: (session: Session, event: LifecycleEvent, topic: string | null) => void
  /** Handles a push on a joined topic; must call `session.reply` exactly once when `frame.ref` is set. */
  readonly push: (session: Session, frame: Frame, join: Join, bytes: number) => void
  /** The session is being closed (1008) for sending frames faster than its limit. */
  readonly flooded: (session: Session) => void
  /** The connection is gone: `code` and `reason` as the closing handshake had them (1006 without one). */
  readonly closed: (session: Session, closure: Closure) => void
  /** An unexpected error while handling the session's frame (logged; the session is closed). */
  readonly failed: (session: Session, error: unknown) => void
  /** A frame that could not be decoded (logged; the session is closed with 1007). */
  readonly undecodable: (session: Session, what: string) => void
}

/** How a connection ended. */
export interface Closure {
  readonly code: number
  readonly reason: string
  readonly closedBy: ClosedBy
}

/** Longest close reason a client sends that is kept (the protocol allows 123 bytes). */
const MAX_CLIENT_REASON_LENGTH = 123

/** One joined channel of a session. */
export interface Join {
  readonly joinRef: string | null
  readonly match: ChannelMatch
  /** Set while the join is tracked on a presence channel. */
  presence: PresenceEntry | undefined
  /**
   * Set once the joiner has been sent its own `presence_state`; until then a
   * state broadcast to the topic is not for it (the `phoenix` client's
   * `Presence` would apply the diffs it holds back too early).
   */
  presenceStateSent?: boolean
  /** Whether the join may send each event, worked out on its first push (see the push handler). */
  sendChecks?: WeakMap<CompiledEvent, SendCheck>
}

/** The outcome of the checks of a push that depend only on its join and event. */
export type SendCheck = "allowed" | typeof ReplyReason.invalidEventForChannel | typeof ReplyReason.unauthorized

export class Session {
  readonly connectionId: string
  readonly app: RegisteredApp
  readonly identity: Identity
  readonly serializer: Serializer
  readonly metrics: AppMetrics
  /** Wall-clock time of the upgrade (for listings). */
  readonly connectedAt: number
  /** `monotonicMs()` of the last frame received. */
  lastSeen: number
  /** Pushes forwarded to the app and not answered yet, and their frames' bytes (bounded by the push handler). */
  pushesInFlight = 0
  pushBytesInFlight = 0
  readonly joins = new Map<string, Join>()
  private readonly socket: WebSocket
  /** The TCP socket under `socket`, which frames from `wireFrame` are written to directly. */
  private readonly stream: Duplex
  private readonly hub: SessionHub
  private open = true
  private readonly frames: TokenBucket.TokenBucket
  // made when first spent (a bucket not made yet is full): most connections join a few topics and stay
  private joinsAndLeaves: TokenBucket.TokenBucket | undefined
  private churn: TokenBucket.TokenBucket | undefined
  /** Set when this side ended the connection, with why. */
  private serverReason: string | undefined

  constructor(options: {
    readonly connectionId: string
    readonly app: RegisteredApp
    readonly identity: Identity
    readonly serializer: Serializer
    readonly metrics: AppMetrics
    readonly socket: WebSocket
    readonly stream: Duplex
    readonly hub: SessionHub
  }) {
    this.connectionId = options.connectionId
    this.app = options.app
    this.identity = options.identity
    this.serializer = options.serializer
    this.metrics = options.metrics
    this.socket = options.socket
    this.stream = options.stream
    this.hub = options.hub
    this.connectedAt = Date.now()
    this.lastSeen = monotonicMs()
    this.frames = TokenBucket.make(this.hub.frameLimit.capacity, this.hub.frameLimit.windowMs, this.lastSeen)
    this.socket.on("message", (data, isBinary) => {
      try {
        this.receive(data as Buffer, isBinary)
      } catch (error) {
        // a bug must cost this connection only, never the node
        this.hub.failed(this, error)
        this.close(CloseCode.internalError, "internal error")
      }
    })
    this.socket.on("close", (code, reason) => this.onClose(code, reason))
    // `ws` reports a frame it refuses (over the size limit, malformed) here,
    // after it has begun the closing handshake with the matching code (1009,
    // 1002): destroying the socket now would lose that close frame. `ws`
    // drains what the client still sends and ends the connection itself.
    this.socket.on("error", () => {})
    this.hub.notify(this, "connection:established", null)
  }

  /** Writes an encoded message (a string as a text frame, a Buffer as a binary one). */
  send(message: string | Buffer): void {
    this.sendFrame(wireFrame(message))
  }

  /**
   * Writes a frame made by `wireFrame` (one frame may go to many sessions). A
   * client that lets its outbox grow past the limit is dropped: nobody else
   * waits for it. Nothing is written once the closing handshake has begun.
   */
  sendFrame(frame: Buffer): void {
    if (this.socket.readyState !== WebSocket.OPEN) return
    // `ws` counts what is queued on the TCP socket, so this covers these writes too
    if (this.socket.bufferedAmount > this.hub.maxOutboxBytes) {
      this.metrics.slowConsumerDisconnected()
      this.terminate("slow consumer: outbox over the limit")
      return
    }
    this.stream.write(frame)
  }

  /** Whether a `presence_state` broadcast to `topic` may go to this session now. */
  acceptsPresenceState(topic: string): boolean {
    const join = this.joins.get(topic)
    return join === undefined || join.presence === undefined || join.presenceStateSent === true
  }

  reply(frame: Pick<Frame, "joinRef" | "ref" | "topic">, status: "ok" | "error", response: unknown): void {
    if (frame.ref === null) return
    this.send(this.serializer.encodeReply(frame.joinRef, frame.ref, frame.topic, status, response))
  }

  replyError(frame: Pick<Frame, "joinRef" | "ref" | "topic">, reason: string, extra?: Record<string, unknown>): void {
    this.reply(frame, "error", extra === undefined ? { reason } : { reason, ...extra })
  }

  close(code: number, reason: string): void {
    if (!this.open) return
    this.serverReason ??= reason
    this.socket.close(code, reason)
  }

  /** Drops the connection without a closing handshake (the client is not reading). */
  terminate(reason: string): void {
    if (this.open) this.serverReason ??= reason
    this.socket.terminate()
  }

  private receive(data: Buffer, isBinary: boolean): void {
    // frames that arrive after the closing handshake began are not read
    if (this.socket.readyState !== WebSocket.OPEN) return
    const now = monotonicMs()
    this.lastSeen = now
    // every frame counts, heartbeats and refused ones too: a flood is refused before it costs a decode
    if (!TokenBucket.take(this.frames, now)) {
      this.hub.flooded(this)
      this.close(CloseCode.policyViolation, "too many frames")
      return
    }
    const frame = this.serializer.decode(data, isBinary)
    if (frame === undefined) {
      this.hub.undecodable(this, isBinary ? `a binary frame of kind ${data[0] ?? "none"}` : "a text frame")
      this.close(CloseCode.invalidPayload, "invalid frame")
      return
    }
    if (frame.topic === PHOENIX_TOPIC && frame.event === Event.heartbeat) {
      this.reply(frame, "ok", {})
      return
    }
    switch (frame.event) {
      case Event.join:
        return this.join(frame, now)
      case Event.leave:
        return this.leave(frame, now)
      default: {
        const join = this.joins.get(frame.topic)
        if (join === undefined) return this.replyError(frame, ReplyReason.unmatchedTopic)
        return this.hub.push(this, frame, join, data.length)
      }
    }
  }

  private bucket(limit: BucketLimit, now: number): TokenBucket.TokenBucket {
    return TokenBucket.make(limit.capacity, limit.windowMs, now)
  }

  /**
   * A join is refused (`rate_limited`) past the connection's joins and leaves
   * per second, and past its channel churn: leaving a topic (or joining one
   * already joined, which replaces the join) spends a churn token, and a join
   * needs one left. Joining new topics costs no churn, so a client that joins
   * its channels and stays is never held back, while one that cycles joins
   * and leaves gets at most one cycle per churn token: every cycle is a
   * presence join and leave for the topic's other subscribers and a
   * `channel:joined`/`channel:left` for the app.
   */
  private join(frame: Frame, now: number): void {
    const span = this.hub.tracing.start("gateway.join", "server")
    if (this.hub.tracing.enabled) this.annotate(span, frame.topic)
    const joins = (this.joinsAndLeaves ??= this.bucket(this.hub.joinLimit, now))
    const wait = Math.max(
      TokenBucket.msUntilToken(joins, now),
      this.churn === undefined ? 0 : TokenBucket.msUntilToken(this.churn, now)
    )
    if (wait > 0) {
      this.metrics.rateLimited("joins")
      return this.refuseJoin(frame, ReplyReason.rateLimited, span, { retry_after_ms: wait })
    }
    TokenBucket.take(joins, now)

    const schema = this.app.schema
    // a topic that long matches no channel, and app-supplied patterns never run on it
    const match = frame.topic.length > MAX_TOPIC_LENGTH ? undefined : schema?.matchChannel(frame.topic)
    if (match === undefined) return this.refuseJoin(frame, ReplyReason.invalidChannelPattern, span)
    if (!this.identity.grants.allowsAll(match.joinPermissions)) {
      return this.refuseJoin(frame, ReplyReason.unauthorized, span)
    }

    const previous = this.joins.get(frame.topic)
    if (previous === undefined && this.joins.size >= this.hub.maxChannelsPerConnection) {
      return this.refuseJoin(frame, ReplyReason.tooManyChannels, span)
    }
    if (match.channel.presence && !this.hub.admitsPresence(this, frame.topic)) {
      return this.refuseJoin(frame, ReplyReason.overCapacity, span)
    }
    if (previous !== undefined) TokenBucket.take((this.churn ??= this.bucket(this.hub.churnLimit, now)), now)
    const join: Join = { joinRef: frame.joinRef, match, presence: undefined }
    this.joins.set(frame.topic, join)
    if (previous !== undefined) {
      // Phoenix semantics: a second join of the same topic replaces the first,
      // whose channel is told it was closed.
      this.send(this.serializer.encodePush(previous.joinRef, frame.topic, Event.close, {}))
      if (previous.presence !== undefined) this.hub.untrack(this, frame.topic, previous)
    } else {
      this.hub.subscribe(this, frame.topic)
    }
    this.reply(frame, "ok", {})
    this.metrics.joined("ok")
    this.hub.notify(this, "channel:joined", frame.topic)
    if (match.channel.presence) this.hub.track(this, frame.topic, join)
    span.end()
  }

  private refuseJoin(frame: Frame, reason: ReplyReason, span: TraceSpan, extra?: Record<string, unknown>): void {
    this.metrics.joined(reason)
    this.replyError(frame, reason, extra)
    span.end(reason)
  }

  /** The attributes every span of this connection's frames carries. */
  annotate(span: TraceSpan, topic: string): void {
    span.attribute("gateway.app_id", this.app.config.id)
    span.attribute("gateway.client_id", this.identity.clientId)
    span.attribute("gateway.connection_id", this.connectionId)
    span.attribute("gateway.topic", topic)
  }

  /** Never refused (it frees what a join took), but it spends a join token and a churn token when there are some. */
  private leave(frame: Frame, now: number): void {
    const join = this.joins.get(frame.topic)
    if (join !== undefined) {
      TokenBucket.take((this.joinsAndLeaves ??= this.bucket(this.hub.joinLimit, now)), now)
      TokenBucket.take((this.churn ??= this.bucket(this.hub.churnLimit, now)), now)
      this.joins.delete(frame.topic)
      if (join.presence !== undefined) this.hub.untrack(this, frame.topic, join)
      this.hub.unsubscribe(this, frame.topic)
      this.hub.notify(this, "channel:left", frame.topic)
    }
    this.reply(frame, "ok", {})
    this.send(this.serializer.encodePush(join?.joinRef ?? frame.joinRef, frame.topic, Event.close, {}))
  }

  private onClose(code: number, reason: Buffer): void {
    if (!this.open) return
    this.open = false
    const closure: Closure = this.serverReason !== undefined
      ? { code, reason: this.serverReason, closedBy: "server" }
      : { code, reason: reason.toString("utf8", 0, MAX_CLIENT_REASON_LENGTH), closedBy: "client" }
    for (const [topic, join] of this.joins) {
      if (join.presence !== undefined) this.hub.untrack(this, topic, join)
      this.hub.unsubscribe(this, topic)
      this.hub.notify(this, "channel:left", topic)
    }
    this.joins.clear()
    this.hub.notify(this, "connection:closed", null)
    this.hub.closed(this, closure)
  }
}
