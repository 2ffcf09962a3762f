/**
 * A tenant's schema cannot freeze the node (CONTRACT §3, §9): its regular
 * expressions run in linear time, and payload rules whose cost grows faster
 * than the payload are refused when the schema loads, with the reason in the
 * refresh answer. Real gateway, real sockets.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { rawSocket, startFakeApp, startTestGateway } from "../../src/testing/index.ts"
import type { FakeApp, RawSocket, TestGateway } from "../../src/testing/index.ts"

// catastrophic for a backtracking engine: seconds per test on 28 characters and a "!"
const EVIL = "^(a+)+$"
const evilText = "a".repeat(28) + "!"

const evilSchema = {
  version: "evil-1",
  channels: [
    { pattern: "evil:{name}", variables: { name: { type: "string", pattern: EVIL } } },
    { pattern: "room:{name}" }
  ],
  events: [
    { name: "text", allowedChannels: ["room:*"], payload: { type: "object", properties: { body: { type: "string", pattern: EVIL } } } },
    { name: "keys", allowedChannels: ["room:*"], payload: { type: "object", patternProperties: { [EVIL]: { type: "number" } } } },
    { name: "names", allowedChannels: ["room:*"], payload: { type: "object", propertyNames: { pattern: EVIL } } }
  ]
} as const

let app: FakeApp
let gateway: TestGateway

beforeAll(async () => {
  app = await startFakeApp({ schema: evilSchema })
  gateway = await startTestGateway({ apps: [{ id: "chat", fakeApp: app, secret: "chat-secret-of-at-least-32-bytes!" }] })
})
afterAll(async () => {
  await gateway.close()
  await app.close()
})

const socketUrl = (token: string) => `${gateway.socketUrl}/websocket?app=chat&token=${token}&vsn=2.0.0`

const heartbeatMs = async (socket: RawSocket, ref: string) => {
  const started = performance.now()
  socket.send([null, ref, "phoenix", "heartbeat", {}])
  expect(await socket.nextJson()).toEqual([null, ref, "phoenix", "phx_reply", { status: "ok", response: {} }])
  return performance.now() - started
}

describe("an evil schema against evil frames", () => {
  it("leaves a bystander's heartbeat answered within a second", async () => {
    const bystander = await rawSocket(socketUrl("token-bob"))
    const evil = await rawSocket(socketUrl("token-alice"))
    evil.send(["1", "1", "room:evil", "phx_join", {}])
    await evil.nextJson()
    // every kind of app-supplied pattern, on input made to make a backtracking engine explode
    evil.send(["2", "2", `evil:${evilText}`, "phx_join", {}])
    evil.send(["1", "3", "room:evil", "text", { body: evilText }])
    evil.send(["1", "4", "room:evil", "keys", { [evilText]: 1 }])
    evil.send(["1", "5", "room:evil", "names", { [evilText]: 1 }])
    expect(await heartbeatMs(bystander, "h1")).toBeLessThan(1000)
    const answers = new Map<string, Array<any>>()
    for (let n = 0; n < 4; n++) {
      const answer = await evil.nextJson<Array<any>>()
      answers.set(answer[1], answer)
    }
    expect(answers.get("2")).toEqual(["2", "2", `evil:${evilText}`, "phx_reply", { status: "error", response: { reason: "invalid_channel_pattern" } }])
    expect(answers.get("3")?.[4]).toMatchObject({ status: "error", response: { reason: "invalid_payload" } })
    // the key matches no pattern property, so no rule applies to it
    expect(answers.get("4")?.[4]).toEqual({ status: "ok", response: { [evilText]: 1 } })
    expect(answers.get("5")?.[4]).toMatchObject({ status: "error", response: { reason: "invalid_payload" } })
    // and the patterns still accept what they should
    evil.send(["1", "6", "room:evil", "text", { body: "aaaa" }])
    expect(await evil.nextJson()).toEqual(["1", "6", "room:evil", "phx_reply", { status: "ok", response: { body: "aaaa" } }])
    await evil.close()
    await bystander.close()
  })
})

describe("schema refresh", () => {
  const refresh = async () => {
    const response = await fetch(`${gateway.url}/api/apps/chat/schema/refresh`, {
      method: "POST",
      headers: { authorization: "Bearer chat-secret-of-at-least-32-bytes!" }
    })
    return { status: response.status, body: (await response.json()) as { reason?: string; version?: string } }
  }

  it.each([
    ["uniqueItems without maxItems", { type: "array", uniqueItems: true }, "uniqueItems: needs maxItems of at most 256"],
    ["a lookahead", { type: "string", pattern: "^(?!admin)" }, "cannot run in linear time"],
    [
      "a recursive definition that refers to itself twice",
      {
        $defs: { node: { anyOf: [{ type: "array", items: { $ref: "#/$defs/node" } }, { type: "array", items: { $ref: "#/$defs/node" } }] } },
        $ref: "#/$defs/node"
      },
      "expands to more than 50000 subschemas"
    ]
  ])("answers 502 with the reason for a payload schema with %s, and keeps the last good schema", async (_, payload, reason) => {
    app.setSchema({ ...evilSchema, version: "costly", events: [{ name: "costly", allowedChannels: ["*"], payload }] })
    try {
      const failed = await refresh()
      expect(failed.status).toBe(502)
      expect(failed.body.reason).toContain(reason)
    } finally {
      app.setSchema(evilSchema)
    }
    expect(await refresh()).toEqual({ status: 200, body: { version: "evil-1" } })
  })
})
