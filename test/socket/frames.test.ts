/**
 * Frames at the edges of the protocol (CONTRACT §2, §9): a frame over the
 * size limit while the client is still sending it, binary frames of unknown
 * kinds, Supabase's "user broadcast push" (kind 3), and payloads nested
 * deeper than the JSON depth limit. Each case also checks that another
 * connection keeps working.
 */
import { randomBytes } from "node:crypto"
import { connect } from "node:net"
import type { Socket } from "node:net"
import { once } from "node:events"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { connectSocket, echoHandler, push, rawSocket, startFakeApp, startTestGateway } from "../../src/testing/index.ts"
import type { ConnectedSocket, FakeApp, RawSocket, TestGateway } from "../../src/testing/index.ts"

let app: FakeApp
let gateway: TestGateway
let bystander: ConnectedSocket
const url = (vsn: string) => `${gateway.socketUrl}/websocket?app=chat&token=token-alice&vsn=${vsn}`

beforeAll(async () => {
  app = await startFakeApp({
    schema: {
      version: "1",
      channels: [{ pattern: "room:{name}" }],
      events: [
        { name: "echo", allowedChannels: ["room:*"] },
        { name: "broadcast", allowedChannels: ["room:*"] },
        { name: "typed", allowedChannels: ["room:*"], payload: { type: "object" } }
      ]
    }
  })
  // the default frame limit, 1 MiB
  gateway = await startTestGateway({ apps: [{ id: "chat", fakeApp: app }] })
  bystander = await connectSocket(gateway.socketUrl, { app: "chat", token: "token-bob" })
})
afterAll(async () => {
  await bystander.close()
  await gateway.close()
  await app.close()
})

const assertBystanderServed = async (room: string) => {
  const joined = await bystander.join(`room:${room}`)
  expect(await push(joined.channel, "echo", { n: 1 })).toEqual({ status: "ok", response: { n: 1 } })
}

/** A WebSocket opened by hand over TCP, so that the test controls every byte it sends. */
const openTcpWebSocket = async (target: string): Promise<{ socket: Socket; afterHead: () => Buffer }> => {
  const { hostname, port, pathname, search } = new URL(target)
  const socket = connect(Number(port), hostname)
  await once(socket, "connect")
  let received = Buffer.alloc(0)
  socket.on("data", (chunk: Buffer) => {
    received = Buffer.concat([received, chunk])
  })
  socket.write(
    `GET ${pathname}${search} HTTP/1.1\r\nHost: ${hostname}:${port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
      `Sec-WebSocket-Key: ${randomBytes(16).toString("base64")}\r\nSec-WebSocket-Version: 13\r\n\r\n`
  )
  while (!received.includes("\r\n\r\n")) await once(socket, "data")
  expect(received.toString("latin1", 0, 12)).toBe("HTTP/1.1 101")
  const headEnd = received.indexOf("\r\n\r\n") + 4
  return { socket, afterHead: () => received.subarray(headEnd) }
}

/** The code of the first close frame in unmasked server bytes, or undefined when none is complete yet. */
const closeCodeIn = (bytes: Buffer): number | undefined => {
  let at = 0
  while (at + 2 <= bytes.length) {
    const opcode = bytes[at]! & 0x0f
    let length = bytes[at + 1]! & 0x7f
    let header = 2
    if (length === 126) {
      length = bytes.readUInt16BE(at + 2)
      header = 4
    }
    if (opcode === 0x8) return at + 4 <= bytes.length ? bytes.readUInt16BE(at + 2) : undefined
    at += header + length
  }
  return undefined
}

describe("a frame over the maximum size", () => {
  it("closes with 1009 while the client is still sending it", async () => {
    for (let attempt = 0; attempt < 3; attempt++) {
      const { socket, afterHead } = await openTcpWebSocket(url("2.0.0"))
      const size = 2 * 1024 * 1024
      const header = Buffer.alloc(14)
      header[0] = 0x81 // FIN, text
      header[1] = 0x80 | 127 // masked, 64-bit length
      header.writeBigUInt64BE(BigInt(size), 2)
      randomBytes(4).copy(header, 10)
      // a reset would end the socket with an error instead of the close frame
      const ended = new Promise<string>((resolve) => {
        socket.on("error", (error) => resolve(error.message))
        socket.on("close", () => resolve("closed"))
      })
      // the whole frame in one write: most of it is still on its way when the header is refused
      socket.write(Buffer.concat([header, Buffer.alloc(size, 0x20)]))
      expect(await ended).toBe("closed")
      expect(closeCodeIn(afterHead())).toBe(1009)
    }
    await assertBystanderServed("after-1009")
  })
})

describe("binary frames", () => {
  it("of an unknown kind close the connection with 1007", async () => {
    for (const kind of [1, 2, 4, 9, 255]) {
      const socket = await rawSocket(url("2.0.0"))
      socket.ws.send(Buffer.from([kind, 0, 0, 0, 0, 0, 0, 0]), { binary: true })
      expect((await socket.closed).code).toBe(1007)
    }
    await assertBystanderServed("after-unknown-kind")
  })

  /** realtime-js's user broadcast push: the header, its fields, then the payload. */
  const userBroadcastPush = (fields: {
    readonly joinRef: string
    readonly ref: string
    readonly topic: string
    readonly event: string
    readonly metadata: string
    readonly encoding: number
    readonly payload: Buffer
  }) => {
    const parts = [fields.joinRef, fields.ref, fields.topic, fields.event, fields.metadata].map((field) => Buffer.from(field))
    return Buffer.concat([Buffer.from([3, ...parts.map((part) => part.length), fields.encoding]), ...parts, fields.payload])
  }

  const joined = async (topic: string): Promise<RawSocket> => {
    const socket = await rawSocket(url("2.0.0"))
    socket.send(["1", "1", topic, "phx_join", {}])
    expect(await socket.nextJson()).toEqual(["1", "1", topic, "phx_reply", { status: "ok", response: {} }])
    return socket
  }

  it("of kind 3 (user broadcast push) are pushes of event broadcast with {type, event, payload}", async () => {
    const socket = await joined("room:supabase")
    socket.ws.send(userBroadcastPush({
      joinRef: "1",
      ref: "2",
      topic: "room:supabase",
      event: "cursor-moved",
      metadata: "{\"persist\":true}",
      encoding: 1,
      payload: Buffer.from(JSON.stringify({ x: 1, label: "é" }))
    }), { binary: true })
    const sent = { type: "broadcast", event: "cursor-moved", payload: { x: 1, label: "é" } }
    const forwarded = await app.waitFor("message", (request) => request.body?.channel === "room:supabase")
    expect(forwarded.body).toMatchObject({ event: "broadcast", ref: "2", payload: sent })
    expect(await socket.nextJson()).toEqual(["1", "2", "room:supabase", "phx_reply", { status: "ok", response: sent }])

    const bytes = Buffer.from([0xde, 0xad, 0xbe, 0xef])
    socket.ws.send(userBroadcastPush({
      joinRef: "1",
      ref: "3",
      topic: "room:supabase",
      event: "blob",
      metadata: "",
      encoding: 0,
      payload: bytes
    }), { binary: true })
    expect(await socket.nextJson()).toEqual([
      "1",
      "3",
      "room:supabase",
      "phx_reply",
      { status: "ok", response: { type: "broadcast", event: "blob", payload: { binary: bytes.toString("base64") } } }
    ])
    await socket.close()
  })

  it("of kind 3 close with 1007 when their fields overrun the frame or their payload is not what the header says", async () => {
    const base = { joinRef: "1", ref: "2", topic: "room:bad", event: "e", metadata: "", encoding: 1, payload: Buffer.from("{}") }
    const frames = [
      userBroadcastPush(base).subarray(0, 10),
      userBroadcastPush({ ...base, payload: Buffer.from("{not json") }),
      userBroadcastPush({ ...base, encoding: 7 }),
      userBroadcastPush({ ...base, payload: Buffer.from([0x22, 0xff, 0x22]) })
    ]
    for (const frame of frames) {
      const socket = await joined("room:bad")
      socket.ws.send(frame, { binary: true })
      expect((await socket.closed).code).toBe(1007)
    }
    await assertBystanderServed("after-bad-kind-3")
  })
})

describe("payloads nested deeper than 128 levels", () => {
  const nested = (depth: number): unknown => {
    let value: unknown = 1
    for (let i = 0; i < depth; i++) value = i % 2 === 0 ? [value] : { a: value }
    return value
  }
  // what JSON.stringify cannot write back: the reply would never be sent
  const hugeDepth = 200_000
  const deepText = "[".repeat(hugeDepth) + "]".repeat(hugeDepth)

  it("are refused with invalid_payload, in both protocol versions, and the connection goes on", async () => {
    const v2 = await rawSocket(url("2.0.0"))
    v2.send(["1", "1", "room:deep", "phx_join", {}])
    await v2.nextJson()
    v2.send(["1", "2", "room:deep", "echo", nested(129)])
    v2.send(`["1","3","room:deep","echo",${deepText}]`)
    for (const ref of ["2", "3"]) {
      expect(await v2.nextJson()).toEqual([
        "1",
        ref,
        "room:deep",
        "phx_reply",
        { status: "error", response: { reason: "invalid_payload", errors: [{ path: "", message: "nested deeper than 128 levels" }] } }
      ])
    }
    // 128 levels are fine
    v2.send(["1", "4", "room:deep", "echo", nested(128)])
    expect(await v2.nextJson()).toEqual(["1", "4", "room:deep", "phx_reply", { status: "ok", response: nested(128) }])
    await v2.close()

    const v1 = await rawSocket(url("1.0.0"))
    v1.send({ topic: "room:deep", event: "phx_join", payload: {}, ref: "1", join_ref: "1" })
    await v1.nextJson()
    v1.send(`{"topic":"room:deep","event":"echo","payload":${deepText},"ref":"2","join_ref":"1"}`)
    expect(await v1.nextJson()).toMatchObject({ ref: "2", payload: { status: "error", response: { reason: "invalid_payload" } } })
    await v1.close()
    await assertBystanderServed("after-deep")
  })

  it("in an app's answer fail the push with api_error", async () => {
    const socket = await rawSocket(url("2.0.0"))
    socket.send(["1", "1", "room:deep-answer", "phx_join", {}])
    await socket.nextJson()
    app.setMessageHandler((body) => ({ action: "reply", data: (body.payload as { n: number }).n === 1 ? nested(129) : nested(128) }))
    try {
      socket.send(["1", "2", "room:deep-answer", "echo", { n: 1 }])
      expect(await socket.nextJson()).toEqual([
        "1",
        "2",
        "room:deep-answer",
        "phx_reply",
        { status: "error", response: { reason: "api_error" } }
      ])
      socket.send(["1", "3", "room:deep-answer", "echo", { n: 2 }])
      expect(await socket.nextJson()).toEqual(["1", "3", "room:deep-answer", "phx_reply", { status: "ok", response: nested(128) }])
    } finally {
      app.setMessageHandler(echoHandler)
      await socket.close()
    }
  })

  it("close the connection with 1007 when the nesting is in a field that must be a string", async () => {
    const socket = await rawSocket(url("2.0.0"))
    socket.send(`["1",${deepText},"room:deep","echo",{}]`)
    expect((await socket.closed).code).toBe(1007)
  })
})
