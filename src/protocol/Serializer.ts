/**
 * Hot-path codec for the Phoenix Channels wire protocol, one serializer per
 * protocol version, byte-compatible with the phoenix 1.8 JavaScript client and
 * with Phoenix's own V1/V2 JSON serializers.
 *
 * Written by hand rather than with Schema because every inbound frame and every
 * outbound message goes through it; Frame.ts holds the Schema reference that
 * the tests hold this codec to.
 *
 * V2 binary frames (first byte is the kind):
 * - client push, kind 0:  [0][join_ref_size][ref_size][topic_size][event_size][join_ref][ref][topic][event][payload]
 * - client "user broadcast push", kind 3 (Supabase's realtime-js):
 *   [3][join_ref_size][ref_size][topic_size][user_event_size][metadata_size][encoding][join_ref][ref][topic][user_event][metadata][payload],
 *   encoding 0 = binary, 1 = JSON; read as a push of event `broadcast` with payload
 *   `{type: "broadcast", event: user_event, payload}` (a binary payload as `{binary: "<base64>"}`,
 *   as binary pushes reach apps), which is what realtime-js sends as a text frame; the metadata
 *   (realtime-js's `persist` flag for Supabase's own server) is not read
 * - server push, kind 0:  [0][join_ref_size][topic_size][event_size][join_ref][topic][event][payload]
 *   (no ref, so one size byte fewer than the client's push: the client decodes it that way)
 * - server reply, kind 1: [1][join_ref_size][ref_size][topic_size][status_size][join_ref][ref][topic][status][payload]
 * - server broadcast, kind 2: [2][topic_size][event_size][topic][event][payload]
 */
import { Buffer, isUtf8 } from "node:buffer"
import { binaryPayload } from "../contract/Messages.ts"
import { BinaryKind, Event, MAX_BINARY_FIELD_BYTES, USER_BROADCAST_EVENT, UserPayloadEncoding, Vsn } from "./constants.ts"
import { PAYLOAD_TOO_DEEP } from "./Frame.ts"
import type { Frame } from "./Frame.ts"
import type { DeepElement } from "./json.ts"
import { isJsonObject, jsonDepthExceeds, MAX_JSON_DEPTH, parseAnyDepth, parseShallowJson } from "./json.ts"

export interface Serializer {
  readonly vsn: Vsn
  /**
   * Decode one client frame; returns undefined when the frame is undecodable
   * (the socket then closes with 1007). A binary payload is a view into `data`,
   * not a copy.
   */
  decode(data: Buffer, isBinary: boolean): Frame | undefined
  /**
   * Encode a reply (phx_reply) to a client push. A Uint8Array response makes a
   * binary frame (V2 only), anything else a text frame.
   */
  encodeReply(
    joinRef: string | null,
    ref: string | null,
    topic: string,
    status: "ok" | "error",
    response: unknown
  ): string | Buffer
  /**
   * Encode a server push/broadcast (no ref); the result is written unchanged to
   * every subscriber (encode once, write many). A Uint8Array payload makes a
   * binary frame (V2 only), anything else a text frame.
   */
  encodePush(joinRef: string | null, topic: string, event: string, payload: unknown): string | Buffer
}

// ---------------------------------------------------------------------------
// shared helpers

// fatal: invalid UTF-8 must fail rather than turn into U+FFFD that JSON.parse accepts;
// ignoreBOM: keep a byte order mark in the text so that JSON.parse rejects it, as Phoenix does
const utf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true })

/** UTF-8 bytes as text, or undefined when they are not UTF-8. */
const decodeUtf8 = (data: Uint8Array): string | undefined => {
  try {
    return utf8.decode(data)
  } catch {
    return undefined
  }
}

const NOT_JSON = { value: undefined, deep: [] } as const

/**
 * The JSON value in a text frame (undefined when it is not UTF-8 encoded
 * JSON); its elements nested deeper than a payload may be are left out and listed.
 */
const parseFrameText = (data: Buffer): { readonly value: unknown; readonly deep: ReadonlyArray<DeepElement> } => {
  const text = decodeUtf8(data)
  return text === undefined ? NOT_JSON : parseShallowJson(text, MAX_JSON_DEPTH)
}

const isRef = (value: unknown): value is string | null => value === null || typeof value === "string"

const jsonRef = (ref: string | null): string => (ref === null ? "null" : JSON.stringify(ref))

/**
 * JSON text of a payload. An absent (undefined) payload is sent as `{}`, which
 * is what Phoenix sends for a payload-less reply, rather than as `null`: the
 * phoenix client's debug logging reads `payload.status` and throws on null.
 */
const jsonPayload = (payload: unknown): string => JSON.stringify(payload) ?? "{}"

const REPLY_EVENT = JSON.stringify(Event.reply)

// ---------------------------------------------------------------------------
// V2 binary

/** Size in bytes of one binary header field; throws when it does not fit the one-byte length. */
const fieldSize = (name: string, value: string): number => {
  const size = Buffer.byteLength(value, "utf8")
  if (size > MAX_BINARY_FIELD_BYTES) {
    throw new Error(
      `cannot encode ${name} in a binary frame: it is ${size} bytes, the limit is ${MAX_BINARY_FIELD_BYTES}`
    )
  }
  return size
}

/** The UTF-8 string in data[start, end), or undefined when those bytes are not valid UTF-8. */
const readUtf8 = (data: Buffer, start: number, end: number): string | undefined => {
  // refs, topics and events are nearly always ASCII: skip the native call then
  for (let i = start; i < end; i++) {
    if (data[i]! >= 0x80) {
      return isUtf8(data.subarray(start, end)) ? data.toString("utf8", start, end) : undefined
    }
  }
  return data.toString("latin1", start, end)
}

/** A ref field; binary frames cannot carry null, so an empty ref stands for it in both directions. */
const readRef = (data: Buffer, start: number, end: number): string | null | undefined =>
  start === end ? null : readUtf8(data, start, end)

const CLIENT_PUSH_HEADER = 5
const USER_BROADCAST_PUSH_HEADER = 7

const decodeBinaryV2 = (data: Buffer): Frame | undefined => {
  // clients only ever send pushes; replies and broadcasts flow the other way
  switch (data[0]) {
    case BinaryKind.push:
      return decodeBinaryPush(data)
    case BinaryKind.userBroadcastPush:
      return decodeUserBroadcastPush(data)
    default:
      return undefined
  }
}

/**
 * A client push's four fields (sizes in bytes 1 to 4, the fields from
 * `fieldsAt`), then `skip` bytes the gateway does not read; the rest is the payload.
 */
const decodeClientPush = (data: Buffer, fieldsAt: number, skip: number): (Frame & { readonly payload: Buffer }) | undefined => {
  if (data.length < fieldsAt) return undefined
  const joinRefEnd = fieldsAt + data[1]!
  const refEnd = joinRefEnd + data[2]!
  const topicEnd = refEnd + data[3]!
  const eventEnd = topicEnd + data[4]!
  const payloadStart = eventEnd + skip
  if (payloadStart > data.length) return undefined
  const joinRef = readRef(data, fieldsAt, joinRefEnd)
  const ref = readRef(data, joinRefEnd, refEnd)
  const topic = readUtf8(data, refEnd, topicEnd)
  const event = readUtf8(data, topicEnd, eventEnd)
  if (joinRef === undefined || ref === undefined || topic === undefined || event === undefined) {
    return undefined
  }
  return { joinRef, ref, topic, event, payload: data.subarray(payloadStart) }
}

const decodeBinaryPush = (data: Buffer): Frame | undefined => decodeClientPush(data, CLIENT_PUSH_HEADER, 0)

/** The user payload of a user broadcast push; undefined when it is not what its encoding byte says. */
const userPayload = (encoding: number, bytes: Buffer): unknown => {
  if (encoding === UserPayloadEncoding.binary) return binaryPayload(bytes)
  if (encoding !== UserPayloadEncoding.json) return undefined
  const text = decodeUtf8(bytes)
  if (text === undefined) return undefined
  // the frame's payload wraps it in one more level
  return jsonDepthExceeds(text, MAX_JSON_DEPTH - 1) ? PAYLOAD_TOO_DEEP : parseAnyDepth(text)
}

const decodeUserBroadcastPush = (data: Buffer): Frame | undefined => {
  // byte 5 is the size of the metadata, which is skipped; byte 6 the payload's encoding
  const push = decodeClientPush(data, USER_BROADCAST_PUSH_HEADER, data[5]!)
  const payload = push === undefined ? undefined : userPayload(data[6]!, push.payload)
  if (push === undefined || payload === undefined) return undefined
  return {
    ...push,
    event: USER_BROADCAST_EVENT,
    payload: payload === PAYLOAD_TOO_DEEP ? payload : { type: USER_BROADCAST_EVENT, event: push.event, payload }
  }
}

/**
 * A binary frame: the kind byte, one size byte per header field, the fields
 * (UTF-8), then the payload. The three server layouts differ only in their
 * kind and fields.
 */
const binaryFrame = (kind: BinaryKind, fields: ReadonlyArray<readonly [name: string, value: string]>, payload: Uint8Array): Buffer => {
  const sizes = fields.map(([name, value]) => fieldSize(name, value))
  let headerSize = 1 + fields.length
  for (const size of sizes) headerSize += size
  const out = Buffer.allocUnsafe(headerSize + payload.byteLength)
  out[0] = kind
  let offset = 1 + fields.length
  for (let i = 0; i < fields.length; i++) {
    out[1 + i] = sizes[i]!
    offset += out.write(fields[i]![1], offset, "utf8")
  }
  out.set(payload, headerSize)
  return out
}

/** Binary frames cannot carry null refs: an empty field stands for null. */
const encodeBinaryReplyV2 = (joinRef: string | null, ref: string | null, topic: string, status: string, payload: Uint8Array) =>
  binaryFrame(BinaryKind.reply, [["join_ref", joinRef ?? ""], ["ref", ref ?? ""], ["topic", topic], ["status", status]], payload)

const encodeBinaryPushV2 = (joinRef: string | null, topic: string, event: string, payload: Uint8Array): Buffer =>
  joinRef === null
    // a broadcast: the client accepts it on every channel of the topic
    ? binaryFrame(BinaryKind.broadcast, [["topic", topic], ["event", event]], payload)
    // a push to one join: the client drops it if that join is no longer current
    : binaryFrame(BinaryKind.push, [["join_ref", joinRef], ["topic", topic], ["event", event]], payload)

// ---------------------------------------------------------------------------
// serializers

/** V2: text frames are `[join_ref, ref, topic, event, payload]`; binary frames as described above. */
export const V2: Serializer = Object.freeze<Serializer>({
  vsn: Vsn.v2,
  decode(data, isBinary) {
    if (isBinary) return decodeBinaryV2(data)
    const { value: msg, deep } = parseFrameText(data)
    if (!Array.isArray(msg) || msg.length !== 5) return undefined
    const joinRef: unknown = msg[0]
    const ref: unknown = msg[1]
    const topic: unknown = msg[2]
    const event: unknown = msg[3]
    if (!isRef(joinRef) || !isRef(ref) || typeof topic !== "string" || typeof event !== "string") {
      return undefined
    }
    let payload: unknown = msg[4]
    for (const element of deep) {
      if (element.index !== 4) return undefined
      payload = PAYLOAD_TOO_DEEP
    }
    return { joinRef, ref, topic, event, payload }
  },
  encodeReply(joinRef, ref, topic, status, response) {
    if (response instanceof Uint8Array) return encodeBinaryReplyV2(joinRef, ref, topic, status, response)
    return `[${jsonRef(joinRef)},${jsonRef(ref)},${JSON.stringify(topic)},${REPLY_EVENT},{"status":${
      JSON.stringify(status)
    },"response":${jsonPayload(response)}}]`
  },
  encodePush(joinRef, topic, event, payload) {
    if (payload instanceof Uint8Array) return encodeBinaryPushV2(joinRef, topic, event, payload)
    return `[${jsonRef(joinRef)},null,${JSON.stringify(topic)},${JSON.stringify(event)},${jsonPayload(payload)}]`
  }
})

const noBinaryInV1 = (): never => {
  throw new Error("cannot encode a binary payload with the 1.0.0 serializer: the V1 protocol has no binary frames")
}

/**
 * V1: text frames are `{topic, event, payload, ref, join_ref}`. Outbound
 * messages carry `join_ref` as well so that a client can drop messages of a
 * join it has since replaced; clients that do not know the key ignore it.
 */
export const V1: Serializer = Object.freeze<Serializer>({
  vsn: Vsn.v1,
  decode(data, isBinary) {
    if (isBinary) return undefined
    const { value: msg, deep } = parseFrameText(data)
    if (!isJsonObject(msg)) return undefined
    const { topic, event, ref, join_ref } = msg
    let payload = msg["payload"]
    for (const element of deep) {
      // other keys are ignored anyway
      if (element.key === "payload") payload = PAYLOAD_TOO_DEEP
      else if (element.key === "topic" || element.key === "event" || element.key === "ref" || element.key === "join_ref") {
        return undefined
      }
    }
    // payload and ref are required keys (ref may be null), join_ref is optional
    if (
      typeof topic !== "string" || typeof event !== "string" || payload === undefined || ref === undefined ||
      !isRef(ref) || (join_ref !== undefined && !isRef(join_ref))
    ) {
      return undefined
    }
    return { joinRef: join_ref ?? null, ref, topic, event, payload }
  },
  encodeReply(joinRef, ref, topic, status, response) {
    if (response instanceof Uint8Array) return noBinaryInV1()
    return `{"topic":${JSON.stringify(topic)},"event":${REPLY_EVENT},"payload":{"status":${
      JSON.stringify(status)
    },"response":${jsonPayload(response)}},"ref":${jsonRef(ref)},"join_ref":${jsonRef(joinRef)}}`
  },
  encodePush(joinRef, topic, event, payload) {
    if (payload instanceof Uint8Array) return noBinaryInV1()
    return `{"topic":${JSON.stringify(topic)},"event":${JSON.stringify(event)},"payload":${
      jsonPayload(payload)
    },"ref":null,"join_ref":${jsonRef(joinRef)}}`
  }
})

/**
 * The serializer for the `vsn` query parameter of a connection: "2.0.0" is V2;
 * "1.0.0", or no vsn at all (clients that predate the parameter), is V1; any
 * other value is unsupported.
 */
export const serializerFor = (vsn: string | undefined): Serializer | undefined => {
  switch (vsn) {
    case Vsn.v2:
      return V2
    case Vsn.v1:
    case undefined:
    case "":
      return V1
    default:
      return undefined
  }
}
