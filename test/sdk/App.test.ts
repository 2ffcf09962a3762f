/**
 * The SDK's app side (`realtime-gateway/app`): the schema document generated
 * from Effect Schemas is one the gateway accepts and enforces; the fetch
 * handler checks signatures and timestamps, decodes inputs, checks answers
 * and maps refusals to the contract's answers; the same app served through
 * an Effect `HttpRouter`; and a real gateway in front of it.
 */
import { createHmac } from "node:crypto"
import { Effect, Schema } from "effect"
import { HttpRouter } from "effect/http"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { decodeSchemaDocument } from "../../src/apps/SchemaDocument.ts"
import {
  AuthRefused,
  broadcast,
  channel,
  defineApp,
  event,
  MessageRefused,
  noreply,
  reply
} from "../../src/sdk/index.ts"
import type { Contract } from "../../src/sdk/index.ts"
import { connectSocket, nextMessage, push, pushEvent, startTestGateway } from "../../src/testing/index.ts"
import type { TestGateway } from "../../src/testing/index.ts"

const SECRET = "an-sdk-test-secret-of-32-bytes-or-more"

const notifications: Array<Contract.Notification> = []
const failures: Array<string> = []

const app = defineApp({
  version: "3",
  secret: SECRET,
  channels: [
    channel("room:{room}", { variables: { room: { type: "string", pattern: "^[a-z]{1,16}$" } }, presence: true }),
    channel("vip:{room}", { permissions: { join: ["vip:{room}"] } })
  ],
  events: {
    say: event({
      channels: ["room:*"],
      payload: Schema.Struct({ text: Schema.String.check(Schema.isMaxLength(20)), loud: Schema.optionalKey(Schema.Boolean) })
    }),
    count: event({
      channels: ["room:*"],
      payload: Schema.Struct({ n: Schema.Int.check(Schema.isGreaterThanOrEqualTo(0)) }),
      rateLimit: { windowMs: 60_000, maxRequests: 3 }
    }),
    quiet: event({ channels: ["room:*"], payload: Schema.Struct({}) }),
    refused: event({ channels: ["room:*"], payload: Schema.Struct({}) }),
    broken: event({ channels: ["room:*"], payload: Schema.Struct({}) })
  },
  rateLimit: { windowMs: 60_000, maxRequests: 1_000 },
  auth: ({ token, client_type }) => {
    if (token === "forbidden") throw new AuthRefused({ status: 403 })
    if (token === "broken") return { client_id: "" }
    return token.startsWith("user-") ? { client_id: token.slice(5), client_type, metadata: { plan: "free" } } : null
  },
  messages: {
    // the payload is typed by the Schema: `text` is a string, `loud` an optional boolean
    say: ({ payload, client_id }) =>
      payload.loud === true
        ? broadcast("said", { from: client_id, text: payload.text.toUpperCase() })
        : reply({ text: payload.text }),
    count: ({ payload }) => Effect.succeed(reply({ next: payload.n + 1 })),
    quiet: () => Promise.resolve(noreply()),
    refused: () => Effect.fail(new MessageRefused({ reason: "not_today" })),
    // outside the contract: an action the gateway does not know
    broken: () => ({ action: "explode" }) as never
  },
  notify: (notification) => {
    notifications.push(notification)
  },
  onError: (call, error) => failures.push(`${call}: ${String(error)}`)
})

/** A signed call as the gateway makes it, at `nowMs`. */
const signed = (path: string, body: unknown, nowMs = Date.now(), method = "POST") => {
  const raw = body === undefined ? "" : JSON.stringify(body)
  const timestamp = String(Math.floor(nowMs / 1000))
  return new Request(`http://app.test${path}`, {
    method,
    headers: {
      "content-type": "application/json",
      "x-gateway-timestamp": timestamp,
      "x-gateway-signature": `sha256=${createHmac("sha256", SECRET).update(`${timestamp}.${raw}`).digest("hex")}`
    },
    ...(method === "GET" ? {} : { body: raw })
  })
}

const messageBody = (eventName: string, payload: unknown) => ({
  app: "sdk",
  event: eventName,
  payload,
  channel: "room:lobby",
  ref: "1",
  client_id: "ann",
  client_type: "web",
  metadata: {},
  connection_id: "c1"
})

describe("the schema document", () => {
  it("is one the gateway accepts, with each payload as JSON Schema and the rate limits", async () => {
    const decoded = await Effect.runPromise(decodeSchemaDocument(app.document))
    expect(decoded.version).toBe("3")
    expect(decoded.events.map((e) => e.name)).toEqual(["say", "count", "quiet", "refused", "broken"])
    expect(decoded.events[0]!.payload).toMatchObject({
      $schema: "https://json-schema.org/draft/2020-12/schema",
      type: "object",
      properties: { text: { type: "string", maxLength: 20 }, loud: { type: "boolean" } },
      required: ["text"]
    })
    expect(decoded.rateLimits).toEqual({
      default: { windowMs: 60_000, maxRequests: 1_000 },
      byEvent: { count: { windowMs: 60_000, maxRequests: 3 } }
    })
  })

  it("is served with its ETag, and 304 when the gateway has it", async () => {
    const first = await app.fetch(signed("/messages-schema", undefined, Date.now(), "GET"))
    expect(first.status).toBe(200)
    expect(first.headers.get("etag")).toBe(app.etag)
    expect(await first.json()).toEqual(app.document)
    const again = signed("/messages-schema", undefined, Date.now(), "GET")
    again.headers.set("if-none-match", app.etag)
    expect((await app.fetch(again)).status).toBe(304)
  })
})

describe("the fetch handler", () => {
  it("refuses a call without a signature, with a wrong one, or replayed after 5 minutes", async () => {
    const unsigned = new Request("http://app.test/messages", { method: "POST", body: JSON.stringify(messageBody("say", { text: "hi" })) })
    expect(await (await app.fetch(unsigned)).json()).toEqual({ reason: "missing_signature" })
    const tampered = signed("/messages", messageBody("say", { text: "hi" }))
    const forged = new Request(tampered.url, {
      method: "POST",
      headers: tampered.headers,
      body: JSON.stringify(messageBody("say", { text: "hijacked" }))
    })
    const forgedAnswer = await app.fetch(forged)
    expect(forgedAnswer.status).toBe(401)
    expect(await forgedAnswer.json()).toEqual({ reason: "invalid_signature" })
    const replayed = await app.fetch(signed("/messages", messageBody("say", { text: "hi" }), Date.now() - 301_000))
    expect(replayed.status).toBe(401)
    expect(await replayed.json()).toEqual({ reason: "stale_timestamp" })
    expect(failures.at(-1)).toBe("message: Error: refused a call without a valid signature (stale_timestamp)")
  })

  it("answers auth: the identity, 401 for null, 403 for AuthRefused, 500 for an answer outside the contract", async () => {
    const auth = (token: string) =>
      app.fetch(signed("/auth/websocket", {
        token,
        app: "sdk",
        client_type: "web",
        connection_type: "websocket",
        remote_ip: "127.0.0.1",
        user_agent: "test"
      }))
    const granted = await auth("user-ann")
    expect(await granted.json()).toEqual({ client_id: "ann", client_type: "web", metadata: { plan: "free" } })
    expect((await auth("nobody")).status).toBe(401)
    expect((await auth("forbidden")).status).toBe(403)
    expect((await auth("broken")).status).toBe(500)
    expect(failures.at(-1)).toContain("auth: Error: the auth answer is outside the contract")
  })

  it("answers 400 with the problems to a body outside the contract", async () => {
    const answer = await app.fetch(signed("/auth/websocket", { token: 42 }))
    expect(answer.status).toBe(400)
    const body = await answer.json() as { reason: string; errors: ReadonlyArray<{ path: string }> }
    expect(body.reason).toBe("invalid_body")
    expect(body.errors.map((error) => error.path)).toEqual(expect.arrayContaining(["token", "app", "connection_type"]))
  })

  it("maps refusals, unknown events and invalid payloads to error actions, and a bad answer to 500", async () => {
    const message = async (eventName: string, payload: unknown) => {
      const answer = await app.fetch(signed("/messages", messageBody(eventName, payload)))
      return { status: answer.status, body: await answer.json() }
    }
    expect(await message("refused", {})).toEqual({ status: 200, body: { action: "error", reason: "not_today" } })
    expect(await message("nope", {})).toEqual({ status: 200, body: { action: "error", reason: "unknown_event" } })
    expect(await message("say", { text: 7 })).toEqual({ status: 200, body: { action: "error", reason: "invalid_payload" } })
    expect((await message("broken", {})).status).toBe(500)
    expect(failures.at(-1)).toContain("the answer to \"broken\" is outside the contract")
  })

  it("answers 404 elsewhere and 405 to the wrong method", async () => {
    expect((await app.fetch(signed("/elsewhere", {}))).status).toBe(404)
    expect((await app.fetch(signed("/messages", undefined, Date.now(), "GET"))).status).toBe(405)
  })

  it("serves the same calls as routes of an Effect HttpRouter", async () => {
    const { handler, dispose } = HttpRouter.toWebHandler(app.routes, { disableLogger: true })
    try {
      const answer = await handler(signed("/messages", messageBody("say", { text: "via router" })))
      expect(await answer.json()).toEqual({ action: "reply", data: { text: "via router" } })
      expect((await handler(signed("/messages", messageBody("say", { text: "late" }), Date.now() - 600_000))).status)
        .toBe(401)
    } finally {
      await dispose()
    }
  })
})

describe("behind a real gateway", () => {
  let gateway: TestGateway

  beforeAll(async () => {
    gateway = await startTestGateway({ apps: [{ id: "sdk", realtimeApp: app, secret: SECRET }] })
  })
  afterAll(async () => {
    await gateway?.close()
  })

  const connect = (token: string) => connectSocket(gateway.socketUrl, { app: "sdk", token })

  it("replies, broadcasts, refuses with the app's reason, and the gateway enforces the generated payload schema", async () => {
    const ann = await connect("user-ann")
    try {
      const { channel: room } = await ann.join("room:lobby")
      expect(await pushEvent(app, room, "say", { text: "hello" })).toEqual({ status: "ok", response: { text: "hello" } })
      const said = nextMessage(room, "said")
      expect(await pushEvent(app, room, "say", { text: "hey", loud: true })).toEqual({ status: "ok", response: {} })
      expect(await said).toEqual({ from: "ann", text: "HEY" })
      expect(await pushEvent(app, room, "refused", {})).toEqual({ status: "error", response: { reason: "not_today" } })
      // refused by the gateway from the JSON Schema the SDK generated: the app never sees it
      const tooLong = await push<{ reason: string }>(room, "say", { text: "x".repeat(21) })
      expect(tooLong).toMatchObject({ status: "error", response: { reason: "invalid_payload" } })
    } finally {
      await ann.close()
    }
  })

  it("gets the notifications, decoded", async () => {
    const bea = await connect("user-bea")
    await bea.join("room:notes")
    await bea.close()
    await expect.poll(() => notifications.filter((n) => n.client_id === "bea").map((n) => n.event)).toEqual([
      "connection:established",
      "channel:joined",
      "channel:left",
      "connection:closed"
    ])
  })

  it("applies the event's own rate limit from the document", async () => {
    const cy = await connect("user-cy")
    try {
      const { channel: room } = await cy.join("room:counting")
      const results = []
      for (let n = 0; n < 4; n++) results.push(await pushEvent(app, room, "count", { n }))
      expect(results.slice(0, 3)).toEqual([0, 1, 2].map((n) => ({ status: "ok", response: { next: n + 1 } })))
      expect(results[3]).toMatchObject({ status: "error", response: { reason: "rate_limited" } })
    } finally {
      await cy.close()
    }
  })
})
