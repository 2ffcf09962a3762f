/**
 * The app behind the gateway in every benchmark suite: one app, `bench`,
 * served by the fake app of the test kit (`src/testing/FakeApp.ts`) with a
 * schema of numbered rooms `room:{id}` and the event `echo` on them (no rate
 * limits), an auth handler accepting every `bench-<n>` token, and the fake's
 * default message handler, which replies with the pushed payload.
 */
import { startFakeApp } from "../../src/testing/FakeApp.ts"
import type { FakeApp, SchemaDocument } from "../../src/testing/FakeApp.ts"

export const APP_ID = "bench"
export const CLIENT_TYPE = "bench"
/** The event a client pushes to the app (and gets the payload back as the reply). */
export const PUSH_EVENT = "echo"

export const benchSchema: SchemaDocument = {
  version: "bench-1",
  channels: [{
    pattern: "room:{id}",
    description: "Benchmark rooms",
    variables: { id: { type: "string", pattern: "^[0-9]{1,9}$" } }
  }],
  events: [{ name: PUSH_EVENT, allowedChannels: ["room:*"] }]
}

export const startBenchApp = (): Promise<FakeApp> =>
  startFakeApp({
    schema: benchSchema,
    auth: (body) =>
      /^bench-\d+$/.test(body.token)
        ? { client_id: body.token, client_type: CLIENT_TYPE, metadata: {}, permissions: [] }
        : null
  })

/** The calls an app received, by kind (`notify` split by event). */
export const countCalls = (app: FakeApp): Record<string, number> => {
  const counts: Record<string, number> = {}
  for (const request of app.requests) {
    const key = request.kind === "notify" && typeof request.body === "object" && request.body !== null
      ? `notify ${String((request.body as { event?: unknown }).event)}`
      : request.kind
    counts[key] = (counts[key] ?? 0) + 1
  }
  return counts
}
