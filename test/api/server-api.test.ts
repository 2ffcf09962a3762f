/**
 * The server API (CONTRACT §4): each call and each refusal, with real
 * clients on the other end.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import {
  collect,
  connectSocket,
  defaultSchema,
  nextMessage,
  push,
  rawSocket,
  startFakeApp,
  startTestGateway
} from "../../src/testing/index.ts"
import type { FakeApp, TestGateway } from "../../src/testing/index.ts"

let app: FakeApp
let gateway: TestGateway

beforeAll(async () => {
  app = await startFakeApp()
  gateway = await startTestGateway({
    apps: [
      { id: "chat", fakeApp: app, secret: "chat-secret" },
      { id: "nosecret", fakeApp: app }
    ]
  })
})
afterAll(async () => {
  await gateway.close()
  await app.close()
})

const api = (path: string, init: RequestInit & { secret?: string } = {}) =>
  fetch(`${gateway.url}${path}`, {
    ...init,
    headers: {
      "content-type": "application/json",
      ...(init.secret === undefined ? {} : { authorization: `Bearer ${init.secret}` }),
      ...init.headers
    }
  })

const broadcast = (body: unknown, secret = "chat-secret") =>
  api("/api/apps/chat/broadcast", { method: "POST", secret, body: JSON.stringify(body) })

const answer = async (response: Response) => ({ status: response.status, body: (await response.json()) as any })

describe("authentication", () => {
  it("404 unknown_app", async () => {
    expect(await answer(await api("/api/apps/nope/connections", { secret: "chat-secret" }))).toEqual({
      status: 404,
      body: { reason: "unknown_app" }
    })
  })

  it("401 for a missing or wrong secret, and for an app without a secret", async () => {
    expect((await api("/api/apps/chat/connections")).status).toBe(401)
    expect((await api("/api/apps/chat/connections", { secret: "wrong" })).status).toBe(401)
    expect(await answer(await api("/api/apps/nosecret/connections", { secret: "" }))).toEqual({
      status: 401,
      body: { reason: "unauthorized" }
    })
  })
})

describe("POST /api/apps/:app/broadcast", () => {
  it("delivers one broadcast to every subscriber of the topic, V1 and V2 alike (202)", async () => {
    const alice = await connectSocket(gateway.socketUrl, { app: "chat", token: "token-alice" })
    const aliceJoin = await alice.join("room:news")
    const v1 = await rawSocket(`${gateway.socketUrl}/websocket?app=chat&token=token-bob&vsn=1.0.0`)
    v1.send({ topic: "room:news", event: "phx_join", payload: {}, ref: "1", join_ref: "1" })
    expect(await v1.nextJson()).toMatchObject({ event: "phx_reply", payload: { status: "ok" } })
    const aliceGets = nextMessage(aliceJoin.channel, "headline")
    const response = await api("/api/apps/chat/broadcast", {
      method: "POST",
      secret: "chat-secret",
      body: JSON.stringify({ topic: "room:news", event: "headline", payload: { text: "hi" } })
    })
    expect(await answer(response)).toEqual({ status: 202, body: { accepted: 1 } })
    expect(await aliceGets).toEqual({ text: "hi" })
    // the V1 socket also gets presence events for the room; skip to the broadcast
    for (;;) {
      const frame = await v1.nextJson<{ event: string; payload: unknown; topic: string }>()
      if (frame.event !== "headline") continue
      expect(frame).toMatchObject({ topic: "room:news", payload: { text: "hi" } })
      break
    }
    await alice.close()
    await v1.close()
  })

  it("takes an array, delivered in the order given", async () => {
    const socket = await connectSocket(gateway.socketUrl, { app: "chat", token: "token-alice" })
    const joined = await socket.join("room:batch")
    const received = collect<{ n: number }>(joined.channel, "tick")
    const batch = Array.from({ length: 20 }, (_, n) => ({ topic: "room:batch", event: "tick", payload: { n } }))
    const response = await broadcast(batch)
    expect(await answer(response)).toEqual({ status: 202, body: { accepted: 20 } })
    expect((await received.until(20)).map((item) => item.n)).toEqual(batch.map((item) => item.payload.n))
    await socket.close()
  })

  it("400 invalid_json and 400 invalid_body with the problems", async () => {
    expect(await answer(await api("/api/apps/chat/broadcast", { method: "POST", secret: "chat-secret", body: "{oops" })))
      .toEqual({ status: 400, body: { reason: "invalid_json" } })
    const invalid = await answer(await api("/api/apps/chat/broadcast", {
      method: "POST",
      secret: "chat-secret",
      body: JSON.stringify({ topic: "", event: "phx_reply" })
    }))
    expect(invalid.status).toBe(400)
    expect(invalid.body.reason).toBe("invalid_body")
    expect(invalid.body.errors.length).toBeGreaterThan(0)
  })

  it("400 invalid_body for a payload nested deeper than 128 levels, which delivers nothing", async () => {
    const socket = await connectSocket(gateway.socketUrl, { app: "chat", token: "token-alice" })
    const joined = await socket.join("room:deep")
    const received = collect<{ n: number }>(joined.channel, "deep")
    const nested = (depth: number): unknown => depth === 0 ? 1 : [nested(depth - 1)]
    const refused = await answer(await broadcast({ topic: "room:deep", event: "deep", payload: { n: 0, deeper: nested(128) } }))
    expect(refused).toEqual({
      status: 400,
      body: { reason: "invalid_body", errors: [{ path: "", message: "a payload is nested deeper than 128 levels" }] }
    })
    // 128 levels in all are fine, in an array of broadcasts too
    expect((await broadcast([{ topic: "room:deep", event: "deep", payload: { n: 1, deeper: nested(127) } }])).status).toBe(202)
    expect((await received.until(1)).map((item) => item.n)).toEqual([1])
    await socket.close()
  })

  it("400 for a reserved phx_ event alone, and for one bad element of an array, which delivers nothing", async () => {
    const socket = await connectSocket(gateway.socketUrl, { app: "chat", token: "token-alice" })
    const joined = await socket.join("room:refused")
    const received = collect(joined.channel, "tick")
    const reserved = await answer(await broadcast({ topic: "room:refused", event: "phx_close" }))
    expect(reserved.status).toBe(400)
    expect(reserved.body.reason).toBe("invalid_body")
    expect(JSON.stringify(reserved.body.errors)).toContain("phx_")
    const mixed = await broadcast([{ topic: "room:refused", event: "tick", payload: { n: 1 } }, { topic: "", event: "tick" }])
    expect(mixed.status).toBe(400)
    // a broadcast made after the refused ones is the first to arrive
    await broadcast({ topic: "room:refused", event: "tick", payload: { n: 2 } })
    expect(await received.until(1)).toEqual([{ n: 2 }])
    expect(joined.channel.state).toBe("joined")
    await socket.close()
  })

  it("401 on the write endpoints with a wrong secret, and nothing is done", async () => {
    const socket = await connectSocket(gateway.socketUrl, { app: "chat", token: "token-alice" })
    const joined = await socket.join("room:guarded")
    const received = collect(joined.channel, "tick")
    const calls: ReadonlyArray<[string, RequestInit]> = [
      ["/api/apps/chat/broadcast", { method: "POST", body: JSON.stringify({ topic: "room:guarded", event: "tick", payload: { n: 1 } }) }],
      ["/api/apps/chat/clients/alice", { method: "DELETE" }],
      ["/api/apps/chat/schema/refresh", { method: "POST" }]
    ]
    for (const [path, init] of calls) {
      expect(await answer(await api(path, { ...init, secret: "wrong" }))).toEqual({ status: 401, body: { reason: "unauthorized" } })
    }
    await broadcast({ topic: "room:guarded", event: "tick", payload: { n: 2 } })
    expect(await received.until(1)).toEqual([{ n: 2 }])
    await socket.close()
  })
})

describe("connections and clients", () => {
  it("lists every live connection of the app with the contract's fields", async () => {
    const socket = await connectSocket(gateway.socketUrl, { app: "chat", token: "token-alice", clientType: "cli" })
    await socket.join("room:listed")
    const { status, body } = await answer(await api("/api/apps/chat/connections", { secret: "chat-secret" }))
    expect(status).toBe(200)
    const mine = body.connections.find((connection: { topics: Array<string> }) => connection.topics.includes("room:listed"))
    expect(mine).toEqual({
      connection_id: expect.any(String),
      client_id: "alice",
      client_type: "web",
      metadata: { name: "Alice" },
      node: "test",
      connected_at: expect.any(String),
      last_ping: expect.any(String),
      topics: ["room:listed"]
    })
    await socket.close()
  })

  it("pages through the connections with limit and next_cursor, each once, in connection_id order", async () => {
    const sockets = await Promise.all(
      Array.from({ length: 5 }, () => connectSocket(gateway.socketUrl, { app: "chat", token: "token-alice" }))
    )
    try {
      const { body: all } = await answer(await api("/api/apps/chat/connections", { secret: "chat-secret" }))
      expect(all.next_cursor).toBeNull()
      const ids: Array<string> = all.connections.map((connection: { connection_id: string }) => connection.connection_id)
      expect(ids.length).toBeGreaterThanOrEqual(5)
      expect(ids).toEqual([...ids].sort())

      const paged: Array<string> = []
      let cursor: string | null = null
      do {
        const query: string = cursor === null ? "limit=2" : `limit=2&cursor=${cursor}`
        const { status, body }: { status: number; body: any } = await answer(await api(`/api/apps/chat/connections?${query}`, { secret: "chat-secret" }))
        expect(status).toBe(200)
        expect(body.connections.length).toBeLessThanOrEqual(2)
        paged.push(...body.connections.map((connection: { connection_id: string }) => connection.connection_id))
        cursor = body.next_cursor
      } while (cursor !== null)
      expect(paged).toEqual(ids)

      for (const query of ["limit=0", "limit=1001", "limit=two", "cursor=bm90LWEtY3Vyc29y"]) {
        const { status, body } = await answer(await api(`/api/apps/chat/connections?${query}`, { secret: "chat-secret" }))
        expect({ query, status, reason: body.reason }).toEqual({ query, status: 400, reason: "invalid_query" })
      }
    } finally {
      await Promise.all(sockets.map((socket) => socket.close()))
    }
  })

  it("DELETE a client closes all its connections and answers the count; others stay", async () => {
    const first = await connectSocket(gateway.socketUrl, { app: "chat", token: "token-bob" })
    const second = await connectSocket(gateway.socketUrl, { app: "chat", token: "token-bob" })
    const other = await connectSocket(gateway.socketUrl, { app: "chat", token: "token-alice" })
    const response = await answer(await api("/api/apps/chat/clients/bob", { method: "DELETE", secret: "chat-secret" }))
    expect(response).toEqual({ status: 200, body: { client_id: "bob", disconnected: 2 } })
    expect((await first.closed).code).toBe(1008)
    expect((await second.closed).code).toBe(1008)
    expect((await other.join("room:still-here")).status).toBe("ok")
    await other.close()
  })
})

describe("presence and schema", () => {
  it("GET presence of a topic", async () => {
    const socket = await connectSocket(gateway.socketUrl, { app: "chat", token: "token-alice" })
    const channel = socket.socket.channel("room:present")
    const state = new Promise((resolve) => channel.on("presence_state", resolve))
    channel.join()
    await state
    const { status, body } = await answer(await api("/api/apps/chat/topics/room:present/presence", { secret: "chat-secret" }))
    expect(status).toBe(200)
    expect(body).toEqual({
      topic: "room:present",
      presences: { alice: { metas: [expect.objectContaining({ phx_ref: expect.any(String), client_type: "web" })] } }
    })
    await socket.close()
  })

  it("GET presence of a topic nobody is on answers an empty list", async () => {
    expect(await answer(await api("/api/apps/chat/topics/room:empty/presence", { secret: "chat-secret" }))).toEqual({
      status: 200,
      body: { topic: "room:empty", presences: {} }
    })
  })

  it("POST schema/refresh answers the version, 502 with the reason when the fetch fails", async () => {
    expect(await answer(await api("/api/apps/chat/schema/refresh", { method: "POST", secret: "chat-secret" })))
      .toEqual({ status: 200, body: { version: "1" } })
    app.fail("schema", { status: 503 }, { times: 1 })
    const failed = await answer(await api("/api/apps/chat/schema/refresh", { method: "POST", secret: "chat-secret" }))
    expect(failed.status).toBe(502)
    expect(failed.body.reason).toContain("503")
  })
})

describe("a refreshed schema on joins already made", () => {
  const refresh = async () =>
    expect((await api("/api/apps/chat/schema/refresh", { method: "POST", secret: "chat-secret" })).status).toBe(200)

  it("decides their next pushes: the event's channels and send permissions of the new version", async () => {
    const alice = await connectSocket(gateway.socketUrl, { app: "chat", token: "token-alice" })
    try {
      const { channel } = await alice.join("room:refreshed")
      expect(await push(channel, "echo", { n: 1 })).toEqual({ status: "ok", response: { n: 1 } })
      app.setSchema({ ...defaultSchema, version: "2", events: [{ name: "echo", allowedChannels: ["user:*"] }] })
      await refresh()
      expect(await push(channel, "echo", { n: 2 })).toEqual({ status: "error", response: { reason: "invalid_event_for_channel" } })
      // a send permission on the event
      app.setSchema({
        ...defaultSchema,
        version: "3",
        events: [{ name: "echo", allowedChannels: ["room:*"], permissions: { send: ["moderate:{room_id}"] } }]
      })
      await refresh()
      expect(await push(channel, "echo", { n: 3 })).toEqual({ status: "error", response: { reason: "unauthorized" } })
    } finally {
      await alice.close()
      app.setSchema(defaultSchema)
      await refresh()
    }
  })
})
