/**
 * `npm run cluster:local` (`cluster/local.ts`): its command line, and one real
 * run with two nodes: both ready and printed, a demo client on each node (a
 * shout on one reaches the other), the printed server API call works, and
 * SIGINT stops everything and removes PostgreSQL's temporary directory.
 */
import { spawn } from "node:child_process"
import { existsSync } from "node:fs"
import { afterAll, describe, expect, it, onTestFailed } from "vitest"
import { DEFAULT_LAUNCHER_OPTIONS, parseLauncherArgs } from "../../cluster/local.ts"
import { freePortRange, portIsFree } from "../../cluster/ports.ts"
import { connectSocket, push } from "../../src/testing/index.ts"
import type { ConnectedSocket } from "../../src/testing/index.ts"
import { inbox, poll, within } from "./support/cluster.ts"

describe("command line", () => {
  it("defaults to four nodes on 4000-4003 and cluster ports 34431-34434", () => {
    expect(parseLauncherArgs([])).toEqual({ nodes: 4, basePort: 4000, clusterBasePort: 34431 })
    expect(DEFAULT_LAUNCHER_OPTIONS).toEqual(parseLauncherArgs([]))
  })

  it("takes --nodes, --base-port and --cluster-base-port, as `--flag value` or `--flag=value`", () => {
    expect(parseLauncherArgs(["--nodes", "2", "--base-port=5000", "--cluster-base-port", "36000"])).toEqual({
      nodes: 2,
      basePort: 5000,
      clusterBasePort: 36000
    })
  })

  it("refuses unknown flags, non-numbers and overlapping port ranges", () => {
    expect(() => parseLauncherArgs(["--node", "2"])).toThrow(/unknown argument "--node"/)
    expect(() => parseLauncherArgs(["--nodes"])).toThrow(/--nodes needs a positive integer/)
    expect(() => parseLauncherArgs(["--nodes", "two"])).toThrow(/--nodes needs a positive integer/)
    expect(() => parseLauncherArgs(["--base-port", "65535"])).toThrow(/above 65535/)
    expect(() => parseLauncherArgs(["--base-port", "34430"])).toThrow(/overlap/)
  })
})

describe("a run with two nodes", () => {
  const sockets: Array<ConnectedSocket> = []
  let stopLauncher: () => Promise<unknown> = async () => {}
  afterAll(async () => {
    await Promise.all(sockets.map((socket) => socket.close()))
    await stopLauncher()
  }, 60_000)

  it("starts PostgreSQL, the demo app and the nodes, prints their URLs, and stops everything on SIGINT", async () => {
    const basePort = await freePortRange(2)
    let clusterBasePort = await freePortRange(2)
    while (Math.abs(clusterBasePort - basePort) < 2) clusterBasePort = await freePortRange(2)

    const child = spawn(process.execPath, [
      "cluster/local.ts", "--nodes", "2", "--base-port", String(basePort), "--cluster-base-port", String(clusterBasePort)
    ], {
      cwd: new URL("../..", import.meta.url).pathname,
      env: { ...process.env, DATABASE_URL: "", NO_COLOR: "1", LOG_FORMAT: "json" },
      stdio: ["ignore", "pipe", "pipe"]
    })
    const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)))
    // after a failure: the launcher still stops its nodes and PostgreSQL
    stopLauncher = () => {
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGINT")
      return within(exited, 45_000, "the launcher exiting after SIGINT")
    }
    let output = ""
    onTestFailed(() => console.log(`launcher output:\n${output}`))
    const waiters = new Set<() => void>()
    const onData = (chunk: Buffer) => {
      output += chunk.toString("utf8")
      for (const wake of waiters) wake()
    }
    child.stdout.on("data", onData)
    child.stderr.on("data", onData)
    const waitForOutput = (pattern: RegExp, timeoutMs: number) => {
      let wake: () => void = () => {}
      return within(
        new Promise<RegExpExecArray>((resolve) => {
          wake = () => {
            const match = pattern.exec(output)
            if (match !== null) resolve(match)
          }
          waiters.add(wake)
          wake()
        }),
        timeoutMs,
        `output matching ${pattern}; output so far:\n${output}`
      ).finally(() => waiters.delete(wake))
    }

    await waitForOutput(/2 node\(s\) ready:[^]*stop everything: Ctrl-C/, 60_000)
    expect(output).toContain("checking that they form one cluster")
    expect(output).not.toContain("do not form one cluster")
    const dataDir = (await waitForOutput(/data in (\S+)/, 1_000))[1]!
    expect(existsSync(dataDir)).toBe(true)
    for (const [i, port] of [basePort, basePort + 1].entries()) {
      expect(output).toContain(
        `node-${i + 1}   http://127.0.0.1:${port}  ws://127.0.0.1:${port}/socket/websocket?app=demo&token=demo-alice&vsn=2.0.0`
      )
      expect(output).toContain(`(cluster port ${clusterBasePort + i}, pid `)
      expect((await fetch(`http://127.0.0.1:${port}/health/ready`)).status).toBe(200)
    }
    // node log lines carry their node's prefix
    expect(output).toMatch(/^node-1 +\| .*listening on http:\/\/127\.0\.0\.1:/m)
    expect(output).toMatch(/^node-2 +\| .*listening on http:\/\/127\.0\.0\.1:/m)

    // one demo app behind both nodes: a shout through node-2 reaches a client on node-1
    const alice = await connectSocket(`ws://127.0.0.1:${basePort}/socket`, { app: "demo", token: "demo-alice" })
    sockets.push(alice)
    const bob = await connectSocket(`ws://127.0.0.1:${basePort + 1}/socket`, { app: "demo", token: "demo-bob" })
    sockets.push(bob)
    const aliceIn = await alice.join("room:lobby")
    const bobIn = await bob.join("room:lobby")
    expect([aliceIn.status, bobIn.status]).toEqual(["ok", "ok"])
    // (shouting again until heard, bounded; the count is printed)
    const heard = inbox<{ from: string; body: string }>(aliceIn.channel, "shout")
    let shouts = 0
    await poll("a shout through node-2 reaching node-1", async () => {
      expect((await push(bobIn.channel, "shout", { body: `across nodes ${++shouts}` })).status).toBe("ok")
      return heard.waitFor((item) => item.from === "bob", 500).catch(() => undefined)
    }, { timeoutMs: 15_000, intervalMs: 0 })
    console.log(`shouts until heard across nodes: ${shouts}`)

    // the printed server API call works (a broadcast through node-1 reaches bob on node-2)
    const secret = (await waitForOutput(/authorization: Bearer ([0-9a-f]+)/, 1_000))[1]!
    const bobHeard = inbox<{ body: string }>(bobIn.channel, "shout")
    let broadcasts = 0
    await poll("a server API broadcast through node-1 reaching node-2", async () => {
      const published = await fetch(`http://127.0.0.1:${basePort}/api/apps/demo/broadcast`, {
        method: "POST",
        headers: { authorization: `Bearer ${secret}`, "content-type": "application/json" },
        body: JSON.stringify({ topic: "room:lobby", event: "shout", payload: { body: `from the API ${++broadcasts}` } })
      })
      expect(published.status).toBe(202)
      return bobHeard.waitFor((item) => item.body.startsWith("from the API"), 1_000).catch(() => undefined)
    }, { timeoutMs: 15_000, intervalMs: 0 })
    console.log(`server API broadcasts until heard across nodes: ${broadcasts}`)

    await Promise.all(sockets.splice(0).map((socket) => socket.close()))
    child.kill("SIGINT")
    expect(await within(exited, 45_000, "the launcher exiting after SIGINT")).toBe(0)
    expect(output).toMatch(/node-1 exited \(code 0\)/)
    expect(output).toMatch(/node-2 exited \(code 0\)/)
    expect(existsSync(dataDir)).toBe(false)
    for (const port of [basePort, basePort + 1, clusterBasePort, clusterBasePort + 1]) {
      expect(await portIsFree(port)).toBe(true)
    }
  }, 120_000)
})
