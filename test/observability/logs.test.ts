/**
 * Logs an operator can act on (CONTRACT §8), read from a real gateway
 * process: every line is one JSON object; a line per connection opened and
 * closed (duration, code, reason, who closed it), per refused upgrade
 * (reason) and per undecodable frame (what it was), one per schema change, with the contract's fields; a flood of
 * refusals is sampled with a count of what was left out; and across the whole
 * run, not one line carries a token, an app secret or the admin token.
 */
import { afterAll, beforeAll, expect, it } from "vitest"
import { rawSocket, startFakeApp, upgradeRejection } from "../../src/testing/index.ts"
import type { FakeApp, SchemaDocument } from "../../src/testing/index.ts"
import { freePort, startGatewayProcess } from "../support/processes.ts"

const TOKEN = "client-token-4c7e2a9f1b6d3e8a"
const WRONG_TOKEN = "wrong-token-8f1e3b7a2c9d4e6f"
const APP_SECRET = "app-secret-9a2f7c4e1b8d3f6a0e5c71d4b2"
const ADMIN_TOKEN = "admin-token-6b3e9d1f4a7c2e8b5d0f"
const FLOOD = 150

let app: FakeApp
beforeAll(async () => {
  app = await startFakeApp({
    secret: APP_SECRET,
    auth: { [TOKEN]: { client_id: "alice", client_type: "web" } }
  })
})
afterAll(async () => {
  await app.close()
})

type Line = Record<string, unknown>

it("writes actionable JSON lines, samples floods, and never a token or a secret", async () => {
  const port = await freePort()
  const gateway = startGatewayProcess({
    PORT: String(port),
    HOST: "127.0.0.1",
    NODE_NAME: "node-logs",
    GATEWAY_APPS: "chat",
    CHAT_API: app.url,
    CHAT_SECRET: APP_SECRET,
    GATEWAY_ADMIN_TOKEN: ADMIN_TOKEN,
    // everything the gateway can say
    LOG_LEVEL: "trace",
    LOG_FORMAT: "json"
  })
  const base = `ws://127.0.0.1:${port}/socket/websocket`
  try {
    await gateway.waitForLine("listening on")

    // a client that connects (token in the query), joins, pushes and leaves
    const client = await rawSocket(`${base}?app=chat&token=${TOKEN}&vsn=2.0.0&client_type=web`)
    client.send(["1", "1", "room:lobby", "phx_join", {}])
    await client.nextJson()
    client.send(["1", "2", "room:lobby", "echo", { hello: "world" }])
    await client.nextJson()
    await client.close(1000, "bye")
    // a client with the token in the sub-protocol, closed by the gateway for a bad frame
    const viaProtocol = await rawSocket(`${base}?app=chat&vsn=2.0.0`, [
      "phoenix",
      `base64url.bearer.phx.${Buffer.from(TOKEN).toString("base64url")}`
    ])
    viaProtocol.send("not a frame")
    expect((await viaProtocol.closed).code).toBe(1007)
    // a binary frame of a kind the protocol does not have
    const unknownKind = await rawSocket(`${base}?app=chat&token=${TOKEN}&vsn=2.0.0`)
    unknownKind.ws.send(Buffer.from([9, 0, 0, 0]))
    expect((await unknownKind.closed).code).toBe(1007)
    // a refused token
    expect((await upgradeRejection(`${base}?app=chat&token=${WRONG_TOKEN}&vsn=2.0.0`)).status).toBe(401)
    // the server API and the schema refresh, with the app's secret
    const api = (path: string, body?: unknown) =>
      fetch(`http://127.0.0.1:${port}/api/apps/chat${path}`, {
        method: "POST",
        headers: { authorization: `Bearer ${APP_SECRET}`, "content-type": "application/json" },
        body: JSON.stringify(body ?? {})
      })
    expect((await api("/broadcast", { topic: "room:lobby", event: "echo", payload: {} })).status).toBe(202)
    app.setSchema({ ...(app.schema as SchemaDocument), version: "logs-2" })
    expect((await api("/schema/refresh")).status).toBe(200)
    await gateway.waitForLine("schema changed")
    // the admin token, offered where it does not belong
    await fetch(`http://127.0.0.1:${port}/health`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } })
    // a flood of refusals
    await Promise.all(Array.from({ length: FLOOD }, () => upgradeRejection(`${base}?app=nope&token=${TOKEN}&vsn=2.0.0`)))
    await gateway.waitForLine("more \\\"upgrade refused: unknown_app\\\" lines left out")
  } finally {
    await gateway.stop()
  }

  const output = gateway.output()
  for (const secret of [TOKEN, WRONG_TOKEN, APP_SECRET, ADMIN_TOKEN, Buffer.from(TOKEN).toString("base64url")]) {
    expect(output).not.toContain(secret)
  }
  const lines: Array<Line> = output.split("\n").filter((line) => line !== "").map((line) => JSON.parse(line) as Line)
  expect(lines.every((line) => line.node === "node-logs" && typeof line.msg === "string")).toBe(true)
  const withMessage = (msg: string) => lines.filter((line) => line.msg === msg)

  const opened = withMessage("connection opened")
  expect(opened).toHaveLength(3)
  expect(opened[0]).toMatchObject({ app_id: "chat", client_id: "alice", client_type: "web", remote_ip: "127.0.0.1" })
  expect(opened[0]!.connection_id).toEqual(expect.any(String))

  const closed = withMessage("connection closed")
  expect(closed).toHaveLength(3)
  const byClient = closed.find((line) => line.closed_by === "client")!
  expect(byClient).toMatchObject({
    app_id: "chat",
    client_id: "alice",
    connection_id: opened[0]!.connection_id,
    close_code: 1000,
    close_reason: "bye"
  })
  expect(byClient.duration_ms).toEqual(expect.any(Number))
  expect(closed.find((line) => line.closed_by === "server")).toMatchObject({ close_code: 1007, close_reason: "invalid frame" })

  expect(withMessage("undecodable frame (a binary frame of kind 9); connection closed with 1007")).toEqual([
    expect.objectContaining({ app_id: "chat", client_id: "alice" })
  ])

  expect(withMessage("upgrade refused: unauthorized")).toEqual([
    expect.objectContaining({ reason: "unauthorized", status: 401, app_id: "chat", remote_ip: "127.0.0.1" })
  ])
  expect(withMessage("schema changed")).toEqual([
    expect.objectContaining({ app_id: "chat", schema_version: "logs-2", previous_schema_version: expect.any(String) })
  ])

  // the flood: some lines written, the rest counted, nothing lost
  const written = withMessage("upgrade refused: unknown_app")
  const suppressed = lines.filter((line) => line.suppressed_message === "upgrade refused: unknown_app")
  expect(written.length).toBeLessThan(FLOOD)
  expect(suppressed.length).toBeGreaterThanOrEqual(1)
  expect(written.length + suppressed.reduce((sum, line) => sum + (line.suppressed as number), 0)).toBe(FLOOD)
  // an app id a client made up is not logged
  expect(written.every((line) => !("app_id" in line))).toBe(true)
}, 60_000)
