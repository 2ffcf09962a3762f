/**
 * Supabase's `@supabase/realtime-js` (a phoenix.js fork) against the gateway,
 * unchanged (CONTRACT §2): it joins, and its `channel.send({type: "broadcast"})`
 * reaches the app as a push of event `broadcast` with `{type, event, payload}`,
 * in protocol 1.0.0 (a text frame) and 2.0.0 (its binary "user broadcast push",
 * kind 3); the app's broadcast back reaches the client's listener.
 */
import { RealtimeClient } from "@supabase/realtime-js"
import type { WebSocketLikeConstructor } from "@supabase/realtime-js"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { WebSocket } from "ws"
import { startFakeApp, startTestGateway } from "../../src/testing/index.ts"
import type { FakeApp, TestGateway } from "../../src/testing/index.ts"

let app: FakeApp
let gateway: TestGateway

beforeAll(async () => {
  app = await startFakeApp({
    schema: {
      version: "1",
      // realtime-js prefixes every channel's topic with "realtime:"
      channels: [{ pattern: "realtime:{room}" }],
      events: [{ name: "broadcast", allowedChannels: ["realtime:*"] }]
    }
  })
  // the app sends what it receives back to the room
  app.setMessageHandler((body) => ({ action: "broadcast", event: "broadcast", data: body.payload }))
  gateway = await startTestGateway({ apps: [{ id: "chat", fakeApp: app }] })
})
afterAll(async () => {
  await gateway.close()
  await app.close()
})

describe("@supabase/realtime-js", () => {
  it.each(["1.0.0", "2.0.0"])("joins, sends a broadcast through the app and receives it back with vsn=%s", async (vsn) => {
    const client = new RealtimeClient(gateway.socketUrl, {
      // realtime-js requires an apikey; the gateway ignores parameters it does not know
      params: { app: "chat", token: "token-alice", client_type: "supabase", apikey: "unused" },
      // the `ws` client, as a Node.js app would pass it
      transport: WebSocket as unknown as WebSocketLikeConstructor,
      vsn
    })
    try {
      const channel = client.channel(`room-${vsn}`, { config: { broadcast: { self: true, ack: true } } })
      const received = new Promise<unknown>((resolve) => channel.on("broadcast", { event: "cursor" }, resolve))
      await new Promise<void>((resolve, reject) =>
        channel.subscribe((status, error) => {
          if (status === "SUBSCRIBED") resolve()
          else reject(error ?? new Error(`channel ${status}`))
        })
      )
      expect(await channel.send({ type: "broadcast", event: "cursor", payload: { x: 1, label: "é" } })).toBe("ok")
      const sent = { type: "broadcast", event: "cursor", payload: { x: 1, label: "é" } }
      const forwarded = await app.waitFor("message", (request) => request.body?.channel === `realtime:room-${vsn}`)
      expect(forwarded.body).toMatchObject({ event: "broadcast", payload: sent })
      expect(await received).toEqual(sent)
    } finally {
      await client.removeAllChannels()
      client.disconnect()
    }
  })
})
