/**
 * Presence (CONTRACT §6) seen through the official `phoenix` client's
 * `Presence` class: the joiner's state, other members' joins and leaves,
 * one client with two connections, and a channel without presence.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { connectSocket, rawSocket, startFakeApp, startTestGateway, watchPresence } from "../../src/testing/index.ts"
import type { FakeApp, TestGateway } from "../../src/testing/index.ts"

let app: FakeApp
let gateway: TestGateway

beforeAll(async () => {
  app = await startFakeApp({
    auth: {
      "token-alice": { client_id: "alice", client_type: "web", metadata: { name: "Alice" } },
      "token-bob": { client_id: "bob", client_type: "cli", metadata: { name: "Bob" } }
    }
  })
  gateway = await startTestGateway({ apps: [{ id: "chat", fakeApp: app }] })
})
afterAll(async () => {
  await gateway.close()
  await app.close()
})

describe("presence", () => {
  it("the joiner sees itself; others see joins and leaves with metas", async () => {
    const alice = await connectSocket(gateway.socketUrl, { app: "chat", token: "token-alice" })
    const aliceChannel = alice.socket.channel("room:presence-1")
    const aliceView = watchPresence(aliceChannel)
    const joined = new Promise((resolve) => aliceChannel.join().receive("ok", resolve))
    await joined
    const own = await aliceView.until((list) => "alice" in list)
    expect(own["alice"]).toEqual([
      expect.objectContaining({ name: "Alice", client_type: "web", phx_ref: expect.any(String), online_at: expect.any(Number) })
    ])

    const bob = await connectSocket(gateway.socketUrl, { app: "chat", token: "token-bob" })
    const bobChannel = bob.socket.channel("room:presence-1")
    const bobView = watchPresence(bobChannel)
    bobChannel.join()
    const bobSees = await bobView.until((list) => "alice" in list && "bob" in list)
    expect(bobSees["bob"]).toEqual([expect.objectContaining({ name: "Bob", client_type: "cli" })])
    await aliceView.until((list) => "bob" in list)

    await bob.close()
    expect(await aliceView.until((list) => !("bob" in list))).toHaveProperty("alice")
    await alice.close()
  })

  it("a topic's entity sends the whole presence_state once after it starts; members see no change from it", async () => {
    const alice = await connectSocket(gateway.socketUrl, { app: "chat", token: "token-alice" })
    const channel = alice.socket.channel("room:presence-restate")
    const view = watchPresence(channel)
    const leaves: Array<string> = []
    view.presence.onLeave((key) => void leaves.push(String(key)))
    let states = 0
    const second = new Promise<unknown>((resolve) =>
      channel.on("presence_state", (state) => {
        if (++states === 2) resolve(state)
      })
    )
    channel.join()
    const bob = await connectSocket(gateway.socketUrl, { app: "chat", token: "token-bob" })
    await bob.join("room:presence-restate")
    await view.until((list) => "alice" in list && "bob" in list)
    // the first state is alice's own, the second the entity's, a second after it started
    expect(Object.keys(await second as object).sort()).toEqual(["alice", "bob"])
    expect(Object.keys(view.list()).sort()).toEqual(["alice", "bob"])
    expect(leaves).toEqual([])
    await bob.close()
    await alice.close()
  })

  it("one client through two connections has two metas; leaving one keeps the other", async () => {
    const watcher = await connectSocket(gateway.socketUrl, { app: "chat", token: "token-bob" })
    const watcherChannel = watcher.socket.channel("room:presence-2")
    const view = watchPresence(watcherChannel)
    watcherChannel.join()
    await view.until((list) => "bob" in list)

    const first = await connectSocket(gateway.socketUrl, { app: "chat", token: "token-alice" })
    const second = await connectSocket(gateway.socketUrl, { app: "chat", token: "token-alice" })
    const firstJoin = await first.join("room:presence-2")
    await second.join("room:presence-2")
    await view.until((list) => list["alice"]?.length === 2)

    firstJoin.channel.leave()
    await view.until((list) => list["alice"]?.length === 1)
    await second.close()
    await view.until((list) => !("alice" in list))
    await first.close()
    await watcher.close()
  })

  it("a channel without presence sends no presence events", async () => {
    app.setAuth({ "token-alice": { client_id: "alice", permissions: ["user:alice"] } })
    const socket = await rawSocket(`${gateway.socketUrl}/websocket?app=chat&token=token-alice&vsn=2.0.0`)
    socket.send(["1", "1", "user:alice", "phx_join", {}])
    socket.send(["2", "2", "room:presence-3", "phx_join", {}])
    const frames: Array<[string | null, string | null, string, string, unknown]> = []
    for (;;) {
      const frame = await socket.nextJson<[string | null, string | null, string, string, unknown]>()
      frames.push(frame)
      if (frame[2] === "room:presence-3" && frame[3] === "presence_state") break
    }
    expect(frames.filter((frame) => frame[2] === "user:alice").map((frame) => frame[3])).toEqual(["phx_reply"])
    await socket.close()
  })
})
