/**
 * The loops only a clustered node runs are supervised too (CONTRACT §7): the
 * live-node refresh, the shard advertising, the runtime apps sync and the
 * client re-attach each come back after an injected defect. One node in this process, on a real
 * PostgreSQL.
 */
import { Redacted } from "effect"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { freePort } from "../../cluster/ports.ts"
import { makeAppConfig } from "../../src/config/GatewayConfig.ts"
import { SupervisedChild } from "../../src/supervision/children.ts"
import { startFakeApp } from "../../src/testing/index.ts"
import type { FakeApp } from "../../src/testing/index.ts"
import { injectAndAwaitRestart, inProcessConfig, startSupervisedGateway } from "../supervision/support.ts"
import type { SupervisedGateway } from "../supervision/support.ts"
import { CLUSTER_SECRET, poll, startPostgres } from "./support/cluster.ts"
import type { TestPostgres } from "./support/cluster.ts"

let postgres: TestPostgres
let app: FakeApp
let gateway: SupervisedGateway

const readiness = () => fetch(`${gateway.url}/health/ready`).then((response) => response.status)

beforeAll(async () => {
  postgres = await startPostgres()
  app = await startFakeApp()
  gateway = await startSupervisedGateway(inProcessConfig({
    nodeName: "solo",
    apps: [makeAppConfig({ id: "chat", api: app.url })],
    databaseUrl: Redacted.make(postgres.url),
    cluster: { host: "127.0.0.1", port: await freePort(), secret: CLUSTER_SECRET }
  }))
  await poll("the node is ready", async () => (await readiness()) === 200 ? true : undefined, { timeoutMs: 20_000 })
}, 60_000)

afterAll(async () => {
  await gateway?.close()
  await app?.close()
  await postgres?.stop()
}, 60_000)

describe("supervised children of a clustered node", () => {
  it("include the cluster's own loops", () => {
    const running = gateway.supervisor.children().filter((child) => child.running > 0).map((child) => child.name)
    expect(running).toEqual(expect.arrayContaining([
      SupervisedChild.liveNodeRefresh,
      SupervisedChild.shardAdvertising,
      SupervisedChild.runtimeAppsSync,
      SupervisedChild.clientReattach,
      SupervisedChild.presenceResync
    ]))
  })

  it.each([
    SupervisedChild.liveNodeRefresh,
    SupervisedChild.shardAdvertising,
    SupervisedChild.runtimeAppsSync,
    SupervisedChild.clientReattach
  ])("%s comes back after a defect, and the node stays ready", async (name) => {
    expect(await injectAndAwaitRestart(gateway, name)).toBe(1)
    expect(await readiness()).toBe(200)
  })
})
