import { createHmac } from "node:crypto"
import { describe, expect, it } from "vitest"
/**
 * The bundled demo app (`examples/demo/app.ts`, written with the SDK) over
 * HTTP, as the gateway calls it; `examples/demo/app.test.ts` drives it through
 * a real gateway.
 */
import { makeDemoApp, startDemoApp } from "../../examples/demo/app.ts"
import type { DemoAppOptions } from "../../examples/demo/app.ts"
import type { Served } from "../../src/sdk/index.ts"
import { closedAfterEach, postJson } from "../support/http.ts"

const apps = closedAfterEach<Served>()
const start = async (options: DemoAppOptions = {}): Promise<Served> => {
  const app = await startDemoApp({ port: 0, ...options })
  apps.push(app)
  return app
}
const post = postJson

const message = (event: string, payload: unknown, channel = "room:lobby") => ({
  app: "demo",
  event,
  payload,
  channel,
  ref: "3",
  client_id: "alice",
  client_type: "web",
  metadata: { name: "Alice" },
  connection_id: "conn-1"
})

describe("demo app", () => {
  it("serves its schema with a content-derived ETag and answers 304 to it", async () => {
    const app = await start()
    expect(app.url).toBe(`http://127.0.0.1:${app.port}`)
    const res = await fetch(`${app.url}/messages-schema`)
    expect(res.status).toBe(200)
    const schema = await res.json()
    expect(schema).toEqual(makeDemoApp().document)
    expect(schema).toMatchObject({
      version: "1",
      channels: [
        { pattern: "room:{name}", presence: true, variables: { name: { pattern: "^[a-z0-9_-]{1,32}$" } } },
        { pattern: "user:{user_id}", permissions: { join: ["user:{user_id}"] } }
      ],
      events: [
        { name: "echo", allowedChannels: ["room:*", "user:*"], payload: { type: "object", required: ["body"] } },
        { name: "shout", allowedChannels: ["room:*"], payload: { type: "object", required: ["body"] } }
      ]
    })
    const etag = res.headers.get("etag")
    expect(etag).toMatch(/^"[0-9a-f]+"$/)
    // derived from the content, so every demo instance (and restart) serves the same ETag

    const other = await start()
    expect((await fetch(`${other.url}/messages-schema`)).headers.get("etag")).toBe(etag)

    const cached = await fetch(`${app.url}/messages-schema`, { headers: { "if-none-match": etag ?? "" } })
    expect(cached.status).toBe(304)
    expect(cached.headers.get("etag")).toBe(etag)
  })

  it("authenticates the demo tokens and refuses others with 401", async () => {
    const app = await start()
    const auth = (token: string) =>
      post(`${app.url}/auth/websocket`, {
        token,
        app: "demo",
        client_type: "web",
        connection_type: "websocket",
        remote_ip: "127.0.0.1",
        user_agent: "test"
      })
    const alice = await auth("demo-alice")
    expect(alice.status).toBe(200)
    expect(await alice.json()).toMatchObject({ client_id: "alice", client_type: "web", permissions: ["user:alice"] })
    expect(await (await auth("demo-bob")).json()).toMatchObject({ client_id: "bob", permissions: ["user:bob"] })
    expect((await auth("demo-carol")).status).toBe(401)
    expect((await auth("")).status).toBe(401)
  })

  it("replies to echo with the body", async () => {
    const app = await start()
    const res = await post(`${app.url}/messages`, message("echo", { body: "hello" }, "user:alice"))
    expect(res.status).toBe(200)
    expect(await res.json()).toEqual({ action: "reply", data: { body: "hello" } })
  })

  it("broadcasts shout to the room with the sender", async () => {
    const app = await start()
    const res = await post(`${app.url}/messages`, message("shout", { body: "hey all" }))
    expect(await res.json()).toEqual({ action: "broadcast", event: "shout", data: { from: "alice", body: "hey all" } })
  })

  it("answers an error action to unknown events and bad payloads", async () => {
    const app = await start()
    expect(await (await post(`${app.url}/messages`, message("dance", { body: "x" }))).json()).toMatchObject({
      action: "error"
    })
    expect(await (await post(`${app.url}/messages`, message("echo", { body: 1 }))).json()).toMatchObject({
      action: "error"
    })
  })

  it("accepts notifications", async () => {
    const lines: Array<string> = []
    const app = await start({ log: (line) => lines.push(line) })
    const res = await post(`${app.url}/notify`, {
      app: "demo",
      event: "channel:joined",
      channel: "room:lobby",
      client_id: "alice",
      client_type: "web",
      metadata: {},
      connection_id: "conn-1",
      node: "n1",
      at: "2025-01-01T00:00:00Z"
    })
    expect(res.status).toBe(200)
    expect(lines).toEqual(["channel:joined client=alice channel=room:lobby"])
  })

  it("answers 404 elsewhere", async () => {
    const app = await start()
    expect((await fetch(`${app.url}/nope`)).status).toBe(404)
  })

  it("checks signatures and their timestamp when given a secret", async () => {
    const app = await start({ secret: "demo-secret" })
    const body = JSON.stringify(message("echo", { body: "signed" }))
    const signed = (nowMs: number) => {
      const timestamp = String(Math.floor(nowMs / 1000))
      return {
        "x-gateway-timestamp": timestamp,
        "x-gateway-signature": `sha256=${createHmac("sha256", "demo-secret").update(`${timestamp}.${body}`).digest("hex")}`
      }
    }
    const ok = await post(`${app.url}/messages`, body, signed(Date.now()))
    expect(await ok.json()).toEqual({ action: "reply", data: { body: "signed" } })
    expect((await post(`${app.url}/messages`, body)).status).toBe(401)
    expect((await post(`${app.url}/messages`, body, { ...signed(Date.now()), "x-gateway-signature": "sha256=abc" })).status)
      .toBe(401)
    const replayed = await post(`${app.url}/messages`, body, signed(Date.now() - 301_000))
    expect(replayed.status).toBe(401)
    expect(await replayed.json()).toEqual({ reason: "stale_timestamp" })
  })
})
