/**
 * Entity capacity across tenants (CONTRACT §9): a node holds at most
 * `MAX_ENTITIES` cluster entities, and one app's presences keep at most
 * `MAX_PRESENCE_TOPICS_PER_APP` Topic entities alive from a node, so that
 * one tenant joining presence topics by the thousand cannot take the slots
 * another tenant's broadcasts need. An entity nobody uses is released.
 */
import { Effect, Metric } from "effect"
import WebSocket from "ws"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { makeAppConfig } from "../../src/config/GatewayConfig.ts"
import type { GatewayConfigInit } from "../../src/config/GatewayConfig.ts"
import { collect, connectSocket, startFakeApp } from "../../src/testing/index.ts"
import type { FakeApp } from "../../src/testing/index.ts"
import { inProcessConfig, startSupervisedGateway } from "../supervision/support.ts"
import type { SupervisedGateway } from "../supervision/support.ts"

let spamApp: FakeApp
let newsApp: FakeApp

beforeAll(async () => {
  spamApp = await startFakeApp()
  newsApp = await startFakeApp()
})
afterAll(async () => {
  await spamApp?.close()
  await newsApp?.close()
})

const gatewayWith = (init: GatewayConfigInit = {}) =>
  startSupervisedGateway(inProcessConfig({
    apps: [
      makeAppConfig({ id: "spam", api: spamApp.url, rateLimits: { connectionsPerIpPerMinute: 1000 } }),
      makeAppConfig({ id: "news", api: newsApp.url, secret: "news-secret" })
    ],
    ...init
  }))

interface JoinReply {
  readonly status: string
  readonly reason?: string
}

/** Opens a raw JSON (V2) connection, joins every topic, and answers the reply statuses by topic; the connection stays open. */
const joinAll = (gateway: SupervisedGateway, topics: ReadonlyArray<string>) =>
  new Promise<{ readonly replies: Map<string, JoinReply>; readonly ws: WebSocket }>((resolve, reject) => {
    const ws = new WebSocket(`${gateway.socketUrl}/websocket?app=spam&token=token-alice&vsn=2.0.0`)
    const replies = new Map<string, JoinReply>()
    const timer = setTimeout(() => reject(new Error(`${replies.size} of ${topics.length} joins answered`)), 60_000)
    ws.on("open", () => topics.forEach((topic, i) => ws.send(JSON.stringify([String(i), String(i), topic, "phx_join", {}]))))
    ws.on("message", (data) => {
      const [, , topic, event, payload] = JSON.parse(String(data)) as [unknown, unknown, string, string, any]
      if (event !== "phx_reply") return
      replies.set(topic, { status: payload.status, reason: payload.response?.reason })
      if (replies.size === topics.length) {
        clearTimeout(timer)
        resolve({ replies, ws })
      }
    })
    ws.on("error", reject)
  })

/** Topic entities resident in this process, as effect/cluster counts them. */
const residentTopicEntities = () =>
  Effect.runPromise(Effect.map(Metric.snapshot, (snapshots) => {
    const series = snapshots.find((snapshot) =>
      snapshot.id === "effect_cluster_entities" && snapshot.attributes?.["type"] === "Topic"
    )
    return series === undefined ? 0 : Number((series.state as { value: bigint }).value)
  }))

describe("entity capacity across tenants", () => {
  it("10,000 distinct presence joins by one app leave room for another app's broadcasts", async () => {
    // each connection joins its 100 topics at once: past the default join burst
    const gateway = await gatewayWith({ limits: { joinBurst: 100 } })
    try {
      const subscriber = await connectSocket(gateway.socketUrl, { app: "news", token: "token-bob" })
      const joined = await subscriber.join("room:headlines")
      expect(joined.status).toBe("ok")
      const headlines = collect(joined.channel, "headline")

      // 100 connections × 100 channels (the per-connection maximum), each a distinct presence topic
      const started = performance.now()
      const answers = await Promise.all(Array.from({ length: 100 }, (_, c) =>
        joinAll(gateway, Array.from({ length: 100 }, (_, t) => `room:spam-${c}-${t}`))))
      const statuses = answers.flatMap(({ replies }) => [...replies.values()])
      expect(statuses).toHaveLength(10_000)
      const refused = statuses.filter((answer) => answer.status === "error")
      expect(statuses.length - refused.length).toBe(1000)
      expect(new Set(refused.map((answer) => answer.reason))).toEqual(new Set(["over_capacity"]))
      expect(performance.now() - started).toBeLessThan(60_000)

      // a topic of the other app that has no entity yet still gets one
      const answer = await fetch(`${gateway.url}/api/apps/news/broadcast`, {
        method: "POST",
        headers: { authorization: "Bearer news-secret", "content-type": "application/json" },
        body: JSON.stringify({ topic: "room:headlines", event: "headline", payload: { title: "still here" } })
      })
      expect(answer.status).toBe(202)
      expect(await headlines.until(1)).toEqual([{ title: "still here" }])
      await subscriber.close()
      for (const { ws } of answers) ws.close()
    } finally {
      await gateway.close()
    }
  }, 120_000)

  it("releases a topic's entity once nobody is on it any more", async () => {
    // idle times below the configurable minimum, only to keep the test short
    const gateway = await gatewayWith({ limits: { entityIdleMs: 1_000 } })
    try {
      const before = await residentTopicEntities()
      const member = await connectSocket(gateway.socketUrl, { app: "spam", token: "token-alice" })
      expect((await member.join("room:short-lived")).status).toBe("ok")
      const deadline = Date.now() + 10_000
      while (await residentTopicEntities() === before) {
        if (Date.now() > deadline) throw new Error("the topic's entity never started")
        await new Promise((resolve) => setTimeout(resolve, 50))
      }
      await member.close()
      // the reaper looks every 5 s at the shortest
      const released = Date.now() + 15_000
      while (await residentTopicEntities() > before) {
        if (Date.now() > released) throw new Error("the topic's entity was not released")
        await new Promise((resolve) => setTimeout(resolve, 100))
      }
    } finally {
      await gateway.close()
    }
  }, 30_000)
})
