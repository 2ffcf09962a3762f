/**
 * The SDK's server-API client against a real gateway: every call of CONTRACT
 * §4 with its answer decoded, and failures as data (a refusal with its
 * reason, an unreachable gateway), never as a rejected promise.
 */
import { Result } from "effect"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { makeServerApiClient, ServerApiRefused, ServerApiUnreachable } from "../../src/sdk/index.ts"
import {
  connectSocket,
  nextMessage,
  refuteMessage,
  startFakeApp,
  startTestGateway
} from "../../src/testing/index.ts"
import type { FakeApp, TestGateway } from "../../src/testing/index.ts"

const SECRET = "a-server-api-secret-of-32-bytes-at-least"

let app: FakeApp
let gateway: TestGateway

beforeAll(async () => {
  app = await startFakeApp()
  gateway = await startTestGateway({ apps: [{ id: "chat", fakeApp: app, secret: SECRET }] })
})
afterAll(async () => {
  await gateway.close()
  await app.close()
})

const client = () => makeServerApiClient({ url: gateway.url, app: "chat", secret: SECRET })

describe("the server-API client", () => {
  it("broadcasts to a topic's subscribers, one or several at once", async () => {
    const alice = await connectSocket(gateway.socketUrl, { app: "chat", token: "token-alice" })
    try {
      const { channel } = await alice.join("room:api")
      const news = nextMessage(channel, "news")
      expect(await client().broadcast({ topic: "room:api", event: "news", payload: { n: 1 } })).toEqual(Result.succeed(1))
      expect(await news).toEqual({ n: 1 })
      expect(await client().broadcast([
        { topic: "room:api", event: "a", payload: {} },
        { topic: "room:other", event: "b", payload: {} }
      ])).toEqual(Result.succeed(2))
    } finally {
      await alice.close()
    }
  })

  it("lists connections, reads presence and disconnects a client", async () => {
    const bob = await connectSocket(gateway.socketUrl, { app: "chat", token: "token-bob" })
    await bob.join("room:present")
    const connections = await client().connections()
    assertSuccess(connections)
    expect(connections.success.map((c) => c.client_id)).toContain("bob")
    expect(connections.success.find((c) => c.client_id === "bob")?.topics).toEqual(["room:present"])

    const presence = await client().presence("room:present")
    assertSuccess(presence)
    expect(Object.keys(presence.success)).toEqual(["bob"])

    expect(await client().disconnect("bob")).toEqual(Result.succeed(1))
    await bob.closed
  })

  it("refreshes the schema and answers with its version", async () => {
    expect(await client().refreshSchema()).toEqual(Result.succeed("1"))
  })

  it("returns refusals as data: a wrong secret, an invalid broadcast, an unknown app", async () => {
    const wrongSecret = await makeServerApiClient({ url: gateway.url, app: "chat", secret: "not-the-secret" }).refreshSchema()
    expect(wrongSecret).toEqual(Result.fail(new ServerApiRefused({ status: 401, reason: "unauthorized" })))

    const reserved = await client().broadcast({ topic: "room:api", event: "phx_close", payload: {} })
    assertFailure(reserved)
    expect(reserved.failure).toBeInstanceOf(ServerApiRefused)
    expect(reserved.failure).toMatchObject({ status: 400, reason: "invalid_body", errors: [{ path: "event" }] })

    const unknown = await makeServerApiClient({ url: gateway.url, app: "nope", secret: SECRET }).connections()
    expect(unknown).toEqual(Result.fail(new ServerApiRefused({ status: 404, reason: "unknown_app" })))
  })

  it("returns an unreachable gateway as data", async () => {
    const result = await makeServerApiClient({ url: "http://127.0.0.1:1", app: "chat", secret: SECRET, timeoutMs: 2_000 })
      .broadcast({ topic: "room:api", event: "news" })
    assertFailure(result)
    expect(result.failure).toBeInstanceOf(ServerApiUnreachable)
  })

  it("delivers nothing to a topic nobody broadcast to (refuteMessage)", async () => {
    const carol = await connectSocket(gateway.socketUrl, { app: "chat", token: "token-alice" })
    try {
      const { channel } = await carol.join("room:silent")
      const silence = refuteMessage(channel, "news", 300)
      await client().broadcast({ topic: "room:elsewhere", event: "news", payload: {} })
      await silence
      const noisy = expect(refuteMessage(channel, "news", 2_000)).rejects
        .toThrow('expected no "news" on room:silent within 2000ms, got {"loud":true}')
      await client().broadcast({ topic: "room:silent", event: "news", payload: { loud: true } })
      await noisy
    } finally {
      await carol.close()
    }
  })
})

function assertSuccess<A, E>(result: Result.Result<A, E>): asserts result is Result.Success<A, E> {
  if (!Result.isSuccess(result)) throw new Error(`expected a success, got ${String(result.failure)}`)
}

function assertFailure<A, E>(result: Result.Result<A, E>): asserts result is Result.Failure<A, E> {
  if (!Result.isFailure(result)) throw new Error(`expected a failure, got ${JSON.stringify(result.success)}`)
}
