/**
 * The demo app bundled with the gateway: the smallest complete app backend, to
 * connect a first client to and to read as an example of the four calls an app
 * serves (`GET /messages-schema`, `POST /auth/websocket`, `POST /messages`,
 * `POST /notify`).
 *
 * Channels:
 * - `room:{name}`: public rooms (name matching `^[a-z0-9_-]{1,32}$`) with
 *   presence; any authenticated client may join.
 * - `user:{user_id}`: a user's private channel; joining needs the permission
 *   `user:{user_id}`.
 *
 * Events:
 * - `echo` (on `room:*` and `user:*`), payload `{"body": string}`: replies
 *   `{"body": ...}` to the sender.
 * - `shout` (on `room:*`), payload `{"body": string}`: broadcasts `shout`
 *   `{"from": <client_id>, "body": ...}` to everyone in the room.
 *
 * Tokens:
 * - `demo-alice`: client `alice`, permissions `["user:alice"]`;
 * - `demo-bob`: client `bob`, permissions `["user:bob"]`;
 * - anything else is refused with 401.
 *
 * So with the gateway configured for an app whose backend is this server,
 * `demo-alice` can join `room:lobby` and `user:alice` but not `user:bob`.
 *
 * If a `secret` is given, requests must carry a valid `x-gateway-timestamp`
 * and `x-gateway-signature` within 5 minutes of this clock, as a production
 * app should check.
 */
import { createHash } from "node:crypto"
import { createServer } from "node:http"
import type { IncomingMessage, ServerResponse } from "node:http"
import type { AddressInfo } from "node:net"
import { SIGNATURE_HEADER, TIMESTAMP_HEADER, verifySignature } from "../contract/Signature.ts"

export interface DemoAppOptions {
  /** 0 picks a free port. */
  readonly port: number
  /** Default 127.0.0.1. */
  readonly host?: string
  /** Shared secret the gateway signs requests with, if configured. */
  readonly secret?: string
  /** Receives one line per notification (connections, joins, leaves). */
  readonly log?: (line: string) => void
}

export interface DemoApp {
  /** Base URL, e.g. `http://127.0.0.1:4100`. */
  readonly url: string
  readonly port: number
  close(): Promise<void>
}

export const demoSchema = {
  version: "1",
  channels: [
    {
      pattern: "room:{name}",
      description: "Public room; any authenticated client may join",
      variables: { name: { type: "string", pattern: "^[a-z0-9_-]{1,32}$" } },
      presence: true
    },
    {
      pattern: "user:{user_id}",
      description: "Private channel of one user",
      variables: { user_id: { type: "string" } },
      permissions: { join: ["user:{user_id}"] }
    }
  ],
  events: [
    { name: "echo", allowedChannels: ["room:*", "user:*"], payload: { body: "string" } },
    { name: "shout", allowedChannels: ["room:*"], payload: { body: "string" } }
  ]
} as const

const schemaBody = JSON.stringify(demoSchema)
// Derived from the content, so every demo instance (and restart) serves the same ETag.
const schemaEtag = `"${createHash("sha256").update(schemaBody).digest("hex").slice(0, 32)}"`

interface DemoUser {
  readonly client_id: string
  readonly metadata: { readonly name: string }
  readonly permissions: ReadonlyArray<string>
}

const demoTokens: Readonly<Record<string, DemoUser>> = {
  "demo-alice": { client_id: "alice", metadata: { name: "Alice" }, permissions: ["user:alice"] },
  "demo-bob": { client_id: "bob", metadata: { name: "Bob" }, permissions: ["user:bob"] }
}

type Json = Record<string, unknown>

const asObject = (value: unknown): Json =>
  typeof value === "object" && value !== null && !Array.isArray(value) ? value as Json : {}

const readBody = (req: IncomingMessage): Promise<string> =>
  new Promise((resolve, reject) => {
    const chunks: Array<Buffer> = []
    req.on("data", (chunk: Buffer) => chunks.push(chunk))
    req.on("end", () => resolve(Buffer.concat(chunks).toString("utf8")))
    req.on("error", reject)
  })

const sendJson = (res: ServerResponse, status: number, value: unknown, headers: Record<string, string> = {}): void => {
  const body = JSON.stringify(value)
  res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(body), ...headers })
  res.end(body)
}

const firstValue = (header: string | Array<string> | undefined) => Array.isArray(header) ? header[0] : header

const noneMatch = (header: string | undefined): boolean =>
  header !== undefined &&
  header.split(",").some((tag) => tag.trim() === "*" || tag.trim().replace(/^W\//, "") === schemaEtag)

const authenticate = (body: Json, res: ServerResponse): void => {
  const token = body["token"]
  const user = typeof token === "string" && Object.hasOwn(demoTokens, token) ? demoTokens[token] : undefined
  if (user === undefined) {
    sendJson(res, 401, { error: "unknown token" })
    return
  }
  const clientType = typeof body["client_type"] === "string" ? body["client_type"] : "web"
  sendJson(res, 200, { ...user, client_type: clientType })
}

const handleMessage = (body: Json): unknown => {
  const event = body["event"]
  const text = asObject(body["payload"])["body"]
  if (typeof text !== "string") {
    // The gateway validates payloads against the schema first; this guards direct calls.
    return { action: "error", reason: "body must be a string" }
  }
  switch (event) {
    case "echo":
      return { action: "reply", data: { body: text } }
    case "shout":
      // No topic: the broadcast goes to the channel the message came from.
      return { action: "broadcast", event: "shout", data: { from: body["client_id"], body: text } }
    default:
      return { action: "error", reason: `unknown event ${String(event)}` }
  }
}

export const startDemoApp = async (options: DemoAppOptions): Promise<DemoApp> => {
  const host = options.host ?? "127.0.0.1"
  const log = options.log ?? (() => {})

  const handlers: Readonly<Record<string, (body: Json, res: ServerResponse) => void>> = {
    "POST /auth/websocket": authenticate,
    "POST /messages": (body, res) => sendJson(res, 200, handleMessage(body)),
    "POST /notify": (body, res) => {
      log(`${String(body["event"])} client=${String(body["client_id"])} channel=${String(body["channel"] ?? "-")}`)
      sendJson(res, 200, {})
    }
  }

  const route = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const rawBody = await readBody(req)
    if (options.secret !== undefined) {
      const problem = verifySignature(
        options.secret,
        rawBody,
        firstValue(req.headers[TIMESTAMP_HEADER]),
        firstValue(req.headers[SIGNATURE_HEADER])
      )
      if (problem !== undefined) {
        sendJson(res, 401, { error: problem })
        return
      }
    }
    const path = (req.url ?? "/").split("?")[0]
    const endpoint = `${req.method} ${path}`
    if (endpoint === "GET /messages-schema") {
      if (noneMatch(req.headers["if-none-match"])) {
        res.writeHead(304, { etag: schemaEtag })
        res.end()
      } else {
        res.writeHead(200, {
          "content-type": "application/json",
          "content-length": Buffer.byteLength(schemaBody),
          etag: schemaEtag
        })
        res.end(schemaBody)
      }
      return
    }
    const handler = handlers[endpoint]
    if (handler === undefined) {
      sendJson(res, 404, { error: "not found" })
      return
    }
    let body: Json
    try {
      body = asObject(JSON.parse(rawBody))
    } catch {
      sendJson(res, 400, { error: "body is not JSON" })
      return
    }
    handler(body, res)
  }

  const server = createServer((req, res) => {
    route(req, res).catch((error: unknown) => {
      if (!res.headersSent) sendJson(res, 500, { error: error instanceof Error ? error.message : String(error) })
      else res.destroy()
    })
  })
  // Outlives the gateway's pooled idle connections, so reuse never races a server-side close.
  server.keepAliveTimeout = 60_000

  await new Promise<void>((resolve, reject) => {
    server.once("error", reject)
    server.listen(options.port, host, () => {
      server.off("error", reject)
      resolve()
    })
  })
  const port = (server.address() as AddressInfo).port
  const urlHost = host.includes(":") ? `[${host}]` : host
  return {
    url: `http://${urlHost}:${port}`,
    port,
    close: () =>
      new Promise<void>((resolve, reject) => {
        server.close((error) => (error ? reject(error) : resolve()))
        server.closeAllConnections()
      })
  }
}
