/**
 * The push pipeline (CONTRACT §2 push, §3 message call and actions): the
 * refusals in the contract's order (unmatched topic, invalid_event_for_channel,
 * unauthorized, invalid_payload) and that refused pushes never reach the app;
 * the message call's body; each action of the app's answer and their
 * combinations; api_error / api_timeout for failing answers; exactly one
 * reply per ref; and one hanging app not slowing another app's pushes.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest"
import {
  collect,
  connectSocket,
  nextMessage,
  push,
  rawSocket,
  schemaDocument,
  startFakeApp,
  startTestGateway
} from "../../src/testing/index.ts"
import type {
  ConnectedSocket,
  FakeApp,
  FakeResponse,
  MessageAction,
  MessageHandler,
  PushResult,
  RawSocket,
  TestGateway
} from "../../src/testing/index.ts"

let app: FakeApp
let gateway: TestGateway

const schema = schemaDocument({
  version: "1",
  channels: [
    { pattern: "room:{room_id}", variables: { room_id: { type: "string", pattern: "^[a-z0-9-]{1,32}$" } } },
    {
      pattern: "project:{project_id}",
      variables: { project_id: { type: "integer" } },
      permissions: { send: ["write:project:{project_id}"] }
    }
  ],
  events: [
    { name: "echo", allowedChannels: ["room:*", "project:*"] },
    // `channels` is the alias of `allowedChannels`; the payload is the shorthand form
    { name: "typing", channels: ["room:*"], payload: { user: "string", draft: "boolean?" } },
    {
      name: "edit",
      allowedChannels: ["project:*"],
      payload: {
        type: "object",
        required: ["ops"],
        properties: { ops: { type: "array", items: { type: "object" } }, note: { type: "string", maxLength: 5 } }
      }
    },
    { name: "moderate", allowedChannels: ["room:*"], permissions: { send: ["moderate:{room_id}"] } }
  ]
})

const tokens = {
  "token-alice": {
    client_id: "alice",
    client_type: "web",
    metadata: { name: "Alice" },
    permissions: ["write:project:1", "moderate:lobby"]
  },
  "token-bob": { client_id: "bob", permissions: [] },
  "token-carol": { client_id: "carol", permissions: ["write:project:*", "moderate:*"] },
  "token-dave": { client_id: "dave", metadata: { plan: "pro" } }
}

/**
 * The fake app answers what the push asks for: `{respond: X}` is answered
 * with X (an action, an array of actions, or a verbatim `{status, json|body}`
 * answer); anything else is echoed as a reply.
 */
const scripted: MessageHandler = (body) => {
  const payload = body.payload
  if (typeof payload === "object" && payload !== null && "respond" in payload) {
    return (payload as { respond: MessageAction | ReadonlyArray<MessageAction> | FakeResponse }).respond
  }
  return { action: "reply", data: payload }
}

beforeAll(async () => {
  app = await startFakeApp({ auth: tokens, messageHandler: scripted })
  app.setSchema(schema)
  gateway = await startTestGateway({
    apps: [
      { id: "chat", fakeApp: app },
      { id: "quick", fakeApp: app, timeouts: { messageMs: 300 } }
    ]
  })
})
afterAll(async () => {
  await gateway.close()
  await app.close()
})
afterEach(() => {
  app.fail("message", "ok")
})

const open: Array<ConnectedSocket | RawSocket> = []
afterEach(async () => {
  await Promise.all(open.splice(0).map((socket) => socket.close()))
})

const connect = async (token: string, appId = "chat"): Promise<ConnectedSocket> => {
  const socket = await connectSocket(gateway.socketUrl, { app: appId, token })
  open.push(socket)
  return socket
}

const joined = async (token: string, topic: string) => {
  const socket = await connect(token)
  const result = await socket.join(topic)
  expect(result.status).toBe("ok")
  return result.channel
}

const raw = async (query: string): Promise<RawSocket> => {
  const socket = await rawSocket(`${gateway.socketUrl}/websocket?${query}`)
  open.push(socket)
  return socket
}

type V2Frame = [string | null, string | null, string, string, unknown]

const refusal = (reason: string) => ({ status: "error", response: { reason } })

/** The message calls the fake app got for pushes carrying this marker in their payload. */
const forwardedWith = (marker: string) =>
  app.requestsOf("message").filter((request) => JSON.stringify(request.body?.payload ?? null).includes(marker))

describe("refusals, in the contract's order", () => {
  it("unmatched topic for a topic this connection has not joined, even if another connection of the client has", async () => {
    await joined("token-alice", "room:elsewhere")
    const socket = await raw("app=chat&token=token-alice&vsn=2.0.0")
    socket.send(["1", "1", "room:lobby", "phx_join", {}])
    expect(await socket.nextJson()).toMatchObject(["1", "1", "room:lobby", "phx_reply", { status: "ok" }])
    socket.send(["1", "2", "room:elsewhere", "echo", { marker: "unmatched-1" }])
    expect(await socket.nextJson()).toEqual(["1", "2", "room:elsewhere", "phx_reply", refusal("unmatched topic")])
    // unmatched topic comes first: the event is unknown, the topic matches no channel, the payload is irrelevant
    socket.send([null, "3", "nowhere", "no-such-event", { marker: "unmatched-2" }])
    expect(await socket.nextJson()).toEqual([null, "3", "nowhere", "phx_reply", refusal("unmatched topic")])
    socket.send(["1", "4", "room:lobby", "echo", { marker: "unmatched-ok" }])
    expect(await socket.nextJson()).toEqual([
      "1",
      "4",
      "room:lobby",
      "phx_reply",
      { status: "ok", response: { marker: "unmatched-ok" } }
    ])
    expect(forwardedWith("unmatched-").map((r) => r.body.payload)).toEqual([{ marker: "unmatched-ok" }])
  })

  it("invalid_event_for_channel for an event the schema does not define", async () => {
    const channel = await joined("token-alice", "room:lobby")
    expect(await push(channel, "shout", { marker: "unknown-event" })).toEqual(refusal("invalid_event_for_channel"))
    expect(forwardedWith("unknown-event")).toEqual([])
  })

  it("invalid_event_for_channel for an event whose allowedChannels (or alias channels) do not match the topic", async () => {
    const room = await joined("token-carol", "room:lobby")
    const project = await joined("token-carol", "project:3")
    // `edit` is allowed on project:* only
    expect(await push(room, "edit", { ops: [], marker: "edit-room" })).toEqual(refusal("invalid_event_for_channel"))
    expect(await push(project, "edit", { ops: [], marker: "edit-project" })).toMatchObject({ status: "ok" })
    // `typing` lists its patterns under the alias `channels`
    expect(await push(project, "typing", { user: "c", marker: "typing-project" })).toEqual(refusal("invalid_event_for_channel"))
    expect(await push(room, "typing", { user: "c", marker: "typing-room" })).toMatchObject({ status: "ok" })
    expect(forwardedWith("edit-room")).toEqual([])
    expect(forwardedWith("typing-project")).toEqual([])
  })

  it("invalid_event_for_channel comes before unauthorized and invalid_payload", async () => {
    // bob may not send on project:1, and the payload would be invalid for `typing` anyway
    const project = await joined("token-bob", "project:1")
    expect(await push(project, "typing", { user: 1 })).toEqual(refusal("invalid_event_for_channel"))
    expect(await push(project, "nope", {})).toEqual(refusal("invalid_event_for_channel"))
  })

  it("unauthorized when the channel's send templates, filled with the topic's variables, are not granted", async () => {
    const bobOn1 = await joined("token-bob", "project:1")
    const aliceOn1 = await joined("token-alice", "project:1")
    const aliceOn2 = await joined("token-alice", "project:2")
    const carolOn2 = await joined("token-carol", "project:2")
    expect(await push(bobOn1, "echo", { marker: "send-bob-1" })).toEqual(refusal("unauthorized"))
    expect(await push(aliceOn2, "echo", { marker: "send-alice-2" })).toEqual(refusal("unauthorized"))
    expect(await push(aliceOn1, "echo", { n: 1 })).toEqual({ status: "ok", response: { n: 1 } })
    // a granted `write:project:*` covers every project
    expect(await push(carolOn2, "echo", { n: 2 })).toEqual({ status: "ok", response: { n: 2 } })
    expect(forwardedWith("send-bob-1")).toEqual([])
    expect(forwardedWith("send-alice-2")).toEqual([])
  })

  it("unauthorized when the event's own send templates are not granted", async () => {
    const aliceLobby = await joined("token-alice", "room:lobby")
    const aliceKitchen = await joined("token-alice", "room:kitchen")
    const bobLobby = await joined("token-bob", "room:lobby")
    const carolKitchen = await joined("token-carol", "room:kitchen")
    expect(await push(aliceLobby, "moderate", { n: 1 })).toEqual({ status: "ok", response: { n: 1 } })
    expect(await push(aliceKitchen, "moderate", { marker: "mod-kitchen" })).toEqual(refusal("unauthorized"))
    expect(await push(bobLobby, "moderate", { marker: "mod-bob" })).toEqual(refusal("unauthorized"))
    expect(await push(carolKitchen, "moderate", { n: 2 })).toEqual({ status: "ok", response: { n: 2 } })
    // only `moderate` needs the permission: other events on the same topic go through
    expect(await push(aliceKitchen, "echo", { n: 3 })).toEqual({ status: "ok", response: { n: 3 } })
    expect(forwardedWith("mod-kitchen")).toEqual([])
    expect(forwardedWith("mod-bob")).toEqual([])
  })

  it("unauthorized comes before invalid_payload", async () => {
    const bobOn1 = await joined("token-bob", "project:1")
    expect(await push(bobOn1, "edit", { ops: "not an array" })).toEqual(refusal("unauthorized"))
  })

  it("invalid_payload with errors for the shorthand payload form", async () => {
    const room = await joined("token-alice", "room:lobby")
    const missing = await push<{ reason: string; errors: Array<{ path: string; message: string }> }>(room, "typing", {
      marker: "typing-missing"
    })
    expect(missing.status).toBe("error")
    expect(missing.response.reason).toBe("invalid_payload")
    expect(missing.response.errors).toEqual([{ path: "/user", message: expect.any(String) }])

    const wrongTypes = await push<{ reason: string; errors: Array<{ path: string; message: string }> }>(room, "typing", {
      user: 5,
      draft: "yes",
      marker: "typing-types"
    })
    expect(wrongTypes.response.reason).toBe("invalid_payload")
    // validation stops at the first fault
    expect(wrongTypes.response.errors).toEqual([{ path: expect.stringMatching(/^\/(draft|user)$/), message: expect.any(String) }])

    // the optional field may be left out; extra fields are allowed
    expect(await push(room, "typing", { user: "alice", extra: 1 })).toEqual({
      status: "ok",
      response: { user: "alice", extra: 1 }
    })
    expect(forwardedWith("typing-missing")).toEqual([])
    expect(forwardedWith("typing-types")).toEqual([])
  })

  it("invalid_payload with errors for a JSON Schema payload", async () => {
    const project = await joined("token-alice", "project:1")
    const bad = await push<{ reason: string; errors: Array<{ path: string; message: string }> }>(project, "edit", {
      ops: [1],
      note: "far too long",
      marker: "edit-bad"
    })
    expect(bad.status).toBe("error")
    expect(bad.response.reason).toBe("invalid_payload")
    expect(bad.response.errors).toEqual([
      { path: expect.stringMatching(/^\/(ops\/0|note)$/), message: expect.any(String) }
    ])
    expect(await push(project, "edit", { note: "x" })).toMatchObject({
      status: "error",
      response: { reason: "invalid_payload", errors: [{ path: "/ops", message: expect.any(String) }] }
    })
    expect(await push(project, "edit", { ops: [{ insert: "a" }] })).toEqual({
      status: "ok",
      response: { ops: [{ insert: "a" }] }
    })
    expect(forwardedWith("edit-bad")).toEqual([])
  })
})

describe("the message call", () => {
  it("carries {app, event, payload, channel, ref, client_id, client_type, metadata, connection_id}", async () => {
    const socket = await raw("app=chat&token=token-dave&client_type=fwd-test&vsn=2.0.0")
    const established = await app.waitFor(
      "notify",
      (r) => r.body?.event === "connection:established" && r.body.client_type === "fwd-test"
    )
    socket.send(["1", "1", "room:fwd", "phx_join", {}])
    expect(await socket.nextJson()).toEqual(["1", "1", "room:fwd", "phx_reply", { status: "ok", response: {} }])
    const nonce = crypto.randomUUID()
    socket.send(["1", "42", "room:fwd", "echo", { nonce, nested: { list: [1, "two", null] } }])
    expect(await socket.nextJson()).toEqual([
      "1",
      "42",
      "room:fwd",
      "phx_reply",
      { status: "ok", response: { nonce, nested: { list: [1, "two", null] } } }
    ])
    const forwarded = await app.waitFor("message", (r) => forwardedWithNonce(r.body?.payload, nonce))
    expect(forwarded.method).toBe("POST")
    expect(forwarded.body).toEqual({
      app: "chat",
      event: "echo",
      payload: { nonce, nested: { list: [1, "two", null] } },
      channel: "room:fwd",
      ref: "42",
      client_id: "dave",
      client_type: "fwd-test",
      metadata: { plan: "pro" },
      connection_id: established.body.connection_id
    })
    expect(forwarded.headers["x-gateway-app"]).toBe("chat")
  })
})

const forwardedWithNonce = (payload: unknown, nonce: string) =>
  typeof payload === "object" && payload !== null && (payload as { nonce?: unknown }).nonce === nonce

describe("the app's answer decides the reply", () => {
  it.each([
    ["an object", { a: { b: [1, 2] } }],
    ["an array", [1, "two"]],
    ["a string", "text"],
    ["an empty string", ""],
    ["zero", 0],
    ["false", false]
  ])("reply → ok with the data (%s)", async (_, data) => {
    const room = await joined("token-alice", "room:lobby")
    expect(await push(room, "echo", { respond: { action: "reply", data } })).toEqual({ status: "ok", response: data })
  })

  it("noreply → ok {}", async () => {
    const room = await joined("token-alice", "room:lobby")
    expect(await push(room, "echo", { respond: { action: "noreply" } })).toEqual({ status: "ok", response: {} })
  })

  it("error → error with the app's reason", async () => {
    const room = await joined("token-alice", "room:lobby")
    expect(await push(room, "echo", { respond: { action: "error", reason: "room_full" } })).toEqual(refusal("room_full"))
  })

  it("broadcast → the event to every subscriber of the pushed topic, and ok {} to the pusher", async () => {
    const pusher = await joined("token-alice", "room:cast")
    const listener = await joined("token-bob", "room:cast")
    const bystander = await joined("token-bob", "room:other")
    const heardByBystander = collect(bystander, "news")
    const heard = nextMessage(listener, "news")
    const echoed = nextMessage(pusher, "news")
    expect(await push(pusher, "echo", { respond: { action: "broadcast", event: "news", data: { n: 1 } } })).toEqual({
      status: "ok",
      response: {}
    })
    expect(await heard).toEqual({ n: 1 })
    expect(await echoed).toEqual({ n: 1 })
    // a marker on the bystander's own topic arrives, and nothing before it
    const bystanderPusher = await joined("token-carol", "room:other")
    await push(bystanderPusher, "echo", { respond: { action: "broadcast", event: "news", data: { marker: true } } })
    expect(await heardByBystander.until(1)).toEqual([{ marker: true }])
  })

  it("broadcast with a topic → the event to that topic's subscribers instead", async () => {
    const pusher = await joined("token-alice", "room:from")
    const target = await joined("token-bob", "room:to")
    const atPusher = collect(pusher, "moved")
    const heard = nextMessage(target, "moved")
    expect(
      await push(pusher, "echo", { respond: { action: "broadcast", event: "moved", data: { x: 1 }, topic: "room:to" } })
    ).toEqual({ status: "ok", response: {} })
    expect(await heard).toEqual({ x: 1 })
    // the pushed topic did not get it: the next broadcast on it is the first one it sees
    await push(pusher, "echo", { respond: { action: "broadcast", event: "moved", data: { x: 2 } } })
    expect(await atPusher.until(1)).toEqual([{ x: 2 }])
  })

  it("an array combines its actions: broadcast + reply delivers the broadcast and answers the reply's data", async () => {
    const pusher = await joined("token-alice", "room:combo")
    const listener = await joined("token-bob", "room:combo")
    const heard = nextMessage(listener, "combo")
    const answer = await push(pusher, "echo", {
      respond: [
        { action: "broadcast", event: "combo", data: { n: 7 } },
        { action: "reply", data: { done: true } }
      ]
    })
    expect(answer).toEqual({ status: "ok", response: { done: true } })
    expect(await heard).toEqual({ n: 7 })
  })

  it("an array of two broadcasts delivers both, in order", async () => {
    const pusher = await joined("token-alice", "room:pair")
    const listener = await joined("token-bob", "room:pair")
    const heard = collect(listener, "pair")
    expect(
      await push(pusher, "echo", {
        respond: [
          { action: "broadcast", event: "pair", data: { n: 1 } },
          { action: "broadcast", event: "pair", data: { n: 2 } },
          { action: "noreply" }
        ]
      })
    ).toEqual({ status: "ok", response: {} })
    expect(await heard.until(2)).toEqual([{ n: 1 }, { n: 2 }])
  })

  it.each([201, 204, 301, 400, 404, 500, 503])("api_error when the message endpoint answers %i", async (status) => {
    const room = await joined("token-alice", "room:lobby")
    app.fail("message", { status, body: JSON.stringify({ action: "reply", data: {} }) }, { times: 1 })
    expect(await push(room, "echo", { n: 1 })).toEqual(refusal("api_error"))
    // the app recovers: the next push is answered
    expect(await push(room, "echo", { n: 2 })).toEqual({ status: "ok", response: { n: 2 } })
  })

  it("api_error when the answer is not JSON", async () => {
    const room = await joined("token-alice", "room:lobby")
    app.fail("message", "garbage", { times: 1 })
    expect(await push(room, "echo", {})).toEqual(refusal("api_error"))
  })

  it.each([
    ["an object without action", { ok: true }],
    ["an unknown action", { action: "dance" }],
    ["a broadcast without event", { action: "broadcast", data: {} }],
    ["an error without reason", { action: "error" }],
    ["a string", "reply"],
    ["null", null],
    ["an array with a non-action", [{ action: "reply", data: 1 }, 5]]
  ])("api_error when the answer is JSON but %s", async (_, json) => {
    const room = await joined("token-alice", "room:lobby")
    expect(await push(room, "echo", { respond: { status: 200, json } })).toEqual(refusal("api_error"))
  })

  it("api_error when the answer is larger than 4 MiB, and the next push is answered", async () => {
    const room = await joined("token-alice", "room:lobby")
    app.fail("message", { status: 200, body: JSON.stringify({ action: "reply", data: "x".repeat(5 * 1024 * 1024) }) }, {
      times: 1
    })
    expect(await push(room, "echo", { n: 1 })).toEqual(refusal("api_error"))
    expect(await push(room, "echo", { n: 2 })).toEqual({ status: "ok", response: { n: 2 } })
  })

  it("api_error when the app drops the connection", async () => {
    const room = await joined("token-alice", "room:lobby")
    app.fail("message", "destroy", { times: 1 })
    expect(await push(room, "echo", {})).toEqual(refusal("api_error"))
    expect(await push(room, "echo", { n: 1 })).toEqual({ status: "ok", response: { n: 1 } })
  })

  it("api_timeout when the app does not answer within the app's message timeout", async () => {
    const socket = await connect("token-alice", "quick")
    const { channel } = await socket.join("room:slow")
    app.fail("message", "hang", { times: 1 })
    expect(await push(channel, "echo", { marker: "hung" })).toEqual(refusal("api_timeout"))
    expect(forwardedWith("hung")).toHaveLength(1)
    expect(await push(channel, "echo", { n: 1 })).toEqual({ status: "ok", response: { n: 1 } })
  })
})

describe("exactly one reply per ref", () => {
  it("every push with a ref gets one reply whatever its outcome; a push without a ref gets none", async () => {
    const socket = await raw("app=chat&token=token-alice&vsn=2.0.0")
    socket.send(["j", "j", "room:once", "phx_join", {}])
    expect(await socket.nextJson()).toMatchObject(["j", "j", "room:once", "phx_reply", { status: "ok" }])
    const expected: Record<string, unknown> = {
      "1": { status: "ok", response: { a: 1 } },
      "2": refusal("invalid_event_for_channel"),
      "3": refusal("unmatched topic"),
      "4": { status: "error", response: { reason: "invalid_payload", errors: [{ path: "/user", message: expect.any(String) }] } },
      "5": { status: "ok", response: {} },
      "6": refusal("nope"),
      "7": { status: "ok", response: "first" },
      "8": refusal("api_error"),
      "9": refusal("api_error"),
      "10": { status: "ok", response: {} },
      "11": { status: "ok", response: { after: "broadcast" } },
      "12": refusal("first-error")
    }
    const pushes: Array<V2Frame> = [
      ["j", "1", "room:once", "echo", { respond: { action: "reply", data: { a: 1 } } }],
      ["j", "2", "room:once", "nope", {}],
      ["j", "3", "room:never", "echo", {}],
      ["j", "4", "room:once", "typing", {}],
      ["j", "5", "room:once", "echo", { respond: { action: "noreply" } }],
      ["j", "6", "room:once", "echo", { respond: { action: "error", reason: "nope" } }],
      ["j", "7", "room:once", "echo", {
        respond: [{ action: "reply", data: "first" }, { action: "reply", data: "second" }, { action: "error", reason: "x" }]
      }],
      ["j", "8", "room:once", "echo", { respond: { status: 500, json: { action: "reply", data: 1 } } }],
      ["j", "9", "room:once", "echo", { respond: { status: 200, body: "{not json" } }],
      ["j", "10", "room:once", "echo", { respond: { action: "broadcast", event: "b10", data: {} } }],
      ["j", "11", "room:once", "echo", {
        respond: [{ action: "broadcast", event: "b11", data: {} }, { action: "reply", data: { after: "broadcast" } }]
      }],
      ["j", "12", "room:once", "echo", {
        respond: [{ action: "error", reason: "first-error" }, { action: "broadcast", event: "b12", data: {} }, {
          action: "reply",
          data: "late"
        }]
      }],
      // no ref: forwarded, answered by the app, but never replied to
      ["j", null, "room:once", "echo", {
        marker: "no-ref",
        respond: [{ action: "reply", data: "unseen" }, { action: "broadcast", event: "no-ref-done", data: {} }]
      }],
      ["j", null, "room:once", "nope", {}]
    ]
    for (const frame of pushes) socket.send(frame)

    const frames: Array<V2Frame> = []
    const replied = () => frames.filter((f) => f[3] === "phx_reply").length
    const heard = (event: string) => frames.some((f) => f[3] === event)
    while (replied() < Object.keys(expected).length || !heard("no-ref-done") || !heard("b12")) {
      frames.push(await socket.nextJson<V2Frame>())
    }
    // anything still on its way from these pushes comes before the reply to a later heartbeat
    socket.send([null, "sentinel", "phoenix", "heartbeat", {}])
    for (;;) {
      const frame = await socket.nextJson<V2Frame>()
      if (frame[1] === "sentinel") break
      frames.push(frame)
    }

    const replies = frames.filter((f) => f[3] === "phx_reply")
    expect(replies.map((f) => f[1]).sort()).toEqual(Object.keys(expected).sort())
    for (const reply of replies) {
      expect(reply[4], `reply to ref ${reply[1]}`).toEqual(expected[reply[1]!])
      expect(reply[2]).toBe(reply[1] === "3" ? "room:never" : "room:once")
    }
    expect(forwardedWith("no-ref").map((r) => r.body.ref)).toEqual([null])
  })
})

describe("apps are isolated", () => {
  it("an app whose message endpoint hangs does not slow another app's pushes", async () => {
    const hanging = await startFakeApp()
    const healthy = await startFakeApp()
    const shared = await startTestGateway({
      apps: [
        { id: "hangs", fakeApp: hanging, timeouts: { messageMs: 1000 } },
        { id: "fine", fakeApp: healthy }
      ]
    })
    try {
      hanging.fail("message", "hang")
      const a = await connectSocket(shared.socketUrl, { app: "hangs", token: "token-alice" })
      const a2 = await connectSocket(shared.socketUrl, { app: "hangs", token: "token-bob" })
      const b = await connectSocket(shared.socketUrl, { app: "fine", token: "token-alice" })
      const aRooms = [(await a.join("room:a")).channel, (await a2.join("room:a")).channel]
      const bRoom = (await b.join("room:b")).channel

      // more pushes than the app's pool of connections (from two connections,
      // each within its own bound of pushes in flight): the app's pool is full
      let aAnswered = 0
      const aPushes: Array<Promise<PushResult>> = []
      for (let n = 0; n < 300; n++) {
        aPushes.push(push(aRooms[n % 2]!, "echo", { n }).then((result) => {
          aAnswered++
          return result
        }))
      }
      await hanging.waitFor("message", () => hanging.requestsOf("message").length >= 256)

      for (let n = 0; n < 20; n++) {
        expect(await push(bRoom, "echo", { n })).toEqual({ status: "ok", response: { n } })
      }
      // every B push was answered while every A push was still waiting for its app
      expect(aAnswered).toBe(0)

      const aResults = await Promise.all(aPushes)
      expect(aResults).toHaveLength(300)
      for (const result of aResults) {
        expect(result.status).toBe("error")
        expect(["api_timeout", "api_error"]).toContain((result.response as { reason: string }).reason)
      }
      // the calls the app had received timed out
      expect(aResults.filter((r) => (r.response as { reason: string }).reason === "api_timeout").length)
        .toBeGreaterThanOrEqual(256)
      await a.close()
      await a2.close()
      await b.close()
    } finally {
      await shared.close()
      await hanging.close()
      await healthy.close()
    }
  })
})
