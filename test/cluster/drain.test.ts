/**
 * SIGTERM of a node in a cluster: it reports not ready (503) while it drains,
 * closes its clients with 1012 spread over the drain window (2 s here) rather
 * than all at once, exits within 30 s, and its clients, given every node's
 * URL, reconnect to another node and rejoin their channels there.
 */
import { afterAll, beforeAll, describe, expect, it, onTestFailed } from "vitest"
import { startFakeApp } from "../../src/testing/index.ts"
import type { FakeApp } from "../../src/testing/index.ts"
import { clientTokens, inbox, roamingClient, startCluster, startPostgres, within } from "./support/cluster.ts"
import type { Cluster, RoamingClient, TestPostgres } from "./support/cluster.ts"

const DRAIN_WINDOW_MS = 2_000
const CLIENTS = 20

let postgres: TestPostgres
let chat: FakeApp
let cluster: Cluster
const roaming: Array<RoamingClient> = []

beforeAll(async () => {
  postgres = await startPostgres()
  chat = await startFakeApp({ auth: clientTokens })
  cluster = await startCluster({
    nodes: 4,
    fakeApp: chat,
    postgres,
    env: { DRAIN_WINDOW_MS: String(DRAIN_WINDOW_MS) }
  })
  await cluster.converged()
}, 120_000)

afterAll(async () => {
  for (const client of roaming) client.disconnect()
  await cluster?.stop()
  await chat?.close()
  await postgres?.stop()
}, 60_000)

describe("SIGTERM of a node", () => {
  it("drains: 503 while draining, 1012 closes spread over the window, exit within 30 s, clients rejoin elsewhere", async () => {
    onTestFailed(() => console.log(cluster.logs(60)))
    const topic = "room:drain"
    const victim = cluster.node("node-4")
    const others = cluster.nodes.filter((node) => node !== victim)
    // every client connects to the victim first, then moves along the list
    const urls = [victim, ...others].map((node) => node.socketUrl)
    const channels = await Promise.all(Array.from({ length: CLIENTS }, async (_, i) => {
      const client = roamingClient(urls, "chat", `drained-${i + 1}`)
      roaming.push(client)
      return within(client.join(topic), 10_000, `drained-${i + 1} joining`)
    }))
    expect(roaming.every((client) => client.attempts.length === 1 && client.attempts[0] === new URL(victim.httpUrl).host))
      .toBe(true)
    const listed = await victim.api().connections()
    expect(listed.body.connections.filter((c: { node: string }) => c.node === victim.name)).toHaveLength(CLIENTS)

    const firstClose = new Promise<void>((resolve) => {
      for (const client of roaming) client.socket.onClose(() => resolve())
    })
    const termAt = Date.now()
    victim.kill("SIGTERM")

    // the drain has begun once the first client is closed; the node says it is not ready
    await within(firstClose, 5_000, "the first client close after SIGTERM")
    const readiness = await victim.readiness()
    expect(readiness.status).toBe(503)
    expect(JSON.stringify(readiness.body)).toContain("draining")

    const exit = await within(victim.process.exited, 30_000, `${victim.name} exiting after SIGTERM`)
    const exitedAfter = Date.now() - termAt
    console.log(`${victim.name} exited ${exitedAfter} ms after SIGTERM (code ${exit.code}, signal ${exit.signal})`)
    expect(exit.signal).not.toBe("SIGKILL")

    // every client was closed once by the drain, with 1012, spread over the window
    const drainCloses = roaming.map((client) => client.closes[0])
    expect(drainCloses.map((close) => close?.code)).toEqual(Array.from({ length: CLIENTS }, () => 1012))
    const times = drainCloses.map((close) => close!.at - termAt).sort((a, b) => a - b)
    console.log(`close times after SIGTERM (ms): ${times.join(", ")}`)
    const spread = times[times.length - 1]! - times[0]!
    expect(spread).toBeGreaterThanOrEqual(DRAIN_WINDOW_MS / 2)
    expect(times[times.length - 1]!).toBeLessThanOrEqual(DRAIN_WINDOW_MS + 3_000)

    // each client reconnected to another node and rejoined there
    await within(
      Promise.all(roaming.map((client) => client.joined(2, 15_000))),
      16_000,
      "every client rejoining"
    )
    for (const client of roaming) {
      expect(client.socket.isConnected()).toBe(true)
      expect(client.attempts.at(-1)).not.toBe(new URL(victim.httpUrl).host)
    }
    // and receives broadcasts on the node it moved to
    const inboxes = channels.map((channel) => inbox<{ after: string }>(channel, "news"))
    const published = await others[0]!.api().broadcast({ topic, event: "news", payload: { after: "drain" } })
    expect(published.status).toBe(202)
    await Promise.all(inboxes.map((box) => box.waitFor((item) => item.after === "drain", 5_000)))
  }, 90_000)
})
