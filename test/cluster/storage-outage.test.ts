/**
 * No call waits for ever (CONTRACT §7, §9): while the cluster's PostgreSQL is
 * frozen (every one of its processes stopped with SIGSTOP, as a hung server
 * or a network partition looks), every push still gets exactly one reply
 * within the entity call timeout, readiness turns 503 naming the storage, and
 * once PostgreSQL answers again the nodes are ready and broadcasts cross
 * nodes as before.
 */
import { readFileSync } from "node:fs"
import WebSocket from "ws"
import { afterAll, beforeAll, describe, expect, it, onTestFailed } from "vitest"
import { defaultSchema, echoHandler, startFakeApp } from "../../src/testing/index.ts"
import type { FakeApp } from "../../src/testing/index.ts"
import { clientTokens, connectAndJoin, inbox, poll, startCluster, startPostgres, tokenFor } from "./support/cluster.ts"
import type { Cluster, ClusterNode, TestPostgres } from "./support/cluster.ts"

const ENTITY_CALL_TIMEOUT_MS = 2_000
/** A topic publish has its own, longer bound (see Broadcaster). */
const PUBLISH_TIMEOUT_MS = 8_000

let postgres: TestPostgres
let app: FakeApp
let cluster: Cluster

beforeAll(async () => {
  postgres = await startPostgres()
  app = await startFakeApp({
    auth: clientTokens,
    // every client's first push asks its Client entity (rate limits in a cluster)
    schema: { ...defaultSchema, rateLimits: { default: { windowMs: 60_000, maxRequests: 1_000 } } }
  })
  // "shout" is answered with a broadcast: the push waits for the topic's entity
  app.setMessageHandler((body, request) =>
    body.event === "shout" ? { action: "broadcast", event: "shouted", data: body.payload } : echoHandler(body, request)
  )
  cluster = await startCluster({
    nodes: 2,
    fakeApp: app,
    postgres,
    env: { ENTITY_CALL_TIMEOUT_MS: String(ENTITY_CALL_TIMEOUT_MS) }
  })
  await cluster.converged()
}, 120_000)

afterAll(async () => {
  resumePostgres()
  await cluster?.stop()
  await app?.close()
  await postgres?.stop()
}, 60_000)

/** The PostgreSQL server and its backends; the postmaster first, so that it forks no new ones. */
const postgresProcesses = (): Array<number> => {
  const pid = postgres.pid
  if (pid === undefined) throw new Error("this test freezes the PostgreSQL it starts; unset CLUSTER_TEST_DATABASE_URL")
  const children = readFileSync(`/proc/${pid}/task/${pid}/children`, "utf8").trim().split(/\s+/).filter(Boolean)
  return [pid, ...children.map(Number)]
}
let frozen: Array<number> = []
const freezePostgres = () => {
  frozen = postgresProcesses()
  for (const pid of frozen) process.kill(pid, "SIGSTOP")
}
const resumePostgres = () => {
  for (const pid of frozen.reverse()) {
    try {
      process.kill(pid, "SIGCONT")
    } catch {
      // gone already
    }
  }
  frozen = []
}

interface Reply {
  readonly ref: string
  readonly status: string
  readonly reason: string | undefined
  readonly afterMs: number
}

/**
 * A raw V2 JSON connection of a fresh client, joined to `topic`, that sends
 * pushes and records every reply by ref (so that a second reply would show).
 */
const rawClient = async (node: ClusterNode, clientId: string, topic: string) => {
  const ws = new WebSocket(`${node.socketUrl}/websocket?app=chat&token=${tokenFor(clientId)}&vsn=2.0.0`)
  const replies: Array<Reply> = []
  const sentAt = new Map<string, number>()
  const wakers = new Set<() => void>()
  ws.on("message", (data) => {
    const [, ref, , event, payload] = JSON.parse(String(data)) as [unknown, string | null, string, string, any]
    if (event !== "phx_reply" || ref === null) return
    replies.push({
      ref,
      status: payload.status,
      reason: payload.response?.reason,
      afterMs: performance.now() - (sentAt.get(ref) ?? 0)
    })
    for (const wake of wakers) wake()
  })
  await new Promise((resolve, reject) => ws.once("open", resolve).once("error", reject))
  const send = (ref: string, event: string, payload: object) => {
    sentAt.set(ref, performance.now())
    ws.send(JSON.stringify(["1", ref, topic, event, payload]))
  }
  const repliesTo = (ref: string) => replies.filter((reply) => reply.ref === ref)
  const awaitReplies = (refs: ReadonlyArray<string>, timeoutMs: number) =>
    new Promise<void>((resolve, reject) => {
      const check = () => {
        if (!refs.every((ref) => repliesTo(ref).length > 0)) return
        wakers.delete(check)
        clearTimeout(timer)
        resolve()
      }
      const timer = setTimeout(() => {
        wakers.delete(check)
        reject(new Error(`replies to ${refs.filter((ref) => repliesTo(ref).length === 0).join(", ")} missing after ${timeoutMs} ms`))
      }, timeoutMs)
      wakers.add(check)
      check()
    })
  send("join", "phx_join", {})
  await awaitReplies(["join"], 10_000)
  expect(repliesTo("join")[0]!.status).toBe("ok")
  return { send, repliesTo, awaitReplies, close: () => ws.close() }
}

describe("while PostgreSQL is frozen", () => {
  it("every push gets exactly one reply, readiness is 503 naming the storage, and all recovers once it is back", async () => {
    onTestFailed(() => console.log(cluster.logs()))
    const [first, second] = cluster.nodes as [ClusterNode, ClusterNode]
    const listener = await connectAndJoin(second, "chat", "outage-listener", "room:outage")
    const shouts = inbox<{ n: number }>(listener.channel, "shouted")

    freezePostgres()
    const notReady = await poll("readiness 503 on node-1", async () => {
      const answer = await first.readiness()
      return answer.status === 503 ? answer : undefined
    }, { timeoutMs: 15_000, intervalMs: 200 })
    expect(notReady.body.reasons).toEqual([expect.stringContaining("cluster storage (PostgreSQL) unreachable")])

    // fresh clients on both nodes: each first push asks its Client entity, each shout the topic's entity
    const clients = await Promise.all([first, second, first, second].map((node, i) =>
      rawClient(node, `outage-client-${i}`, "room:outage")))
    const refs: Array<string> = []
    clients.forEach((client, i) => {
      for (let n = 0; n < 5; n++) {
        const ref = `${i}-${n}`
        refs.push(ref)
        client.send(ref, n % 2 === 0 ? "echo" : "shout", { n })
      }
    })
    // a shout waits for its client's entity, then for the topic's
    const bound = ENTITY_CALL_TIMEOUT_MS + PUBLISH_TIMEOUT_MS + 2_000
    await Promise.all(clients.map((client, i) => client.awaitReplies(refs.filter((ref) => ref.startsWith(`${i}-`)), bound)))
    // a late second reply would come within the same bound
    await new Promise((resolve) => setTimeout(resolve, ENTITY_CALL_TIMEOUT_MS))
    for (const [i, client] of clients.entries()) {
      for (const ref of refs.filter((candidate) => candidate.startsWith(`${i}-`))) {
        const replies = client.repliesTo(ref)
        expect(replies, ref).toHaveLength(1)
        expect(replies[0]!.afterMs, ref).toBeLessThan(bound)
        if (replies[0]!.status !== "ok") expect(["broadcast_failed", "rate_limited"], ref).toContain(replies[0]!.reason)
      }
    }

    resumePostgres()
    for (const node of cluster.nodes) {
      await poll(`readiness 200 on ${node.name} after PostgreSQL is back`, async () => {
        const answer = await node.readiness()
        return answer.status === 200 ? answer : undefined
      }, { timeoutMs: 30_000, intervalMs: 200 })
    }
    // a push whose answer is a broadcast crosses nodes again
    const after = clients[0]!
    await poll("a shout after recovery reaches the other node", async () => {
      const ref = `after-${Date.now()}`
      after.send(ref, "shout", { n: 100 })
      await after.awaitReplies([ref], bound)
      if (after.repliesTo(ref)[0]!.status !== "ok") return undefined
      return shouts.waitFor((item) => item.n === 100, 5_000, "the shout at node-2")
    }, { timeoutMs: 30_000, intervalMs: 500 })
    for (const client of clients) client.close()
    await listener.close()
  }, 120_000)
})
