/**
 * Frames written straight to a session's TCP socket decode, in `ws`'s own
 * client-side receiver, to the message and frame type they were made from, at
 * each payload length encoding (7-bit, 16-bit and 64-bit).
 */
import { createServer } from "node:http"
import type { AddressInfo } from "node:net"
import type { Duplex } from "node:stream"
import { WebSocket, WebSocketServer } from "ws"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { wireFrame } from "../../src/transport/WireFrame.ts"

interface Received {
  readonly data: Buffer
  readonly isBinary: boolean
}

// a server that, after `ws` has taken over the upgrade, writes the test's raw frames to the TCP socket
const server = createServer()
const wss = new WebSocketServer({ noServer: true, perMessageDeflate: false, maxPayload: 0 })
let rawSocket: Promise<Duplex>
let url: string
// every socket, so that a frame the client waits on forever cannot keep the server open
const sockets = new Set<Duplex>()
server.on("upgrade", (request, socket, head) => {
  sockets.add(socket)
  wss.handleUpgrade(request, socket, head, () => resolveSocket(socket))
})
let resolveSocket: (socket: Duplex) => void = () => {}

beforeAll(async () => {
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))
  url = `ws://127.0.0.1:${(server.address() as AddressInfo).port}`
})
afterAll(async () => {
  wss.close()
  for (const socket of sockets) socket.destroy()
  await new Promise((resolve) => server.close(resolve))
})

/** Writes the frames to a fresh connection and collects what a `ws` client receives. */
const receive = async (frames: ReadonlyArray<Buffer>): Promise<Array<Received>> => {
  rawSocket = new Promise((resolve) => (resolveSocket = resolve))
  const client = new WebSocket(url, { maxPayload: 0 })
  client.on("upgrade", (response) => sockets.add(response.socket))
  const received: Array<Received> = []
  const all = new Promise<void>((resolve, reject) => {
    client.on("message", (data: Buffer, isBinary) => {
      received.push({ data, isBinary })
      if (received.length === frames.length) resolve()
    })
    client.on("error", reject)
  })
  const socket = await rawSocket
  try {
    for (const frame of frames) socket.write(frame)
    await all
    return received
  } finally {
    client.terminate()
    socket.destroy()
  }
}

const decode = async (frame: Buffer) => (await receive([frame]))[0]!

describe("wireFrame", () => {
  for (const length of [0, 1, 125, 126, 127, 65_535, 65_536, 1_048_576]) {
    it(`text of ${length} bytes`, async () => {
      const text = "x".repeat(length)
      const frame = wireFrame(text)
      const decoded = await decode(frame)
      expect(decoded.isBinary).toBe(false)
      expect(decoded.data.toString("utf8")).toBe(text)
    })
  }

  it("text with multi-byte characters is sized by its UTF-8 bytes", async () => {
    const text = `["1","2","room:é","echo",{"emoji":"${"😀".repeat(40)}"}]`
    expect(Buffer.byteLength(text)).toBeGreaterThan(125)
    expect(text.length).toBeLessThan(126)
    const decoded = await decode(wireFrame(text))
    expect(decoded.data.toString("utf8")).toBe(text)
  })

  it("bytes as a binary frame", async () => {
    const bytes = Buffer.from([0, 1, 2, 255, 128])
    expect(await decode(wireFrame(bytes))).toEqual({ data: bytes, isBinary: true })
  })

  it("frames written back to back arrive as separate messages", async () => {
    const received = await receive([wireFrame("first"), wireFrame("second")])
    expect(received.map(({ data }) => data.toString())).toEqual(["first", "second"])
  })
})
