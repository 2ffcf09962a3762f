import { createHmac } from "node:crypto"
import { describe, expect, it } from "vitest"
import { defaultSchema, startFakeApp } from "../../src/testing/index.ts"
import { closedAfterEach, postJson } from "../support/http.ts"
import type { FakeApp, FakeAppOptions, MessageRequestBody } from "../../src/testing/index.ts"

const apps = closedAfterEach<FakeApp>()
const start = async (options?: FakeAppOptions): Promise<FakeApp> => {
  const app = await startFakeApp(options)
  apps.push(app)
  return app
}
const post = postJson

const messageBody = (event: string, payload: unknown): MessageRequestBody => ({
  app: "demo",
  event,
  payload,
  channel: "room:lobby",
  ref: "1",
  client_id: "alice",
  client_type: "web",
  metadata: {},
  connection_id: "c1"
})

/** The two signature headers, computed here from CONTRACT §3 rather than with the kit's own helper. */
const sign = (secret: string, body: string, nowMs = Date.now()) => {
  const timestamp = String(Math.floor(nowMs / 1000))
  return {
    "x-gateway-timestamp": timestamp,
    "x-gateway-signature": `sha256=${createHmac("sha256", secret).update(`${timestamp}.${body}`).digest("hex")}`
  }
}

describe("FakeApp", () => {
  it("listens on 127.0.0.1 and exposes its endpoint URLs", async () => {
    const app = await start()
    expect(app.url).toBe(`http://127.0.0.1:${app.port}`)
    expect(app.endpoints).toEqual({
      schema: `${app.url}/messages-schema`,
      auth: `${app.url}/auth/websocket`,
      message: `${app.url}/messages`,
      notify: `${app.url}/notify`
    })
  })

  describe("schema", () => {
    it("serves the schema with an ETag and honours If-None-Match", async () => {
      const app = await start()
      const first = await fetch(app.endpoints.schema)
      expect(first.status).toBe(200)
      expect(await first.json()).toEqual(defaultSchema)
      const etag = first.headers.get("etag")
      expect(etag).toBe(app.etag)

      const again = await fetch(app.endpoints.schema, { headers: { "if-none-match": app.etag } })
      expect(again.status).toBe(304)
      expect(again.headers.get("etag")).toBe(etag)
      expect(await again.text()).toBe("")
      expect(app.requestsOf("schema").map((r) => r.headers["if-none-match"])).toEqual([undefined, etag])
    })

    it("bumps the ETag on setSchema, so an old ETag gets the new schema", async () => {
      const app = await start()
      const oldEtag = app.etag
      const doc = { version: "2", channels: [{ pattern: "news:*" }], events: [] }
      const newEtag = app.setSchema(doc)
      expect(newEtag).not.toBe(oldEtag)
      const res = await fetch(app.endpoints.schema, { headers: { "if-none-match": oldEtag } })
      expect(res.status).toBe(200)
      expect(res.headers.get("etag")).toBe(newEtag)
      expect(await res.json()).toEqual(doc)
      expect(app.schema).toEqual(doc)
    })

    it("serves a raw body with setSchemaRaw", async () => {
      const app = await start({ schema: { version: "7", channels: [], events: [] } })
      expect(await (await fetch(app.endpoints.schema)).json()).toEqual({ version: "7", channels: [], events: [] })
      app.setSchemaRaw("{\"version\": 3")
      expect(await (await fetch(app.endpoints.schema)).text()).toBe("{\"version\": 3")
    })
  })

  describe("auth", () => {
    it("answers from the default token table and refuses unknown tokens with 401", async () => {
      const app = await start()
      const ok = await post(app.endpoints.auth, { token: "token-alice", app: "a", client_type: "web" })
      expect(ok.status).toBe(200)
      expect(await ok.json()).toMatchObject({ client_id: "alice", permissions: ["user:alice"] })
      const refused = await post(app.endpoints.auth, { token: "nope", app: "a" })
      expect(refused.status).toBe(401)
      const recorded = await app.waitFor("auth", (r) => r.body.token === "nope")
      expect(recorded.method).toBe("POST")
      expect(recorded.path).toBe("/auth/websocket")
    })

    it("takes a token table with identities and verbatim answers", async () => {
      const app = await start()
      app.setAuth({
        t1: { client_id: "u1", permissions: ["read:project:*"] },
        banned: { status: 403, json: { error: "banned" } }
      })
      expect(await (await post(app.endpoints.auth, { token: "t1" })).json()).toEqual({
        client_id: "u1",
        permissions: ["read:project:*"]
      })
      const banned = await post(app.endpoints.auth, { token: "banned" })
      expect(banned.status).toBe(403)
      expect(await banned.json()).toEqual({ error: "banned" })
      expect((await post(app.endpoints.auth, { token: "token-alice" })).status).toBe(401)
    })

    it("takes a handler", async () => {
      const app = await start({
        auth: async (body) => body.token.startsWith("ok-") ? { client_id: body.token.slice(3), client_type: body.client_type } : null
      })
      expect(await (await post(app.endpoints.auth, { token: "ok-zoe", client_type: "ios" })).json()).toEqual({
        client_id: "zoe",
        client_type: "ios"
      })
      expect((await post(app.endpoints.auth, { token: "ko" })).status).toBe(401)
      app.setAuth(() => ({ status: 503, body: "down" }))
      const down = await post(app.endpoints.auth, { token: "ok-zoe" })
      expect(down.status).toBe(503)
      expect(await down.text()).toBe("down")
    })
  })

  describe("message", () => {
    it("echoes the payload as a reply by default", async () => {
      const app = await start()
      const res = await post(app.endpoints.message, messageBody("echo", { body: "hi" }))
      expect(res.status).toBe(200)
      expect(await res.json()).toEqual({ action: "reply", data: { body: "hi" } })
    })

    it("uses the handler set with setMessageHandler", async () => {
      const app = await start()
      app.setMessageHandler((body) => [
        { action: "broadcast", event: "shout", data: body.payload, exclude_sender: true },
        { action: "noreply" }
      ])
      expect(await (await post(app.endpoints.message, messageBody("shout", 1))).json()).toEqual([
        { action: "broadcast", event: "shout", data: 1, exclude_sender: true },
        { action: "noreply" }
      ])
      app.setMessageHandler(() => ({ status: 422, json: { action: "weird" } }))
      const odd = await post(app.endpoints.message, messageBody("x", null))
      expect(odd.status).toBe(422)
      expect(await odd.json()).toEqual({ action: "weird" })
    })

    it("answers 500 when the handler throws", async () => {
      const app = await start({
        messageHandler: () => {
          throw new Error("boom")
        }
      })
      const res = await post(app.endpoints.message, messageBody("echo", {}))
      expect(res.status).toBe(500)
      expect(await res.json()).toEqual({ error: "boom" })
    })
  })

  it("records notifications", async () => {
    const app = await start()
    const res = await post(app.endpoints.notify, {
      app: "a",
      event: "channel:joined",
      channel: "room:lobby",
      client_id: "alice",
      client_type: "web",
      metadata: {},
      connection_id: "c1",
      node: "n1",
      at: 1
    })
    expect(res.status).toBe(200)
    const recorded = await app.waitFor("notify")
    expect(recorded.body.event).toBe("channel:joined")
    expect(recorded.headers["content-type"]).toBe("application/json")
  })

  it("answers 404 to unknown paths and 405 to wrong methods, recorded as other", async () => {
    const app = await start()
    expect((await fetch(`${app.url}/nope`)).status).toBe(404)
    expect((await fetch(app.endpoints.message)).status).toBe(405)
    expect(app.requestsOf("other").map((r) => `${r.method} ${r.path}`)).toEqual(["GET /nope", "GET /messages"])
  })

  describe("failure switches", () => {
    it("answers with a status and body", async () => {
      const app = await start()
      app.fail("message", { status: 503, body: "{\"error\":\"busy\"}" })
      const res = await post(app.endpoints.message, messageBody("echo", 1))
      expect(res.status).toBe(503)
      expect(await res.text()).toBe("{\"error\":\"busy\"}")
      app.fail("schema", { status: 500 })
      expect((await fetch(app.endpoints.schema)).status).toBe(500)
      // Other endpoints are unaffected.
      expect((await post(app.endpoints.notify, {})).status).toBe(200)
    })

    it("answers 200 with invalid JSON in garbage mode", async () => {
      const app = await start()
      app.fail("auth", "garbage")
      const res = await post(app.endpoints.auth, { token: "token-alice" })
      expect(res.status).toBe(200)
      const text = await res.text()
      expect(() => JSON.parse(text)).toThrow()
    })

    it("drops the connection in destroy mode", async () => {
      const app = await start()
      app.fail("notify", "destroy")
      await expect(post(app.endpoints.notify, {})).rejects.toThrow()
      expect(app.requestsOf("notify")).toHaveLength(1)
    })

    it("never answers in hang mode, until close()", async () => {
      const app = await start()
      app.fail("message", "hang")
      const pending = post(app.endpoints.message, messageBody("echo", 1))
      const outcome = pending.then(
        () => "answered",
        () => "failed"
      )
      await app.waitFor("message")
      const raced = await Promise.race([outcome, new Promise((resolve) => setTimeout(() => resolve("pending"), 200))])
      expect(raced).toBe("pending")
      await app.close()
      expect(await outcome).toBe("failed")
    })

    it("answers late in delay mode", async () => {
      const app = await start()
      app.fail("message", { delayMs: 150 })
      const started = Date.now()
      const res = await post(app.endpoints.message, messageBody("echo", 2))
      expect(Date.now() - started).toBeGreaterThanOrEqual(140)
      expect(await res.json()).toEqual({ action: "reply", data: 2 })
    })

    it("misbehaves only `times` times, and `ok` clears a switch", async () => {
      const app = await start()
      app.fail("auth", { status: 500 }, { times: 2 })
      const statuses: Array<number> = []
      for (let i = 0; i < 3; i++) statuses.push((await post(app.endpoints.auth, { token: "token-bob" })).status)
      expect(statuses).toEqual([500, 500, 200])

      app.fail("auth", { status: 502 })
      expect((await post(app.endpoints.auth, { token: "token-bob" })).status).toBe(502)
      app.fail("auth", "ok")
      expect((await post(app.endpoints.auth, { token: "token-bob" })).status).toBe(200)
    })
  })

  describe("signatures", () => {
    it("records whether x-gateway-signature matches the timestamp and the raw body", async () => {
      const app = await start({ secret: "s3cret" })
      const body = JSON.stringify({ token: "token-alice" })
      await post(app.endpoints.auth, body, sign("s3cret", body))
      await post(app.endpoints.auth, body, sign("other", body))
      await post(app.endpoints.auth, body)
      await fetch(app.endpoints.schema, { headers: sign("s3cret", "") })
      // the signature of another timestamp
      await post(app.endpoints.auth, body, { ...sign("s3cret", body), "x-gateway-timestamp": String(Math.floor(Date.now() / 1000) + 1) })
      expect(app.requests.map((r) => r.signatureValid)).toEqual([true, false, false, true, false])
      expect(app.requests.map((r) => r.signatureProblem)).toEqual([
        undefined,
        "invalid_signature",
        "missing_signature",
        undefined,
        "invalid_signature"
      ])
      // Recording only, by default: the bad ones were still answered.
      expect(app.requestsOf("auth")).toHaveLength(4)
    })

    it("refuses bad signatures with enforceSignature", async () => {
      const app = await start({ secret: "s3cret", enforceSignature: true })
      const body = JSON.stringify({ token: "token-alice" })
      expect((await post(app.endpoints.auth, body, sign("s3cret", body))).status).toBe(200)
      expect((await post(app.endpoints.auth, body, { ...sign("s3cret", body), "x-gateway-signature": "sha256=00" })).status)
        .toBe(401)
    })

    it("refuses a correctly signed call replayed outside the 5-minute window", async () => {
      const app = await start({ secret: "s3cret", enforceSignature: true })
      const body = JSON.stringify({ token: "token-alice" })
      const sixMinutesAgo = Date.now() - 6 * 60_000
      const replayed = await post(app.endpoints.auth, body, sign("s3cret", body, sixMinutesAgo))
      expect(replayed.status).toBe(401)
      expect(await replayed.json()).toEqual({ error: "stale_timestamp" })
      // four minutes either way is within the window
      expect((await post(app.endpoints.auth, body, sign("s3cret", body, Date.now() - 4 * 60_000))).status).toBe(200)
      expect((await post(app.endpoints.auth, body, sign("s3cret", body, Date.now() + 4 * 60_000))).status).toBe(200)
    })

    it("leaves signatureValid unset without a secret", async () => {
      const app = await start()
      await fetch(app.endpoints.schema)
      expect(app.requests[0]).not.toHaveProperty("signatureValid")
    })
  })

  describe("waitFor", () => {
    it("resolves with an already recorded request", async () => {
      const app = await start()
      await post(app.endpoints.message, messageBody("a", 1))
      const recorded = await app.waitFor("message")
      expect(recorded.body.event).toBe("a")
      expect(recorded.rawBody).toBe(JSON.stringify(messageBody("a", 1)))
      expect(recorded.seq).toBe(1)
      expect(typeof recorded.at).toBe("number")
    })

    it("resolves when a matching request arrives later", async () => {
      const app = await start()
      const waiting = app.waitFor("message", (r) => r.body.event === "b")
      await post(app.endpoints.message, messageBody("a", 1))
      await post(app.endpoints.message, messageBody("b", 2))
      const recorded = await waiting
      expect(recorded.body.payload).toBe(2)
      expect(recorded.seq).toBe(2)
    })

    it("rejects after the timeout, listing what was received", async () => {
      const app = await start()
      await post(app.endpoints.notify, {})
      await expect(app.waitFor("auth", undefined, 50)).rejects.toThrow(/no matching auth request within 50ms.*notify POST \/notify/)
    })

    it("rejects pending waits on close", async () => {
      const app = await start()
      const waiting = app.waitFor("auth")
      await app.close()
      await expect(waiting).rejects.toThrow(/closed/)
    })

    it("forgets requests on clearRequests", async () => {
      const app = await start()
      await post(app.endpoints.notify, {})
      app.clearRequests()
      expect(app.requests).toHaveLength(0)
      await expect(app.waitFor("notify", undefined, 20)).rejects.toThrow()
    })
  })

  it("serves custom paths", async () => {
    const app = await start({ paths: { schema: "/schema.json" } })
    expect(app.endpoints.schema).toBe(`${app.url}/schema.json`)
    expect((await fetch(app.endpoints.schema)).status).toBe(200)
    expect((await fetch(`${app.url}/messages-schema`)).status).toBe(404)
  })
})
