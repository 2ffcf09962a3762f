import { createServer } from "node:http"
import type { IncomingMessage, Server } from "node:http"
import type { AddressInfo } from "node:net"
import { afterEach, beforeEach, describe, expect, it } from "vitest"
import { WebSocketServer } from "ws"
import type { WebSocket } from "ws"
import {
  collect,
  connectSocket,
  join,
  nextMessage,
  push,
  rawSocket,
  SocketConnectError,
  upgradeRejection
} from "../../src/testing/index.ts"

type Frame = [string | null, string | null, string, string, unknown]

/**
 * A few lines of the Phoenix v2 JSON protocol, enough to exercise the client
 * helpers: joins of `private:*` are refused, `echo` replies, `fail` errors,
 * `silent` never answers, `announce` broadcasts `news` to the sender.
 */
interface MiniServer {
  readonly url: string
  readonly upgrades: Array<IncomingMessage>
  readonly sockets: Array<WebSocket>
  close(): Promise<void>
}

const startMiniServer = async (): Promise<MiniServer> => {
  const upgrades: Array<IncomingMessage> = []
  const sockets: Array<WebSocket> = []
  const wss = new WebSocketServer({
    noServer: true,
    handleProtocols: (protocols) => (protocols.has("phoenix") ? "phoenix" : false)
  })
  const server: Server = createServer((_req, res) => {
    res.writeHead(404)
    res.end()
  })
  server.on("upgrade", (req: IncomingMessage, socket, head) => {
    upgrades.push(req)
    const url = new URL(req.url ?? "/", "http://localhost")
    if (url.searchParams.get("token") === "bad") {
      const body = JSON.stringify({ reason: "invalid_token" })
      socket.end(
        `HTTP/1.1 401 Unauthorized\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`
      )
      return
    }
    wss.handleUpgrade(req, socket, head, (ws) => {
      sockets.push(ws)
      ws.on("message", (data) => {
        const [joinRef, ref, topic, event, payload] = JSON.parse(String(data)) as Frame
        const reply = (status: string, response: unknown) =>
          ws.send(JSON.stringify([joinRef, ref, topic, "phx_reply", { status, response }]))
        switch (event) {
          case "phx_join":
            return topic.startsWith("private:") ? reply("error", { reason: "unauthorized" }) : reply("ok", {})
          case "heartbeat":
          case "echo":
            return reply("ok", payload)
          case "fail":
            return reply("error", { reason: "nope" })
          case "announce":
            return ws.send(JSON.stringify([null, null, topic, "news", payload]))
          case "bye":
            return ws.close(4000, "bye")
          default:
            return
        }
      })
    })
  })
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))
  const { port } = server.address() as AddressInfo
  return {
    url: `ws://127.0.0.1:${port}/socket`,
    upgrades,
    sockets,
    close: async () => {
      for (const ws of wss.clients) ws.terminate()
      await new Promise<void>((resolve) => wss.close(() => resolve()))
      server.closeAllConnections()
      await new Promise<void>((resolve) => server.close(() => resolve()))
    }
  }
}

let server: MiniServer
beforeEach(async () => {
  server = await startMiniServer()
})
afterEach(async () => {
  await server.close()
})

describe("connectSocket", () => {
  it("connects with the query parameters and joins, pushes and receives", async () => {
    const socket = await connectSocket(server.url, { app: "demo", token: "t", clientType: "web" })
    try {
      const upgrade = new URL(server.upgrades[0]?.url ?? "", "http://x")
      expect(upgrade.pathname).toBe("/socket/websocket")
      expect(Object.fromEntries(upgrade.searchParams)).toEqual({
        app: "demo",
        token: "t",
        client_type: "web",
        vsn: "2.0.0"
      })

      const joined = await socket.join("room:lobby")
      expect(joined.status).toBe("ok")
      expect(await push(joined.channel, "echo", { body: "hi" })).toEqual({ status: "ok", response: { body: "hi" } })
      expect(await push(joined.channel, "fail", {})).toEqual({ status: "error", response: { reason: "nope" } })
      expect((await push(joined.channel, "silent", {}, 50)).status).toBe("timeout")

      const news = nextMessage(joined.channel, "news")
      const all = collect(joined.channel, "news")
      await push(joined.channel, "announce", { n: 1 }, 50)
      expect(await news).toEqual({ n: 1 })
      await push(joined.channel, "announce", { n: 2 }, 50)
      expect(await all.until(2)).toEqual([{ n: 1 }, { n: 2 }])
      all.stop()
    } finally {
      await socket.close()
    }
  })

  it("accepts the full socket URL and sends origin, headers and the auth token sub-protocol", async () => {
    const socket = await connectSocket(`${server.url}/websocket`, {
      app: "demo",
      authToken: "secret-token",
      origin: "https://app.example",
      headers: { "x-test": "1" }
    })
    await socket.close()
    const upgrade = server.upgrades[0]
    expect(upgrade?.url?.startsWith("/socket/websocket?")).toBe(true)
    expect(upgrade?.headers.origin).toBe("https://app.example")
    expect(upgrade?.headers["x-test"]).toBe("1")
    const token = Buffer.from("secret-token").toString("base64url")
    const offered = String(upgrade?.headers["sec-websocket-protocol"]).split(",").map((p) => p.trim())
    expect(offered).toEqual(["phoenix", `base64url.bearer.phx.${token}`])
    expect(new URL(upgrade?.url ?? "", "http://x").searchParams.has("token")).toBe(false)
  })

  it("connects with Node's native WebSocket too", async () => {
    const socket = await connectSocket(server.url, { app: "demo", token: "t", transport: "native" })
    expect((await socket.join("room:a")).status).toBe("ok")
    await socket.close()
  })

  it("rejects with the HTTP status and body of a refused upgrade, without retrying", async () => {
    const error = await connectSocket(server.url, { app: "demo", token: "bad" }).catch((e: unknown) => e)
    expect(error).toBeInstanceOf(SocketConnectError)
    expect(error).toMatchObject({ status: 401, body: { reason: "invalid_token" } })
    await new Promise((resolve) => setTimeout(resolve, 200))
    expect(server.upgrades).toHaveLength(1)
  })

  it("resolves `closed` when the server closes, and does not reconnect", async () => {
    const socket = await connectSocket(server.url, { app: "demo", token: "t" })
    const { channel } = await socket.join("room:a")
    void push(channel, "bye", {}, 100)
    expect(await socket.closed).toMatchObject({ code: 4000, reason: "bye" })
    await new Promise((resolve) => setTimeout(resolve, 200))
    expect(server.upgrades).toHaveLength(1)
  })
})

describe("join", () => {
  it("resolves refused joins with the reason and stops rejoining", async () => {
    const socket = await connectSocket(server.url, { app: "demo", token: "t" })
    const frames: Array<unknown> = []
    server.sockets[0]?.on("message", (data) => frames.push(JSON.parse(String(data))))
    const result = await join(socket.socket, "private:x")
    expect(result).toMatchObject({ status: "error", response: { reason: "unauthorized" } })
    // Opting in to rejoins shows that the client would retry (its first rejoin comes after 1s).
    expect((await socket.join("private:y", {}, { rejoin: true })).status).toBe("error")
    await new Promise((resolve) => setTimeout(resolve, 1200))
    const joins = (topic: string) => frames.filter((f) => Array.isArray(f) && f[2] === topic && f[3] === "phx_join")
    expect(joins("private:x")).toHaveLength(1)
    expect(joins("private:y").length).toBeGreaterThan(1)
    await socket.close()
  })
})

describe("upgradeRejection", () => {
  it("reads the status and JSON body of a refused upgrade", async () => {
    const rejection = await upgradeRejection(`${server.url}/websocket?token=bad`)
    expect(rejection.status).toBe(401)
    expect(rejection.body).toEqual({ reason: "invalid_token" })
    expect(rejection.headers["content-type"]).toBe("application/json")
  })

  it("rejects when the upgrade is accepted", async () => {
    await expect(upgradeRejection(`${server.url}/websocket?token=ok`)).rejects.toThrow(/accepted/)
  })
})

describe("rawSocket", () => {
  it("sends frames, reads them in order and reports the close", async () => {
    const raw = await rawSocket(`${server.url}/websocket?token=ok`, ["phoenix"], { origin: "https://o.example" })
    expect(raw.protocol).toBe("phoenix")
    expect(server.upgrades[0]?.headers.origin).toBe("https://o.example")
    raw.send(["1", "1", "room:a", "phx_join", {}])
    raw.send(["1", "2", "room:a", "echo", { body: "x" }])
    expect(await raw.nextJson()).toEqual(["1", "1", "room:a", "phx_reply", { status: "ok", response: {} }])
    expect(await raw.nextFrame()).toBe(JSON.stringify(["1", "2", "room:a", "phx_reply", { status: "ok", response: { body: "x" } }]))
    raw.send(["1", "3", "room:a", "bye", {}])
    expect(await raw.closed).toEqual({ code: 4000, reason: "bye" })
    await expect(raw.nextFrame()).rejects.toThrow(/closed/)
    expect(raw.frames).toHaveLength(2)
  })

  it("rejects with the refusal when the upgrade is refused", async () => {
    await expect(rawSocket(`${server.url}/websocket?token=bad`)).rejects.toMatchObject({
      status: 401,
      body: { reason: "invalid_token" }
    })
  })

  it("times out nextFrame when nothing comes", async () => {
    const raw = await rawSocket(`${server.url}/websocket`)
    await expect(raw.nextFrame(50)).rejects.toThrow(/within 50ms/)
    expect(await raw.close(1000, "done")).toMatchObject({ code: 1000 })
  })
})
