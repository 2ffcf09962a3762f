/**
 * Idle connections are found by a monotonic clock: a wall clock stepped back
 * (NTP, a VM resumed) neither keeps a silent connection open past its idle
 * timeout nor closes an active one.
 */
import { afterAll, afterEach, beforeAll, expect, it, vi } from "vitest"
import { rawSocket, startFakeApp, startTestGateway } from "../../src/testing/index.ts"
import type { FakeApp, TestGateway } from "../../src/testing/index.ts"

let app: FakeApp
let gateway: TestGateway

beforeAll(async () => {
  app = await startFakeApp()
  gateway = await startTestGateway({ apps: [{ id: "chat", fakeApp: app }], limits: { idleTimeoutMs: 1_000 } })
})
afterAll(async () => {
  await gateway.close()
  await app.close()
})
afterEach(() => {
  vi.useRealTimers()
})

it("a silent connection is closed after its idle timeout even when the wall clock steps back an hour", async () => {
  const socket = await rawSocket(`${gateway.socketUrl}/websocket?app=chat&token=token-alice&vsn=2.0.0`)
  socket.send([null, "1", "phoenix", "heartbeat", {}])
  await socket.nextJson()
  vi.useFakeTimers({ toFake: ["Date"], shouldAdvanceTime: true })
  vi.setSystemTime(Date.now() - 3_600_000)
  expect(await socket.closed).toMatchObject({ code: 1000, reason: "idle timeout" })
})
