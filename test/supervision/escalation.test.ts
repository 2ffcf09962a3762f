/**
 * Escalation in a real process (CONTRACT §7): a loop that keeps dying is
 * restarted and logged each time; past the restart intensity readiness turns
 * 503 naming it, then the process drains and exits non-zero, so that the
 * service manager restarts it.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { startFakeApp } from "../../src/testing/index.ts"
import type { FakeApp } from "../../src/testing/index.ts"
import { freePort, startGatewayProcess } from "../support/processes.ts"
import type { GatewayProcess } from "../support/processes.ts"

let app: FakeApp
let gateway: GatewayProcess
let port: number

beforeAll(async () => {
  app = await startFakeApp()
  port = await freePort()
  gateway = startGatewayProcess({
    PORT: String(port),
    HOST: "127.0.0.1",
    NODE_NAME: "failing",
    GATEWAY_APPS: "chat",
    CHAT_API: app.url,
    LOG_LEVEL: "info",
    SUPERVISOR_MAX_RESTARTS: "3",
    SUPERVISOR_PERIOD_MS: "60000",
    DRAIN_WINDOW_MS: "500"
  }, { script: "test/supervision/fixtures/failing-gateway.ts" })
})

afterAll(async () => {
  await gateway?.stop()
  await app?.close()
})

/** Polls readiness until it answers 503 (the window lasts the escalation grace plus the drain). */
const awaitNotReady = async (): Promise<{ status: number; body: { reasons: Array<string> } }> => {
  const deadline = Date.now() + 15_000
  for (;;) {
    const answer = await fetch(`http://127.0.0.1:${port}/health/ready`).then(
      async (response) => ({ status: response.status, body: await response.json() as { reasons: Array<string> } }),
      () => undefined
    )
    if (answer?.status === 503) return answer
    if (Date.now() > deadline || gateway.child.exitCode !== null) throw new Error(`readiness never turned 503:\n${gateway.output()}`)
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
}

describe("a loop that keeps dying", () => {
  it("is restarted and logged with its name and cause, then readiness turns 503 naming it, then the process exits non-zero", async () => {
    const notReady = await awaitNotReady()
    expect(notReady.body.reasons).toContainEqual(expect.stringContaining(`supervised child "idle sweep" failing: 4 restarts`))
    const { code } = await gateway.exited
    expect(code).not.toBe(0)
    expect(code).not.toBeNull()
    const lines = gateway.output().split("\n").filter((line) => line.startsWith("{")).map((line) => JSON.parse(line))
    const restarts = lines.filter((line) => line.supervised_child === "idle sweep" && line.level === "error")
    expect(restarts.length).toBeGreaterThanOrEqual(4)
    expect(restarts[0].msg).toContain(`supervised child "idle sweep" failed; restarting in 100 ms`)
    expect(restarts[0].msg).toContain("the idle sweep hit a bug")
    expect(lines.some((line) => line.msg.includes("restart intensity exceeded; shutting down"))).toBe(true)
    // it shut down as on SIGTERM: the drain ran before the exit
    expect(lines.some((line) => line.msg.includes("drained; shutting down"))).toBe(true)
  }, 30_000)
})
