/**
 * Every long-lived loop of a single-node gateway runs under its supervisor
 * (CONTRACT §7): a defect injected into each brings it back, counted and
 * logged, and the loop does its work again afterwards. Readiness turns 503
 * naming the child once restarts pass the intensity. (The cluster-only loops
 * are covered in test/cluster/supervision.test.ts.)
 */
import { Effect } from "effect"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { makeAppConfig } from "../../src/config/GatewayConfig.ts"
import { SupervisedChild } from "../../src/supervision/children.ts"
import { connectSocket, rawSocket, startFakeApp } from "../../src/testing/index.ts"
import type { ConnectedSocket, FakeApp } from "../../src/testing/index.ts"
import { eventually, injectAndAwaitRestart, inProcessConfig, startSupervisedGateway } from "./support.ts"
import type { SupervisedGateway } from "./support.ts"

let app: FakeApp
let gateway: SupervisedGateway
let member: ConnectedSocket

const IDLE_TIMEOUT_MS = 600

beforeAll(async () => {
  app = await startFakeApp()
  gateway = await startSupervisedGateway(inProcessConfig({
    apps: [makeAppConfig({ id: "chat", api: app.url })],
    // every loop here is killed once or twice: stay below the intensity that would end the node
    limits: { idleTimeoutMs: IDLE_TIMEOUT_MS, supervisorMaxRestarts: 30 }
  }))
  // a presence join starts the topic's entity, and with it its dead-node check
  member = await connectSocket(gateway.socketUrl, { app: "chat", token: "token-alice", heartbeatIntervalMs: 100 })
  expect((await member.join("room:supervised")).status).toBe("ok")
  await eventually("the presence entity's loop runs", () =>
    gateway.supervisor.children().some((child) => child.name === SupervisedChild.presenceDeadNodeCheck && child.running > 0))
})

afterAll(async () => {
  await member?.close()
  await gateway?.close()
  await app?.close()
})

const childNames = () => gateway.supervisor.children().map((child) => child.name).sort()

describe("supervised children of a single node", () => {
  it("lists every loop of a single node, each running", () => {
    expect(childNames()).toEqual([
      SupervisedChild.eventLoopSample,
      SupervisedChild.idleSweep,
      SupervisedChild.nodeStatusSample,
      SupervisedChild.presenceDeadNodeCheck,
      SupervisedChild.presenceResync,
      SupervisedChild.rateLimitSweep,
      SupervisedChild.requestHeadSweep,
      SupervisedChild.schemaRefresh,
      SupervisedChild.schemaRetry
    ].sort())
    for (const child of gateway.supervisor.children()) expect(child.running, child.name).toBe(1)
  })

  it.each([
    SupervisedChild.schemaRefresh,
    SupervisedChild.schemaRetry,
    SupervisedChild.requestHeadSweep,
    SupervisedChild.nodeStatusSample,
    SupervisedChild.eventLoopSample,
    SupervisedChild.idleSweep,
    SupervisedChild.rateLimitSweep,
    SupervisedChild.presenceResync,
    SupervisedChild.presenceDeadNodeCheck
  ])("%s comes back after a defect", async (name) => {
    expect(await injectAndAwaitRestart(gateway, name)).toBe(1)
  })

  it("the idle sweep still closes idle connections after its restart", async () => {
    await injectAndAwaitRestart(gateway, SupervisedChild.idleSweep)
    const silent = await rawSocket(`${gateway.socketUrl}/websocket?app=chat&token=token-bob&vsn=2.0.0`)
    expect(await silent.closed).toEqual({ code: 1000, reason: "idle timeout" })
  })

  it("the schema refresh still fetches schemas after its restart", async () => {
    const earlier = new Set(app.requestsOf("schema"))
    await injectAndAwaitRestart(gateway, SupervisedChild.schemaRefresh)
    // a restarted refresh loop starts with a fetch
    await app.waitFor("schema", (request) => !earlier.has(request), 5_000)
  })

  it("is ready throughout, below the restart intensity", async () => {
    const ready = await fetch(`${gateway.url}/health/ready`)
    expect(ready.status).toBe(200)
  })
})

describe("escalation", () => {
  it("turns readiness 503, naming the child, once restarts pass the intensity", async () => {
    const sick = await startSupervisedGateway(inProcessConfig({
      nodeName: "sick",
      apps: [makeAppConfig({ id: "chat", api: app.url })],
      limits: { supervisorMaxRestarts: 1, supervisorPeriodMs: 60_000 }
    }))
    try {
      expect((await fetch(`${sick.url}/health/ready`)).status).toBe(200)
      await injectAndAwaitRestart(sick, SupervisedChild.idleSweep)
      expect((await fetch(`${sick.url}/health/ready`)).status).toBe(200)
      await Effect.runPromise(sick.supervisor.injectDefect(SupervisedChild.idleSweep))
      await eventually("escalation", () => sick.supervisor.escalation() !== undefined)
      const ready = await fetch(`${sick.url}/health/ready`)
      expect(ready.status).toBe(503)
      const body = await ready.json() as { reasons: Array<string> }
      expect(body.reasons).toEqual([expect.stringContaining(`supervised child "idle sweep" failing: 2 restarts`)])
    } finally {
      await sick.close()
    }
  })
})
