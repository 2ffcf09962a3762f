/**
 * The one HTTP boundary to the apps (CONTRACT §3): the headers every call
 * carries, the HMAC signature, timeouts, and per-app isolation.
 */
import { createHmac } from "node:crypto"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { Context, Effect, Exit, Fiber, Layer, Scope } from "effect"
import { GatewayConfig, makeAppConfig, makeGatewayConfig } from "../../src/config/GatewayConfig.ts"
import * as Logging from "../../src/observability/Logging.ts"
import { Supervisor } from "../../src/supervision/Supervisor.ts"
import { Upstream } from "../../src/upstream/Upstream.ts"
import { startFakeApp } from "../../src/testing/index.ts"
import type { FakeApp } from "../../src/testing/index.ts"
import { Metrics } from "../../src/observability/Metrics.ts"
import { Tracing } from "../../src/observability/Tracing.ts"
import { GATEWAY_VERSION } from "../../src/server/version.ts"

let signed: FakeApp
let slow: FakeApp
let scope: Scope.Closeable
let upstream: Upstream["Service"]

/** An Upstream living in `scope`: closing the scope waits for its pending notifications, then closes its connections. */
const upstreamIn = async (scope: Scope.Scope) => {
  const layer = Upstream.layer.pipe(
    Layer.provide(Supervisor.layer),
    Layer.provide(Layer.succeed(GatewayConfig, makeGatewayConfig({ nodeName: "node-a" }))),
    Layer.provide(Metrics.layerDisabled),
    Layer.provide(Tracing.layerOff),
    Layer.provide(Logging.layer({ nodeName: "test", format: "json", level: "error" }))
  )
  return Context.get(await Effect.runPromise(Layer.buildWithScope(layer, scope)), Upstream)
}

beforeAll(async () => {
  signed = await startFakeApp({ secret: "s3cret" })
  slow = await startFakeApp()
  scope = Scope.makeUnsafe()
  upstream = await upstreamIn(scope)
})
afterAll(async () => {
  await Effect.runPromise(Scope.close(scope, Exit.void))
  await signed.close()
  await slow.close()
})

const signedApp = () => makeAppConfig({ id: "signed", api: signed.url, secret: "s3cret" })

describe("Upstream", () => {
  it("sends the contract's headers, a timestamp and a valid HMAC-SHA256 signature of the timestamp and raw body", async () => {
    const before = Math.floor(Date.now() / 1000)
    const answer = await Effect.runPromise(upstream.call(signedApp(), {
      call: "message",
      method: "POST",
      url: signed.endpoints.message,
      body: { hello: "wörld" },
      timeoutMs: 1_000
    }))
    expect(answer.status).toBe(200)
    const request = signed.requestsOf("message").at(-1)!
    expect(request.signatureValid).toBe(true)
    const timestamp = request.headers["x-gateway-timestamp"] as string
    expect(Number(timestamp)).toBeGreaterThanOrEqual(before)
    expect(Number(timestamp)).toBeLessThanOrEqual(Math.ceil(Date.now() / 1000))
    expect(request.headers["x-gateway-signature"]).toBe(
      `sha256=${createHmac("sha256", "s3cret").update(`${timestamp}.${request.rawBody}`).digest("hex")}`
    )
    expect(request.headers).toMatchObject({
      "content-type": "application/json",
      "user-agent": `realtime-gateway/${GATEWAY_VERSION}`,
      "x-gateway-app": "signed",
      "x-gateway-node": "node-a",
      "x-request-id": expect.stringMatching(/^[0-9a-f]{32}$/),
      traceparent: expect.stringMatching(/^00-[0-9a-f]{32}-[0-9a-f]{16}-0[01]$/)
    })
  })

  it("signs the schema GET over its timestamp and an empty body", async () => {
    await Effect.runPromise(upstream.call(signedApp(), {
      call: "schema",
      method: "GET",
      url: signed.endpoints.schema,
      timeoutMs: 1_000
    }))
    const request = signed.requestsOf("schema").at(-1)!
    const timestamp = request.headers["x-gateway-timestamp"] as string
    expect(request.headers["x-gateway-signature"]).toBe(
      `sha256=${createHmac("sha256", "s3cret").update(`${timestamp}.`).digest("hex")}`
    )
    expect(request.signatureValid).toBe(true)
  })

  it("calls an endpoint set apart from the app's api on its own origin, with its path and query as given", async () => {
    const elsewhere = await startFakeApp()
    try {
      const app = makeAppConfig({ id: "split", api: signed.url, messageEndpoint: `${elsewhere.url}/messages?tenant=x` })
      const before = signed.requests.length
      const answer = await Effect.runPromise(upstream.call(app, {
        call: "message",
        method: "POST",
        url: app.messageEndpoint,
        body: { payload: "here" },
        timeoutMs: 1_000
      }))
      expect(answer.status).toBe(200)
      expect(elsewhere.requestsOf("message").map((request) => request.url)).toEqual(["/messages?tenant=x"])
      expect(signed.requests.length).toBe(before)
    } finally {
      await elsewhere.close()
    }
  })

  it("sends no signature for an app without a secret, and never the secret itself", async () => {
    await Effect.runPromise(upstream.call(makeAppConfig({ id: "plain", api: slow.url }), {
      call: "message",
      method: "POST",
      url: slow.endpoints.message,
      body: {},
      timeoutMs: 1_000
    }))
    const request = slow.requestsOf("message").at(-1)!
    expect(request.headers["x-gateway-signature"]).toBeUndefined()
    expect(request.headers["x-gateway-timestamp"]).toBeUndefined()
    const signedRequest = signed.requests.at(-1)!
    expect(JSON.stringify(signedRequest.headers)).not.toContain("s3cret")
  })

  it("fails with UpstreamTimeout when the app does not answer in time", async () => {
    slow.fail("message", "hang", { times: 1 })
    const exit = await Effect.runPromise(Effect.result(upstream.call(makeAppConfig({ id: "hangs", api: slow.url }), {
      call: "message",
      method: "POST",
      url: slow.endpoints.message,
      body: {},
      timeoutMs: 200
    })))
    expect(exit).toMatchObject({ _tag: "Failure", failure: { _tag: "UpstreamTimeout", timeoutMs: 200 } })
  })

  it("a hanging app does not slow another app's calls", async () => {
    slow.fail("message", "hang")
    const hanging = makeAppConfig({ id: "stuck", api: slow.url })
    const stuckCalls = Effect.runPromise(Effect.result(Effect.forEach(
      Array.from({ length: 50 }, () => undefined),
      () => upstream.call(hanging, { call: "message", method: "POST", url: slow.endpoints.message, body: {}, timeoutMs: 1_500 }),
      { concurrency: "unbounded" }
    )))
    await slow.waitFor("message", (request) => request.headers["x-gateway-app"] === "stuck")
    const other = Effect.runPromise(upstream.call(signedApp(), {
      call: "message",
      method: "POST",
      url: signed.endpoints.message,
      body: {},
      timeoutMs: 1_000
    }))
    // the other app is answered while the stuck app's calls are all still waiting
    expect(await Promise.race([other.then((answer) => answer.status), stuckCalls.then(() => "stuck calls ended first")]))
      .toBe(200)
    slow.fail("message", "ok")
    expect(await stuckCalls).toMatchObject({ _tag: "Failure" })
  })

  it("calls past the app's 256 on the wire wait in the gateway, and one that times out there never goes out", async () => {
    const crowded = await startFakeApp()
    try {
      crowded.fail("message", "hang")
      const app = makeAppConfig({ id: "crowded", api: crowded.url })
      const callWith = (timeoutMs: number) =>
        Effect.runPromise(Effect.result(upstream.call(app, {
          call: "message",
          method: "POST",
          url: crowded.endpoints.message,
          body: {},
          timeoutMs
        })))
      const onTheWire = Array.from({ length: 256 }, () => callWith(2_000))
      await crowded.waitFor("message", () => crowded.requestsOf("message").length >= 256)
      const waiting = await Promise.all(Array.from({ length: 10 }, () => callWith(100)))
      expect(waiting.every((result) => result._tag === "Failure" && result.failure._tag === "UpstreamTimeout")).toBe(true)
      // the hanging calls end with their own timeouts; the ten that timed out waiting were never sent
      crowded.fail("message", "ok")
      await Promise.all(onTheWire)
      expect(crowded.requestsOf("message")).toHaveLength(256)
    } finally {
      await crowded.close()
    }
  })

  describe("the circuit breaker", () => {
    const callerOf = (app: ReturnType<typeof makeAppConfig>, url: string) => (caller: string, call: "message" | "auth" = "message") =>
      Effect.runPromise(Effect.result(upstream.call(app, { call, method: "POST", url, body: {}, timeoutMs: 2_000, caller })))

    it("is not opened by one client: its 500s, 503s and timeouts reach the app every time, and others go on", async () => {
      const failing = await startFakeApp()
      try {
        const app = makeAppConfig({ id: "one-client", api: failing.url, timeouts: { messageMs: 200 } })
        const callApp = callerOf(app, failing.endpoints.message)
        // the app answers 500 to anything (as it might to one crafted payload): an answer, so the app is up
        failing.fail("message", { status: 500 })
        for (let n = 0; n < 10; n++) expect(await callApp(`client-${n % 3}`)).toMatchObject({ _tag: "Success", success: { status: 500 } })
        // down-like failures, but all caused by one client
        failing.fail("message", { status: 503 })
        for (let n = 0; n < 10; n++) expect(await callApp("mallory")).toMatchObject({ _tag: "Success", success: { status: 503 } })
        failing.fail("message", "hang", { times: 6 })
        for (let n = 0; n < 6; n++) {
          expect(await Effect.runPromise(Effect.result(upstream.call(app, {
            call: "message", method: "POST", url: failing.endpoints.message, body: {}, timeoutMs: 100, caller: "mallory"
          })))).toMatchObject({ _tag: "Failure", failure: { _tag: "UpstreamTimeout" } })
        }
        expect(failing.requestsOf("message")).toHaveLength(26)
        failing.fail("message", "ok")
        expect(await callApp("alice")).toMatchObject({ _tag: "Success", success: { status: 200 } })
      } finally {
        await failing.close()
      }
    })

    it("opens when several clients' calls find the app down (502/503/504): calls fail at once; other kinds and apps go on", async () => {
      const failing = await startFakeApp()
      try {
        const app = makeAppConfig({ id: "breaker", api: failing.url })
        const callApp = callerOf(app, failing.endpoints.message)
        failing.fail("message", { status: 503 })
        for (let n = 0; n < 5; n++) expect(await callApp(`client-${n % 3}`)).toMatchObject({ _tag: "Success", success: { status: 503 } })
        const sent = failing.requestsOf("message").length
        expect(await callApp("client-9")).toMatchObject({
          _tag: "Failure",
          failure: { _tag: "UpstreamUnreachable", detail: "circuit breaker open" }
        })
        expect(failing.requestsOf("message")).toHaveLength(sent)
        // auth calls of the same app, and the same call kind of another app, are not held back
        expect(await callerOf(app, failing.endpoints.auth)("client-9", "auth")).toMatchObject({ _tag: "Success" })
        const other = await Effect.runPromise(upstream.call(signedApp(), {
          call: "message",
          method: "POST",
          url: signed.endpoints.message,
          body: {},
          timeoutMs: 2_000
        }))
        expect(other.status).toBe(200)
      } finally {
        await failing.close()
      }
    })

    it.each([502, 504])("opens on %s from several clients as on 503", async (status) => {
      const failing = await startFakeApp()
      try {
        const callApp = callerOf(makeAppConfig({ id: `breaker-${status}`, api: failing.url }), failing.endpoints.message)
        failing.fail("message", { status })
        for (let n = 0; n < 5; n++) expect(await callApp(`client-${n % 3}`)).toMatchObject({ _tag: "Success", success: { status } })
        expect(await callApp("client-9")).toMatchObject({
          _tag: "Failure",
          failure: { _tag: "UpstreamUnreachable", detail: "circuit breaker open" }
        })
      } finally {
        await failing.close()
      }
    })

    it("stays closed on 500s from several clients: an app that answers is up", async () => {
      const erring = await startFakeApp()
      try {
        const callApp = callerOf(makeAppConfig({ id: "breaker-500", api: erring.url }), erring.endpoints.message)
        erring.fail("message", { status: 500 })
        for (let n = 0; n < 10; n++) expect(await callApp(`client-${n % 3}`)).toMatchObject({ _tag: "Success", success: { status: 500 } })
        expect(erring.requestsOf("message")).toHaveLength(10)
      } finally {
        await erring.close()
      }
    })

    it("opens when the app refuses connections", async () => {
      const gone = await startFakeApp()
      const app = makeAppConfig({ id: "gone", api: gone.url })
      await gone.close()
      const callApp = callerOf(app, gone.endpoints.message)
      for (let n = 0; n < 5; n++) {
        expect(await callApp(`client-${n}`)).toMatchObject({ _tag: "Failure", failure: { _tag: "UpstreamUnreachable" } })
      }
      expect(await callApp("client-9")).toMatchObject({
        _tag: "Failure",
        failure: { _tag: "UpstreamUnreachable", detail: "circuit breaker open" }
      })
    })
  })

  it("a call with maxInFlight refuses at once past it, and frees its place when answered or abandoned", async () => {
    slow.fail("auth", "hang")
    const app = makeAppConfig({ id: "bounded", api: slow.url })
    const request = { call: "auth", method: "POST", url: slow.endpoints.auth, body: {}, timeoutMs: 500, maxInFlight: 1 } as const
    const callApp = () => Effect.runPromise(Effect.result(upstream.call(app, request)))
    const first = callApp()
    await slow.waitFor("auth", (r) => r.headers["x-gateway-app"] === "bounded")
    expect(await callApp()).toMatchObject({ _tag: "Failure", failure: { _tag: "UpstreamOverloaded", limit: 1 } })
    slow.fail("auth", "ok")
    expect(await first).toMatchObject({ _tag: "Failure", failure: { _tag: "UpstreamTimeout" } })
    expect(await callApp()).toMatchObject({ _tag: "Success" })

    // abandoned by its caller (an interrupted fiber): the place is free again at once
    slow.fail("auth", "hang", { times: 1 })
    const seen = slow.requestsOf("auth").length
    const abandoned = Effect.runFork(upstream.call(app, request))
    await slow.waitFor("auth", () => slow.requestsOf("auth").length > seen)
    await Effect.runPromise(Fiber.interrupt(abandoned))
    expect(await callApp()).toMatchObject({ _tag: "Success" })
  })
})

describe("notifications", () => {
  it("a burst of them waiting on a slow app leaves room for the calls clients wait for", async () => {
    const burst = await startFakeApp()
    try {
      burst.fail("notify", "hang")
      const app = makeAppConfig({ id: "burst", api: burst.url })
      for (let n = 0; n < 300; n++) upstream.notify(app, { event: "connection:closed", n })
      // 64 of them reach the app and hang there; the rest wait in the gateway
      await burst.waitFor("notify", () => burst.requestsOf("notify").length >= 64)
      const answer = await Effect.runPromise(upstream.call(app, {
        call: "auth",
        method: "POST",
        url: burst.endpoints.auth,
        body: {},
        timeoutMs: 2_000
      }))
      expect(answer.status).toBe(401)
      expect(burst.requestsOf("notify")).toHaveLength(64)
    } finally {
      await burst.close()
    }
  })

  it("stop after 3 attempts when the app keeps failing, and are not retried after a 4xx", async () => {
    const failing = await startFakeApp()
    try {
      // an Upstream of its own, so that closing it waits for these notifications, retries included
      const own = Scope.makeUnsafe()
      const ownUpstream = await upstreamIn(own)
      const app = makeAppConfig({ id: "failing", api: failing.url })
      failing.fail("notify", { status: 503 })
      ownUpstream.notify(app, { event: "connection:established" })
      await failing.waitFor("notify", () => failing.requestsOf("notify").length >= 3)
      failing.fail("notify", { status: 400 })
      ownUpstream.notify(app, { event: "connection:closed" })
      await Effect.runPromise(Scope.close(own, Exit.void))
      expect(failing.requestsOf("notify").map((request) => request.body?.event)).toEqual([
        "connection:established",
        "connection:established",
        "connection:established",
        "connection:closed"
      ])
    } finally {
      await failing.close()
    }
  })

  it("are retried after a failure (bounded) and carry the contract's headers", async () => {
    signed.fail("notify", { status: 503 }, { times: 2 })
    const before = signed.requestsOf("notify").length
    upstream.notify(signedApp(), { event: "connection:established" })
    // two 503s, then the third attempt gets through
    const delivered = await signed.waitFor("notify", () => signed.requestsOf("notify").length >= before + 3)
    expect(signed.requestsOf("notify").length - before).toBe(3)
    expect(delivered.signatureValid).toBe(true)
    expect(delivered.headers).toMatchObject({
      "x-gateway-app": "signed",
      traceparent: expect.stringMatching(/^00-[0-9a-f]{32}-[0-9a-f]{16}-01$/)
    })
  })
})
