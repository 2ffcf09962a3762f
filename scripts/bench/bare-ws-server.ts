/**
 * The benchmark's reference: the least a server must do to speak the same
 * protocol as the gateway, on the same `ws` library with the same options
 * (no compression, no client tracking, 1 MiB frames). It serves
 * `/socket/websocket` with Phoenix V2 JSON frames, answers `phx_join` with ok
 * after adding the socket to a `topic → Set<WebSocket>` map, answers
 * heartbeats, `phx_leave` and an `echo` event; it checks no token and calls no
 * app.
 *
 * Its counterpart of the gateway's server API broadcast is `POST /broadcast`
 * with the same body (`{topic, event, payload}` or an array of them) and, when
 * `BARE_SECRET` is set, the same `authorization: Bearer <secret>` check: each
 * broadcast is encoded once as a V2 frame `[null, null, topic, event, payload]`
 * and the same bytes are written to every socket joined to the topic (a socket
 * with more than 4 MiB unsent is dropped, as the gateway does); answer 202
 * `{accepted: n}`.
 *
 * Run: `scripts/node.sh scripts/bench/bare-ws-server.ts` with `PORT` (default
 * 4100) and `HOST` (default 127.0.0.1). HTTP: `GET /health/ready` (200 once
 * listening), `POST /broadcast`, and `GET /stats[?gc=1]` (RSS, heap and CPU of
 * this process, after a forced GC when started with `--expose-gc`; plus
 * connection and topic counts).
 */
import { timingSafeEqual } from "node:crypto"
import { createServer } from "node:http"
import type { IncomingMessage, ServerResponse } from "node:http"
import type { Duplex } from "node:stream"
import { WebSocketServer } from "ws"
import type { RawData, WebSocket } from "ws"
import { collectStats } from "./stats.ts"

const SOCKET_PATH = "/socket/websocket"
const PHOENIX_TOPIC = "phoenix"

const port = Number(process.env["PORT"] ?? "4100")
const host = process.env["HOST"] ?? "127.0.0.1"
const secret = process.env["BARE_SECRET"]
/** Unsent bytes after which a subscriber is dropped (the gateway's default outbox limit). */
const MAX_OUTBOX_BYTES = 4 * 1024 * 1024
/** Largest broadcast request body. */
const MAX_BODY_BYTES = 1024 * 1024

const topics = new Map<string, Set<WebSocket>>()
let connections = 0

type Frame = readonly [string | null, string | null, string, string, unknown]

const parseFrame = (data: RawData): Frame | undefined => {
  let value: unknown
  try {
    value = JSON.parse(data.toString())
  } catch {
    return undefined
  }
  if (!Array.isArray(value) || value.length !== 5) return undefined
  const [joinRef, ref, topic, event] = value as Array<unknown>
  const isRef = (x: unknown) => x === null || typeof x === "string"
  if (!isRef(joinRef) || !isRef(ref) || typeof topic !== "string" || typeof event !== "string") return undefined
  return value as unknown as Frame
}

const reply = (
  ws: WebSocket,
  joinRef: string | null,
  ref: string | null,
  topic: string,
  status: "ok" | "error",
  response: unknown
): void => {
  ws.send(JSON.stringify([joinRef, ref, topic, "phx_reply", { status, response }]))
}

const onConnection = (ws: WebSocket): void => {
  connections++
  /** Topic → join_ref of this socket's joins. */
  const joined = new Map<string, string | null>()

  ws.on("message", (data, isBinary) => {
    if (isBinary) return
    const frame = parseFrame(data)
    if (frame === undefined) return
    const [joinRef, ref, topic, event, payload] = frame
    if (topic === PHOENIX_TOPIC && event === "heartbeat") {
      reply(ws, null, ref, PHOENIX_TOPIC, "ok", {})
    } else if (event === "phx_join") {
      let members = topics.get(topic)
      if (members === undefined) {
        members = new Set()
        topics.set(topic, members)
      }
      members.add(ws)
      joined.set(topic, joinRef)
      reply(ws, joinRef, ref, topic, "ok", {})
    } else if (!joined.has(topic)) {
      reply(ws, joinRef, ref, topic, "error", { reason: "unmatched topic" })
    } else if (event === "phx_leave") {
      leave(ws, topic)
      joined.delete(topic)
      reply(ws, joinRef, ref, topic, "ok", {})
    } else if (event === "echo") {
      reply(ws, joinRef, ref, topic, "ok", payload ?? {})
    } else {
      reply(ws, joinRef, ref, topic, "error", { reason: "unknown event" })
    }
  })
  ws.on("error", () => ws.terminate())
  ws.on("close", () => {
    connections--
    for (const topic of joined.keys()) leave(ws, topic)
    joined.clear()
  })
}

const leave = (ws: WebSocket, topic: string): void => {
  const members = topics.get(topic)
  if (members === undefined) return
  members.delete(ws)
  if (members.size === 0) topics.delete(topic)
}

const wss = new WebSocketServer({
  noServer: true,
  perMessageDeflate: false,
  clientTracking: false,
  maxPayload: 1024 * 1024
})

const rejectUpgrade = (socket: Duplex, status: number, reason: string): void => {
  const body = JSON.stringify({ reason })
  socket.end(
    `HTTP/1.1 ${status} ${status === 404 ? "Not Found" : "Bad Request"}\r\n` +
      "Content-Type: application/json\r\n" +
      `Content-Length: ${Buffer.byteLength(body)}\r\n` +
      "Connection: close\r\n\r\n" +
      body
  )
}

const onUpgrade = (request: IncomingMessage, socket: Duplex, head: Buffer): void => {
  socket.on("error", () => socket.destroy())
  const url = new URL(request.url ?? "/", "http://bare")
  if (url.pathname !== SOCKET_PATH) return rejectUpgrade(socket, 404, "not_found")
  const params = url.searchParams
  if (!params.get("app") || !params.get("token")) return rejectUpgrade(socket, 400, "missing_params")
  if (!(params.get("vsn") ?? "").startsWith("2.")) return rejectUpgrade(socket, 400, "unsupported_vsn")
  wss.handleUpgrade(request, socket, head, onConnection)
}

const sendJson = (res: ServerResponse, status: number, value: unknown): void => {
  const body = JSON.stringify(value)
  res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(body) })
  res.end(body)
}

const authorized = (header: string | undefined): boolean => {
  if (secret === undefined) return true
  if (header === undefined || !header.startsWith("Bearer ")) return false
  const given = Buffer.from(header.slice("Bearer ".length))
  const expected = Buffer.from(secret)
  return given.length === expected.length && timingSafeEqual(given, expected)
}

interface BroadcastRequest {
  readonly topic: string
  readonly event: string
  readonly payload?: unknown
}

const isBroadcastRequest = (value: unknown): value is BroadcastRequest =>
  typeof value === "object" && value !== null &&
  typeof (value as { topic?: unknown }).topic === "string" && (value as { topic: string }).topic !== "" &&
  typeof (value as { event?: unknown }).event === "string" && (value as { event: string }).event !== ""

/** Encodes once, writes the same bytes to every subscriber; returns how many sockets got it. */
const broadcast = ({ event, payload, topic }: BroadcastRequest): number => {
  const members = topics.get(topic)
  if (members === undefined) return 0
  const bytes = Buffer.from(JSON.stringify([null, null, topic, event, payload ?? {}]))
  let written = 0
  for (const ws of members) {
    if (ws.bufferedAmount > MAX_OUTBOX_BYTES) {
      ws.terminate()
      continue
    }
    ws.send(bytes, { binary: false })
    written++
  }
  return written
}

const handleBroadcast = (req: IncomingMessage, res: ServerResponse): void => {
  if (!authorized(req.headers["authorization"])) {
    req.resume()
    return sendJson(res, 401, { reason: "unauthorized" })
  }
  const chunks: Array<Buffer> = []
  let size = 0
  req.on("data", (chunk: Buffer) => {
    size += chunk.length
    if (size > MAX_BODY_BYTES) {
      sendJson(res, 413, { reason: "too_large" })
      req.destroy()
      return
    }
    chunks.push(chunk)
  })
  req.on("end", () => {
    let body: unknown
    try {
      body = JSON.parse(Buffer.concat(chunks).toString("utf8"))
    } catch {
      return sendJson(res, 400, { reason: "invalid_json" })
    }
    const broadcasts = Array.isArray(body) ? body : [body]
    if (!broadcasts.every(isBroadcastRequest)) return sendJson(res, 400, { reason: "invalid_body" })
    for (const request of broadcasts) broadcast(request)
    sendJson(res, 202, { accepted: broadcasts.length })
  })
}

const server = createServer((req, res) => {
  const url = new URL(req.url ?? "/", "http://bare")
  if (req.method === "POST" && url.pathname === "/broadcast") {
    handleBroadcast(req, res)
  } else if (req.method === "GET" && url.pathname === "/health/ready") {
    sendJson(res, 200, { status: "ready" })
  } else if (req.method === "GET" && url.pathname === "/stats") {
    collectStats(url.searchParams.get("gc") === "1").then(
      (stats) => sendJson(res, 200, { ...stats, connections, topics: topics.size }),
      (error: unknown) => sendJson(res, 500, { error: String(error) })
    )
  } else {
    sendJson(res, 404, { error: "not found" })
  }
})
server.on("upgrade", onUpgrade)
server.on("error", (error) => {
  console.error(`bare-ws-server: ${error.message}`)
  process.exit(1)
})
server.listen(port, host)

const stop = () => {
  server.close()
  server.closeAllConnections()
  process.exit(0)
}
process.on("SIGTERM", stop)
process.on("SIGINT", stop)
