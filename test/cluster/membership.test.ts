/**
 * Who belongs to a cluster: nodes find each other in PostgreSQL (a node added
 * while the cluster runs takes broadcasts within seconds, one that leaves is
 * dropped), and only nodes with the same `CLUSTER_SECRET` are let in (a
 * stranger on the cluster port is read nothing, a node with another secret
 * does not join).
 */
import * as Net from "node:net"
import { afterAll, beforeAll, describe, expect, it, onTestFailed } from "vitest"
import { startFakeApp } from "../../src/testing/index.ts"
import type { FakeApp } from "../../src/testing/index.ts"
import { clientTokens, connectAndJoin, inbox, poll, startCluster, startPostgres, within } from "./support/cluster.ts"
import type { Cluster, JoinedClient, TestPostgres } from "./support/cluster.ts"

let postgres: TestPostgres
let chat: FakeApp
let cluster: Cluster
const clients: Array<JoinedClient> = []

beforeAll(async () => {
  postgres = await startPostgres()
  chat = await startFakeApp({ auth: clientTokens })
  cluster = await startCluster({ nodes: 2, fakeApp: chat, postgres })
  await cluster.converged()
}, 120_000)

afterAll(async () => {
  await Promise.all(clients.map((client) => client.close()))
  await cluster?.stop()
  await chat?.close()
  await postgres?.stop()
}, 60_000)

const showLogs = () => onTestFailed(() => console.log(cluster.logs()))

describe("authentication on the cluster port", () => {
  it("a stranger without the secret gets the challenge and nothing else, and nothing it sends is delivered", async () => {
    showLogs()
    const target = cluster.node("node-1")
    const subscriber = await connectAndJoin(target, "chat", "guarded-1", "room:guarded")
    clients.push(subscriber)
    const forged = inbox(subscriber.channel, "intrusion")
    const checked = inbox<{ n: number }>(subscriber.channel, "check")

    const stranger = Net.createConnection({ host: "127.0.0.1", port: target.clusterPort })
    const received: Array<Buffer> = []
    stranger.on("data", (chunk: Buffer) => received.push(chunk))
    stranger.on("error", () => {})
    const closed = new Promise<void>((resolve) => stranger.once("close", () => resolve()))
    await within(new Promise((resolve) => stranger.once("connect", resolve)), 5_000, "the stranger's connection")
    // what a node link would deliver, and an effect/cluster runner request, unauthenticated
    stranger.write(
      `["h","intruder"]\n["d",[["forged-1","chat","room:guarded","intrusion",{"x":1},null]]]\n` +
        `{"_tag":"Request","id":"1","tag":"Topic/Publish","payload":{"id":"forged-2","event":"intrusion","payload":{}}}\n`
    )
    await within(closed, 10_000, "the node closing the stranger's connection")
    expect(Buffer.concat(received).length).toBeLessThanOrEqual(32)

    // a real broadcast after it: the first thing the subscriber sees
    const published = await target.api().broadcast({ topic: "room:guarded", event: "check", payload: { n: 1 } })
    expect(published.status).toBe(202)
    await checked.waitFor((item) => item.n === 1)
    expect(forged.items).toEqual([])
    await target.process.waitForLine("cluster port: connection dropped", 5_000)
  })

  it("a node with another CLUSTER_SECRET does not join: it exits 78 naming the key, and the cluster logs it", async () => {
    showLogs()
    const foreign = await cluster.addNode("node-foreign", { CLUSTER_SECRET: "another-secret-that-is-long-enough-too" })
    const status = await within(foreign.process.exited, 60_000, "the foreign node's exit")
    expect(status.code).toBe(78)
    expect(foreign.process.output()).toMatch(/CLUSTER_SECRET.*differs/)
    await cluster.node("node-2").process.waitForLine("the peer's proof does not match", 5_000)
    // the cluster still serves both of its nodes
    const listed = await cluster.node("node-1").api().connections()
    expect(listed.status).toBe(200)
  }, 90_000)
})

describe("TLS between nodes", () => {
  it("nodes with CLUSTER_TLS_* form one cluster over TLS; a plain TCP peer gets no byte in the clear", async () => {
    const fixture = (name: string) => new URL(`../upstream/fixtures/${name}`, import.meta.url).pathname
    // a self-signed certificate is its own CA: every node presents it and requires it of its peers
    const tls = await startCluster({
      nodes: 2,
      fakeApp: chat,
      postgres,
      env: {
        CLUSTER_TLS_CERT: fixture("localhost-cert.pem"),
        CLUSTER_TLS_KEY: fixture("localhost-key.pem"),
        CLUSTER_TLS_CA: fixture("localhost-cert.pem")
      }
    })
    try {
      await tls.converged()
      const plain = Net.createConnection({ host: "127.0.0.1", port: tls.node("node-1").clusterPort })
      const received: Array<Buffer> = []
      plain.on("data", (chunk: Buffer) => received.push(chunk))
      plain.on("error", () => {})
      const closed = new Promise<void>((resolve) => plain.once("close", () => resolve()))
      plain.write(`["h","intruder"]\n`)
      await within(closed, 10_000, "the node closing the plain connection")
      expect(Buffer.concat(received).length).toBe(0)
    } finally {
      await tls.stop()
    }
  }, 120_000)
})

describe("discovery", () => {
  it("a node added while the cluster runs receives broadcasts within 5 s; one that leaves is dropped", async () => {
    showLogs()
    const added = await cluster.addNode("node-3")
    await added.process.waitForLine("listening on http://", 60_000)
    const startedAt = Date.now()
    await added.ready(30_000)
    const subscriber = await connectAndJoin(added, "chat", "newcomer-1", "room:newcomer")
    clients.push(subscriber)
    const ticks = inbox<{ n: number }>(subscriber.channel, "tick")
    let n = 0
    await poll("a broadcast through node-1 reaching the added node", async () => {
      const sent = ++n
      await cluster.node("node-1").api().broadcast({ topic: "room:newcomer", event: "tick", payload: { n: sent } })
      return ticks.items.length > 0 ? true : undefined
    }, { timeoutMs: 10_000, intervalMs: 100 })
    const elapsed = Date.now() - startedAt
    console.log(`added node: listening → first broadcast received in ${elapsed} ms`)
    expect(elapsed).toBeLessThanOrEqual(5_000)

    // it leaves (killed): the others drop its link, and list connections without waiting for it
    added.kill("SIGKILL")
    await cluster.node("node-1").process.waitForLine(`"target_node":"node-3"`, 10_000)
    await cluster.node("node-1").process.waitForLine("node link closed", 10_000)
    const listingStartedAt = Date.now()
    const listed = await cluster.node("node-1").api().connections()
    expect(Date.now() - listingStartedAt).toBeLessThan(2_000)
    const clientIds = (listed.body.connections as Array<{ client_id: string }>).map((connection) => connection.client_id)
    expect(clientIds).not.toContain("newcomer-1")
  }, 90_000)
})
