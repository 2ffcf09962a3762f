/**
 * The listening socket against clients that try to wear it out: connections
 * that never finish their first request head are dropped after the head
 * timeout and count against a cap, and running out of file descriptors costs
 * the connections that could not be accepted, never the listener.
 */
import { connect } from "node:net"
import type { Socket } from "node:net"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { rawSocket, startFakeApp, startTestGateway, upgradeRejection } from "../../src/testing/index.ts"
import type { FakeApp } from "../../src/testing/index.ts"
import { freePort, startGatewayProcess } from "../support/processes.ts"

let app: FakeApp
beforeAll(async () => {
  app = await startFakeApp()
})
afterAll(async () => {
  await app.close()
})

/** A TCP connection to the port; resolves once connected, with a promise of its close. */
const tcp = (port: number) =>
  new Promise<{ socket: Socket; closed: Promise<number> }>((resolve, reject) => {
    const socket = connect(port, "127.0.0.1")
    const openedAt = performance.now()
    const closed = new Promise<number>((done) => socket.once("close", () => done(performance.now() - openedAt)))
    socket.on("error", () => {})
    socket.once("connect", () => resolve({ socket, closed }))
    socket.once("error", reject)
  })

describe("file descriptors exhausted", () => {
  it("connections are lost while the process has none left, the listener is not; it serves again once they are freed", async () => {
    const port = await freePort()
    const gateway = startGatewayProcess(
      { PORT: String(port), HOST: "127.0.0.1", GATEWAY_APPS: "chat", CHAT_API: app.url, LOG_LEVEL: "info" },
      { maxOpenFiles: 64 }
    )
    const sockets: Array<Socket> = []
    try {
      await gateway.waitForLine("listening on")
      // far more connections than the process has descriptors left
      for (let round = 0; round < 3; round++) {
        const opened = await Promise.allSettled(Array.from({ length: 100 }, () => tcp(port)))
        for (const result of opened) if (result.status === "fulfilled") sockets.push(result.value.socket)
      }
      // the accepted ones ask for upgrades: their auth calls need a descriptor the process does not have
      const refused = new Promise<string>((resolve) => {
        for (const socket of sockets) {
          socket.on("data", (chunk: Buffer) => resolve(chunk.toString("latin1").split("\r\n")[0]!))
          socket.write(
            "GET /socket/websocket?app=chat&token=token-alice HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n" +
              "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
          )
        }
      })
      expect(await refused).toBe("HTTP/1.1 503 Service Unavailable")
      for (const socket of sockets) socket.destroy()

      expect(gateway.child.exitCode).toBeNull()
      expect((await fetch(`http://127.0.0.1:${port}/health/live`)).status).toBe(200)
      expect(await upgradeRejection(`ws://127.0.0.1:${port}/socket/websocket?app=chat&token=nobody`))
        .toMatchObject({ status: 401 })
    } finally {
      for (const socket of sockets) socket.destroy()
      await gateway.stop()
    }
  })
})

describe("request heads", () => {
  it("a connection that does not finish its first head in time is dropped, and past the cap new ones are dropped at once", async () => {
    const gateway = await startTestGateway({
      apps: [{ id: "chat", fakeApp: app }],
      limits: { requestHeadTimeoutMs: 1_500, maxPendingRequestHeads: 3 }
    })
    try {
      const silent = await tcp(gateway.port)
      const partial = await tcp(gateway.port)
      partial.socket.write("GET /health HTTP/1.1\r\nHost: x\r\n")
      const third = await tcp(gateway.port)
      // a fourth while three are pending: dropped without waiting for any timeout
      const fourth = await tcp(gateway.port)
      let firstClosed = false
      void Promise.race([silent.closed, partial.closed, third.closed]).then(() => (firstClosed = true))
      await fourth.closed
      expect(firstClosed).toBe(false)

      // the three pending ones, the half-sent head included, end with the head timeout
      for (const pending of [silent, partial, third]) expect(await pending.closed).toBeGreaterThanOrEqual(1_000)
      // then the listener takes requests as before, and an upgrade that sent its head is not counted
      expect((await fetch(`${gateway.url}/health/live`)).status).toBe(200)
      const socket = await rawSocket(`${gateway.socketUrl}/websocket?app=chat&token=token-alice&vsn=2.0.0`)
      await socket.close()
    } finally {
      await gateway.close()
    }
  })
})
