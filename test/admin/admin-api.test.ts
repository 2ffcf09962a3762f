/**
 * The admin API on a single node (CONTRACT §8): the token rules, apps listed
 * with their secrets redacted, apps registered, changed and removed at
 * runtime (kept in memory, and the answer says so), the node's status, and
 * `/health`'s version. The cluster behaviour is in test/cluster/admin.test.ts.
 */
import { readFileSync } from "node:fs"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { connectSocket, push, startFakeApp, startTestGateway, upgradeRejection } from "../../src/testing/index.ts"
import type { FakeApp, TestGateway } from "../../src/testing/index.ts"

const TOKEN = "admin-token-for-the-admin-api-tests"
const APP_SECRET = "chat-secret-that-must-never-be-shown"

let chat: FakeApp
let extra: FakeApp
let gateway: TestGateway
let withoutAdmin: TestGateway

beforeAll(async () => {
  chat = await startFakeApp()
  extra = await startFakeApp()
  gateway = await startTestGateway({ adminToken: TOKEN, apps: [{ id: "chat", fakeApp: chat, secret: APP_SECRET }] })
  withoutAdmin = await startTestGateway({ apps: [{ id: "chat", fakeApp: chat }] })
})
afterAll(async () => {
  await gateway?.close()
  await withoutAdmin?.close()
  await chat?.close()
  await extra?.close()
})

const admin = async (path: string, init: RequestInit & { token?: string | null; on?: TestGateway } = {}) => {
  const { on = gateway, token = TOKEN, ...rest } = init
  const response = await fetch(`${on.url}${path}`, {
    ...rest,
    headers: {
      "content-type": "application/json",
      ...(token === null ? {} : { authorization: `Bearer ${token}` }),
      ...rest.headers
    }
  })
  const text = await response.text()
  let body: any = text
  try {
    body = JSON.parse(text)
  } catch {
    // not JSON
  }
  return { status: response.status, body, text, headers: response.headers }
}

const put = (id: string, body: unknown) => admin(`/admin/apps/${id}`, { method: "PUT", body: JSON.stringify(body) })

describe("access", () => {
  it("without GATEWAY_ADMIN_TOKEN every /admin path is 404, whatever token is sent", async () => {
    for (const path of ["/admin", "/admin/apps", "/admin/cluster", "/admin/dashboard.js"]) {
      expect((await admin(path, { on: withoutAdmin })).status).toBe(404)
      expect((await admin(path, { on: withoutAdmin, token: null })).status).toBe(404)
    }
    expect((await admin("/admin/apps/x", { on: withoutAdmin, method: "DELETE" })).status).toBe(404)
  })

  it("a missing or wrong token is 401 unauthorized; the dashboard's page itself needs none", async () => {
    for (const token of [null, "", "wrong", `${TOKEN}x`, TOKEN.slice(0, -1)]) {
      const answer = await admin("/admin/apps", { token })
      expect(answer).toMatchObject({ status: 401, body: { reason: "unauthorized" } })
    }
    expect((await admin("/admin/cluster", { token: "wrong" })).status).toBe(401)
    expect((await admin("/admin/apps/chat", { method: "DELETE", token: "wrong" })).status).toBe(401)
    expect((await admin("/admin/apps/chat", { method: "PUT", token: "wrong", body: "{}" })).status).toBe(401)
    const page = await admin("/admin", { token: null })
    expect(page.status).toBe(200)
    expect(page.headers.get("content-type")).toContain("text/html")
    expect(page.headers.get("content-security-policy")).toContain("default-src 'none'")
  })
})

describe("GET /admin/apps", () => {
  it("lists every app with its schema state and never shows a secret", async () => {
    const answer = await admin("/admin/apps")
    expect(answer.status).toBe(200)
    expect(answer.text).not.toContain(APP_SECRET)
    expect(answer.body).toMatchObject({
      kept_in: "memory",
      apps: [{
        id: "chat",
        source: "config",
        secret: "[redacted]",
        schemaEndpoint: `${chat.url}/messages-schema`,
        schema: { version: "1", last_error: null }
      }]
    })
  })
})

describe("PUT /admin/apps/:id", () => {
  it("refuses settings the config file would refuse, naming each key", async () => {
    const missing = await put("broken", {})
    expect(missing).toMatchObject({ status: 400, body: { reason: "invalid_app" } })
    expect(missing.body.errors).toContainEqual({ path: "api", message: expect.stringContaining("missing") })
    const bad = await put("broken", { api: "ftp://x", timeouts: { authMs: 0 }, colour: "red" })
    expect(bad.status).toBe(400)
    expect(bad.body.errors.map((error: { path: string }) => error.path).sort()).toEqual(["api", "colour", "timeouts.authMs"])
    expect((await put("Not-An-Id", { api: extra.url })).status).toBe(400)
    expect(await put("broken", { id: "other", api: extra.url })).toMatchObject({
      status: 400,
      body: { errors: [{ path: "id" }] }
    })
    expect((await admin("/admin/apps/broken", { method: "PUT", body: "not json" })).body).toEqual({ reason: "invalid_json" })
    expect((await admin("/admin/apps")).body.apps.map((app: { id: string }) => app.id)).toEqual(["chat"])
  })

  it("registers an app at runtime (201, kept in memory and said so): clients connect to it at once", async () => {
    const answer = await put("extra", { api: extra.url, secret: "extra-secret-value-of-at-least-32-bytes" })
    expect(answer.status).toBe(201)
    expect(answer.text).not.toContain("extra-secret-value-of-at-least-32-bytes")
    expect(answer.body).toMatchObject({
      kept_in: "memory",
      note: expect.stringContaining("lost when it restarts"),
      app: { id: "extra", source: "runtime", secret: "[redacted]", schema: { version: "1" } }
    })
    const socket = await connectSocket(gateway.socketUrl, { app: "extra", token: "token-alice" })
    const { channel, status } = await socket.join("room:lobby")
    expect(status).toBe("ok")
    expect(await push(channel, "echo", { n: 1 })).toEqual({ status: "ok", response: { n: 1 } })
    await socket.close()
  })

  it("changes an app at runtime (200): its next calls go to the new endpoints", async () => {
    const moved = await startFakeApp({ messageHandler: () => ({ action: "reply", data: { from: "moved" } }) })
    try {
      const socket = await connectSocket(gateway.socketUrl, { app: "extra", token: "token-alice" })
      const { channel } = await socket.join("room:lobby")
      const answer = await put("extra", { api: extra.url, messageEndpoint: `${moved.url}/messages` })
      expect(answer).toMatchObject({ status: 200, body: { app: { messageEndpoint: `${moved.url}/messages` } } })
      // the connection made before the change uses the new settings
      expect(await push(channel, "echo", {})).toEqual({ status: "ok", response: { from: "moved" } })
      await socket.close()
    } finally {
      await moved.close()
    }
  })
})

describe("DELETE /admin/apps/:id", () => {
  it("closes the app's connections, stops its calls, and refuses new connections as unknown_app", async () => {
    const victim = await startFakeApp()
    try {
      expect((await put("victim", { api: victim.url, timeouts: { schemaMs: 60_000 } })).status).toBe(201)
      const socket = await connectSocket(gateway.socketUrl, { app: "victim", token: "token-bob" })
      const { channel } = await socket.join("room:lobby")
      victim.fail("message", "hang")
      victim.fail("schema", "hang")
      victim.clearRequests()
      // calls the app never answers: a push, and a schema fetch that would wait 60 s
      void push(channel, "echo", {}, 30_000)
      const refreshing = admin("/admin/apps/victim/schema/refresh", { method: "POST" })
      await Promise.all([victim.waitFor("message"), victim.waitFor("schema")])
      const answer = await admin("/admin/apps/victim", { method: "DELETE" })
      expect(answer).toMatchObject({ status: 200, body: { removed: "victim", kept_in: "memory" } })
      const closed = await socket.closed
      expect(closed.code).toBe(1008)
      // stopped by the removal, not by its timeout
      expect((await refreshing).status).toBe(502)
      expect(await upgradeRejection(`${gateway.socketUrl}/websocket?app=victim&token=token-bob&vsn=2.0.0`)).toMatchObject({
        status: 404,
        body: { reason: "unknown_app" }
      })
      expect((await admin("/admin/apps/victim", { method: "DELETE" })).status).toBe(404)
      expect((await admin("/admin/apps")).body.apps.map((app: { id: string }) => app.id)).not.toContain("victim")
    } finally {
      await victim.close()
    }
  })
})

describe("GET /admin/cluster", () => {
  it("answers this node's status, with its history when asked", async () => {
    const socket = await connectSocket(gateway.socketUrl, { app: "chat", token: "token-alice" })
    await socket.join("room:status")
    const answer = await admin("/admin/cluster?history=true")
    await socket.close()
    expect(answer.status).toBe(200)
    const [node] = answer.body.nodes
    expect(node).toMatchObject({
      node: "test",
      version: JSON.parse(readFileSync("package.json", "utf8")).version,
      state: "ready",
      connections: 1,
      channels: 1,
      apps: { chat: { connections: 1, channels: 1 } },
      memory: { rss_bytes: expect.any(Number), heap_used_bytes: expect.any(Number) }
    })
    expect(node.shards).toBeGreaterThan(0)
    expect(node.uptime_s).toBeGreaterThanOrEqual(0)
    expect(node.event_loop_lag_ms).toBeGreaterThanOrEqual(0)
    expect(Array.isArray(node.history)).toBe(true)
    expect(node.history.length).toBeGreaterThan(0)
    expect((await admin("/admin/cluster")).body.nodes[0].history).toBeUndefined()
  })
})

describe("per-app figures", () => {
  it("count the app's traffic and give its call latency over the last sampling period", async () => {
    const socket = await connectSocket(gateway.socketUrl, { app: "chat", token: "token-alice" })
    const { channel } = await socket.join("room:figures")
    for (let i = 0; i < 5; i++) expect((await push(channel, "echo", { i })).status).toBe("ok")
    // the percentiles come with the node's next sample (every 5 s)
    const deadline = Date.now() + 15_000
    let figures: any
    for (;;) {
      figures = (await admin("/admin/cluster")).body.nodes[0].apps.chat
      if (figures.message_p99_ms !== undefined || Date.now() > deadline) break
      await new Promise((resolve) => setTimeout(resolve, 250))
    }
    await socket.close()
    expect(figures.pushes).toBeGreaterThanOrEqual(5)
    expect(figures.joins).toBeGreaterThanOrEqual(1)
    expect(figures.message_calls).toBeGreaterThanOrEqual(5)
    expect(figures.message_errors ?? 0).toBe(0)
    expect(figures.message_breaker).toBe(0)
    expect(figures.message_p50_ms).toBeGreaterThan(0)
    expect(figures.message_p99_ms).toBeGreaterThanOrEqual(figures.message_p50_ms)
  }, 30_000)
})

describe("GET /health", () => {
  it("reports the version of package.json", async () => {
    const health = await admin("/health", { token: null })
    expect(health.body).toMatchObject({ status: "ok", version: JSON.parse(readFileSync("package.json", "utf8")).version })
  })
})
