/**
 * Graceful shutdown of a real process (CONTRACT §7): on SIGTERM readiness
 * turns 503, new connections are refused, open ones are closed with 1012
 * spread over the drain window, the app is told of each closed connection,
 * and the process exits within 30 s.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { rawSocket, startFakeApp, upgradeRejection } from "../../src/testing/index.ts"
import type { FakeApp, RawSocket } from "../../src/testing/index.ts"
import { freePort, startGatewayProcess } from "../support/processes.ts"

let app: FakeApp
beforeAll(async () => {
  app = await startFakeApp()
})
afterAll(async () => {
  await app.close()
})

describe("SIGTERM", () => {
  it("drains: 503 readiness, refuses new connections, closes clients with 1012 over the window, exits", async () => {
    const port = await freePort()
    const gateway = startGatewayProcess({
      PORT: String(port),
      HOST: "127.0.0.1",
      GATEWAY_APPS: "chat",
      CHAT_API: app.url,
      DRAIN_WINDOW_MS: "2000",
      LOG_LEVEL: "info"
    })
    try {
      await gateway.waitForLine("listening on")
      const url = `ws://127.0.0.1:${port}/socket/websocket?app=chat&token=token-alice&vsn=2.0.0`
      const sockets: Array<RawSocket> = []
      for (let n = 0; n < 20; n++) sockets.push(await rawSocket(url))
      const closedAt = sockets.map((socket) => socket.closed.then((info) => ({ ...info, at: performance.now() })))

      const signalledAt = performance.now()
      gateway.child.kill("SIGTERM")
      await gateway.waitForLine("draining")
      const ready = await fetch(`http://127.0.0.1:${port}/health/ready`)
      expect(ready.status).toBe(503)
      expect(await ready.json()).toMatchObject({ reasons: ["draining"] })
      expect(await upgradeRejection(url)).toMatchObject({ status: 503, body: { reason: "over_capacity" } })

      const closes = await Promise.all(closedAt)
      expect(closes.every((close) => close.code === 1012)).toBe(true)
      const times = closes.map((close) => close.at).sort((a, b) => a - b)
      // spread over the window, not all at once
      expect(times.at(-1)! - times[0]!).toBeGreaterThan(1_000)
      const exit = await gateway.exited
      expect(exit).toEqual({ code: 0, signal: null })
      expect(performance.now() - signalledAt).toBeLessThan(30_000)
      // the app heard of every connection the drain closed before the node exited
      const closedNotices = app.requestsOf("notify").filter((request) => request.body?.event === "connection:closed")
      expect(closedNotices).toHaveLength(20)
    } finally {
      await gateway.stop()
    }
  })
})
