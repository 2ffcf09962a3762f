/**
 * Fan-out of the app's `broadcast` actions (CONTRACT §3): 1,000 broadcasts
 * reach every subscriber in order, with V1 and V2 clients mixed; broadcasts of
 * concurrent pushes reach every subscriber in one same order; `exclude_sender`
 * leaves out only the pushing connection; a broadcast reaches only the
 * subscribers of its app and topic, and not a connection that left the topic.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { collect, connectSocket, push, rawSocket, startFakeApp, startTestGateway } from "../../src/testing/index.ts"
import type { Channel } from "phoenix"
import { closedAfterEach } from "../support/http.ts"
import type {
  Collector,
  ConnectedSocket,
  FakeApp,
  MessageAction,
  MessageHandler,
  RawSocket,
  SchemaDocument,
  TestGateway
} from "../../src/testing/index.ts"

let app: FakeApp
let gateway: TestGateway

const schema: SchemaDocument = {
  version: "1",
  channels: [{ pattern: "room:{room_id}" }],
  events: [
    { name: "burst", allowedChannels: ["room:*"] },
    { name: "cast", allowedChannels: ["room:*"] }
  ]
}

interface Burst {
  readonly count: number
  readonly event: string
  readonly topic?: string
}

interface Cast {
  readonly event: string
  readonly data: unknown
  readonly topic?: string
  readonly exclude_sender?: boolean
}

/** `burst` answers `count` broadcasts `{n}` in one answer; `cast` answers one broadcast as described. */
const broadcaster: MessageHandler = (body) => {
  if (body.event === "burst") {
    const { count, event, topic } = body.payload as Burst
    const actions: Array<MessageAction> = []
    for (let n = 0; n < count; n++) {
      actions.push({ action: "broadcast", event, data: { n }, ...(topic === undefined ? {} : { topic }) })
    }
    return actions
  }
  const { event, data, topic, exclude_sender } = body.payload as Cast
  return {
    action: "broadcast",
    event,
    data,
    ...(topic === undefined ? {} : { topic }),
    ...(exclude_sender === undefined ? {} : { exclude_sender })
  }
}

beforeAll(async () => {
  app = await startFakeApp({
    schema,
    // token-<id> is client <id>
    auth: (body) => (body.token.startsWith("token-") ? { client_id: body.token.slice("token-".length) } : null),
    messageHandler: broadcaster
  })
  gateway = await startTestGateway({
    apps: [
      { id: "chat", fakeApp: app },
      { id: "other", fakeApp: app }
    ]
  })
})
afterAll(async () => {
  await gateway.close()
  await app.close()
})

const open = closedAfterEach<ConnectedSocket | RawSocket>()

/** A subscriber of one topic that records every broadcast it gets, in arrival order. */
interface Subscriber {
  readonly name: string
  /** Resolves with the payloads of `event` once `count` of them arrived. */
  until(event: string, count: number, timeoutMs?: number): Promise<ReadonlyArray<unknown>>
}

interface PhoenixSubscriber extends Subscriber {
  readonly channel: Channel
  /** Starts recording `event` (before the broadcasts are made). */
  watch(event: string): void
}

/** The official client (V2). */
const phoenixSubscriber = async (token: string, topic: string): Promise<PhoenixSubscriber> => {
  const socket = await connectSocket(gateway.socketUrl, { app: "chat", token })
  open.push(socket)
  const joined = await socket.join(topic)
  expect(joined.status).toBe("ok")
  const collectors = new Map<string, Collector<unknown>>()
  return {
    name: `phoenix V2 ${token}`,
    channel: joined.channel,
    watch: (event) => {
      if (!collectors.has(event)) collectors.set(event, collect(joined.channel, event))
    },
    until: (event, count, timeoutMs) => {
      const collector = collectors.get(event)
      if (collector === undefined) throw new Error(`watch("${event}") before the broadcasts`)
      return collector.until(count, timeoutMs)
    }
  }
}

interface Decoded {
  readonly topic: string
  readonly event: string
  readonly payload: unknown
  readonly ref: string | null
}

const decode = (vsn: "1.0.0" | "2.0.0", value: unknown): Decoded => {
  if (vsn === "2.0.0") {
    const [, ref, topic, event, payload] = value as [string | null, string | null, string, string, unknown]
    return { topic, event, payload, ref }
  }
  const { topic, event, payload, ref } = value as Decoded
  return { topic, event, payload, ref }
}

/** A raw `ws` client of either protocol version. */
const rawSubscriber = async (vsn: "1.0.0" | "2.0.0", token: string, topic: string) => {
  const socket = await rawSocket(`${gateway.socketUrl}/websocket?app=chat&token=${token}&vsn=${vsn}`)
  open.push(socket)
  const received: Array<Decoded> = []
  const encode = (joinRef: string | null, ref: string, t: string, event: string, payload: unknown) =>
    vsn === "2.0.0" ? [joinRef, ref, t, event, payload] : { join_ref: joinRef, ref, topic: t, event, payload }
  let refs = 0
  /** Sends a frame and reads until its reply, keeping the broadcasts read on the way. */
  const request = async (t: string, event: string, payload: unknown = {}) => {
    const ref = `r${++refs}`
    socket.send(encode("j", ref, t, event, payload))
    for (;;) {
      const frame = decode(vsn, await socket.nextJson())
      if (frame.event === "phx_reply" && frame.ref === ref) return frame.payload
      received.push(frame)
    }
  }
  expect(await request(topic, "phx_join")).toEqual({ status: "ok", response: {} })
  const subscriber = {
    name: `raw V${vsn[0]} ${token}`,
    received,
    request,
    until: async (event: string, count: number, timeoutMs?: number) => {
      const matching = () => received.filter((frame) => frame.event === event)
      while (matching().length < count) received.push(decode(vsn, await socket.nextJson(timeoutMs)))
      return matching().map((frame) => frame.payload)
    }
  }
  return subscriber
}

const range = (count: number) => Array.from({ length: count }, (_, n) => ({ n }))

describe("ordered fan-out", () => {
  it("1,000 broadcasts arrive in order at every subscriber, V1 and V2 clients mixed", async () => {
    const pusher = await phoenixSubscriber("token-pusher", "room:fan")
    const phoenixA = await phoenixSubscriber("token-a", "room:fan")
    const v1 = await rawSubscriber("1.0.0", "token-b", "room:fan")
    const v2 = await rawSubscriber("2.0.0", "token-c", "room:fan")
    const v1Again = await rawSubscriber("1.0.0", "token-d", "room:fan")
    pusher.watch("tick")
    phoenixA.watch("tick")

    expect(await push(pusher.channel, "burst", { count: 1000, event: "tick" })).toEqual({ status: "ok", response: {} })
    const expected = range(1000)
    for (const subscriber of [pusher, phoenixA, v1, v2, v1Again]) {
      expect(await subscriber.until("tick", 1000), subscriber.name).toEqual(expected)
    }
    // the V1 clients got V1 frames for the topic
    expect(v1.received[0]).toEqual({ topic: "room:fan", event: "tick", payload: { n: 0 }, ref: null })
  })

  it("broadcasts of many concurrent pushes reach every subscriber, in one same order", async () => {
    const first = await phoenixSubscriber("token-p1", "room:race")
    const second = await phoenixSubscriber("token-p2", "room:race")
    const v1 = await rawSubscriber("1.0.0", "token-r1", "room:race")
    const v2 = await rawSubscriber("2.0.0", "token-r2", "room:race")
    first.watch("race")
    second.watch("race")

    const pushes = []
    // within a connection's bound of pushes waiting for the app
    for (let n = 0; n < 250; n++) {
      pushes.push(push(first.channel, "cast", { event: "race", data: { from: 1, n } }))
      pushes.push(push(second.channel, "cast", { event: "race", data: { from: 2, n } }))
    }
    for (const answer of await Promise.all(pushes)) expect(answer).toEqual({ status: "ok", response: {} })

    const seen = await first.until("race", 500)
    for (const subscriber of [second, v1, v2]) {
      expect(await subscriber.until("race", 500), subscriber.name).toEqual(seen)
    }
    const key = (item: unknown) => {
      const { from, n } = item as { from: number; n: number }
      return from * 1000 + n
    }
    expect(seen.map(key).sort((x, y) => x - y)).toEqual([
      ...Array.from({ length: 250 }, (_, n) => 1000 + n),
      ...Array.from({ length: 250 }, (_, n) => 2000 + n)
    ])
  })

  it("broadcasts of successive pushes arrive in push order", async () => {
    const pusher = await phoenixSubscriber("token-seq", "room:seq")
    const v1 = await rawSubscriber("1.0.0", "token-seq1", "room:seq")
    const v2 = await rawSubscriber("2.0.0", "token-seq2", "room:seq")
    for (let n = 0; n < 200; n++) {
      expect(await push(pusher.channel, "cast", { event: "step", data: { n } })).toEqual({ status: "ok", response: {} })
    }
    expect(await v1.until("step", 200)).toEqual(range(200))
    expect(await v2.until("step", 200)).toEqual(range(200))
  })
})

describe("who receives a broadcast", () => {
  it("exclude_sender leaves out only the pushing connection, not another connection of the same client", async () => {
    const sender = await rawSubscriber("2.0.0", "token-same", "room:ex")
    const sameClient = await rawSubscriber("2.0.0", "token-same", "room:ex")
    const otherClient = await rawSubscriber("1.0.0", "token-else", "room:ex")

    expect(await sender.request("room:ex", "cast", { event: "note", data: { n: 1 }, exclude_sender: true })).toEqual({
      status: "ok",
      response: {}
    })
    // a second broadcast, not excluding the sender, is the first one the sender sees
    expect(await sender.request("room:ex", "cast", { event: "note", data: { n: 2 } })).toEqual({
      status: "ok",
      response: {}
    })
    expect(await sameClient.until("note", 2)).toEqual([{ n: 1 }, { n: 2 }])
    expect(await otherClient.until("note", 2)).toEqual([{ n: 1 }, { n: 2 }])
    expect(await sender.until("note", 1)).toEqual([{ n: 2 }])

    // exclude_sender: false includes the sender
    await sender.request("room:ex", "cast", { event: "note", data: { n: 3 }, exclude_sender: false })
    expect(await sender.until("note", 2)).toEqual([{ n: 2 }, { n: 3 }])
  })

  it("exclude_sender with a topic leaves out the pushing connection on that topic", async () => {
    const sender = await rawSubscriber("2.0.0", "token-x1", "room:ex-from")
    expect(await sender.request("room:ex-to", "phx_join")).toEqual({ status: "ok", response: {} })
    const listener = await rawSubscriber("2.0.0", "token-x1", "room:ex-to")
    await sender.request("room:ex-from", "cast", { event: "moved", data: { n: 1 }, topic: "room:ex-to", exclude_sender: true })
    await sender.request("room:ex-from", "cast", { event: "moved", data: { n: 2 }, topic: "room:ex-to" })
    expect(await listener.until("moved", 2)).toEqual([{ n: 1 }, { n: 2 }])
    expect(await sender.until("moved", 1)).toEqual([{ n: 2 }])
    expect(sender.received.filter((frame) => frame.event === "moved").map((frame) => frame.topic)).toEqual(["room:ex-to"])
  })

  it("a broadcast reaches only its own app's subscribers of the topic", async () => {
    const inChat = await rawSubscriber("2.0.0", "token-t1", "room:tenant")
    const otherApp = await connectSocket(gateway.socketUrl, { app: "other", token: "token-t2" })
    open.push(otherApp)
    const { channel } = await otherApp.join("room:tenant")
    const heardInOther = collect(channel, "tenant")

    await inChat.request("room:tenant", "cast", { event: "tenant", data: { app: "chat" } })
    expect(await inChat.until("tenant", 1)).toEqual([{ app: "chat" }])
    expect(await push(channel, "cast", { event: "tenant", data: { app: "other" } })).toEqual({ status: "ok", response: {} })
    expect(await heardInOther.until(1)).toEqual([{ app: "other" }])
    expect(await inChat.until("tenant", 1)).toEqual([{ app: "chat" }])
    expect(app.requestsOf("message").filter((r) => r.body?.channel === "room:tenant").map((r) => r.body.app).sort())
      .toEqual(["chat", "other"])
  })

  it("a connection that left the topic stops receiving its broadcasts", async () => {
    const leaver = await rawSubscriber("2.0.0", "token-l1", "room:leave")
    const stayer = await rawSubscriber("1.0.0", "token-l2", "room:leave")
    expect(await leaver.request("room:leave", "phx_leave")).toEqual({ status: "ok", response: {} })
    await stayer.request("room:leave", "cast", { event: "after", data: { n: 1 } })
    expect(await stayer.until("after", 1)).toEqual([{ n: 1 }])
    // joined again: the next broadcast is the first one it sees
    expect(await leaver.request("room:leave", "phx_join")).toEqual({ status: "ok", response: {} })
    await stayer.request("room:leave", "cast", { event: "after", data: { n: 2 } })
    expect(await leaver.until("after", 1)).toEqual([{ n: 2 }])
    expect(await stayer.until("after", 2)).toEqual([{ n: 1 }, { n: 2 }])
  })
})
