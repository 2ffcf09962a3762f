/**
 * An integration test of an app written with the SDK, as an app team writes
 * one: a real gateway in the test's process in front of the app, real
 * WebSocket clients, and assertions on what they receive (and do not).
 * Copy it next to your app and change the app and its expectations.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import {
  connectSocket,
  nextMessage,
  push,
  pushEvent,
  refuteMessage,
  startTestGateway,
  watchPresence
} from "realtime-gateway/testing"
import type { TestGateway } from "realtime-gateway/testing"
import { makeDemoApp } from "./app.ts"

// the same secret on both sides: the app then refuses any call the gateway did not sign
const secret = "a-test-secret-that-is-32-bytes-long!"
const app = makeDemoApp({ secret })
let gateway: TestGateway

beforeAll(async () => {
  gateway = await startTestGateway({ apps: [{ id: "demo", realtimeApp: app, secret }] })
})
afterAll(async () => {
  await gateway.close()
})

const connect = (token: string) => connectSocket(gateway.socketUrl, { app: "demo", token })

describe("the demo app behind the gateway", () => {
  it("echoes to the sender only, and shouts to the whole room", async () => {
    const alice = await connect("demo-alice")
    const bob = await connect("demo-bob")
    try {
      const { channel: aliceRoom } = await alice.join("room:lobby")
      const { channel: bobRoom } = await bob.join("room:lobby")

      const bobGetsNoEcho = refuteMessage(bobRoom, "echo", 300)
      expect(await pushEvent(app, aliceRoom, "echo", { body: "hello" })).toEqual({ status: "ok", response: { body: "hello" } })
      await bobGetsNoEcho

      const heard = nextMessage(bobRoom, "shout")
      await pushEvent(app, aliceRoom, "shout", { body: "hi all" })
      expect(await heard).toEqual({ from: "alice", body: "hi all" })
    } finally {
      await Promise.all([alice.close(), bob.close()])
    }
  })

  it("keeps private channels private", async () => {
    const bob = await connect("demo-bob")
    try {
      expect(await bob.join("user:alice")).toMatchObject({ status: "error", response: { reason: "unauthorized" } })
      expect(await bob.join("user:bob")).toMatchObject({ status: "ok" })
    } finally {
      await bob.close()
    }
  })

  it("refuses payloads outside the event's Schema before they reach the app", async () => {
    const alice = await connect("demo-alice")
    try {
      const { channel } = await alice.join("room:lobby")
      expect(await push(channel, "echo", { body: 42 })).toMatchObject({ status: "error", response: { reason: "invalid_payload" } })
    } finally {
      await alice.close()
    }
  })

  it("shows who is in a room", async () => {
    const alice = await connect("demo-alice")
    try {
      const room = alice.socket.channel("room:presence")
      const presence = watchPresence(room)
      room.join()
      const list = await presence.until((current) => "alice" in current)
      expect(list["alice"]).toMatchObject([{ name: "Alice" }])
    } finally {
      await alice.close()
    }
  })

  it("refuses unknown tokens at the upgrade", async () => {
    await expect(connect("nobody")).rejects.toMatchObject({ status: 401 })
  })
})
