/**
 * One client connection after a successful upgrade: it multiplexes channels
 * over the socket, answers heartbeats, enforces the per-connection channel cap,
 * and answers every push that carries a ref exactly once.
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
import { CloseCode, Event, MAX_BINARY_FIELD_BYTES, PHOENIX_TOPIC } from "../protocol/constants.ts"
import type { Frame } from "../protocol/Frame.ts"
import { ReplyReason } from "../protocol/reasons.ts"
import type { Serializer } from "../protocol/Serializer.ts"
import { wireFrame } from "../transport/WireFrame.ts"

/** Longest topic a client may join (also the V2 binary frame's limit for a topic field). */
const MAX_TOPIC_LENGTH = MAX_BINARY_FIELD_BYTES

/** Lifecycle events the app is notified of (CONTRACT §3, notify). */
export type LifecycleEvent = "connection:established" | "connection:closed" | "channel:joined" | "channel:left"

/** Node-wide services and limits every session uses; one instance per node. */
export interface SessionHub {
  readonly maxChannelsPerConnection: number
  readonly maxOutboxBytes: number
  readonly subscribe: (session: Session, topic: string) => void
  readonly unsubscribe: (session: Session, topic: string) => void
  /** Whether the session's app may have one more presence on the topic (a bound per app and node). */
  readonly admitsPresence: (session: Session, topic: string) => boolean
  /** Makes the join present on its presence channel and sends the joiner `presence_state`. */
  readonly track: (session: Session, topic: string, join: Join) => void
  readonly untrack: (session: Session, topic: string, join: Join) => void
  readonly notify: (session: Session, event: LifecycleEvent, topic: string | null) => void
  /** Handles a push on a joined topic; must call `session.reply` exactly once when `frame.ref` is set. */
  readonly push: (session: Session, frame: Frame, join: Join) => void
  readonly closed: (session: Session, code: number) => void
  /** An unexpected error while handling the session's frame (logged; the session is closed). */
  readonly failed: (session: Session, error: unknown) => void
}

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
  readonly connectedAt: number
  lastSeen: number
  /** Pushes forwarded to the app and not answered yet (bounded by the push handler). */
  pushesInFlight = 0
  readonly joins = new Map<string, Join>()
  private readonly socket: WebSocket
  /** The TCP socket under `socket`, which frames from `wireFrame` are written to directly. */
  private readonly stream: Duplex
  private readonly hub: SessionHub
  private open = true

  constructor(options: {
    readonly connectionId: string
    readonly app: RegisteredApp
    readonly identity: Identity
    readonly serializer: Serializer
    readonly socket: WebSocket
    readonly stream: Duplex
    readonly hub: SessionHub
  }) {
    this.connectionId = options.connectionId
    this.app = options.app
    this.identity = options.identity
    this.serializer = options.serializer
    this.socket = options.socket
    this.stream = options.stream
    this.hub = options.hub
    this.connectedAt = Date.now()
    this.lastSeen = this.connectedAt
    this.socket.on("message", (data, isBinary) => {
      try {
        this.receive(data as Buffer, isBinary)
      } catch (error) {
        // a bug must cost this connection only, never the node
        this.hub.failed(this, error)
        this.close(CloseCode.internalError, "internal error")
      }
    })
    this.socket.on("close", (code) => this.onClose(code))
    this.socket.on("error", () => this.socket.terminate())
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
      this.terminate()
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
    this.socket.close(code, reason)
  }

  /** Drops the connection without a closing handshake (the client is not reading). */
  terminate(): void {
    this.socket.terminate()
  }

  private receive(data: Buffer, isBinary: boolean): void {
    this.lastSeen = Date.now()
    const frame = this.serializer.decode(data, isBinary)
    if (frame === undefined) {
      this.close(CloseCode.invalidPayload, "invalid frame")
      return
    }
    if (frame.topic === PHOENIX_TOPIC && frame.event === Event.heartbeat) {
      this.reply(frame, "ok", {})
      return
    }
    switch (frame.event) {
      case Event.join:
        return this.join(frame)
      case Event.leave:
        return this.leave(frame)
      default: {
        const join = this.joins.get(frame.topic)
        if (join === undefined) return this.replyError(frame, ReplyReason.unmatchedTopic)
        return this.hub.push(this, frame, join)
      }
    }
  }

  private join(frame: Frame): void {
    const schema = this.app.schema
    // a topic that long matches no channel, and app-supplied patterns never run on it
    const match = frame.topic.length > MAX_TOPIC_LENGTH ? undefined : schema?.matchChannel(frame.topic)
    if (match === undefined) return this.replyError(frame, ReplyReason.invalidChannelPattern)
    if (!this.identity.grants.allowsAll(match.joinPermissions)) return this.replyError(frame, ReplyReason.unauthorized)

    const previous = this.joins.get(frame.topic)
    if (previous === undefined && this.joins.size >= this.hub.maxChannelsPerConnection) {
      return this.replyError(frame, ReplyReason.tooManyChannels)
    }
    if (match.channel.presence && !this.hub.admitsPresence(this, frame.topic)) return this.replyError(frame, ReplyReason.overCapacity)
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
    this.hub.notify(this, "channel:joined", frame.topic)
    if (match.channel.presence) this.hub.track(this, frame.topic, join)
  }

  private leave(frame: Frame): void {
    const join = this.joins.get(frame.topic)
    if (join !== undefined) {
      this.joins.delete(frame.topic)
      if (join.presence !== undefined) this.hub.untrack(this, frame.topic, join)
      this.hub.unsubscribe(this, frame.topic)
      this.hub.notify(this, "channel:left", frame.topic)
    }
    this.reply(frame, "ok", {})
    this.send(this.serializer.encodePush(join?.joinRef ?? frame.joinRef, frame.topic, Event.close, {}))
  }

  private onClose(code: number): void {
    if (!this.open) return
    this.open = false
    for (const [topic, join] of this.joins) {
      if (join.presence !== undefined) this.hub.untrack(this, topic, join)
      this.hub.unsubscribe(this, topic)
      this.hub.notify(this, "channel:left", topic)
    }
    this.joins.clear()
    this.hub.notify(this, "connection:closed", null)
    this.hub.closed(this, code)
  }
}
