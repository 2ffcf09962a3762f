/**
 * What a four-node cluster owes clients and apps whichever node they reach:
 * broadcasts through any node's server API, or in an app's answer to a push,
 * reach subscribers on every node,
 * in one order; disconnecting a client and listing connections work from any
 * node; a client's rate limit is shared by its connections on different nodes.
 *
 * One cluster serves every test of this file, in order: the first two check
 * that the processes run and form one cluster, the others rely on that; each
 * test uses its own topics and client ids.
 */
import { afterAll, beforeAll, describe, expect, it, onTestFailed } from "vitest"
import { collect, defaultSchema, echoHandler, push, startFakeApp } from "../../src/testing/index.ts"
import type { FakeApp } from "../../src/testing/index.ts"
import { withSql } from "../../cluster/postgres.ts"
import { clientTokens, connectAndJoin, inbox, poll, startCluster, startPostgres, within } from "./support/cluster.ts"
import type { Cluster, JoinedClient, TestPostgres } from "./support/cluster.ts"

let postgres: TestPostgres
let chat: FakeApp
let limited: FakeApp
let cluster: Cluster
const clients: Array<JoinedClient> = []

beforeAll(async () => {
  postgres = await startPostgres()
  chat = await startFakeApp({ auth: clientTokens })
  limited = await startFakeApp({
    auth: clientTokens,
    schema: {
      ...defaultSchema,
      rateLimits: { default: { windowMs: 60_000, maxRequests: 4 }, byEvent: { shout: { windowMs: 60_000, maxRequests: 2 } } }
    }
  })
  cluster = await startCluster({ nodes: 4, fakeApp: chat, apps: { limited }, postgres })
}, 120_000)

afterAll(async () => {
  await Promise.all(clients.map((client) => client.close()))
  await cluster?.stop()
  await chat?.close()
  await limited?.close()
  await postgres?.stop()
}, 60_000)

const showLogs = () => onTestFailed(() => console.log(cluster.logs()))

const join = async (nodeIndex: number, clientId: string, topic: string, app = "chat") => {
  const client = await connectAndJoin(cluster.nodes[nodeIndex]!, app, clientId, topic)
  clients.push(client)
  return client
}

describe("the cluster", () => {
  it("runs four node processes, each ready on its own HTTP and cluster port, with PostgreSQL reachable", async () => {
    showLogs()
    expect(cluster.nodes.map((node) => node.name)).toEqual(["node-1", "node-2", "node-3", "node-4"])
    const ports = cluster.nodes.flatMap((node) => [node.port, node.clusterPort])
    expect(new Set(ports).size).toBe(8)
    for (const node of cluster.nodes) {
      expect(node.alive()).toBe(true)
      expect(await node.readiness()).toEqual({ status: 200, body: { status: "ready", node: node.name } })
    }
    const [row] = await withSql(cluster.databaseUrl, (sql) => sql<{ ok: number }>`SELECT 1 AS ok`)
    expect(row).toEqual({ ok: 1 })
  })

  it("forms one cluster: a broadcast through each node reaches every node, each node lists every node's connections", async () => {
    showLogs()
    await cluster.converged()
  }, 40_000)
})

describe("broadcasts across nodes", () => {
  it("a broadcast through the server API of any node reaches a client on each of the four nodes", async () => {
    showLogs()
    const topic = "room:fanout"
    const subscribers = await Promise.all(cluster.nodes.map((_, i) => join(i, `fan-${i + 1}`, topic)))
    const inboxes = subscribers.map((subscriber) => inbox<{ via: string }>(subscriber.channel, "news"))

    for (const entry of cluster.nodes) {
      const published = await entry.api().broadcast({ topic, event: "news", payload: { via: entry.name } })
      expect(published).toEqual({ status: 202, body: { accepted: 1 } })
      await Promise.all(inboxes.map((box, i) =>
        box.waitFor(
          (item) => item.via === entry.name,
          5_000,
          `the broadcast through ${entry.name} at the client on ${cluster.nodes[i]!.name}`
        )
      ))
    }
    // each broadcast exactly once, everywhere
    for (const box of inboxes) expect(box.items.map((item) => item.via)).toEqual(cluster.nodes.map((node) => node.name))
  })

  it("a broadcast action in an app's answer to a push on one node reaches a client on each of the four nodes", async () => {
    showLogs()
    const topic = "room:action-fanout"
    const subscribers = await Promise.all(cluster.nodes.map((_, i) => join(i, `act-${i + 1}`, topic)))
    const inboxes = subscribers.map((subscriber) => inbox<{ from: string }>(subscriber.channel, "cast"))
    chat.setMessageHandler((body) => ({ action: "broadcast", event: "cast", data: { from: body.client_id } }))
    try {
      expect(await push(subscribers[0]!.channel, "echo", {})).toEqual({ status: "ok", response: {} })
      await Promise.all(inboxes.map((box, i) =>
        box.waitFor((item) => item.from === "act-1", 10_000, `the action's broadcast at node-${i + 1}`)
      ))
    } finally {
      chat.setMessageHandler(echoHandler)
    }
  })

  it("1,000 broadcasts to one topic arrive in the same order at every subscriber on every node", async () => {
    showLogs()
    const topic = "room:ordered"
    const total = 1_000
    const chunk = 50
    // two subscribers per node
    const subscribers = await Promise.all(
      [0, 1, 2, 3, 0, 1, 2, 3].map((nodeIndex, i) => join(nodeIndex, `order-${i + 1}`, topic))
    )
    const collectors = subscribers.map((subscriber) => collect<{ seq: number }>(subscriber.channel, "seq"))

    // Array bodies of 50, each through the next node in turn; every chunk is
    // answered before the next is sent, so the sending order is well defined.
    for (let start = 0; start < total; start += chunk) {
      const entry = cluster.nodes[(start / chunk) % cluster.nodes.length]!
      const body = Array.from({ length: chunk }, (_, i) => ({ topic, event: "seq", payload: { seq: start + i } }))
      const published = await entry.api().broadcast(body, 30_000)
      expect(published, `chunk from ${start} through ${entry.name}`).toEqual({ status: 202, body: { accepted: chunk } })
    }
    await Promise.all(collectors.map((collector) => collector.until(total, 30_000)))

    const sequences = collectors.map((collector) => collector.items.map((item) => item.seq))
    for (const sequence of sequences.slice(1)) expect(sequence).toEqual(sequences[0])
    expect(sequences[0]).toEqual(Array.from({ length: total }, (_, i) => i))
  }, 90_000)
})

describe("clients across nodes", () => {
  it("DELETE of a client through a third node closes its connections on two other nodes", async () => {
    showLogs()
    const onFirst = await join(0, "dana", "room:dana-1")
    const onSecond = await join(1, "dana", "room:dana-2")
    const bystander = await join(1, "erin", "room:dana-2")

    const answer = await cluster.nodes[2]!.api().disconnect("dana")
    expect(answer).toEqual({ status: 200, body: { client_id: "dana", disconnected: 2 } })
    await within(Promise.all([onFirst.socket.closed, onSecond.socket.closed]), 5_000, "both of dana's connections closing")
    expect(bystander.socket.socket.isConnected()).toBe(true)

    // and no node lists dana any more (a node forgets a connection once its closing handshake is over,
    // which may be just after the client saw the close)
    for (const node of cluster.nodes) {
      await poll(`${node.name} no longer listing dana`, async () => {
        const listed = await node.api().connections()
        expect(listed.status).toBe(200)
        const dana = listed.body.connections.filter((c: { client_id: string }) => c.client_id === "dana")
        return dana.length === 0 ? true : undefined
      }, { timeoutMs: 5_000 })
    }
  })

  it("GET connections on any node lists the connections of every node", async () => {
    showLogs()
    await Promise.all(cluster.nodes.map((_, i) => join(i, `listed-${i + 1}`, `room:listed-${i + 1}`)))

    for (const entry of cluster.nodes) {
      const listed = await entry.api().connections()
      expect(listed.status, `GET connections on ${entry.name}`).toBe(200)
      const mine = listed.body.connections
        .filter((c: { client_id: string }) => c.client_id.startsWith("listed-"))
        .map((c: { client_id: string; node: string; topics: Array<string> }) => ({
          client_id: c.client_id,
          node: c.node,
          topics: c.topics
        }))
        .sort((a: { client_id: string }, b: { client_id: string }) => a.client_id.localeCompare(b.client_id))
      expect(mine, `GET connections on ${entry.name}`).toEqual(cluster.nodes.map((node, i) => ({
        client_id: `listed-${i + 1}`,
        node: node.name,
        topics: [`room:listed-${i + 1}`]
      })))
    }
  })

  it("a client connected to two nodes shares one rate limit (4 pushes per minute) across both", async () => {
    showLogs()
    const first = await join(0, "rita", "room:limits", "limited")
    const second = await join(1, "rita", "room:limits", "limited")

    const results: Array<{ via: string; status: string; reason: unknown }> = []
    for (let i = 0; i < 8; i++) {
      const [via, channel] = i % 2 === 0 ? ["node-1", first.channel] as const : ["node-2", second.channel] as const
      const result = await push<{ reason?: unknown }>(channel, "echo", { n: i }, 10_000)
      results.push({ via, status: result.status, reason: result.response?.reason })
    }
    expect(results.slice(0, 4).map((result) => result.status)).toEqual(["ok", "ok", "ok", "ok"])
    expect(results.slice(4)).toEqual([
      { via: "node-1", status: "error", reason: "rate_limited" },
      { via: "node-2", status: "error", reason: "rate_limited" },
      { via: "node-1", status: "error", reason: "rate_limited" },
      { via: "node-2", status: "error", reason: "rate_limited" }
    ])
  })

  it("an event's own limit (2 shouts per minute) is shared across both nodes too, and spends only what it allows", async () => {
    showLogs()
    const first = await join(0, "sam", "room:limits", "limited")
    const second = await join(1, "sam", "room:limits", "limited")
    const statuses: Array<string> = []
    for (let i = 0; i < 4; i++) {
      const channel = i % 2 === 0 ? first.channel : second.channel
      const result = await push<{ reason?: unknown }>(channel, "shout", { n: i }, 10_000)
      statuses.push(result.status === "ok" ? "ok" : String(result.response?.reason))
    }
    expect(statuses).toEqual(["ok", "ok", "rate_limited", "rate_limited"])
    // the refused shouts took nothing from the client's default bucket (4, 2 of them spent)
    expect((await push(first.channel, "echo", {}, 10_000)).status).toBe("ok")
    expect((await push(second.channel, "echo", {}, 10_000)).status).toBe("ok")
  })
})
