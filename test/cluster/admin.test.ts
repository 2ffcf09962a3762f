/**
 * The admin API across a real four-node cluster on real PostgreSQL: the
 * status of every node from any node, and apps registered, changed and
 * removed through one node in force on all four within 2 s, kept across a
 * node's restart.
 *
 * One cluster serves every test of this file, in order; each test relies on
 * the ones before it (the app registered first is changed, outlives a
 * restart, then is removed).
 */
import { afterAll, beforeAll, describe, expect, it, onTestFailed } from "vitest"
import { connectSocket, startFakeApp, upgradeRejection } from "../../src/testing/index.ts"
import type { ConnectedSocket, FakeApp } from "../../src/testing/index.ts"
import { clientTokens, poll, startCluster, startPostgres, tokenFor } from "./support/cluster.ts"
import type { Cluster, ClusterNode, TestPostgres } from "./support/cluster.ts"

const TOKEN = "cluster-admin-token-of-the-admin-tests"
/** The contract's bound for a runtime change to reach every node. */
const EVERY_NODE_WITHIN_MS = 2_000

let postgres: TestPostgres
let chat: FakeApp
let extra: FakeApp
let cluster: Cluster

beforeAll(async () => {
  postgres = await startPostgres()
  chat = await startFakeApp({ auth: clientTokens })
  extra = await startFakeApp({ auth: clientTokens })
  cluster = await startCluster({ nodes: 4, fakeApp: chat, postgres, env: { GATEWAY_ADMIN_TOKEN: TOKEN } })
}, 120_000)

afterAll(async () => {
  await cluster?.stop()
  await chat?.close()
  await extra?.close()
  await postgres?.stop()
}, 60_000)

const showLogs = () => onTestFailed(() => console.log(cluster.logs()))

const admin = async (node: ClusterNode, method: string, path: string, body?: unknown) => {
  const response = await fetch(`${node.httpUrl}${path}`, {
    method,
    headers: { authorization: `Bearer ${TOKEN}`, "content-type": "application/json" },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    signal: AbortSignal.timeout(10_000)
  })
  return { status: response.status, body: (await response.json()) as any }
}

/** The app `id` as `node`'s admin API lists it; undefined when it does not. */
const listed = async (node: ClusterNode, id: string) =>
  ((await admin(node, "GET", "/admin/apps")).body.apps as Array<{ id: string }>).find((app) => app.id === id) as any

/** Resolves once `check` holds on every node, within the contract's 2 s of now. */
const onEveryNode = (what: string, check: (node: ClusterNode) => Promise<boolean>) =>
  Promise.all(cluster.nodes.map((node) =>
    poll(`${what} on ${node.name}`, async () => ((await check(node)) ? true : undefined), {
      timeoutMs: EVERY_NODE_WITHIN_MS,
      intervalMs: 50
    })
  ))

const connect = (node: ClusterNode, app: string, clientId: string) =>
  connectSocket(node.socketUrl, { app, token: tokenFor(clientId), timeoutMs: 10_000 })

describe("GET /admin/cluster", () => {
  it("answers every node's status through any node", async () => {
    showLogs()
    await cluster.converged()
    for (const node of cluster.nodes) {
      const answer = await admin(node, "GET", "/admin/cluster")
      expect(answer.status).toBe(200)
      expect(answer.body.nodes.map((status: { node: string }) => status.node)).toEqual(["node-1", "node-2", "node-3", "node-4"])
      for (const status of answer.body.nodes) {
        expect(status).toMatchObject({
          version: expect.any(String),
          state: "ready",
          uptime_s: expect.any(Number),
          connections: expect.any(Number),
          channels: expect.any(Number),
          entities: expect.any(Number),
          event_loop_lag_ms: expect.any(Number),
          memory: { rss_bytes: expect.any(Number) }
        })
        expect(status.shards).toEqual(expect.any(Number))
      }
      // the default group's shards are spread over the nodes (a node that just joined may own none yet)
      const shards = answer.body.nodes.reduce((sum: number, status: { shards: number }) => sum + status.shards, 0)
      expect(shards).toBeGreaterThan(0)
    }
  }, 60_000)
})

describe("apps at runtime", () => {
  it("an app registered through one node is served by all four within 2 s", async () => {
    showLogs()
    const answer = await admin(cluster.nodes[0]!, "PUT", "/admin/apps/extra", { api: extra.url, secret: "s".repeat(32) })
    expect(answer).toMatchObject({ status: 201, body: { kept_in: "postgresql", app: { id: "extra", source: "runtime" } } })
    await onEveryNode("the app listed", async (node) => (await listed(node, "extra"))?.schema.version === "1")
    const sockets = await Promise.all(cluster.nodes.map((node) => connect(node, "extra", `early-${node.name}`)))
    for (const socket of sockets) expect((await socket.join("room:lobby")).status).toBe("ok")
    await Promise.all(sockets.map((socket) => socket.close()))
  }, 30_000)

  it("a change made through another node is in force on all four within 2 s", async () => {
    showLogs()
    const notify = `${extra.url}/elsewhere`
    const answer = await admin(cluster.nodes[1]!, "PUT", "/admin/apps/extra", { api: extra.url, notifyEndpoint: notify })
    expect(answer).toMatchObject({ status: 200, body: { app: { notifyEndpoint: notify, secret: null } } })
    await onEveryNode("the changed settings", async (node) => (await listed(node, "extra"))?.notifyEndpoint === notify)
  }, 30_000)

  it("a restarted node serves the app registered at runtime, with its latest settings", async () => {
    showLogs()
    const restarted = await cluster.restart("node-3")
    expect(await listed(restarted, "extra")).toMatchObject({ source: "runtime", notifyEndpoint: `${extra.url}/elsewhere` })
    const socket = await connect(restarted, "extra", "after-restart")
    expect((await socket.join("room:lobby")).status).toBe("ok")
    await socket.close()
  }, 90_000)

  it("an app removed through one node is gone from all four within 2 s: its clients closed everywhere", async () => {
    showLogs()
    await cluster.converged()
    const sockets: Array<ConnectedSocket> = await Promise.all(
      cluster.nodes.map((node) => connect(node, "extra", `doomed-${node.name}`))
    )
    for (const socket of sockets) expect((await socket.join("room:lobby")).status).toBe("ok")
    const removedAt = Date.now()
    const answer = await admin(cluster.nodes[3]!, "DELETE", "/admin/apps/extra")
    expect(answer).toMatchObject({ status: 200, body: { removed: "extra", kept_in: "postgresql" } })
    const closes = await Promise.all(sockets.map((socket) => socket.closed))
    expect(Date.now() - removedAt).toBeLessThan(EVERY_NODE_WITHIN_MS + 1_000)
    expect(closes.map((close) => close.code)).toEqual([1008, 1008, 1008, 1008])
    await onEveryNode("the app gone", async (node) => (await listed(node, "extra")) === undefined)
    for (const node of cluster.nodes) {
      const refusal = await upgradeRejection(`${node.socketUrl}/websocket?app=extra&token=${tokenFor("late")}&vsn=2.0.0`)
      expect(refusal).toMatchObject({ status: 404, body: { reason: "unknown_app" } })
    }
  }, 60_000)
})
