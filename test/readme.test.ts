/**
 * The README's promise to a newcomer: `npm start` serves the demo app and is
 * ready within 10 s, and the "first connection" snippet, run as written (only
 * the port differs), connects, joins and gets its answers; the SDK and test-kit
 * snippets run as written too.
 */
import { execFile, spawn } from "node:child_process"
import type { ChildProcess } from "node:child_process"
import { readFileSync, rmSync, writeFileSync } from "node:fs"
import { promisify } from "node:util"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { connectSocket, nextMessage, push, startTestGateway } from "../src/testing/index.ts"
import type { TestGateway } from "../src/testing/index.ts"
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

describe("the README's SDK snippets, run as written", () => {
  const readme = () => readFileSync(`${root}README.md`, "utf8")
  const snippet = (marker: string): string => {
    const code = new RegExp(`<!-- ${marker} -->\\s*\`\`\`ts\\n([\\s\\S]*?)\`\`\``).exec(readme())?.[1]
    if (code === undefined) throw new Error(`no ${marker} snippet in the README`)
    return code
  }
  /** A snippet as a module inside this package, so that `realtime-gateway/app` resolves to its sources. */
  const snippetFile = (marker: string, code: string) => {
    const file = `${root}.readme-${marker}.ts`
    writeFileSync(file, code)
    files.push(file)
    return file
  }
  const files: Array<string> = []
  const nodeArgs = (file: string) => ["--conditions=realtime-gateway-source", file]
  const secret = "a-readme-secret-that-is-32-bytes-long"
  let app: ChildProcess | undefined
  let testGateway: TestGateway | undefined

  afterAll(async () => {
    app?.kill()
    await testGateway?.close()
    for (const file of files) rmSync(file, { force: true })
  })

  it("the test-kit snippet starts a gateway and a fake app, pushes and refutes", async () => {
    const file = snippetFile("kit-test", snippet("kit-test"))
    const { stdout } = await promisify(execFile)(process.execPath, nodeArgs(file), { cwd: root, timeout: 30_000 })
    expect(stdout).toContain("{ status: 'ok', response: { hi: 1 } }")
  })

  it("the app snippet serves a typed app that a gateway uses, and the server-API snippet broadcasts to its clients", async () => {
    const appPort = await freePort()
    app = spawn(process.execPath, nodeArgs(snippetFile("sdk-app", snippet("sdk-app"))), {
      cwd: root,
      env: { ...process.env, PORT: String(appPort), APP_SECRET: secret },
      stdio: ["ignore", "pipe", "inherit"]
    })
    await new Promise<void>((resolve, reject) => {
      let output = ""
      app!.stdout!.on("data", (chunk: Buffer) => {
        output += chunk.toString("utf8")
        if (output.includes("app listening on")) resolve()
      })
      app!.once("exit", (code) => reject(new Error(`the app snippet exited with ${code}: ${output}`)))
    })
    testGateway = await startTestGateway({ apps: [{ id: "chat", api: `http://127.0.0.1:${appPort}`, secret }] })
    const ada = await connectSocket(testGateway.socketUrl, { app: "chat", token: "token-ada" })
    try {
      const { channel } = await ada.join("room:lobby")
      const said = nextMessage(channel, "said")
      expect(await push(channel, "say", { text: "hi" })).toEqual({ status: "ok", response: {} })
      expect(await said).toEqual({ from: "ada", text: "hi" })
      expect(await push(channel, "say", { text: 42 })).toMatchObject({ status: "error", response: { reason: "invalid_payload" } })

      const fromServer = nextMessage(channel, "said")
      const serverApi = snippetFile("sdk-server-api", snippet("sdk-server-api").replace("http://localhost:4000", testGateway.url))
      const { stdout } = await promisify(execFile)(process.execPath, nodeArgs(serverApi), {
        cwd: root,
        timeout: 30_000,
        env: { ...process.env, APP_SECRET: secret }
      })
      expect(stdout).toContain("delivered to 1 topic(s)")
      expect(await fromServer).toEqual({ from: "server", text: "hello" })
    } finally {
      await ada.close()
    }
  })
})
