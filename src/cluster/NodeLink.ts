/**
 * One node link: a persistent, authenticated connection (`ClusterPort`) over
 * which one node delivers broadcasts to another and asks it things, as
 * newline-delimited JSON arrays.
 *
 *   ["h", node, address]               hello: the sender's node name and cluster address
 *                                      (`host:port`, where it listens; first line each way)
 *   ["d", [[id, app, topic, event, payload, excludeConnectionId | null], …]]
 *                                      broadcasts for the receiver's subscribers, in order
 *   ["q", n, method, args]             a request; answered by
 *   ["a", n, value] or ["f", n, reason]
 *
 * The cost of a cross-node hop was per message, not per byte (runtime,
 * codec and one write system call per message): so everything queued for a
 * peer during one turn of the event loop leaves in a single write, the
 * broadcasts of all topics in one "d" line, each broadcast encoded once for
 * every peer. The dialing node sends deliveries and requests; the other side
 * answers on the same connection, and has a link of its own the other way.
 */
import { Schema } from "effect"
import type { Duplex } from "node:stream"
import { BroadcastMessage } from "./messages.ts"

/** A broadcast as it travels on a link. */
export const DeliveryTuple = Schema.Tuple([
  Schema.String,
  Schema.String,
  Schema.String,
  Schema.String,
  Schema.Unknown,
  Schema.NullOr(Schema.String)
])

type Delivery = typeof DeliveryTuple.Type

/** A broadcast as the tuple it travels as. */
export const deliveryTuple = (broadcast: BroadcastMessage): Delivery => [
  broadcast.id,
  broadcast.app,
  broadcast.topic,
  broadcast.event,
  broadcast.payload,
  broadcast.excludeConnectionId ?? null
]

/** The broadcast a checked tuple carries. */
export const fromDeliveryTuple = ([id, app, topic, event, payload, exclude]: Delivery): BroadcastMessage =>
  exclude === null ? { id, app, topic, event, payload } : { id, app, topic, event, payload, excludeConnectionId: exclude }

/** One broadcast's encoding, made once and written to every peer. */
export const encodeDelivery = (broadcast: BroadcastMessage): string => JSON.stringify(deliveryTuple(broadcast))

/** The hot path's check of {@link DeliveryTuple}, by hand. */
export const decodeDelivery = (value: unknown): BroadcastMessage | undefined => {
  if (!Array.isArray(value) || value.length !== 6) return undefined
  const [id, app, topic, event, , exclude] = value
  if (typeof id !== "string" || typeof app !== "string" || typeof topic !== "string" || typeof event !== "string") {
    return undefined
  }
  if (exclude !== null && typeof exclude !== "string") return undefined
  return fromDeliveryTuple(value as unknown as Delivery)
}

/** A peer that sends more than this in one line, or leaves this much unread, is dropped. */
const MAX_BUFFERED_BYTES = 64 * 1024 * 1024

export interface LinkHandlers {
  /** A parsed line other than the hello. */
  readonly onMessage: (message: ReadonlyArray<unknown>) => void
  readonly onClose: (reason: string) => void
}

/**
 * The framing of a link on an authenticated connection: lines in, batched
 * lines out. `handlers` may be set after the hello.
 */
export class LinkConnection {
  private readonly queued: Array<string> = []
  /** Encoded broadcasts of the "d" line being gathered. */
  private deliveries: Array<string> = []
  private flushScheduled = false
  private closed = false
  private partial = ""
  handlers: LinkHandlers | undefined

  private readonly connection: Duplex
  private readonly onHello: (node: string, address: string | undefined) => void

  constructor(connection: Duplex, onHello: (node: string, address: string | undefined) => void) {
    this.connection = connection
    this.onHello = onHello
    connection.setEncoding("utf8")
    connection.on("data", (chunk: string) => this.read(chunk))
    connection.on("error", (error) => this.close(error.message))
    connection.on("close", () => this.close("the connection closed"))
    connection.resume()
  }

  get isOpen(): boolean {
    return !this.closed
  }

  sendDelivery(encoded: string): void {
    this.deliveries.push(encoded)
    this.scheduleFlush()
  }

  send(message: ReadonlyArray<unknown>): void {
    this.closeDeliveries()
    this.queued.push(JSON.stringify(message))
    this.scheduleFlush()
  }

  close(reason: string): void {
    if (this.closed) return
    this.closed = true
    this.connection.destroy()
    this.handlers?.onClose(reason)
  }

  private closeDeliveries() {
    if (this.deliveries.length === 0) return
    this.queued.push(`["d",[${this.deliveries.join(",")}]]`)
    this.deliveries = []
  }

  private scheduleFlush() {
    if (this.flushScheduled || this.closed) return
    this.flushScheduled = true
    setImmediate(() => this.flush())
  }

  private flush() {
    this.flushScheduled = false
    if (this.closed) return
    this.closeDeliveries()
    if (this.queued.length === 0) return
    this.connection.write(this.queued.join("\n") + "\n")
    this.queued.length = 0
    if (this.connection.writableLength > MAX_BUFFERED_BYTES) this.close("the peer does not read what it is sent")
  }

  private read(chunk: string) {
    let text = this.partial + chunk
    let start = 0
    for (let end = text.indexOf("\n"); end !== -1; end = text.indexOf("\n", start)) {
      const line = text.slice(start, end)
      start = end + 1
      if (!this.readLine(line)) return
    }
    text = text.slice(start)
    if (text.length > MAX_BUFFERED_BYTES) return this.close("a line longer than the link allows")
    this.partial = text
  }

  /** False once the link is closed. */
  private readLine(line: string): boolean {
    let message: unknown
    try {
      message = JSON.parse(line)
    } catch {
      this.close("a line that is not JSON")
      return false
    }
    if (!Array.isArray(message) || typeof message[0] !== "string") {
      this.close("a line that is not a link message")
      return false
    }
    if (message[0] === "h") {
      if (typeof message[1] !== "string" || message[1].length === 0) {
        this.close("a hello without a node name")
        return false
      }
      this.onHello(message[1], typeof message[2] === "string" ? message[2] : undefined)
    } else if (this.handlers === undefined) {
      this.close("a message before the hello")
      return false
    } else {
      this.handlers.onMessage(message)
    }
    return !this.closed
  }
}
