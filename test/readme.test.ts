/**
 * The README's promise to a newcomer: `npm start` serves the demo app and is
 * ready within 10 s, and the "first connection" snippet, run as written (only
 * the port differs), connects, joins and gets its answers.
 */
import { execFile } from "node:child_process"
import { readFileSync, rmSync, writeFileSync } from "node:fs"
import { promisify } from "node:util"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { freePort, startGatewayProcess } from "./support/processes.ts"
import type { GatewayProcess } from "./support/processes.ts"

const root = new URL("..", import.meta.url).pathname
let gateway: GatewayProcess
let port: number

beforeAll(async () => {
  port = await freePort()
  const started = performance.now()
  gateway = startGatewayProcess({ PORT: String(port), DEMO_APP_PORT: String(await freePort()), LOG_LEVEL: "info" })
  await gateway.waitForLine("listening on", 10_000)
  expect(performance.now() - started).toBeLessThan(10_000)
})
afterAll(async () => {
  await gateway?.stop()
})

describe("npm start", () => {
  it("says it serves the demo app and where to connect", () => {
    expect(gateway.output()).toContain("no app configured: serving the bundled demo app")
    expect(gateway.output()).toContain("/socket/websocket?app=demo&token=demo-alice")
  })

  it("is ready once listening", async () => {
    const ready = await fetch(`http://127.0.0.1:${port}/health/ready`)
    expect(ready.status).toBe(200)
  })

  it("the README snippet connects to the demo app and joins a demo topic", async () => {
    const readme = readFileSync(`${root}README.md`, "utf8")
    const snippet = /<!-- first-connection -->\s*```js\n([\s\S]*?)```/.exec(readme)?.[1]
    expect(snippet).toBeDefined()
    const file = `${root}.first-connection.test.mjs`
    writeFileSync(file, snippet!.replace("localhost:4000", `127.0.0.1:${port}`))
    try {
      const { stdout } = await promisify(execFile)(process.execPath, [file], { cwd: root, timeout: 10_000 })
      expect(stdout).toContain("joined room:lobby")
      expect(stdout).toContain("shout: { from: 'alice', body: 'hello, room' }")
      expect(stdout).toContain("echo: { body: 'hello' }")
    } finally {
      rmSync(file, { force: true })
    }
  })
})
