/**
 * The WebSocket upgrade (CONTRACT §2): every refusal answers with its HTTP
 * status and JSON reason before any socket opens, and accepted connections
 * speak the protocol version they asked for.
 */
import { connect } from "node:net"
import type { Socket } from "node:net"
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest"
import {
  connectSocket,
  defaultTokens,
  rawSocket,
  startFakeApp,
  startTestGateway,
  upgradeRejection
} from "../../src/testing/index.ts"
import type { FakeApp, TestGateway, TokenTable } from "../../src/testing/index.ts"

let app: FakeApp
let gateway: TestGateway
const wsUrl = (query: string) => `${gateway.socketUrl}/websocket?${query}`

beforeAll(async () => {
  app = await startFakeApp()
  gateway = await startTestGateway({
    apps: [
      { id: "chat", fakeApp: app, timeouts: { authMs: 300 } },
      { id: "strict", fakeApp: app, allowedOrigins: ["https://app.example"] }
    ]
  })
})
afterAll(async () => {
  await gateway.close()
  await app.close()
})
afterEach(() => {
  app.fail("auth", "ok")
})

/** Runs `check` while the app answers auth calls from `table`, then restores its usual tokens. */
const withAuthAnswers = async (table: TokenTable, check: () => Promise<void>) => {
  app.setAuth(table)
  try {
    await check()
  } finally {
    app.setAuth(defaultTokens)
  }
}

describe("upgrade rejections", () => {
  it("400 missing_params without app or token", async () => {
    expect(await upgradeRejection(wsUrl("token=token-alice&vsn=2.0.0"))).toMatchObject({
      status: 400,
      body: { reason: "missing_params" }
    })
    expect(await upgradeRejection(wsUrl("app=chat&vsn=2.0.0"))).toMatchObject({
      status: 400,
      body: { reason: "missing_params" }
    })
  })

  it("400 unsupported_vsn for a protocol version it does not speak", async () => {
    expect(await upgradeRejection(wsUrl("app=chat&token=token-alice&vsn=9.9.9"))).toMatchObject({
      status: 400,
      body: { reason: "unsupported_vsn" }
    })
  })

  it("404 unknown_app", async () => {
    expect(await upgradeRejection(wsUrl("app=nope&token=token-alice"))).toMatchObject({
      status: 404,
      body: { reason: "unknown_app" }
    })
  })

  it("404 for any other path", async () => {
    expect(await upgradeRejection(`${gateway.socketUrl}/other?app=chat&token=token-alice`)).toMatchObject({
      status: 404
    })
  })

  it("403 origin_not_allowed for a browser origin outside the app's list", async () => {
    expect(
      await upgradeRejection(wsUrl("app=strict&token=token-alice"), { origin: "https://evil.example" })
    ).toMatchObject({ status: 403, body: { reason: "origin_not_allowed" } })
    const allowed = await connectSocket(gateway.socketUrl, {
      app: "strict",
      token: "token-alice",
      origin: "https://app.example"
    })
    await allowed.close()
  })

  it("401 unauthorized for a token the app refuses", async () => {
    expect(await upgradeRejection(wsUrl("app=chat&token=wrong"))).toMatchObject({
      status: 401,
      body: { reason: "unauthorized" }
    })
  })

  it("401 unauthorized when the auth endpoint answers 403", async () => {
    await withAuthAnswers({ "token-banned": { status: 403, json: { error: "banned" } } }, async () => {
      expect(await upgradeRejection(wsUrl("app=chat&token=token-banned"))).toMatchObject({
        status: 401,
        body: { reason: "unauthorized" }
      })
    })
  })

  it.each([
    ["answers 500", { status: 500 }],
    ["hangs past the timeout", "hang"],
    ["answers garbage", "garbage"],
    ["drops the connection", "destroy"]
  ] as const)("503 auth_service_error when the auth endpoint %s", async (_, mode) => {
    app.fail("auth", mode)
    expect(await upgradeRejection(wsUrl("app=chat&token=token-alice"))).toMatchObject({
      status: 503,
      body: { reason: "auth_service_error" }
    })
  })

  it("503 auth_service_error when the auth answer lacks a client_id", async () => {
    await withAuthAnswers({ "token-odd": { status: 200, json: { permissions: [] } } }, async () => {
      expect(await upgradeRejection(wsUrl("app=chat&token=token-odd"))).toMatchObject({
        status: 503,
        body: { reason: "auth_service_error" }
      })
    })
  })
})

describe("accepted connections", () => {
  it("V2 (the client's default): text frames as arrays", async () => {
    const socket = await rawSocket(wsUrl("app=chat&token=token-alice&vsn=2.0.0"))
    socket.send(["1", "1", "user:alice", "phx_join", {}])
    expect(await socket.nextJson()).toEqual(["1", "1", "user:alice", "phx_reply", { status: "ok", response: {} }])
    socket.send([null, "2", "phoenix", "heartbeat", {}])
    expect(await socket.nextJson()).toEqual([null, "2", "phoenix", "phx_reply", { status: "ok", response: {} }])
    await socket.close()
  })

  it("V1 (no vsn): JSON objects", async () => {
    const socket = await rawSocket(wsUrl("app=chat&token=token-alice"))
    socket.send({ topic: "room:a", event: "phx_join", payload: {}, ref: "1", join_ref: "1" })
    expect(await socket.nextJson()).toMatchObject({
      topic: "room:a",
      event: "phx_reply",
      ref: "1",
      payload: { status: "ok", response: {} }
    })
    await socket.close()
  })

  it("takes the token from the authToken sub-protocol and answers with sub-protocol phoenix", async () => {
    const connected = await connectSocket(gateway.socketUrl, { app: "chat", authToken: "token-bob" })
    const joined = await connected.join("user:bob")
    expect(joined.status).toBe("ok")
    const auth = app.requestsOf("auth").at(-1)
    expect(auth?.body).toMatchObject({ token: "token-bob", app: "chat", connection_type: "websocket" })
    await connected.close()

    const raw = await rawSocket(wsUrl("app=chat&vsn=2.0.0"), [
      "phoenix",
      `base64url.bearer.phx.${Buffer.from("token-alice").toString("base64url")}`
    ])
    expect(raw.protocol).toBe("phoenix")
    await raw.close()
  })

  it("reads percent-encoded query parameters as their text", async () => {
    const socket = await rawSocket(wsUrl("app=ch%61t&token=token%2Dalice&client_type=my%20cli&vsn=2.0.0"))
    const auth = await app.waitFor("auth", (request) => request.body?.client_type === "my cli")
    expect(auth.body).toMatchObject({ app: "chat", token: "token-alice", client_type: "my cli" })
    await socket.close()
  })

  it("sends the auth call the contract's body", async () => {
    const connected = await connectSocket(gateway.socketUrl, {
      app: "chat",
      token: "token-alice",
      clientType: "cli",
      headers: { "user-agent": "test-agent/1" }
    })
    const auth = await app.waitFor("auth", (request) => request.body?.client_type === "cli")
    expect(auth.body).toEqual({
      token: "token-alice",
      app: "chat",
      client_type: "cli",
      connection_type: "websocket",
      remote_ip: expect.stringContaining("127.0.0.1"),
      user_agent: "test-agent/1"
    })
    await connected.close()
  })
})

describe("connection storms", () => {
  it("429 rate_limited past the app's connection attempts per IP per minute", async () => {
    const fake = await startFakeApp()
    const limited = await startTestGateway({
      apps: [{ id: "chat", fakeApp: fake, rateLimits: { connectionsPerIpPerMinute: 2 } }]
    })
    try {
      const url = `${limited.socketUrl}/websocket?app=chat&token=token-alice`
      const first = await rawSocket(url)
      const second = await rawSocket(url)
      expect(await upgradeRejection(url)).toMatchObject({ status: 429, body: { reason: "rate_limited" } })
      await first.close()
      await second.close()
    } finally {
      await limited.close()
      await fake.close()
    }
  })

  it("503 over_capacity at once when the app already has its maximum of auth calls in flight", async () => {
    const fake = await startFakeApp()
    fake.fail("auth", "hang")
    const bounded = await startTestGateway({
      apps: [{ id: "chat", fakeApp: fake, rateLimits: { maxConcurrentAuth: 1 }, timeouts: { authMs: 2_000 } }]
    })
    try {
      const url = `${bounded.socketUrl}/websocket?app=chat&token=token-alice`
      const waiting = upgradeRejection(url, {}, [], 5_000)
      await fake.waitFor("auth")
      expect(await upgradeRejection(url)).toMatchObject({ status: 503, body: { reason: "over_capacity" } })
      expect(await waiting).toMatchObject({ status: 503, body: { reason: "auth_service_error" } })
    } finally {
      await bounded.close()
      await fake.close()
    }
  })
})

describe("behind a load balancer", () => {
  it("with trustProxy, the client's address is the last X-Forwarded-For entry (limits and remote_ip)", async () => {
    const fake = await startFakeApp()
    const proxied = await startTestGateway({
      trustProxy: true,
      apps: [{ id: "chat", fakeApp: fake, rateLimits: { connectionsPerIpPerMinute: 1 } }]
    })
    try {
      const url = `${proxied.socketUrl}/websocket?app=chat&token=token-alice`
      const first = await rawSocket(url, [], { "x-forwarded-for": "198.51.100.7, 203.0.113.9" })
      const auth = await fake.waitFor("auth")
      expect(auth.body?.remote_ip).toBe("203.0.113.9")
      // another client behind the same proxy has its own budget
      const second = await rawSocket(url, [], { "x-forwarded-for": "203.0.113.10" })
      expect(await upgradeRejection(url, { "x-forwarded-for": "203.0.113.9" })).toMatchObject({
        status: 429,
        body: { reason: "rate_limited" }
      })
      await first.close()
      await second.close()
    } finally {
      await proxied.close()
      await fake.close()
    }
  })

  it("IPv6 clients count by their /64: another address of the same /64 shares the budget, another /64 does not", async () => {
    const fake = await startFakeApp()
    const proxied = await startTestGateway({
      trustProxy: true,
      apps: [{ id: "chat", fakeApp: fake, rateLimits: { connectionsPerIpPerMinute: 2 } }]
    })
    try {
      const url = `${proxied.socketUrl}/websocket?app=chat&token=token-alice`
      const from = (address: string) => ({ "x-forwarded-for": address })
      const sockets = [await rawSocket(url, [], from("2001:db8:1:2::1")), await rawSocket(url, [], from("2001:0db8:0001:0002:ffff:ffff:ffff:fffe"))]
      expect(await upgradeRejection(url, from("2001:db8:1:2:abcd::9"))).toMatchObject({ status: 429, body: { reason: "rate_limited" } })
      // the auth call still gets the client's own address
      expect(fake.requestsOf("auth").map((request) => request.body.remote_ip)).toEqual([
        "2001:db8:1:2::1",
        "2001:0db8:0001:0002:ffff:ffff:ffff:fffe"
      ])
      sockets.push(await rawSocket(url, [], from("2001:db8:1:3::1")))
      await Promise.all(sockets.map((socket) => socket.close()))
    } finally {
      await proxied.close()
      await fake.close()
    }
  })
})

describe("capacity and schema availability", () => {
  it("503 over_capacity past the per-node connection maximum", async () => {
    const fake = await startFakeApp()
    const small = await startTestGateway({ apps: [{ id: "chat", fakeApp: fake }], limits: { maxConnections: 1 } })
    try {
      const first = await connectSocket(small.socketUrl, { app: "chat", token: "token-alice" })
      expect(await upgradeRejection(`${small.socketUrl}/websocket?app=chat&token=token-bob`)).toMatchObject({
        status: 503,
        body: { reason: "over_capacity" }
      })
      await first.close()
    } finally {
      await small.close()
      await fake.close()
    }
  })

  for (const [how, leave] of [
    ["half-closes (FIN)", (socket: Socket) => socket.end()],
    ["resets (RST)", (socket: Socket) => socket.resetAndDestroy()]
  ] as const) {
    it(`a client that ${how} while its token is being checked frees its place at once`, async () => {
      const fake = await startFakeApp()
      fake.fail("auth", "hang", { times: 1 })
      const small = await startTestGateway({
        apps: [{ id: "chat", fakeApp: fake, timeouts: { authMs: 10_000 } }],
        limits: { maxConnections: 1 }
      })
      try {
        const { port } = new URL(small.socketUrl)
        const leaving = connect(Number(port), "127.0.0.1")
        await new Promise((resolve) => leaving.once("connect", resolve))
        leaving.write(
          "GET /socket/websocket?app=chat&token=token-alice&vsn=2.0.0 HTTP/1.1\r\nHost: 127.0.0.1\r\n" +
            "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n" +
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        )
        leaving.on("error", () => {})
        await fake.waitFor("auth")
        leave(leaving)
        // the one place on the node is free again, long before the hanging call's timeout
        const next = await connectSocket(small.socketUrl, { app: "chat", token: "token-bob" })
        await next.close()
      } finally {
        await small.close()
        await fake.close()
      }
    })
  }

  it("503 schema_unavailable while the app's schema has never loaded", async () => {
    const fake = await startFakeApp()
    fake.fail("schema", { status: 500 })
    const gatewayWithoutSchema = await startTestGateway({ apps: [{ id: "chat", fakeApp: fake }] })
    try {
      expect(
        await upgradeRejection(`${gatewayWithoutSchema.socketUrl}/websocket?app=chat&token=token-alice`)
      ).toMatchObject({ status: 503, body: { reason: "schema_unavailable" } })
    } finally {
      await gatewayWithoutSchema.close()
      await fake.close()
    }
  })
})
