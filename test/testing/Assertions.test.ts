/**
 * The kit's negative assertions and helpers against a real gateway:
 * `refuteRequest` (nothing reaches the app), `pushUntilRateLimited` (the
 * schema's limit, counted from the client's side) and `watchPresence`.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import {
  connectSocket,
  defaultSchema,
  pushUntilRateLimited,
  refuteRequest,
  schemaDocument,
  startFakeApp,
  startTestGateway,
  watchPresence
} from "../../src/testing/index.ts"
import type { FakeApp, TestGateway } from "../../src/testing/index.ts"

let app: FakeApp
let gateway: TestGateway

beforeAll(async () => {
  app = await startFakeApp({
    schema: schemaDocument({ ...defaultSchema, rateLimits: { byEvent: { shout: { windowMs: 60_000, maxRequests: 4 } } } })
  })
  gateway = await startTestGateway({ apps: [{ id: "chat", fakeApp: app }] })
})
afterAll(async () => {
  await gateway.close()
  await app.close()
})

describe("kit assertions", () => {
  it("refuteRequest passes when a refused push never reaches the app, and fails when one does", async () => {
    const alice = await connectSocket(gateway.socketUrl, { app: "chat", token: "token-alice" })
    try {
      const { channel } = await alice.join("room:refute")
      const nothing = refuteRequest(app, "message", 300)
      channel.push("not-in-schema", {})
      await nothing
      const something = expect(refuteRequest(app, "message", 2_000, (r) => r.body.event === "echo")).rejects
        .toThrow(/expected no message request within 2000ms, got POST \/messages/)
      channel.push("echo", { n: 1 })
      await something
    } finally {
      await alice.close()
    }
  })

  it("pushUntilRateLimited counts the pushes the limit let through", async () => {
    const bob = await connectSocket(gateway.socketUrl, { app: "chat", token: "token-bob" })
    try {
      const { channel } = await bob.join("room:limited")
      const outcome = await pushUntilRateLimited(channel, "shout", {}, 20)
      expect(outcome.accepted).toBe(4)
      expect(outcome.retryAfterMs).toBeGreaterThan(0)
    } finally {
      await bob.close()
    }
  })

  it("watchPresence sees who joined", async () => {
    const alice = await connectSocket(gateway.socketUrl, { app: "chat", token: "token-alice" })
    try {
      const channel = alice.socket.channel("room:watched")
      const view = watchPresence(channel)
      channel.join()
      const list = await view.until((current) => "alice" in current)
      expect(list["alice"]).toMatchObject([{ client_type: "web", name: "Alice" }])
    } finally {
      await alice.close()
    }
  })
})
