/**
 * What the app's actions carry reaches clients unchanged (CONTRACT §3): reply
 * and broadcast data including null, and error reasons that are not strings;
 * a broadcast of a reserved `phx_` event is an invalid answer.
 */
import { afterAll, beforeAll, expect, it } from "vitest"
import { collect, connectSocket, push, startFakeApp, startTestGateway } from "../../src/testing/index.ts"
import type { ConnectedSocket, FakeApp, MessageAction, TestGateway } from "../../src/testing/index.ts"

let app: FakeApp
let gateway: TestGateway
let socket: ConnectedSocket

beforeAll(async () => {
  // the app answers whatever the push's payload asks for
  app = await startFakeApp({ messageHandler: (body) => (body.payload as { respond: MessageAction }).respond })
  gateway = await startTestGateway({ apps: [{ id: "chat", fakeApp: app }] })
  socket = await connectSocket(gateway.socketUrl, { app: "chat", token: "token-alice" })
})
afterAll(async () => {
  await socket.close()
  await gateway.close()
  await app.close()
})

it("reply with data null answers ok with null", async () => {
  const { channel } = await socket.join("room:null-reply")
  expect(await push(channel, "echo", { respond: { action: "reply", data: null } })).toEqual({
    status: "ok",
    response: null
  })
})

it("broadcast with data null delivers null", async () => {
  const { channel } = await socket.join("room:null-broadcast")
  const heard = collect(channel, "nothing")
  await push(channel, "echo", { respond: { action: "broadcast", event: "nothing", data: null } })
  expect(await heard.until(1)).toEqual([null])
})

it("error with a non-string reason answers error with that reason", async () => {
  const { channel } = await socket.join("room:reason")
  expect(await push(channel, "echo", { respond: { action: "error", reason: { code: "room_full", retry: true } } }))
    .toEqual({ status: "error", response: { reason: { code: "room_full", retry: true } } })
})

it("a broadcast of a reserved phx_ event is refused as an invalid answer, and nothing is broadcast", async () => {
  const { channel } = await socket.join("room:reserved")
  let closed = false
  channel.onClose(() => {
    closed = true
  })
  expect(await push(channel, "echo", { respond: { action: "broadcast", event: "phx_close" } }))
    .toEqual({ status: "error", response: { reason: "api_error" } })
  // the channel is still joined and answers
  expect(await push(channel, "echo", { respond: { action: "reply", data: { still: "here" } } }))
    .toEqual({ status: "ok", response: { still: "here" } })
  expect(closed).toBe(false)
})
