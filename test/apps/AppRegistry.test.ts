/**
 * App schemas as the running gateway sees them (CONTRACT §3, schema): fetched
 * at start with ETag revalidation, refreshed on demand, and a failed or
 * invalid fetch keeps the last good schema.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { Context, Effect, Exit, Layer, Logger, References, Scope } from "effect"
import { AppRegistry } from "../../src/apps/AppRegistry.ts"
import { makeAppConfig, makeGatewayConfig, GatewayConfig } from "../../src/config/GatewayConfig.ts"
import * as Logging from "../../src/observability/Logging.ts"
import { Supervisor } from "../../src/supervision/Supervisor.ts"
import { Upstream } from "../../src/upstream/Upstream.ts"
import { connectSocket, defaultSchema, startFakeApp, startTestGateway } from "../../src/testing/index.ts"
import type { FakeApp } from "../../src/testing/index.ts"
import { Metrics } from "../../src/observability/Metrics.ts"
import { Tracing } from "../../src/observability/Tracing.ts"

let app: FakeApp
let scope: Scope.Closeable
let registry: AppRegistry["Service"]
const logging = Logging.layer({ nodeName: "test", format: "json", level: "error" })

beforeAll(async () => {
  app = await startFakeApp()
  scope = Scope.makeUnsafe()
  const layer = AppRegistry.layer.pipe(
    Layer.provideMerge(Upstream.layer),
    Layer.provide(Supervisor.layer),
    Layer.provide(Layer.succeed(GatewayConfig, makeGatewayConfig({ apps: [makeAppConfig({ id: "chat", api: app.url })] }))),
    Layer.provide(Metrics.layerDisabled),
    Layer.provide(Tracing.layerOff),
    Layer.provide(logging)
  )
  const context = await Effect.runPromise(Layer.buildWithScope(layer, scope))
  registry = Context.get(context, AppRegistry)
})
afterAll(async () => {
  await Effect.runPromise(Scope.close(scope, Exit.void))
  await app.close()
})

const refresh = () => Effect.runPromise(Effect.result(registry.refresh("chat")).pipe(Effect.provide(logging)))

describe("AppRegistry", () => {
  it("loads the schema at start", () => {
    expect(registry.get("chat")?.schema?.version).toBe("1")
    expect(registry.unready()).toEqual([])
  })

  it("revalidates with If-None-Match and keeps the schema on 304", async () => {
    app.clearRequests()
    const result = await refresh()
    expect(result).toMatchObject({ _tag: "Success", success: "1" })
    const request = app.requestsOf("schema").at(-1)
    expect(request?.headers["if-none-match"]).toBe(app.etag)
  })

  it("takes a new version on refresh", async () => {
    app.setSchema({ ...defaultSchema, version: "2" })
    expect(await refresh()).toMatchObject({ _tag: "Success", success: "2" })
    expect(registry.get("chat")?.schema?.matchChannel("room:x")).toBeDefined()
  })

  it("keeps the last good schema when the endpoint fails, and says why", async () => {
    app.fail("schema", { status: 500 })
    const result = await refresh()
    expect(result).toMatchObject({ _tag: "Failure", failure: { _tag: "SchemaFetchFailed", reason: expect.stringContaining("500") } })
    expect(registry.get("chat")?.schema?.version).toBe("2")
    app.fail("schema", "ok")
  })

  it("keeps the last good schema when the document is invalid or not JSON", async () => {
    app.setSchema({ version: "3", channels: [{ pattern: 42 }], events: [] } as never)
    const invalid = await refresh()
    expect(invalid).toMatchObject({ _tag: "Failure", failure: { reason: expect.stringContaining("invalid schema document") } })
    app.setSchemaRaw("{ not json")
    expect(await refresh()).toMatchObject({ _tag: "Failure", failure: { reason: expect.stringContaining("invalid JSON") } })
    expect(registry.get("chat")?.schema?.version).toBe("2")
  })

  it("fails with UnknownApp for an app it does not serve", async () => {
    const result = await Effect.runPromise(Effect.result(registry.refresh("nope")))
    expect(result).toMatchObject({ _tag: "Failure", failure: { _tag: "UnknownApp" } })
  })
})

describe("readiness follows the schemas", () => {
  it("is 503 with the reason while an app's schema endpoint is down at start, 200 once it answers", async () => {
    const fake = await startFakeApp()
    fake.fail("schema", "destroy")
    const gateway = await startTestGateway({ apps: [{ id: "late", fakeApp: fake }] })
    try {
      const notReady = await fetch(`${gateway.url}/health/ready`)
      expect(notReady.status).toBe(503)
      expect(await notReady.json()).toMatchObject({ status: "not_ready", reasons: [expect.stringContaining("app late")] })
      fake.fail("schema", "ok")
      // the registry retries an app without a schema every 2 s; wait for fetches, not for time
      for (;;) {
        const ready = await fetch(`${gateway.url}/health/ready`)
        if (ready.status === 200) break
        const seen = fake.requests.at(-1)?.seq ?? 0
        await fake.waitFor("schema", (request) => request.seq > seen, 5_000)
      }
      const socket = await connectSocket(gateway.socketUrl, { app: "late", token: "token-alice" })
      expect((await socket.join("room:a")).status).toBe("ok")
      await socket.close()
    } finally {
      await gateway.close()
      await fake.close()
    }
  })

  it("reports node, version and uptime on /health and 200 on /health/live", async () => {
    const gateway = await startTestGateway({ apps: [{ id: "chat", fakeApp: app }] })
    try {
      expect(await (await fetch(`${gateway.url}/health`)).json()).toMatchObject({
        status: "ok",
        node: "test",
        version: expect.any(String),
        uptime_s: expect.any(Number)
      })
      expect((await fetch(`${gateway.url}/health/live`)).status).toBe(200)
    } finally {
      await gateway.close()
    }
  })
})

describe("an app without notifications", () => {
  it("is logged once at start", async () => {
    const lines: Array<{ message: unknown; app: unknown }> = []
    const capture = Logger.layer([
      Logger.make(({ fiber, message }) => {
        lines.push({ message, app: fiber.getRef(References.CurrentLogAnnotations)["app_id"] })
      })
    ])
    const quietScope = Scope.makeUnsafe()
    const apps = [makeAppConfig({ id: "quiet", api: app.url, notifyEndpoint: undefined }), makeAppConfig({ id: "chat", api: app.url })]
    await Effect.runPromise(Layer.buildWithScope(
      AppRegistry.layer.pipe(
        Layer.provide(Upstream.layer),
        Layer.provide(Supervisor.layer),
        Layer.provide(Metrics.layerDisabled),
        Layer.provide(Tracing.layerOff),
        Layer.provide(Layer.succeed(GatewayConfig, makeGatewayConfig({ apps }))),
        Layer.provide(capture)
      ),
      quietScope
    ))
    await Effect.runPromise(Scope.close(quietScope, Exit.void))
    const notifyLines = lines.filter((line) => String(line.message).includes("notifications are off"))
    expect(notifyLines.map((line) => line.app)).toEqual(["quiet"])
  })
})
