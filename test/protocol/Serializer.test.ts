/**
 * The wire codec against the phoenix JavaScript client: frames the client
 * encodes must decode, frames we encode must decode in the client to what we
 * meant, and the hand-written decoder must agree with the Schema reference.
 */
import { Buffer } from "node:buffer"
import * as Phoenix from "phoenix"
import { Option, Schema } from "effect"
import { afterEach, describe, expect, it, vi } from "vitest"
import { CloseCode, ErrorReason, Event, PHOENIX_TOPIC, Status, Vsn } from "../../src/protocol/constants.ts"
import { type Frame, V1TextFrame, V2TextFrame } from "../../src/protocol/Frame.ts"
import { serializerFor, V1, V2 } from "../../src/protocol/Serializer.ts"

// ---------------------------------------------------------------------------
// the phoenix client's own serializer (exported at runtime, absent from @types/phoenix)

type Wire = string | ArrayBuffer

interface ClientMessage {
  readonly join_ref?: string | null | undefined
  readonly ref?: string | null | undefined
  readonly topic: string
  readonly event: string
  readonly payload: unknown
}

interface DecodedByClient {
  readonly join_ref: string | null
  readonly ref: string | null
  readonly topic: string
  readonly event: string
  readonly payload: unknown
}

interface ClientSerializer {
  encode<A>(msg: ClientMessage, callback: (encoded: Wire) => A): A
  decode<A>(raw: Wire, callback: (msg: DecodedByClient) => A): A
}

const ClientSerializer = (Phoenix as unknown as { readonly Serializer: ClientSerializer }).Serializer

const clientEncode = (msg: ClientMessage): Wire => ClientSerializer.encode(msg, (encoded) => encoded)
const clientDecode = (raw: Wire): DecodedByClient => ClientSerializer.decode(raw, (msg) => msg)

/** What the server receives for a client-sent frame, as `ws` hands it over. */
const received = (wire: Wire): [Buffer, boolean] =>
  typeof wire === "string" ? [Buffer.from(wire, "utf8"), false] : [Buffer.from(wire), true]

/** What the client receives for a server-sent frame (binaryType "arraybuffer"). */
const delivered = (out: string | Buffer): Wire => typeof out === "string" ? out : new Uint8Array(out).buffer

const bytes = (...values: Array<number>): ArrayBuffer => new Uint8Array(values).buffer

const text = (s: string): Buffer => Buffer.from(s, "utf8")

const asBytes = (value: unknown): Uint8Array => {
  if (value instanceof ArrayBuffer) return new Uint8Array(value)
  if (value instanceof Uint8Array) return value
  throw new Error(`expected binary data, got ${typeof value}`)
}

// ---------------------------------------------------------------------------

describe("serializerFor", () => {
  it("maps the vsn query parameter to a serializer", () => {
    expect(serializerFor("2.0.0")).toBe(V2)
    expect(serializerFor("1.0.0")).toBe(V1)
    expect(serializerFor(undefined)).toBe(V1)
    expect(serializerFor("")).toBe(V1)
    for (const vsn of ["3.0.0", "2.0", "2", "1.0.1", "v2.0.0", " 2.0.0"]) {
      expect(serializerFor(vsn)).toBeUndefined()
    }
    expect(V2.vsn).toBe(Vsn.v2)
    expect(V1.vsn).toBe(Vsn.v1)
  })

  it("is what the phoenix client asks for by default", () => {
    const socket = new Phoenix.Socket("ws://gateway.test/socket")
    const vsn = new URL(socket.endPointURL()).searchParams.get("vsn") ?? undefined
    expect(serializerFor(vsn)).toBe(V2)
  })
})

describe("V2, client to server", () => {
  const textCases: ReadonlyArray<ClientMessage> = [
    { join_ref: "1", ref: "1", topic: "room:lobby", event: Event.join, payload: { token: "abc" } },
    { join_ref: "1", ref: "7", topic: "room:lobby", event: "new_msg", payload: { body: "héllo ✓ 𝄞", n: 1.5 } },
    { join_ref: "1", ref: "8", topic: "room:lobby", event: Event.leave, payload: {} },
    // heartbeats carry no join_ref at all: JSON.stringify writes the hole as null
    { ref: "9", topic: PHOENIX_TOPIC, event: Event.heartbeat, payload: {} },
    { join_ref: null, ref: null, topic: "", event: "", payload: [1, "two", null, { three: [true] }] },
    { join_ref: "12", ref: "13", topic: "t:\"quoted\"\\", event: "e\n\u2028", payload: "a string payload" }
    // no null payload: the client's encoder reads payload.constructor and throws on null
  ]

  it.each(textCases)("decodes the client's text frame $event on $topic", (msg) => {
    const wire = clientEncode(msg)
    expect(typeof wire).toBe("string")
    expect(V2.decode(...received(wire))).toEqual({
      joinRef: msg.join_ref ?? null,
      ref: msg.ref ?? null,
      topic: msg.topic,
      event: msg.event,
      payload: msg.payload
    })
  })

  const binaryCases: ReadonlyArray<ClientMessage> = [
    { join_ref: "1", ref: "2", topic: "room:lobby", event: "upload", payload: bytes(0, 1, 2, 255, 128) },
    { join_ref: "1", ref: "3", topic: "room:lobby", event: "empty", payload: new ArrayBuffer(0) },
    { join_ref: "10", ref: "11", topic: "sälskap:✓", event: "évènement", payload: bytes(0x7b, 0x7d) },
    { join_ref: "1", ref: "4", topic: "t".repeat(255), event: "e".repeat(255), payload: bytes(9) },
    { join_ref: "1", ref: "5", topic: "ü".repeat(127), event: "x", payload: new Uint8Array(70_000).fill(7).buffer }
  ]

  it.each(binaryCases)("decodes the client's binary frame $event", (msg) => {
    const wire = clientEncode(msg)
    expect(wire).toBeInstanceOf(ArrayBuffer)
    const frame = V2.decode(...received(wire))
    expect(frame).toBeDefined()
    expect(frame?.joinRef).toBe(msg.join_ref)
    expect(frame?.ref).toBe(msg.ref)
    expect(frame?.topic).toBe(msg.topic)
    expect(frame?.event).toBe(msg.event)
    expect(frame?.payload).toBeInstanceOf(Uint8Array)
    expect(Buffer.from(asBytes(frame?.payload)).equals(Buffer.from(asBytes(msg.payload)))).toBe(true)
  })

  it("decodes a binary frame with empty refs as null refs", () => {
    // the client never sends this (its pushes always carry refs), but null is how we represent absence
    const frame = V2.decode(Buffer.from([0, 0, 0, 1, 1, 0x74, 0x65, 42]), true)
    expect(frame).toEqual({ joinRef: null, ref: null, topic: "t", event: "e", payload: Buffer.from([42]) })
  })

  it("decodes many generated client frames", () => {
    const refs = ["1", "42", "9007199254740993", "ref-ü"]
    const names = ["", "a", "room:lobby", "中文:話題", "x".repeat(200)]
    const payloads: ReadonlyArray<unknown> = [{}, { a: [1, { b: null }] }, [], "s", 0, false]
    for (const joinRef of refs) {
      for (const ref of refs) {
        for (const topic of names) {
          for (const event of names) {
            for (const payload of payloads) {
              const msg = { join_ref: joinRef, ref, topic, event, payload }
              expect(V2.decode(...received(clientEncode(msg)))).toEqual({ joinRef, ref, topic, event, payload })
            }
            const binary = { join_ref: joinRef, ref, topic, event, payload: bytes(1, 2, 3) }
            const frame = V2.decode(...received(clientEncode(binary)))
            expect(frame && { ...frame, payload: [...asBytes(frame.payload)] }).toEqual({
              joinRef,
              ref,
              topic,
              event,
              payload: [1, 2, 3]
            })
          }
        }
      }
    }
  })
})

describe("V2, server to client", () => {
  it("encodes text replies the client routes to the push", () => {
    const out = V2.encodeReply("1", "5", "room:lobby", "ok", { id: 3, tags: ["a"] })
    expect(typeof out).toBe("string")
    expect(clientDecode(delivered(out))).toEqual({
      join_ref: "1",
      ref: "5",
      topic: "room:lobby",
      event: Event.reply,
      payload: { status: "ok", response: { id: 3, tags: ["a"] } }
    })
  })

  it("encodes error replies with Phoenix's wording", () => {
    const out = V2.encodeReply("3", "3", "nope:1", Status.error, { reason: ErrorReason.unmatchedTopic })
    expect(clientDecode(delivered(out)).payload).toEqual({ status: "error", response: { reason: "unmatched topic" } })
  })

  it("encodes heartbeat replies (no join_ref)", () => {
    const out = V2.encodeReply(null, "9", PHOENIX_TOPIC, "ok", {})
    expect(out).toBe(`[null,"9","phoenix","phx_reply",{"status":"ok","response":{}}]`)
  })

  it("sends an absent response or payload as {}", () => {
    expect(clientDecode(delivered(V2.encodeReply("1", "2", "t", "ok", undefined))).payload).toEqual({
      status: "ok",
      response: {}
    })
    expect(clientDecode(delivered(V2.encodePush(null, "t", "e", undefined))).payload).toEqual({})
  })

  it("encodes text pushes with and without join_ref", () => {
    const payloads: ReadonlyArray<unknown> = [{ a: 1 }, [], "s", 1, null, { s: "quote\" and \\ and \u0000 and 𝄞" }]
    for (const payload of payloads) {
      for (const joinRef of ["4", null]) {
        const out = V2.encodePush(joinRef, "room:ü", "new_msg", payload)
        expect(typeof out).toBe("string")
        expect(clientDecode(delivered(out))).toEqual({
          join_ref: joinRef,
          ref: null,
          topic: "room:ü",
          event: "new_msg",
          payload
        })
      }
    }
  })

  it("encodes binary replies", () => {
    const out = V2.encodeReply("1", "22", "files:✓", "ok", Buffer.from([1, 2, 3, 0, 255]))
    expect(Buffer.isBuffer(out)).toBe(true)
    const msg = clientDecode(delivered(out))
    expect(msg.join_ref).toBe("1")
    expect(msg.ref).toBe("22")
    expect(msg.topic).toBe("files:✓")
    expect(msg.event).toBe(Event.reply)
    const payload = msg.payload as { status: string; response: ArrayBuffer }
    expect(payload.status).toBe("ok")
    expect([...new Uint8Array(payload.response)]).toEqual([1, 2, 3, 0, 255])
  })

  it("encodes binary replies with null refs as empty refs", () => {
    const msg = clientDecode(delivered(V2.encodeReply(null, null, "t", "error", new Uint8Array(0))))
    expect(msg.join_ref).toBe("")
    expect(msg.ref).toBe("")
    expect((msg.payload as { status: string }).status).toBe("error")
  })

  it("encodes binary pushes carrying a join_ref (kind 0, server form)", () => {
    const out = V2.encodePush("17", "room:lobby", "frame", new Uint8Array([9, 8, 7]))
    expect(Buffer.isBuffer(out) && out[0]).toBe(0)
    const msg = clientDecode(delivered(out))
    expect({ ...msg, payload: [...asBytes(msg.payload)] }).toEqual({
      join_ref: "17",
      ref: null,
      topic: "room:lobby",
      event: "frame",
      payload: [9, 8, 7]
    })
  })

  it("encodes binary broadcasts (kind 2)", () => {
    const out = V2.encodePush(null, "room:lobby", "frame", Buffer.alloc(1000, 0xab))
    expect(Buffer.isBuffer(out) && out[0]).toBe(2)
    const msg = clientDecode(delivered(out))
    expect({ ...msg, payload: null }).toEqual({
      join_ref: null,
      ref: null,
      topic: "room:lobby",
      event: "frame",
      payload: null
    })
    expect(asBytes(msg.payload).every((b) => b === 0xab) && asBytes(msg.payload).length).toBe(1000)
  })

  it("encodes header fields of exactly 255 bytes", () => {
    const max = "é".repeat(127) + "x" // 255 bytes
    const reply = clientDecode(delivered(V2.encodeReply(max, max, max, "ok", bytes(1))))
    expect([reply.join_ref, reply.ref, reply.topic]).toEqual([max, max, max])
    const push = clientDecode(delivered(V2.encodePush(max, max, max, bytes(1))))
    expect([push.join_ref, push.topic, push.event]).toEqual([max, max, max])
    const broadcast = clientDecode(delivered(V2.encodePush(null, max, max, bytes(1))))
    expect([broadcast.topic, broadcast.event]).toEqual([max, max])
  })

  it("refuses to encode header fields over 255 bytes", () => {
    const long = "é".repeat(128) // 256 bytes, 128 characters
    const payload = new Uint8Array([1])
    expect(() => V2.encodeReply(long, "1", "t", "ok", payload)).toThrow(/join_ref.*256 bytes.*255/)
    expect(() => V2.encodeReply("1", long, "t", "ok", payload)).toThrow(/\bref\b.*256 bytes/)
    expect(() => V2.encodeReply("1", "1", long, "ok", payload)).toThrow(/topic.*256 bytes/)
    expect(() => V2.encodePush("1", long, "e", payload)).toThrow(/topic.*256 bytes/)
    expect(() => V2.encodePush("1", "t", long, payload)).toThrow(/event.*256 bytes/)
    expect(() => V2.encodePush(long, "t", "e", payload)).toThrow(/join_ref.*256 bytes/)
    expect(() => V2.encodePush(null, long, "e", payload)).toThrow(/topic.*256 bytes/)
    expect(() => V2.encodePush(null, "t", long, payload)).toThrow(/event.*256 bytes/)
    // the same client agrees on the limit for what it sends
    expect(() => clientEncode({ join_ref: "1", ref: "1", topic: long, event: "e", payload: bytes(1) })).toThrow(
      /topic/
    )
    // text frames have no such limit
    expect(clientDecode(delivered(V2.encodePush(long, long, long, {}))).topic).toBe(long)
  })

  it("writes a binary payload from any offset of a larger buffer", () => {
    const backing = Buffer.from([0xee, 0xee, 1, 2, 3, 0xee])
    const out = V2.encodePush(null, "t", "e", backing.subarray(2, 5))
    expect([...asBytes(clientDecode(delivered(out)).payload)]).toEqual([1, 2, 3])
  })
})

describe("V2 rejections", () => {
  const rejectedText: ReadonlyArray<readonly [string, Buffer]> = [
    ["empty frame", text("")],
    ["invalid JSON", text(`["1","1","t","e",{]`)],
    ["trailing garbage", text(`["1","1","t","e",{}]x`)],
    ["a JSON object", text(`{"topic":"t","event":"e","payload":{},"ref":null}`)],
    ["a JSON string", text(`"hello"`)],
    ["JSON null", text("null")],
    ["four elements", text(`["1","1","t","e"]`)],
    ["six elements", text(`["1","1","t","e",{},{}]`)],
    ["empty array", text("[]")],
    ["numeric topic", text(`["1","1",1,"e",{}]`)],
    ["null topic", text(`["1","1",null,"e",{}]`)],
    ["null event", text(`["1","1","t",null,{}]`)],
    ["array event", text(`["1","1","t",["e"],{}]`)],
    ["numeric join_ref", text(`[1,"1","t","e",{}]`)],
    ["numeric ref", text(`["1",1,"t","e",{}]`)],
    ["boolean ref", text(`["1",true,"t","e",{}]`)],
    ["object ref", text(`["1",{},"t","e",{}]`)],
    ["invalid UTF-8 in a string", Buffer.concat([text(`["1","1","t`), Buffer.from([0xff]), text(`","e",{}]`)])],
    ["truncated UTF-8 sequence", Buffer.concat([text(`["1","1","t`), Buffer.from([0xe2, 0x9c]), text(`","e",{}]`)])],
    ["overlong UTF-8 encoding", Buffer.concat([text(`["1","1","`), Buffer.from([0xc0, 0xaf]), text(`","e",{}]`)])],
    ["UTF-8 encoded surrogate", Buffer.concat([text(`["1","1","`), Buffer.from([0xed, 0xa0, 0x80]), text(`","e",{}]`)])],
    ["byte order mark", Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), text(`["1","1","t","e",{}]`)])]
  ]

  it.each(rejectedText)("rejects a text frame: %s", (_, data) => {
    expect(V2.decode(data, false)).toBeUndefined()
  })

  const push = (...parts: Array<number | string>): Buffer =>
    Buffer.concat(parts.map((p) => (typeof p === "number" ? Buffer.from([p]) : text(p))))

  const rejectedBinary: ReadonlyArray<readonly [string, Buffer]> = [
    ["empty frame", Buffer.alloc(0)],
    ["only the kind", Buffer.from([0])],
    ["header cut short", Buffer.from([0, 1, 1, 1])],
    ["join_ref cut short", push(0, 5, 1, 1, 1, "12")],
    ["event cut short", push(0, 1, 1, 1, 5, "1", "2", "t", "ev")],
    ["sizes beyond the frame", push(0, 255, 255, 255, 255, "1", "2", "t", "e", "payload")],
    ["reply kind (server to client only)", push(1, 1, 1, 1, 2, "1", "2", "t", "ok")],
    ["broadcast kind (server to client only)", push(2, 1, 1, "t", "e")],
    ["unknown kind 3", push(3, 1, 1, 1, 1, "1", "2", "t", "e")],
    ["unknown kind 255", push(255, 1, 1, 1, 1, "1", "2", "t", "e")],
    ["JSON text sent as a binary frame", text(`["1","1","t","e",{}]`)],
    ["invalid UTF-8 in join_ref", push(0, 1, 1, 1, 1, 0xff, "2", "t", "e")],
    ["invalid UTF-8 in ref", push(0, 1, 1, 1, 1, "1", 0xc3, "t", "e")],
    ["invalid UTF-8 in topic", push(0, 1, 1, 2, 1, "1", "2", 0xe2, 0x28, "e")],
    ["invalid UTF-8 in event", push(0, 1, 1, 1, 1, "1", "2", "t", 0x80)],
    ["multi-byte character split across fields", push(0, 1, 1, 1, 1, "1", "2", 0xc3, 0xa9)]
  ]

  it.each(rejectedBinary)("rejects a binary frame: %s", (_, data) => {
    expect(V2.decode(data, true)).toBeUndefined()
  })

  it("accepts a binary frame that ends right after the header (empty payload)", () => {
    expect(V2.decode(push(0, 1, 1, 1, 1, "1", "2", "t", "e"), true)).toEqual({
      joinRef: "1",
      ref: "2",
      topic: "t",
      event: "e",
      payload: Buffer.alloc(0)
    })
  })

  it("never throws on arbitrary bytes", () => {
    // deterministic xorshift so failures reproduce
    let seed = 0x2545f491
    const next = (): number => {
      seed ^= seed << 13
      seed ^= seed >>> 17
      seed ^= seed << 5
      return (seed >>> 0) / 0x1_0000_0000
    }
    for (let i = 0; i < 5000; i++) {
      const data = Buffer.alloc(Math.floor(next() * 48))
      for (let j = 0; j < data.length; j++) data[j] = Math.floor(next() * 256)
      if (data.length > 0 && next() < 0.7) data[0] = 0
      for (let j = 1; j < Math.min(5, data.length); j++) if (next() < 0.7) data[j] = data[j]! % 8
      for (const serializer of [V1, V2]) {
        for (const isBinary of [true, false]) {
          const frame = serializer.decode(data, isBinary)
          if (frame !== undefined) {
            expect(typeof frame.topic).toBe("string")
            expect(typeof frame.event).toBe("string")
          }
        }
      }
    }
  })
})

describe("V1", () => {
  // what a V1 client sends: JSON.stringify of the message object (older clients omit join_ref)
  const v1Cases: ReadonlyArray<Record<string, unknown>> = [
    { topic: "room:lobby", event: Event.join, payload: { a: 1 }, ref: "1", join_ref: "1" },
    { topic: "room:lobby", event: "new_msg", payload: { body: "✓" }, ref: "2" },
    { topic: PHOENIX_TOPIC, event: Event.heartbeat, payload: {}, ref: "3", join_ref: null },
    { topic: "t", event: "e", payload: [1, 2], ref: null },
    { topic: "t", event: "e", payload: null, ref: "4", extra: "ignored" }
  ]

  it.each(v1Cases)("decodes a V1 client's $event", (msg) => {
    expect(V1.decode(text(JSON.stringify(msg)), false)).toEqual({
      joinRef: msg["join_ref"] ?? null,
      ref: msg["ref"],
      topic: msg["topic"],
      event: msg["event"],
      payload: msg["payload"]
    })
  })

  it("encodes replies as Phoenix's V1 serializer does, plus join_ref", () => {
    expect(JSON.parse(V1.encodeReply("1", "2", "room:lobby", "ok", { x: [1] }) as string)).toEqual({
      topic: "room:lobby",
      event: Event.reply,
      payload: { status: "ok", response: { x: [1] } },
      ref: "2",
      join_ref: "1"
    })
    expect(JSON.parse(V1.encodeReply(null, "9", PHOENIX_TOPIC, "ok", undefined) as string)).toEqual({
      topic: PHOENIX_TOPIC,
      event: Event.reply,
      payload: { status: "ok", response: {} },
      ref: "9",
      join_ref: null
    })
  })

  it("encodes pushes and broadcasts with a null ref", () => {
    expect(JSON.parse(V1.encodePush("1", "t:ü", "e\"", { a: "𝄞" }) as string)).toEqual({
      topic: "t:ü",
      event: "e\"",
      payload: { a: "𝄞" },
      ref: null,
      join_ref: "1"
    })
    expect(JSON.parse(V1.encodePush(null, "t", Event.presenceDiff, { joins: {}, leaves: {} }) as string)).toEqual({
      topic: "t",
      event: "presence_diff",
      payload: { joins: {}, leaves: {} },
      ref: null,
      join_ref: null
    })
  })

  it("refuses binary payloads, which V1 cannot carry", () => {
    expect(() => V1.encodeReply("1", "1", "t", "ok", new Uint8Array(1))).toThrow(/binary/)
    expect(() => V1.encodePush("1", "t", "e", Buffer.alloc(1))).toThrow(/binary/)
  })

  const rejected: ReadonlyArray<readonly [string, Buffer, boolean]> = [
    ["a binary frame", text(`{"topic":"t","event":"e","payload":{},"ref":null}`), true],
    ["a V2 array", text(`["1","1","t","e",{}]`), false],
    ["JSON null", text("null"), false],
    ["invalid JSON", text(`{"topic":"t"`), false],
    ["invalid UTF-8", Buffer.concat([text(`{"topic":"`), Buffer.from([0xff]), text(`"}`)]), false],
    ["missing topic", text(`{"event":"e","payload":{},"ref":null}`), false],
    ["missing event", text(`{"topic":"t","payload":{},"ref":null}`), false],
    ["missing payload", text(`{"topic":"t","event":"e","ref":null}`), false],
    ["missing ref", text(`{"topic":"t","event":"e","payload":{}}`), false],
    ["numeric topic", text(`{"topic":1,"event":"e","payload":{},"ref":null}`), false],
    ["numeric ref", text(`{"topic":"t","event":"e","payload":{},"ref":1}`), false],
    ["numeric join_ref", text(`{"topic":"t","event":"e","payload":{},"ref":"1","join_ref":1}`), false]
  ]

  it.each(rejected)("rejects %s", (_, data, isBinary) => {
    expect(V1.decode(data, isBinary)).toBeUndefined()
  })
})

describe("hand-written decoder agrees with the Schema reference", () => {
  const viaSchemaV2 = (input: string): Frame | undefined => {
    const decoded = Schema.decodeUnknownOption(V2TextFrame)(input)
    if (Option.isNone(decoded)) return undefined
    const [joinRef, ref, topic, event, payload] = decoded.value
    return { joinRef, ref, topic, event, payload }
  }

  const viaSchemaV1 = (input: string): Frame | undefined => {
    const decoded = Schema.decodeUnknownOption(V1TextFrame)(input)
    if (Option.isNone(decoded)) return undefined
    const { topic, event, payload, ref, join_ref } = decoded.value
    return { joinRef: join_ref ?? null, ref, topic, event, payload }
  }

  const refs: ReadonlyArray<unknown> = [null, "1", "", "ü", 1, true, {}, []]
  const names: ReadonlyArray<unknown> = ["t", "", "🙂", 0, null, ["t"]]
  const payloads: ReadonlyArray<unknown> = [{}, { a: [1, { b: null }] }, [], "s", 1.5, false, null]

  const raw: ReadonlyArray<string> = [
    "",
    " ",
    "[",
    "[]",
    "{}",
    "null",
    "1",
    `"s"`,
    "true",
    ` [null, "1", "t", "e", {}] `,
    `\uFEFF[null,"1","t","e",{}]`,
    `[null,"1","t","e",{}`,
    `{"topic":"t","event":"e","payload":{},"ref":null,"topic":"u"}`,
    `{"topic":"t","event":"e","payload":{},"ref":null,"__proto__":{"x":1}}`,
    `{"topic":"t","event":"e","payload":{},"ref":null,"join_ref":"2","other":[1]}`,
    `["\\ud800","1","t","e",{}]`
  ]

  it("on generated V2 frames", () => {
    const inputs: Array<string> = [...raw]
    for (const joinRef of refs) {
      for (const ref of refs) {
        for (const topic of names) {
          for (const event of names) {
            for (const payload of payloads) inputs.push(JSON.stringify([joinRef, ref, topic, event, payload]))
          }
        }
      }
    }
    for (const extra of [[], ["1"], ["1", "2", "t"], ["1", "2", "t", "e"], ["1", "2", "t", "e", {}, {}]]) {
      inputs.push(JSON.stringify(extra))
    }
    let accepted = 0
    for (const input of inputs) {
      const ours = V2.decode(text(input), false)
      expect(ours, input).toEqual(viaSchemaV2(input))
      if (ours !== undefined) accepted++
    }
    // the table must exercise both outcomes
    expect(accepted).toBeGreaterThan(100)
    expect(accepted).toBeLessThan(inputs.length - 100)
  })

  it("on generated V1 frames", () => {
    const absent = Symbol("absent")
    const inputs: Array<string> = [...raw]
    const fieldValues = {
      topic: [absent, ...names],
      event: [absent, "e", 1],
      payload: [absent, ...payloads],
      ref: [absent, ...refs],
      join_ref: [absent, null, "1", 2]
    }
    for (const topic of fieldValues.topic) {
      for (const event of fieldValues.event) {
        for (const payload of fieldValues.payload) {
          for (const ref of fieldValues.ref) {
            for (const join_ref of fieldValues.join_ref) {
              const msg: Record<string, unknown> = {}
              const entries = Object.entries({ topic, event, payload, ref, join_ref })
              for (const [key, value] of entries) if (value !== absent) msg[key] = value
              inputs.push(JSON.stringify(msg))
            }
          }
        }
      }
    }
    let accepted = 0
    for (const input of inputs) {
      const ours = V1.decode(text(input), false)
      expect(ours, input).toEqual(viaSchemaV1(input))
      if (ours !== undefined) accepted++
    }
    expect(accepted).toBeGreaterThan(50)
    expect(accepted).toBeLessThan(inputs.length - 50)
  })

  it("on what our own text encoders produce", () => {
    for (const serializer of [V1, V2]) {
      const reference = serializer === V2 ? viaSchemaV2 : viaSchemaV1
      const outputs = [
        serializer.encodeReply("1", "2", "t", "ok", { a: 1 }),
        serializer.encodeReply(null, null, "t", "error", undefined),
        serializer.encodePush("1", "t", "e", [1]),
        serializer.encodePush(null, "t", "e", "x")
      ]
      for (const out of outputs) {
        expect(typeof out).toBe("string")
        const input = out as string
        expect(reference(input), input).toBeDefined()
        expect(serializer.decode(text(input), false)).toEqual(reference(input))
      }
    }
  })
})

// ---------------------------------------------------------------------------
// a real phoenix client talking to the codec through an in-memory transport

class MemoryTransport {
  static last: MemoryTransport | undefined
  readonly url: string
  readyState = 0
  bufferedAmount = 0
  binaryType = "arraybuffer"
  timeout = 0
  readonly sent: Array<Wire> = []
  closedWith: number | undefined = undefined
  onopen: (() => void) | null = null
  onmessage: ((event: { readonly data: Wire }) => void) | null = null
  onclose: ((event: { readonly code: number; readonly wasClean: boolean }) => void) | null = null
  onerror: ((error: unknown) => void) | null = null

  constructor(url: string) {
    this.url = url
    MemoryTransport.last = this
  }

  send(data: Wire): void {
    this.sent.push(data)
  }

  close(code?: number): void {
    this.readyState = 3
    this.closedWith = code
  }

  open(): void {
    this.readyState = 1
    this.onopen?.()
  }

  /** Server side: the next frame the client sent, decoded by us. */
  next(): Frame | undefined {
    const wire = this.sent.shift()
    return wire === undefined ? undefined : V2.decode(...received(wire))
  }

  /** Server side: write one of our frames to the client. */
  deliver(out: string | Buffer): void {
    this.onmessage?.({ data: delivered(out) })
  }
}

describe("a phoenix client over the V2 codec", () => {
  afterEach(() => {
    vi.useRealTimers()
  })

  it("joins, exchanges text and binary messages, and keeps its heartbeat", () => {
    vi.useFakeTimers()
    const socket = new Phoenix.Socket("ws://gateway.test/socket", { transport: MemoryTransport })
    socket.connect()
    const transport = MemoryTransport.last!
    expect(new URL(transport.url).searchParams.get("vsn")).toBe(Vsn.v2)
    transport.open()

    const channel = socket.channel("room:lobby", { token: "t0k" })
    const joined: Array<unknown> = []
    channel.join().receive("ok", (response: unknown) => joined.push(response))
    const join = transport.next()
    expect(join).toMatchObject({ topic: "room:lobby", event: Event.join, payload: { token: "t0k" } })
    expect(join?.joinRef).toBe(join?.ref)
    transport.deliver(V2.encodeReply(join!.joinRef, join!.ref, join!.topic, "ok", { welcome: true }))
    expect(joined).toEqual([{ welcome: true }])

    const seen: Array<unknown> = []
    channel.on("msg", (payload: unknown) => {
      seen.push(payload)
    })
    channel.on("bin", (payload: unknown) => {
      seen.push([...asBytes(payload)])
    })
    transport.deliver(V2.encodePush(join!.joinRef, "room:lobby", "msg", { n: 1 }))
    transport.deliver(V2.encodePush(null, "room:lobby", "msg", { n: 2 }))
    // a push for an earlier join of the channel is dropped by the client
    transport.deliver(V2.encodePush("999", "room:lobby", "msg", { n: 3 }))
    transport.deliver(V2.encodePush(join!.joinRef, "room:lobby", "bin", Buffer.from([1, 2])))
    transport.deliver(V2.encodePush(null, "room:lobby", "bin", Buffer.from([3])))
    transport.deliver(V2.encodePush("999", "room:lobby", "bin", Buffer.from([4])))
    transport.deliver(V2.encodePush(null, "room:other", "msg", { n: 5 }))
    expect(seen).toEqual([{ n: 1 }, { n: 2 }, [1, 2], [3]])

    const replies: Array<unknown> = []
    channel.push("upload", bytes(5, 6, 7)).receive("ok", (response: unknown) => replies.push([...asBytes(response)]))
    const upload = transport.next()
    expect(upload).toMatchObject({ joinRef: join!.joinRef, topic: "room:lobby", event: "upload" })
    expect([...asBytes(upload!.payload)]).toEqual([5, 6, 7])
    transport.deliver(V2.encodeReply(upload!.joinRef, upload!.ref, upload!.topic, "ok", Buffer.from([8])))

    channel.push("forbidden", {}).receive("error", (response: unknown) => replies.push(response))
    const forbidden = transport.next()!
    transport.deliver(
      V2.encodeReply(forbidden.joinRef, forbidden.ref, forbidden.topic, "error", { reason: "unauthorized" })
    )
    expect(replies).toEqual([[8], { reason: "unauthorized" }])

    // two heartbeat rounds: answering the first keeps the connection open
    for (let round = 0; round < 2; round++) {
      vi.advanceTimersByTime(30_000)
      const heartbeat = transport.next()
      expect(heartbeat).toMatchObject({ joinRef: null, topic: PHOENIX_TOPIC, event: Event.heartbeat, payload: {} })
      transport.deliver(V2.encodeReply(null, heartbeat!.ref, PHOENIX_TOPIC, "ok", {}))
    }
    expect(transport.closedWith).toBeUndefined()
    expect(transport.sent).toEqual([])

    socket.disconnect(undefined, CloseCode.normal)
    expect(transport.closedWith).toBe(CloseCode.normal)
  })
})
