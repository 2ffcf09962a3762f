/**
 * A node killed with SIGKILL (no drain, no goodbye): within 10 s broadcasts
 * reach every subscriber on the surviving nodes again without any client
 * action, and presence shows the dead node's clients leaving (within 20 s).
 *
 * The tests share one cluster and each kills one more node (4 → 3 → 2), so
 * they run in this order.
 */
import { afterAll, beforeAll, describe, expect, it, onTestFailed } from "vitest"
import { startFakeApp } from "../../src/testing/index.ts"
import type { FakeApp } from "../../src/testing/index.ts"
import { topicOwner } from "../../cluster/postgres.ts"
import {
  clientTokens,
  connectAndJoin,
  inbox,
  poll,
  startCluster,
  startPostgres,
  watchPresence,
  within
} from "./support/cluster.ts"
import type { Cluster, ClusterNode, JoinedClient, PresenceWatch, TestPostgres } from "./support/cluster.ts"

let postgres: TestPostgres
let chat: FakeApp
let cluster: Cluster
const closers: Array<() => Promise<void>> = []

beforeAll(async () => {
  postgres = await startPostgres()
  chat = await startFakeApp({ auth: clientTokens })
  cluster = await startCluster({ nodes: 4, fakeApp: chat, postgres })
  await cluster.converged()
}, 120_000)

afterAll(async () => {
  await Promise.all(closers.map((close) => close()))
  await cluster?.stop()
  await chat?.close()
  await postgres?.stop()
}, 60_000)

const showLogs = () => onTestFailed(() => console.log(cluster.logs(60)))

const FAILOVER_LIMIT_MS = 10_000

const killHard = async (node: ClusterNode) => {
  node.kill("SIGKILL")
  const { signal } = await within(node.process.exited, 5_000, `${node.name} exiting`)
  expect(signal).toBe("SIGKILL")
}

/** Kills `victim` and answers how long after the kill `watcher` saw `key` leave the presence list. */
const killAndAwaitLeave = async (victim: ClusterNode, watcher: PresenceWatch, key: string): Promise<number> => {
  const killedAt = Date.now()
  await killHard(victim)
  const leftAt = await watcher.until((keys) => !keys.includes(key), 20_000, `${key} leaving the observer's presence list`)
  return leftAt - killedAt
}

describe("kill -9 of a node", () => {
  it("broadcasts made after the kill reach every remaining subscriber within 10 s, with no client action", async () => {
    showLogs()
    const topic = "room:failover"
    const subscribers: Array<{ node: ClusterNode; client: JoinedClient }> = []
    for (const node of cluster.live()) {
      const client = await connectAndJoin(node, "chat", `survivor-${node.name}`, topic)
      closers.push(() => client.close())
      subscribers.push({ node, client })
    }
    const inboxes = subscribers.map(({ client }) => inbox<{ n: number }>(client.channel, "tick"))
    // the topic's entity is live and every node delivers
    const warm = await cluster.node("node-1").api().broadcast({ topic, event: "tick", payload: { n: -1 } })
    expect(warm.status).toBe(202)
    await Promise.all(inboxes.map((box) => box.waitFor((item) => item.n === -1, 5_000, "the broadcast before the kill")))

    // Kill the node that runs the topic's entity when that can be told, so that
    // the entity has to move; publish through another node.
    const owner = await topicOwner(cluster.databaseUrl, "chat", topic)
    const victim = cluster.node(owner ?? "node-4")
    const publisher = cluster.live().find((node) => node !== victim)!
    console.log(`killing ${victim.name} (${owner === undefined ? "topic owner unknown" : "owner of the topic's entity"}), publishing through ${publisher.name}`)

    const survivors = subscribers.map((subscriber, i) => ({ ...subscriber, box: inboxes[i]! }))
      .filter(({ node }) => node !== victim)
    const killedAt = Date.now()
    await killHard(victim)

    // Publish again and again (each broadcast made after the kill) until every
    // survivor has one; a request may hang while the entity moves, so they
    // are not awaited one by one.
    let n = 0
    let stopped = false
    const statuses: Array<number | string> = []
    const publishing = (async () => {
      const inFlight: Array<Promise<void>> = []
      while (!stopped && Date.now() - killedAt < FAILOVER_LIMIT_MS + 5_000) {
        inFlight.push(
          publisher.api().broadcast({ topic, event: "tick", payload: { n: n++ } }, 15_000).then(
            (answer) => void statuses.push(answer.status),
            (error: unknown) => void statuses.push(String(error))
          )
        )
        await new Promise((resolve) => setTimeout(resolve, 250))
      }
      await Promise.all(inFlight)
    })()
    try {
      const arrivals = await within(
        Promise.all(survivors.map(({ box, node }) =>
          box.waitFor((item) => item.n >= 0, FAILOVER_LIMIT_MS + 5_000, `a broadcast after the kill at ${node.name}`)
            .then(() => Date.now() - killedAt)
        )),
        FAILOVER_LIMIT_MS + 6_000,
        "delivery to every survivor"
      )
      console.log(`delivered to every survivor ${Math.max(...arrivals)} ms after the kill (per node: ${arrivals.join(", ")})`)
      expect(Math.max(...arrivals)).toBeLessThanOrEqual(FAILOVER_LIMIT_MS)
    } finally {
      stopped = true
      await publishing
    }
    // the survivors stayed connected throughout
    for (const { client } of survivors) expect(client.socket.socket.isConnected()).toBe(true)
    expect(statuses.filter((status) => status === 202).length).toBeGreaterThan(0)
  }, 60_000)

  it("a Presence on a surviving node sees the killed node's client leave", async () => {
    showLogs()
    const topic = "room:presence-failover"
    const [observerNode, victim, bystanderNode] = await pickPresenceNodes(topic)
    console.log(`observer on ${observerNode.name}, killing ${victim.name}, ${bystanderNode.name} stays`)

    const observer = await watchPresence(observerNode, "chat", "watcher", topic)
    closers.push(() => observer.close())
    const ghost = await connectAndJoin(victim, "chat", "ghost", topic)
    closers.push(() => ghost.close())
    const bystander = await connectAndJoin(bystanderNode, "chat", "bystander", topic)
    closers.push(() => bystander.close())
    await observer.until(
      (keys) => ["watcher", "ghost", "bystander"].every((key) => keys.includes(key)),
      10_000,
      "the observer seeing all three clients"
    )

    const leftAfterMs = await killAndAwaitLeave(victim, observer, "ghost")
    console.log(`ghost left the presence list ${leftAfterMs} ms after the kill`)
    expect([...observer.keys()].sort()).toEqual(["bystander", "watcher"])
  }, 60_000)
})

describe("kill -9 of the node running a presence topic's entity", () => {
  it("a Presence on a surviving node sees that node's client leave, though the new entity never knew it", async () => {
    showLogs()
    const topic = "room:presence-owner-failover"
    const observerNode = cluster.live()[0]!
    const observer = await watchPresence(observerNode, "chat", "watcher", topic)
    closers.push(() => observer.close())
    // known once every shard is held again (the previous tests killed nodes)
    const owner = await poll("the node running the topic's entity", () => topicOwner(cluster.databaseUrl, "chat", topic), {
      intervalMs: 250
    })
    const victim = cluster.node(owner)
    // the observer must survive: when it runs the entity, watch from another node
    const watching = victim === observerNode
      ? await watchPresence(cluster.live().find((node) => node !== victim)!, "chat", "watcher-2", topic)
      : observer
    closers.push(() => watching.close())
    const ghost = await connectAndJoin(victim, "chat", "ghost", topic)
    closers.push(() => ghost.close())
    await watching.until((keys) => keys.includes("ghost"), 10_000, "the observer seeing the ghost")

    const leftAfterMs = await killAndAwaitLeave(victim, watching, "ghost")
    console.log(`killed ${victim.name} (entity owner); ghost left the presence list ${leftAfterMs} ms after the kill`)
  }, 60_000)
})

/**
 * Three live nodes: the observer's, the one to kill and one that stays. The
 * node to kill is not the one running the topic's entity when that can be
 * told, so that this test is about a node's clients, not an entity's move.
 */
const pickPresenceNodes = async (topic: string): Promise<[ClusterNode, ClusterNode, ClusterNode]> => {
  const live = cluster.live()
  expect(live.length).toBeGreaterThanOrEqual(3)
  const owner = await topicOwner(cluster.databaseUrl, "chat", topic)
  const ordered = [...live.filter((node) => node.name === owner), ...live.filter((node) => node.name !== owner)]
  // the owner (when known) observes; the last live node is killed
  return [ordered[0]!, ordered[ordered.length - 1]!, ordered[1]!]
}
