/**
 * Traces over OTLP/HTTP (CONTRACT §8): a gateway with
 * `OTEL_EXPORTER_OTLP_ENDPOINT` sends its spans to a real OTLP/HTTP receiver
 * on 127.0.0.1, with the resource the `OTEL_*` variables describe; the app
 * calls are children of the connect and push spans, and the `traceparent`
 * the app receives names the call's own span, so the app's spans join the
 * gateway's trace.
 */
import { createServer } from "node:http"
import type { AddressInfo } from "node:net"
import { afterAll, beforeAll, expect, it } from "vitest"
import { rawSocket, startFakeApp, startTestGateway } from "../../src/testing/index.ts"
import type { FakeApp, TestGateway } from "../../src/testing/index.ts"

interface ExportedSpan {
  readonly traceId: string
  readonly spanId: string
  readonly parentSpanId?: string
  readonly name: string
  readonly attributes: ReadonlyArray<{ readonly key: string; readonly value: Record<string, unknown> }>
  readonly status?: { readonly code?: number; readonly message?: string }
}

interface OtlpReceiver {
  readonly url: string
  readonly spans: Array<ExportedSpan>
  readonly resources: Array<Record<string, unknown>>
  /** Resolves once a span of this name (and passing `where`) has arrived. */
  span(name: string, where?: (span: ExportedSpan) => boolean): Promise<ExportedSpan>
  close(): Promise<void>
}

/** A minimal OTLP/HTTP traces endpoint (JSON encoding, as the HTTP exporter sends it). */
const startOtlpReceiver = async (): Promise<OtlpReceiver> => {
  const spans: Array<ExportedSpan> = []
  const resources: Array<Record<string, unknown>> = []
  const waiters: Array<() => void> = []
  const server = createServer((request, response) => {
    const chunks: Array<Buffer> = []
    request.on("data", (chunk: Buffer) => chunks.push(chunk))
    request.on("end", () => {
      expect(request.url).toBe("/v1/traces")
      expect(request.headers["content-type"]).toContain("application/json")
      const body = JSON.parse(Buffer.concat(chunks).toString("utf8")) as {
        resourceSpans: Array<{
          resource: { attributes: ReadonlyArray<{ key: string; value: { stringValue?: string } }> }
          scopeSpans: Array<{ spans: Array<ExportedSpan> }>
        }>
      }
      for (const resourceSpans of body.resourceSpans) {
        resources.push(Object.fromEntries(resourceSpans.resource.attributes.map(({ key, value }) => [key, value.stringValue])))
        for (const scope of resourceSpans.scopeSpans) spans.push(...scope.spans)
      }
      response.writeHead(200, { "content-type": "application/json" }).end("{}")
      for (const wake of waiters.splice(0)) wake()
    })
  })
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))
  const find = (name: string, where: (span: ExportedSpan) => boolean) =>
    spans.find((span) => span.name === name && where(span))
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    spans,
    resources,
    span: async (name, where = () => true) => {
      for (;;) {
        const found = find(name, where)
        if (found !== undefined) return found
        await new Promise<void>((resolve) => waiters.push(resolve))
      }
    },
    close: () => new Promise<void>((resolve) => server.close(() => resolve()))
  }
}

const attribute = (span: ExportedSpan, key: string) => {
  const value = span.attributes.find((entry) => entry.key === key)?.value
  return value === undefined ? undefined : Object.values(value)[0]
}

const schema = {
  version: "1",
  channels: [{ pattern: "room:{room_id}" }],
  events: [{ name: "echo", allowedChannels: ["room:*"] }, { name: "shout", allowedChannels: ["room:*"] }]
}

const SECRET = "tracing-app-secret-3b8e1f6a9d2c5e7b0a4f"

let receiver: OtlpReceiver
let app: FakeApp
let gateway: TestGateway

beforeAll(async () => {
  // the standard variables, read by the OpenTelemetry SDK and the resource
  process.env["OTEL_SERVICE_NAME"] = "gateway-under-test"
  process.env["OTEL_RESOURCE_ATTRIBUTES"] = "deployment.environment=test"
  process.env["OTEL_BSP_SCHEDULE_DELAY"] = "50"
  receiver = await startOtlpReceiver()
  app = await startFakeApp({
    secret: SECRET,
    auth: { "token-t": { client_id: "tracer" } },
    messageHandler: (body) =>
      body.event === "shout"
        ? [{ action: "broadcast", event: "echo", data: { loud: true } }, { action: "reply", data: {} }]
        : { action: "reply", data: body.payload }
  })
  app.setSchemaRaw(JSON.stringify(schema))
  gateway = await startTestGateway({ otlpEndpoint: receiver.url, apps: [{ id: "chat", fakeApp: app, secret: SECRET }] })
})
afterAll(async () => {
  await gateway?.close()
  await app?.close()
  await receiver?.close()
})

const traceparentOf = (span: ExportedSpan) => `00-${span.traceId}-${span.spanId}-01`

it("exports connect, auth, join, push, message and action spans with their parents; the app gets each call's own span", async () => {
  const socket = await rawSocket(`${gateway.socketUrl}/websocket?app=chat&token=token-t&vsn=2.0.0`)
  socket.send(["1", "1", "room:a", "phx_join", {}])
  expect(await socket.nextJson()).toMatchObject(["1", "1", "room:a", "phx_reply", { status: "ok" }])
  socket.send(["1", "2", "room:a", "echo", { n: 1 }])
  expect(await socket.nextJson()).toMatchObject(["1", "2", "room:a", "phx_reply", { status: "ok" }])
  socket.send(["1", "3", "room:a", "shout", {}])
  const frames = [await socket.nextJson(), await socket.nextJson()]
  expect(frames).toContainEqual([null, null, "room:a", "echo", { loud: true }])
  socket.send(["1", "4", "room:a", "no-such-event", {}])
  expect(await socket.nextJson()).toMatchObject(["1", "4", "room:a", "phx_reply", { status: "error" }])

  // connect: the auth call is the connect span's child, and the app saw the auth span's traceparent
  const connect = await receiver.span("gateway.connect")
  const auth = await receiver.span("app.auth")
  expect(connect.parentSpanId ?? "").toBe("")
  expect(auth.traceId).toBe(connect.traceId)
  expect(auth.parentSpanId).toBe(connect.spanId)
  expect(attribute(connect, "gateway.app_id")).toBe("chat")
  expect(attribute(connect, "gateway.client_id")).toBe("tracer")
  const [authCall] = app.requestsOf("auth")
  expect(authCall!.headers["traceparent"]).toBe(traceparentOf(auth))

  const join = await receiver.span("gateway.join")
  expect(attribute(join, "gateway.topic")).toBe("room:a")

  // push: validation and the message call are its children; the app saw the message span's traceparent
  const echoCall = app.requestsOf("message").find((request) => request.body?.event === "echo")!
  const echoPush = await receiver.span("gateway.push", (span) => attribute(span, "gateway.event") === "echo")
  const message = await receiver.span("app.message", (span) => span.traceId === echoPush.traceId)
  expect(message.parentSpanId).toBe(echoPush.spanId)
  expect(echoCall.headers["traceparent"]).toBe(traceparentOf(message))
  const validation = await receiver.span("gateway.push.validate", (span) => span.traceId === echoPush.traceId)
  expect(validation.parentSpanId).toBe(echoPush.spanId)

  // actions: a span under the push, and the broadcast's publication below it
  const shoutPush = await receiver.span("gateway.push", (span) => attribute(span, "gateway.event") === "shout")
  const actions = await receiver.span("gateway.push.actions", (span) => span.traceId === shoutPush.traceId)
  expect(actions.parentSpanId).toBe(shoutPush.spanId)
  const publish = await receiver.span("gateway.publish", (span) => span.traceId === shoutPush.traceId)
  expect(publish.parentSpanId).toBe(actions.spanId)
  expect(attribute(publish, "gateway.topic")).toBe("room:a")

  // a refused push: its span says why
  const refused = await receiver.span("gateway.push", (span) => attribute(span, "gateway.event") === "no-such-event")
  expect(refused.status?.message).toBe("invalid_event_for_channel")

  // the resource the variables describe
  expect(receiver.resources[0]).toMatchObject({
    "service.name": "gateway-under-test",
    "deployment.environment": "test",
    "service.instance.id": "test"
  })
  await socket.close()
})

it("spans a server-API broadcast, with its publication below it", async () => {
  const response = await fetch(`${gateway.url}/api/apps/chat/broadcast`, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${SECRET}` },
    body: JSON.stringify({ topic: "room:b", event: "echo", payload: {} })
  })
  expect(response.status).toBe(202)
  const broadcast = await receiver.span("gateway.server_api.broadcast")
  expect(attribute(broadcast, "gateway.app_id")).toBe("chat")
  const publish = await receiver.span("gateway.publish", (span) => span.traceId === broadcast.traceId)
  expect(publish.parentSpanId).toBe(broadcast.spanId)
})
