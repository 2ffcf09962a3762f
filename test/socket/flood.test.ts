/**
 * What one connection may cost the others (CONTRACT §5, §9): frames of any
 * kind per connection (a flood is closed with 1008 and logged), joins and
 * leaves per connection, channel churn (a join/leave flood on a presence
 * topic stays a trickle of presence diffs and notifications), pushes in
 * flight by bytes per connection and per app, and auth calls that never wait
 * behind an app's hanging pushes.
 */
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest"
import { collect, connectSocket, push, rawSocket, startFakeApp, startTestGateway } from "../../src/testing/index.ts"
import type { AuthHandler, ConnectedSocket, FakeApp, RawSocket, TestGateway } from "../../src/testing/index.ts"
import { closedAfterEach } from "../support/http.ts"

/** token-<id> is client <id>. */
const tokenIsClient: AuthHandler = (body) =>
  body.token.startsWith("token-") ? { client_id: body.token.slice("token-".length) } : null

let app: FakeApp
let gateway: TestGateway
const url = (client: string) => `${gateway.socketUrl}/websocket?app=chat&token=token-${client}&vsn=2.0.0`

const CHURN_BURST = 3

beforeAll(async () => {
  app = await startFakeApp({ auth: tokenIsClient })
  gateway = await startTestGateway({
    apps: [{ id: "chat", fakeApp: app }],
    log: { level: "warn", format: "json" },
    limits: {
      framesPerSecond: 10,
      frameBurst: 40,
      joinsPerSecond: 2,
      joinBurst: 8,
      channelChurnPerSecond: 1,
      channelChurnBurst: CHURN_BURST
    }
  })
})
afterAll(async () => {
  await gateway.close()
  await app.close()
})

const open = closedAfterEach<ConnectedSocket | RawSocket>()

const raw = async (client: string) => {
  const socket = await rawSocket(url(client))
  open.push(socket)
  return socket
}

type V2 = [string | null, string | null, string, string, Record<string, unknown>]

/** The replies to the given refs, in the order they come, skipping any other frame. */
const repliesTo = async (socket: RawSocket, refs: ReadonlyArray<string>) => {
  const wanted = new Set(refs)
  const replies = new Map<string, Record<string, unknown>>()
  while (replies.size < wanted.size) {
    const [, ref, , event, payload] = await socket.nextJson<V2>()
    if (event === "phx_reply" && ref !== null && wanted.has(ref)) replies.set(ref, payload)
  }
  return refs.map((ref) => replies.get(ref)!)
}

describe("frames per connection", () => {
  it("a connection that floods heartbeats is closed with 1008 and the close is logged; another is unaffected", async () => {
    const bystander = await raw("bystander")
    const flooder = await raw("flooder")
    const written: Array<string> = []
    const spy = vi.spyOn(process.stdout, "write").mockImplementation((chunk: string | Uint8Array) => {
      written.push(String(chunk))
      return true
    })
    try {
      for (let n = 0; n < 60; n++) flooder.send([null, `${n}`, "phoenix", "heartbeat", {}])
      expect(await flooder.closed).toMatchObject({ code: 1008 })
    } finally {
      spy.mockRestore()
    }
    const line = written.map((text) => JSON.parse(text)).find((entry) => entry.msg?.startsWith("connection closed (1008)"))
    expect(line).toMatchObject({ level: "warn", client_id: "flooder", app_id: "chat" })

    bystander.send([null, "1", "phoenix", "heartbeat", {}])
    expect(await bystander.nextJson()).toEqual([null, "1", "phoenix", "phx_reply", { status: "ok", response: {} }])
  })
})

describe("joins per connection", () => {
  it("past the burst a join gets rate_limited with retry_after_ms; leaves are never refused", async () => {
    const socket = await raw("joiner")
    const refs = Array.from({ length: 10 }, (_, n) => `${n}`)
    for (const ref of refs) socket.send([ref, ref, `room:j${ref}`, "phx_join", {}])
    const replies = await repliesTo(socket, refs)
    expect(replies.slice(0, 8).every((reply) => reply["status"] === "ok")).toBe(true)
    for (const reply of replies.slice(8)) {
      expect(reply).toEqual({ status: "error", response: { reason: "rate_limited", retry_after_ms: expect.any(Number) } })
      expect((reply["response"] as { retry_after_ms: number }).retry_after_ms).toBeGreaterThan(0)
      expect((reply["response"] as { retry_after_ms: number }).retry_after_ms).toBeLessThanOrEqual(500)
    }
    // the bucket is empty, and leaving still works
    socket.send(["0", "leave-0", "room:j0", "phx_leave", {}])
    expect(await repliesTo(socket, ["leave-0"])).toEqual([{ status: "ok", response: {} }])
  })

  it("a join/leave flood on a presence topic costs the other subscribers and the app only a few cycles", async () => {
    const observer = await connectSocket(gateway.socketUrl, { app: "chat", token: "token-observer" })
    open.push(observer)
    const { channel } = await observer.join("room:busy")
    const diffs = collect<{ joins: Record<string, unknown>; leaves: Record<string, unknown> }>(channel, "presence_diff")

    const flooder = await raw("churner")
    const cycles = 20
    for (let n = 0; n < cycles; n++) {
      flooder.send([`j${n}`, `j${n}`, "room:busy", "phx_join", {}])
      flooder.send([`j${n}`, `l${n}`, "room:busy", "phx_leave", {}])
    }
    const joins = await repliesTo(flooder, Array.from({ length: cycles }, (_, n) => `j${n}`))
    const accepted = joins.filter((reply) => reply["status"] === "ok").length
    // the churn burst, and at most one more per second the flood lasted
    expect(accepted).toBeGreaterThanOrEqual(CHURN_BURST)
    expect(accepted).toBeLessThanOrEqual(CHURN_BURST + 2)
    for (const reply of joins.filter((reply) => reply["status"] !== "ok")) {
      expect(reply).toMatchObject({ status: "error", response: { reason: "rate_limited" } })
    }

    // a later join on the topic comes after every diff of the flood
    const late = await connectSocket(gateway.socketUrl, { app: "chat", token: "token-late" })
    open.push(late)
    await late.join("room:busy")
    while (!diffs.items.some((diff) => "late" in diff.joins)) await diffs.until(diffs.items.length + 1)
    const churnerDiffs = diffs.items.filter((diff) => "churner" in diff.joins || "churner" in diff.leaves)
    expect(churnerDiffs).toHaveLength(2 * accepted)

    const notified = () => app.requestsOf("notify").filter((r) => r.body.client_id === "churner" && r.body.channel === "room:busy")
    await app.waitFor("notify", () => notified().filter((r) => r.body.event === "channel:left").length === accepted)
    expect(notified().filter((r) => r.body.event === "channel:joined")).toHaveLength(accepted)
  })
})

describe("pushes in flight", () => {
  const KIB_40 = "x".repeat(40 * 1024)

  it("are bounded by bytes per connection and by count and bytes per app: rate_limited past them", async () => {
    const slow = await startFakeApp({ auth: tokenIsClient })
    const bounded = await startTestGateway({
      apps: [{ id: "chat", fakeApp: slow, timeouts: { messageMs: 20_000 } }],
      limits: { maxPushBytesInFlight: 100_000, maxAppPushBytesInFlight: 150_000, maxAppPushesInFlight: 5 }
    })
    const sockets: Array<ConnectedSocket> = []
    try {
      slow.fail("message", "hang")
      const channelOf = async (client: string) => {
        const socket = await connectSocket(bounded.socketUrl, { app: "chat", token: `token-${client}` })
        sockets.push(socket)
        return (await socket.join("room:slow")).channel
      }
      const [a, b, c] = [await channelOf("a"), await channelOf("b"), await channelOf("c")]
      const forwarded = async (pushing: Promise<unknown>, count: number) => {
        pushing.catch(() => {})
        await slow.waitFor("message", () => slow.requestsOf("message").length >= count)
      }
      const rateLimited = { status: "error", response: { reason: "rate_limited", retry_after_ms: 1_000 } }

      await forwarded(push(a, "echo", { blob: KIB_40 }), 1)
      await forwarded(push(a, "echo", { blob: KIB_40 }), 2)
      // a third 40 KiB would hold over 100,000 bytes for connection a; a small one fits
      expect(await push(a, "echo", { blob: KIB_40 })).toEqual(rateLimited)
      await forwarded(push(a, "echo", { n: 1 }), 3)
      // b is another client: its own connection bound, but the app's bytes count all of them
      await forwarded(push(b, "echo", { blob: KIB_40 }), 4)
      expect(await push(c, "echo", { blob: KIB_40 })).toEqual(rateLimited)
      await forwarded(push(c, "echo", { n: 2 }), 5)
      // five pushes of the app in flight
      expect(await push(c, "echo", { n: 3 })).toEqual(rateLimited)
      expect(slow.requestsOf("message")).toHaveLength(5)
    } finally {
      await Promise.all(sockets.map((socket) => socket.close()))
      // first the app, which ends its hanging calls, then the gateway, which no longer waits for them
      await slow.close()
      await bounded.close()
    }
  })

  it("never hold back an auth call: with every place of the app taken by hanging pushes, new clients still connect", async () => {
    const slow = await startFakeApp({ auth: tokenIsClient })
    const bounded = await startTestGateway({ apps: [{ id: "chat", fakeApp: slow, timeouts: { messageMs: 20_000 } }] })
    const sockets: Array<ConnectedSocket> = []
    try {
      slow.fail("message", "hang")
      const pusher = await connectSocket(bounded.socketUrl, { app: "chat", token: "token-pusher" })
      sockets.push(pusher)
      const { channel } = await pusher.join("room:slow")
      // 256: every place the app's calls have on the wire
      for (let n = 0; n < 256; n++) push(channel, "echo", { n }).catch(() => {})
      await slow.waitFor("message", () => slow.requestsOf("message").length >= 256)

      const newcomer = await connectSocket(bounded.socketUrl, { app: "chat", token: "token-newcomer" })
      sockets.push(newcomer)
      expect((await newcomer.join("room:other")).status).toBe("ok")
      expect(slow.requestsOf("auth").map((r) => r.body.token)).toContain("token-newcomer")
    } finally {
      await Promise.all(sockets.map((socket) => socket.close()))
      // first the app, which ends its hanging calls, then the gateway, which no longer waits for them
      await slow.close()
      await bounded.close()
    }
  })
})
