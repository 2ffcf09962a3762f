/**
 * Per-client limits (CONTRACT §5 rate limits, §9 limits): a client that stops
 * reading is dropped once its outbox passes the gateway's maximum while the
 * other subscribers get every broadcast; push rate limits are token buckets
 * per (app, client) from `rateLimits.default` and per (app, client, event)
 * from `rateLimits.byEvent`, shared by all connections of a client, checked
 * after the payload and never spent by refused pushes.
 */
import type { Socket } from "node:net"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { collect, connectSocket, push, rawSocket, schemaDocument, startFakeApp, startTestGateway } from "../../src/testing/index.ts"
import { closedAfterEach } from "../support/http.ts"
import type { AuthHandler, ConnectedSocket, FakeApp, MessageHandler, PushResult, RawSocket, TestGateway } from "../../src/testing/index.ts"

let app: FakeApp
let gateway: TestGateway

const MAX_OUTBOX_BYTES = 64 * 1024
const BLOB_BYTES = 64 * 1024

const schema = schemaDocument({
  version: "1",
  channels: [{ pattern: "room:{room_id}" }, { pattern: "locked:{id}", permissions: { send: ["write:{id}"] } }],
  events: [
    { name: "echo", allowedChannels: ["room:*", "locked:*"] },
    { name: "typing", allowedChannels: ["room:*"], payload: { user: "string" } },
    { name: "bulk", allowedChannels: ["room:*"] }
  ],
  rateLimits: {
    default: { windowMs: 60_000, maxRequests: 3 },
    byEvent: {
      typing: { windowMs: 60_000, maxRequests: 1 },
      // more than the default allows: the default still applies
      bulk: { windowMs: 60_000, maxRequests: 10 }
    }
  }
})

/** `flood` broadcasts `{n, blob}` of BLOB_BYTES to room:big; anything else is echoed. */
const handler: MessageHandler = (body) => {
  if (body.event === "flood") {
    const { n } = body.payload as { n: number }
    return { action: "broadcast", event: "blob", topic: "room:big", data: { n, blob: "x".repeat(BLOB_BYTES) } }
  }
  return { action: "reply", data: body.payload }
}

/** token-<id> is client <id>. */
const tokenIsClient: AuthHandler = (body) =>
  body.token.startsWith("token-") ? { client_id: body.token.slice("token-".length) } : null

beforeAll(async () => {
  app = await startFakeApp({ auth: tokenIsClient, messageHandler: handler })
  app.setSchema(schema)
  gateway = await startTestGateway({
    apps: [
      { id: "chat", fakeApp: app },
      { id: "chat2", fakeApp: app }
    ]
  })
})
afterAll(async () => {
  await gateway.close()
  await app.close()
})

const open = closedAfterEach<ConnectedSocket | RawSocket>()

const joined = async (token: string, topic = "room:lobby", appId = "chat") => {
  const socket = await connectSocket(gateway.socketUrl, { app: appId, token })
  open.push(socket)
  const result = await socket.join(topic)
  expect(result.status).toBe("ok")
  return result.channel
}

const ok = (response: unknown) => ({ status: "ok", response })

const expectRateLimited = (result: PushResult, maxRetryAfterMs: number) => {
  expect(result).toMatchObject({ status: "error", response: { reason: "rate_limited" } })
  const retryAfter = (result.response as { retry_after_ms: unknown }).retry_after_ms
  expect(typeof retryAfter).toBe("number")
  expect(retryAfter as number).toBeGreaterThan(0)
  expect(retryAfter as number).toBeLessThanOrEqual(maxRetryAfterMs)
}

const forwardedFor = (clientId: string) => app.requestsOf("message").filter((r) => r.body?.client_id === clientId)

describe("push rate limits", () => {
  it("two connections of one client share the default bucket; another client is unaffected", async () => {
    const first = await joined("token-shared")
    const second = await joined("token-shared", "room:other")
    expect(await push(first, "echo", { n: 1 })).toEqual(ok({ n: 1 }))
    expect(await push(second, "echo", { n: 2 })).toEqual(ok({ n: 2 }))
    expect(await push(first, "echo", { n: 3 })).toEqual(ok({ n: 3 }))
    // 3 per 60 s: a token comes back every 20 s
    expectRateLimited(await push(second, "echo", { n: 4 }), 20_000)
    expectRateLimited(await push(first, "echo", { n: 5 }), 20_000)

    const stranger = await joined("token-stranger")
    for (let n = 1; n <= 3; n++) expect(await push(stranger, "echo", { n })).toEqual(ok({ n }))

    // refused pushes never reach the app
    expect(forwardedFor("shared").map((r) => r.body.payload)).toEqual([{ n: 1 }, { n: 2 }, { n: 3 }])
  })

  it("concurrent pushes on two connections of one client: exactly the bucket's tokens get through", async () => {
    const first = await joined("token-racer")
    const second = await joined("token-racer")
    const results = await Promise.all(
      Array.from({ length: 10 }, (_, n) => push(n % 2 === 0 ? first : second, "echo", { n }))
    )
    expect(results.filter((result) => result.status === "ok")).toHaveLength(3)
    for (const result of results.filter((r) => r.status !== "ok")) expectRateLimited(result, 20_000)
    expect(forwardedFor("racer")).toHaveLength(3)
  })

  it("a new connection of a limited client is still limited", async () => {
    const first = await joined("token-reconnect")
    for (let n = 1; n <= 3; n++) expect(await push(first, "echo", { n })).toEqual(ok({ n }))
    const again = await joined("token-reconnect")
    expectRateLimited(await push(again, "echo", { n: 4 }), 20_000)
  })

  it("a byEvent limit applies on top of the default, and a refused push spends no token", async () => {
    const channel = await joined("token-typist")
    expect(await push(channel, "typing", { user: "t" })).toEqual(ok({ user: "t" }))
    // 1 typing per 60 s
    expectRateLimited(await push(channel, "typing", { user: "t" }), 60_000)
    // the default bucket has 2 tokens left: the refused typing took none
    expect(await push(channel, "echo", { n: 1 })).toEqual(ok({ n: 1 }))
    expect(await push(channel, "echo", { n: 2 })).toEqual(ok({ n: 2 }))
    expectRateLimited(await push(channel, "echo", { n: 3 }), 20_000)
    expect(forwardedFor("typist")).toHaveLength(3)
  })

  it("a byEvent limit larger than the default does not lift the default", async () => {
    const channel = await joined("token-bulker")
    for (let n = 1; n <= 3; n++) expect(await push(channel, "bulk", { n })).toEqual(ok({ n }))
    expectRateLimited(await push(channel, "bulk", { n: 4 }), 20_000)
  })

  it("checks come first: refused pushes spend no token, and an invalid payload is reported even when limited", async () => {
    const socket = await rawSocket(`${gateway.socketUrl}/websocket?app=chat&token=token-careful&vsn=2.0.0`)
    open.push(socket)
    socket.send(["1", "1", "room:lobby", "phx_join", {}])
    expect(await socket.nextJson()).toMatchObject(["1", "1", "room:lobby", "phx_reply", { status: "ok" }])
    socket.send(["2", "2", "locked:vault", "phx_join", {}])
    expect(await socket.nextJson()).toMatchObject(["2", "2", "locked:vault", "phx_reply", { status: "ok" }])
    const pushAndRead = async (ref: string, topic: string, event: string, payload: unknown) => {
      socket.send(["1", ref, topic, event, payload])
      const [, replyRef, , , reply] = await socket.nextJson<[null, string, string, string, unknown]>()
      expect(replyRef).toBe(ref)
      return reply
    }
    for (let n = 0; n < 5; n++) {
      expect(await pushAndRead(`u${n}`, "room:unjoined", "echo", {})).toMatchObject({ response: { reason: "unmatched topic" } })
      expect(await pushAndRead(`e${n}`, "room:lobby", "nope", {})).toMatchObject({
        response: { reason: "invalid_event_for_channel" }
      })
      expect(await pushAndRead(`a${n}`, "locked:vault", "echo", {})).toMatchObject({ response: { reason: "unauthorized" } })
      expect(await pushAndRead(`p${n}`, "room:lobby", "typing", { user: 1 })).toMatchObject({
        response: { reason: "invalid_payload" }
      })
    }
    for (let n = 1; n <= 3; n++) expect(await pushAndRead(`ok${n}`, "room:lobby", "echo", { n })).toEqual(ok({ n }))
    expect(await pushAndRead("limited", "room:lobby", "echo", {})).toMatchObject({ response: { reason: "rate_limited" } })
    // every other check comes before the rate limit
    expect(await pushAndRead("invalid", "room:lobby", "typing", {})).toMatchObject({
      status: "error",
      response: { reason: "invalid_payload" }
    })
    expect(await pushAndRead("denied", "locked:vault", "echo", {})).toMatchObject({ response: { reason: "unauthorized" } })
    expect(forwardedFor("careful")).toHaveLength(3)
  })

  it("buckets are per app: the same client id in another app has its own", async () => {
    const inChat = await joined("token-twoapps")
    for (let n = 1; n <= 3; n++) expect(await push(inChat, "echo", { n })).toEqual(ok({ n }))
    expectRateLimited(await push(inChat, "echo", {}), 20_000)
    const inChat2 = await joined("token-twoapps", "room:lobby", "chat2")
    for (let n = 1; n <= 3; n++) expect(await push(inChat2, "echo", { n })).toEqual(ok({ n }))
    expectRateLimited(await push(inChat2, "echo", {}), 20_000)
  })
})

describe("a client that does not read", () => {
  it("is dropped once its outbox passes the maximum, while the other subscribers get every broadcast", async () => {
    const fake = await startFakeApp({
      schema: { version: "1", channels: [{ pattern: "room:{room_id}" }], events: [{ name: "flood", allowedChannels: ["room:*"] }] },
      auth: tokenIsClient,
      messageHandler: handler
    })
    const small = await startTestGateway({
      apps: [{ id: "chat", fakeApp: fake }],
      limits: { maxOutboxBytes: MAX_OUTBOX_BYTES }
    })
    const sockets: Array<ConnectedSocket> = []
    let slow: RawSocket | undefined
    let healthyV1: RawSocket | undefined
    try {
      const connect = async (token: string, topic: string) => {
        const socket = await connectSocket(small.socketUrl, { app: "chat", token })
        sockets.push(socket)
        const result = await socket.join(topic)
        expect(result.status).toBe("ok")
        return result.channel
      }
      const healthy = await connect("token-healthy", "room:big")
      const received = collect<{ n: number; blob: string }>(healthy, "blob")
      healthyV1 = await rawSocket(`${small.socketUrl}/websocket?app=chat&token=token-healthy-v1&vsn=1.0.0`)
      healthyV1.send({ topic: "room:big", event: "phx_join", payload: {}, ref: "1", join_ref: "1" })
      expect(await healthyV1.nextJson()).toMatchObject({ event: "phx_reply", payload: { status: "ok" } })

      slow = await rawSocket(`${small.socketUrl}/websocket?app=chat&token=token-slow&vsn=2.0.0`)
      const established = await fake.waitFor(
        "notify",
        (r) => r.body?.event === "connection:established" && r.body.client_id === "slow"
      )
      slow.send(["1", "1", "room:big", "phx_join", {}])
      expect(await slow.nextJson()).toMatchObject(["1", "1", "room:big", "phx_reply", { status: "ok" }])
      // stop reading: the kernel buffers fill up, then the gateway's outbox
      const slowTcp = (slow.ws as unknown as { _socket: Socket })._socket
      slowTcp.pause()
      const dropped = fake.waitFor(
        "notify",
        (r) => r.body?.event === "connection:closed" && r.body.connection_id === established.body.connection_id,
        20_000
      )
      let slowDropped = false
      dropped.then(
        () => {
          slowDropped = true
        },
        () => {}
      )

      const pusher = await connect("token-pusher", "room:pusher")
      let sent = 0
      // broadcasts until the gateway has dropped the slow client, then a few more
      while (!slowDropped && sent < 2000) {
        expect(await push(pusher, "flood", { n: sent })).toEqual(ok({}))
        sent++
      }
      await dropped
      // and it is counted (CONTRACT §8: slow-consumer disconnects)
      const page = await (await fetch(`${small.url}/metrics`)).text()
      expect(page).toMatch(/^gateway_slow_consumer_disconnects_total\{app="chat"\} 1$/m)
      for (let k = 0; k < 5; k++) {
        expect(await push(pusher, "flood", { n: sent })).toEqual(ok({}))
        sent++
      }

      const all = await received.until(sent, 10_000)
      expect(all.map((item) => item.n)).toEqual(Array.from({ length: sent }, (_, n) => n))
      expect(all.every((item) => item.blob.length === BLOB_BYTES)).toBe(true)
      const inV1: Array<number> = []
      while (inV1.length < sent) {
        const frame = await healthyV1.nextJson<{ event: string; payload: { n: number; blob: string } }>()
        expect(frame.event).toBe("blob")
        expect(frame.payload.blob).toHaveLength(BLOB_BYTES)
        inV1.push(frame.payload.n)
      }
      expect(inV1).toEqual(Array.from({ length: sent }, (_, n) => n))

      // reading again, the slow client finds its connection gone, without a closing handshake
      slowTcp.resume()
      expect((await slow.closed).code).toBe(1006)
      const blobs = slow.frames.filter((frame) => typeof frame === "string" && frame.includes("\"blob\"")).length
      expect(blobs).toBeLessThan(sent)
    } finally {
      slow?.ws.terminate()
      await healthyV1?.close()
      await Promise.all(sockets.map((socket) => socket.close()))
      await small.close()
      await fake.close()
    }
  })
})

describe("a client that pushes faster than its app answers", () => {
  it("gets rate_limited for pushes beyond 256 waiting for the app, and its waiting pushes are still answered", async () => {
    const slow = await startFakeApp()
    const bounded = await startTestGateway({ apps: [{ id: "chat", fakeApp: slow, timeouts: { messageMs: 2_000 } }] })
    try {
      slow.fail("message", "hang")
      const socket = await connectSocket(bounded.socketUrl, { app: "chat", token: "token-alice" })
      const { channel } = await socket.join("room:flood")
      const waiting = Array.from({ length: 256 }, (_, n) => push(channel, "echo", { n }))
      await slow.waitFor("message", () => slow.requestsOf("message").length >= 256)
      expect(await push(channel, "echo", { n: 256 })).toEqual({
        status: "error",
        response: { reason: "rate_limited", retry_after_ms: 1_000 }
      })
      slow.fail("message", "ok")
      for (const answer of await Promise.all(waiting)) expect(answer.status).toBe("error")
      await socket.close()
    } finally {
      await bounded.close()
      await slow.close()
    }
  })
})
