/**
 * One connection after the upgrade (CONTRACT §2): joins in the contract's
 * order of reasons, replaced joins, leave, heartbeats, idle close, frame
 * limits, and lifecycle notifications to the app. Every failure case also
 * checks that another connection keeps working.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { connectSocket, push, rawSocket, schemaDocument, startFakeApp, startTestGateway } from "../../src/testing/index.ts"
import type { ConnectedSocket, FakeApp, TestGateway } from "../../src/testing/index.ts"

let app: FakeApp
let gateway: TestGateway
const v2Url = (token = "token-alice") => `${gateway.socketUrl}/websocket?app=chat&token=${token}&vsn=2.0.0`

const schema = schemaDocument({
  version: "1",
  channels: [
    { pattern: "room:{room_id}", variables: { room_id: { type: "string", pattern: "^[a-z0-9-]{1,32}$" } } },
    { pattern: "user:{user_id}", permissions: { join: ["user:{user_id}"] } },
    {
      pattern: "project:{project_id}:doc:{doc_id}",
      variables: { project_id: { type: "integer" }, doc_id: { type: "uuid" } },
      permissions: { join: ["read:project:{project_id}"] }
    },
    { pattern: "status:{level}", variables: { level: { type: "string", enum: ["green", "red"] } } }
  ],
  events: [
    { name: "echo", allowedChannels: ["room:*", "user:*"] },
    { name: "typed", allowedChannels: ["room:*"], payload: { body: "string" } }
  ]
})

beforeAll(async () => {
  app = await startFakeApp({
    schema,
    auth: {
      "token-alice": { client_id: "alice", permissions: ["user:alice", "read:project:*"] },
      "token-bob": { client_id: "bob", permissions: ["user:bob"] }
    }
  })
  // joins per connection have their own tests (limits.test.ts): here 100 joins at once must all be answered
  gateway = await startTestGateway({ apps: [{ id: "chat", fakeApp: app }], limits: { maxFrameBytes: 64 * 1024, joinBurst: 200 } })
})
afterAll(async () => {
  await gateway.close()
  await app.close()
})

/** Proves a connection still works: a join and a push answered by the app. */
const assertHealthy = async (socket: ConnectedSocket, room = "healthy") => {
  const joined = await socket.join(`room:${room}`)
  expect(joined.status).toBe("ok")
  expect(await push(joined.channel, "echo", { n: 1 })).toEqual({ status: "ok", response: { n: 1 } })
}

describe("join", () => {
  it("ok for a topic that matches a channel whose permissions are granted", async () => {
    const socket = await connectSocket(gateway.socketUrl, { app: "chat", token: "token-alice" })
    expect((await socket.join("room:lobby")).status).toBe("ok")
    expect((await socket.join("user:alice")).status).toBe("ok")
    expect((await socket.join(`project:42:doc:${crypto.randomUUID()}`)).status).toBe("ok")
    expect((await socket.join("status:green")).status).toBe("ok")
    await socket.close()
  })

  it.each([
    ["no channel pattern matches", "lobby"],
    ["a variable breaks its pattern rule", "room:UPPER"],
    ["an integer variable is not an integer", `project:x:doc:${"0".repeat(8)}-0000-4000-8000-000000000000`],
    ["a uuid variable is not a uuid", "project:1:doc:not-a-uuid"],
    ["an enum variable is outside its values", "status:blue"]
  ])("invalid_channel_pattern when %s", async (_, topic) => {
    const socket = await connectSocket(gateway.socketUrl, { app: "chat", token: "token-alice" })
    expect(await socket.join(topic)).toMatchObject({ status: "error", response: { reason: "invalid_channel_pattern" } })
    await assertHealthy(socket)
    await socket.close()
  })

  it("unauthorized when the join permission template is not granted", async () => {
    const bob = await connectSocket(gateway.socketUrl, { app: "chat", token: "token-bob" })
    expect(await bob.join("user:alice")).toMatchObject({ status: "error", response: { reason: "unauthorized" } })
    expect(await bob.join(`project:1:doc:${crypto.randomUUID()}`)).toMatchObject({
      status: "error",
      response: { reason: "unauthorized" }
    })
    expect((await bob.join("user:bob")).status).toBe("ok")
    await bob.close()
  })

  it("invalid_channel_pattern comes before unauthorized", async () => {
    const bob = await connectSocket(gateway.socketUrl, { app: "chat", token: "token-bob" })
    expect(await bob.join("project:1:doc:nope")).toMatchObject({ response: { reason: "invalid_channel_pattern" } })
    await bob.close()
  })

  it("'too many channels joined' past 100 channels, and the 100 joined stay usable", async () => {
    const socket = await rawSocket(v2Url())
    for (let n = 0; n < 100; n++) socket.send([`${n}`, `${n}`, `room:r${n}`, "phx_join", {}])
    for (let n = 0; n < 100; n++) {
      expect(await socket.nextJson()).toEqual([`${n}`, `${n}`, `room:r${n}`, "phx_reply", { status: "ok", response: {} }])
    }
    socket.send(["100", "100", "room:r100", "phx_join", {}])
    expect(await socket.nextJson()).toEqual([
      "100",
      "100",
      "room:r100",
      "phx_reply",
      { status: "error", response: { reason: "too many channels joined" } }
    ])
    // rejoining an already joined topic is a replacement, not a 101st channel
    socket.send(["101", "101", "room:r7", "phx_join", {}])
    expect(await socket.nextJson()).toEqual(["7", null, "room:r7", "phx_close", {}])
    expect(await socket.nextJson()).toEqual(["101", "101", "room:r7", "phx_reply", { status: "ok", response: {} }])
    // at the cap, the earlier reasons still come first (CONTRACT §2 order)
    socket.send(["102", "102", "lobby", "phx_join", {}])
    expect(await socket.nextJson()).toMatchObject(["102", "102", "lobby", "phx_reply", { response: { reason: "invalid_channel_pattern" } }])
    socket.send(["103", "103", "user:bob", "phx_join", {}])
    expect(await socket.nextJson()).toMatchObject(["103", "103", "user:bob", "phx_reply", { response: { reason: "unauthorized" } }])
    await socket.close()
  })

  it("invalid_channel_pattern for a topic longer than 255 characters, and the connection stays usable", async () => {
    const socket = await connectSocket(gateway.socketUrl, { app: "chat", token: "token-alice" })
    expect(await socket.join(`user:${"a".repeat(300)}`)).toMatchObject({
      status: "error",
      response: { reason: "invalid_channel_pattern" }
    })
    await assertHealthy(socket, "after-long-topic")
    await socket.close()
  })

  it("a second join of the same topic closes the first (phx_close to the old join_ref)", async () => {
    const socket = await rawSocket(v2Url())
    socket.send(["1", "1", "room:dup", "phx_join", {}])
    expect(await socket.nextJson()).toMatchObject(["1", "1", "room:dup", "phx_reply", { status: "ok" }])
    socket.send(["2", "2", "room:dup", "phx_join", {}])
    expect(await socket.nextJson()).toEqual(["1", null, "room:dup", "phx_close", {}])
    expect(await socket.nextJson()).toMatchObject(["2", "2", "room:dup", "phx_reply", { status: "ok" }])
    await socket.close()
  })

  it("leave answers ok then phx_close; a push after leaving gets 'unmatched topic'", async () => {
    const socket = await rawSocket(v2Url())
    socket.send(["1", "1", "room:bye", "phx_join", {}])
    await socket.nextJson()
    socket.send(["1", "2", "room:bye", "phx_leave", {}])
    expect(await socket.nextJson()).toEqual(["1", "2", "room:bye", "phx_reply", { status: "ok", response: {} }])
    expect(await socket.nextJson()).toEqual(["1", null, "room:bye", "phx_close", {}])
    socket.send(["1", "3", "room:bye", "echo", {}])
    expect(await socket.nextJson()).toEqual([
      "1",
      "3",
      "room:bye",
      "phx_reply",
      { status: "error", response: { reason: "unmatched topic" } }
    ])
    await socket.close()
  })

  it("leave of a topic never joined also answers ok then phx_close", async () => {
    const socket = await rawSocket(v2Url())
    socket.send(["5", "6", "room:never", "phx_leave", {}])
    expect(await socket.nextJson()).toEqual(["5", "6", "room:never", "phx_reply", { status: "ok", response: {} }])
    expect(await socket.nextJson()).toEqual(["5", null, "room:never", "phx_close", {}])
    await socket.close()
  })
})

describe("heartbeat and idle connections", () => {
  it("answers heartbeats on the phoenix topic", async () => {
    const socket = await rawSocket(v2Url())
    socket.send([null, "7", "phoenix", "heartbeat", {}])
    expect(await socket.nextJson()).toEqual([null, "7", "phoenix", "phx_reply", { status: "ok", response: {} }])
    await socket.close()
  })

  it("closes a connection that sends nothing for the idle timeout, not one that heartbeats", async () => {
    const fake = await startFakeApp()
    const quick = await startTestGateway({ apps: [{ id: "chat", fakeApp: fake }], limits: { idleTimeoutMs: 400 } })
    try {
      const url = `${quick.socketUrl}/websocket?app=chat&token=token-alice&vsn=2.0.0`
      const silent = await rawSocket(url)
      const chatty = await rawSocket(url)
      const beat = setInterval(() => chatty.send([null, "h", "phoenix", "heartbeat", {}]), 100)
      const closed = await silent.closed
      clearInterval(beat)
      expect(closed).toEqual({ code: 1000, reason: "idle timeout" })
      expect(chatty.ws.readyState).toBe(chatty.ws.OPEN)
      await chatty.close()
    } finally {
      await quick.close()
      await fake.close()
    }
  })
})

describe("bad frames close only their own connection", () => {
  it("1007 for an undecodable frame", async () => {
    const bystander = await connectSocket(gateway.socketUrl, { app: "chat", token: "token-bob" })
    for (const garbage of ["not json", "[1,2]", JSON.stringify({ topic: 1 }), "[\"1\",\"1\",\"room:a\"]"]) {
      const socket = await rawSocket(v2Url())
      socket.send(garbage)
      expect((await socket.closed).code).toBe(1007)
    }
    // a text frame that is not UTF-8
    const invalidUtf8 = await rawSocket(v2Url())
    invalidUtf8.ws.send(Buffer.from([0x5b, 0xff, 0xfe, 0x5d]), { binary: false })
    expect((await invalidUtf8.closed).code).toBe(1007)
    // a well-formed join but for one byte that is not UTF-8 inside a string, in both versions
    const join = (vsn: string) =>
      vsn === "2.0.0"
        ? "[\"1\",\"1\",\"room:a\",\"phx_join\",{\"x\":\"?\"}]"
        : "{\"topic\":\"room:a\",\"event\":\"phx_join\",\"payload\":{\"x\":\"?\"},\"ref\":\"1\"}"
    for (const vsn of ["2.0.0", "1.0.0"]) {
      const socket = await rawSocket(v2Url().replace("vsn=2.0.0", `vsn=${vsn}`))
      const bytes = Buffer.from(join(vsn))
      bytes[bytes.indexOf("?")] = 0xff
      socket.ws.send(bytes, { binary: false })
      expect((await socket.closed).code).toBe(1007)
    }
    await assertHealthy(bystander)
    await bystander.close()
  })

  it("1009 for a frame over the maximum size", async () => {
    const bystander = await connectSocket(gateway.socketUrl, { app: "chat", token: "token-bob" })
    const socket = await rawSocket(v2Url())
    socket.send(JSON.stringify(["1", "1", "room:a", "echo", { blob: "x".repeat(70 * 1024) }]))
    expect((await socket.closed).code).toBe(1009)
    await assertHealthy(bystander, "after-1009")
    await bystander.close()
  })
})

describe("V2 binary frames", () => {
  it("decodes a binary push and forwards its payload to the app as base64", async () => {
    const socket = await rawSocket(v2Url())
    socket.send(["1", "1", "room:bin", "phx_join", {}])
    await socket.nextJson()
    const header = Buffer.from([0, 1, 1, "room:bin".length, "echo".length])
    const body = Buffer.from([0xde, 0xad, 0xbe, 0xef])
    socket.ws.send(Buffer.concat([header, Buffer.from("12room:binecho"), body]), { binary: true })
    const forwarded = await app.waitFor("message", (request) => request.body?.channel === "room:bin")
    expect(forwarded.body).toMatchObject({ event: "echo", ref: "2", payload: { binary: body.toString("base64") } })
    expect(await socket.nextJson()).toEqual([
      "1",
      "2",
      "room:bin",
      "phx_reply",
      { status: "ok", response: { binary: body.toString("base64") } }
    ])
    await socket.close()
  })
})

describe("V2 binary frames against a payload schema", () => {
  it("refuses a binary push to an event whose payload schema expects JSON", async () => {
    const socket = await rawSocket(v2Url())
    socket.send(["1", "1", "room:bin2", "phx_join", {}])
    await socket.nextJson()
    const header = Buffer.from([0, 1, 1, "room:bin2".length, "typed".length])
    socket.ws.send(Buffer.concat([header, Buffer.from("12room:bin2typed"), Buffer.from([1, 2, 3])]), { binary: true })
    expect(await socket.nextJson()).toMatchObject([
      "1",
      "2",
      "room:bin2",
      "phx_reply",
      { status: "error", response: { reason: "invalid_payload", errors: [{ path: "" }] } }
    ])
    await socket.close()
  })
})

describe("lifecycle notifications", () => {
  it("tells the app about connections and channels, with the contract's fields", async () => {
    const socket = await connectSocket(gateway.socketUrl, { app: "chat", token: "token-alice", clientType: "cli" })
    const established = await app.waitFor("notify", (r) => r.body?.event === "connection:established" && r.body.client_type === "cli")
    const connectionId = established.body?.connection_id
    expect(established.body).toMatchObject({
      app: "chat",
      channel: null,
      client_id: "alice",
      node: "test",
      metadata: {}
    })
    expect(typeof established.body?.at).toBe("string")
    const joined = await socket.join("room:notify")
    await app.waitFor("notify", (r) => r.body?.event === "channel:joined" && r.body.connection_id === connectionId)
    joined.channel.leave()
    await app.waitFor("notify", (r) => r.body?.event === "channel:left" && r.body.channel === "room:notify")
    await socket.join("room:notify2")
    await socket.close()
    await app.waitFor("notify", (r) => r.body?.event === "channel:left" && r.body.channel === "room:notify2")
    await app.waitFor("notify", (r) => r.body?.event === "connection:closed" && r.body.connection_id === connectionId)
  })

  it("a notify endpoint that hangs delays nobody", async () => {
    app.fail("notify", "hang")
    try {
      const socket = await connectSocket(gateway.socketUrl, { app: "chat", token: "token-alice" })
      await assertHealthy(socket, "notify-hangs")
      await socket.close()
    } finally {
      app.fail("notify", "ok")
    }
  })
})

describe("an app without notifications", () => {
  it("gets no notify calls, and its clients connect and join as usual", async () => {
    const quiet = await startFakeApp()
    const gatewayWithoutNotify = await startTestGateway({ apps: [{ id: "chat", fakeApp: quiet, notifyEndpoint: undefined }] })
    try {
      const socket = await connectSocket(gatewayWithoutNotify.socketUrl, { app: "chat", token: "token-alice" })
      const joined = await socket.join("room:quiet")
      expect(await push(joined.channel, "echo", { n: 1 })).toEqual({ status: "ok", response: { n: 1 } })
      await socket.close()
      expect(quiet.requestsOf("notify")).toEqual([])
    } finally {
      await gatewayWithoutNotify.close()
      await quiet.close()
    }
  })
})
