/**
 * `npm run cluster:local`: a whole gateway cluster on this machine, to try
 * cluster behaviour by hand (a client on one node, a broadcast through
 * another, a node killed in the middle).
 *
 * It starts PostgreSQL (embedded, in a temporary directory, on a free port;
 * or the server named by `DATABASE_URL`), the bundled demo app once, and N
 * gateway nodes on 127.0.0.1 that all use that demo app; waits until every node
 * is ready and they form one cluster (a broadcast through each node reaches a
 * client on every node); prints each node's URLs; and shows every node's log
 * lines prefixed with its name. On Ctrl-C (SIGINT) or SIGTERM it stops the nodes (SIGTERM,
 * SIGKILL after 35 s), then the demo app and PostgreSQL, and removes the
 * temporary directory. A second Ctrl-C kills the nodes at once.
 *
 *   scripts/node.sh cluster/local.ts [--nodes 4] [--base-port 4000] [--cluster-base-port 34431]
 *
 * Node i (from 1) listens on HTTP port base-port + i - 1 and cluster port
 * cluster-base-port + i - 1. `LOG_LEVEL` and `LOG_FORMAT` are passed on to the
 * nodes (`LOG_FORMAT` defaults to `pretty` here).
 */
import { spawn } from "node:child_process"
import type { ChildProcess } from "node:child_process"
import { randomBytes } from "node:crypto"
import { createInterface } from "node:readline"
import { fileURLToPath } from "node:url"
import { styleText } from "node:util"
import { startDemoApp } from "../examples/demo/app.ts"
import type { Served as DemoApp } from "../src/sdk/index.ts"
import { checkFormation } from "./formation.ts"
import { portIsFree } from "./ports.ts"
import { startPostgres } from "./postgres.ts"
import type { PostgresServer } from "./postgres.ts"

export interface LauncherOptions {
  readonly nodes: number
  readonly basePort: number
  readonly clusterBasePort: number
}

export const DEFAULT_LAUNCHER_OPTIONS: LauncherOptions = { nodes: 4, basePort: 4000, clusterBasePort: 34431 }

const USAGE = "usage: cluster/local.ts [--nodes N] [--base-port P] [--cluster-base-port C]"

/** Parses the command line (`--flag value` or `--flag=value`); throws with a usage line on anything else. */
export const parseLauncherArgs = (argv: ReadonlyArray<string>): LauncherOptions => {
  const flags: Record<string, keyof LauncherOptions> = {
    "--nodes": "nodes",
    "--base-port": "basePort",
    "--cluster-base-port": "clusterBasePort"
  }
  const options: { -readonly [K in keyof LauncherOptions]: LauncherOptions[K] } = { ...DEFAULT_LAUNCHER_OPTIONS }
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!
    const [flag, inline] = arg.includes("=") ? [arg.slice(0, arg.indexOf("=")), arg.slice(arg.indexOf("=") + 1)] : [arg, undefined]
    const key = flags[flag]
    if (key === undefined) throw new Error(`unknown argument ${JSON.stringify(arg)}\n${USAGE}`)
    const raw = inline ?? argv[++i]
    const value = Number(raw)
    if (raw === undefined || raw === "" || !Number.isInteger(value) || value < 1) {
      throw new Error(`${flag} needs a positive integer, got ${JSON.stringify(raw ?? "")}\n${USAGE}`)
    }
    options[key] = value
  }
  if (options.basePort + options.nodes - 1 > 65535 || options.clusterBasePort + options.nodes - 1 > 65535) {
    throw new Error(`ports above 65535 with ${options.nodes} nodes\n${USAGE}`)
  }
  const httpPorts = new Set(Array.from({ length: options.nodes }, (_, i) => options.basePort + i))
  if (Array.from({ length: options.nodes }, (_, i) => options.clusterBasePort + i).some((port) => httpPorts.has(port))) {
    throw new Error(`HTTP and cluster port ranges overlap\n${USAGE}`)
  }
  return options
}

const ROOT = fileURLToPath(new URL("..", import.meta.url))
const STOP_GRACE_MS = 35_000
const READY_TIMEOUT_MS = 60_000

const COLORS = ["cyan", "magenta", "yellow", "green", "blue", "red"] as const

interface Node {
  readonly name: string
  readonly port: number
  readonly clusterPort: number
  readonly child: ChildProcess
  readonly exited: Promise<void>
  /** Resolves at the node's `listening on http://...` log line. */
  readonly listening: Promise<void>
  stopping: boolean
}

const say = (line: string) => process.stdout.write(`${styleText("bold", "cluster")} | ${line}\n`)

const main = async (options: LauncherOptions): Promise<void> => {
  const names = Array.from({ length: options.nodes }, (_, i) => `node-${i + 1}`)
  const width = Math.max("cluster".length, ...names.map((name) => name.length))
  const plan = names.map((name, i) => ({ name, port: options.basePort + i, clusterPort: options.clusterBasePort + i }))

  const taken: Array<number> = []
  for (const { port, clusterPort } of plan) {
    for (const candidate of [port, clusterPort]) if (!(await portIsFree(candidate))) taken.push(candidate)
  }
  if (taken.length > 0) {
    throw new Error(`port(s) ${taken.join(", ")} on 127.0.0.1 are in use; pick others with --base-port / --cluster-base-port`)
  }

  let postgres: PostgresServer | undefined
  let demo: DemoApp | undefined
  const nodes: Array<Node> = []
  let shuttingDown: Promise<void> | undefined

  const killNow = () => {
    for (const node of nodes) if (node.child.exitCode === null && node.child.signalCode === null) node.child.kill("SIGKILL")
  }
  const killEverything = () => {
    killNow()
    postgres?.interrupt()
  }
  // Last resort when this process ends some other way: no node outlives it.
  process.on("exit", killEverything)
  // A closed terminal or pipe must not cut the shutdown short.
  process.stdout.on("error", () => {})
  process.stderr.on("error", () => {})

  const shutdown = (why: string): Promise<void> => {
    shuttingDown ??= (async () => {
      const running = nodes.filter((node) => node.child.exitCode === null && node.child.signalCode === null).length
      say(`${why}: stopping ${running} node(s) (SIGTERM, SIGKILL after ${STOP_GRACE_MS / 1000} s)`)
      await Promise.all(nodes.map(async (node) => {
        if (node.child.exitCode !== null || node.child.signalCode !== null) return
        node.stopping = true
        node.child.kill("SIGTERM")
        const timer = setTimeout(() => {
          say(`${node.name} still running after ${STOP_GRACE_MS / 1000} s: SIGKILL`)
          node.child.kill("SIGKILL")
        }, STOP_GRACE_MS)
        await node.exited
        clearTimeout(timer)
      }))
      await demo?.close()
      if (postgres !== undefined) {
        say("stopping PostgreSQL and removing its data directory")
        await postgres.stop()
      }
      say("stopped")
    })()
    return shuttingDown
  }

  let probeLog: ((line: string) => void) | undefined
  let signals = 0
  const onSignal = (signal: NodeJS.Signals) => {
    signals += 1
    if (signals > 1) {
      say(`${signal} again: killing the nodes now`)
      killNow()
      return
    }
    void shutdown(signal).then(() => process.exit(0), (error: unknown) => {
      process.stderr.write(`${String(error)}\n`)
      process.exit(1)
    })
  }
  process.on("SIGINT", onSignal)
  process.on("SIGTERM", onSignal)

  try {
    let databaseUrl = process.env["DATABASE_URL"]
    if (databaseUrl === undefined || databaseUrl === "") {
      say("starting PostgreSQL (embedded)")
      // Its own process group: a Ctrl-C in the terminal must not stop it before the nodes have drained.
      postgres = await startPostgres({ detached: true })
      databaseUrl = await postgres.createDatabase("gateway")
      say(`PostgreSQL on 127.0.0.1:${postgres.port}, data in ${postgres.dir}`)
    } else {
      say("using the PostgreSQL server of DATABASE_URL")
    }
    if (shuttingDown !== undefined) return

    const secret = randomBytes(16).toString("hex")
    const demoPrefix = `${styleText("gray", "demo".padEnd(width))} | `
    demo = await startDemoApp({
      port: 0,
      host: "127.0.0.1",
      secret,
      log: (line) => {
        // The formation check's own clients are not shown.
        if (probeLog === undefined) process.stdout.write(`${demoPrefix}${line}\n`)
        else probeLog(line)
      }
    })
    say(`demo app on ${demo.url}`)

    const env: Record<string, string> = {
      ...process.env as Record<string, string>,
      HOST: "127.0.0.1",
      CLUSTER_HOST: "127.0.0.1",
      CLUSTER_SECRET: process.env["CLUSTER_SECRET"] ?? randomBytes(48).toString("base64"),
      DATABASE_URL: databaseUrl,
      GATEWAY_APPS: "demo",
      DEMO_API: demo.url,
      DEMO_SECRET: secret,
      LOG_FORMAT: process.env["LOG_FORMAT"] ?? "pretty"
    }
    delete env["GATEWAY_CONFIG"]

    for (const [i, { name, port, clusterPort }] of plan.entries()) {
      if (shuttingDown !== undefined) return
      const child = spawn(process.execPath, ["src/main.ts"], {
        cwd: ROOT,
        env: { ...env, NODE_NAME: name, PORT: String(port), CLUSTER_PORT: String(clusterPort) },
        stdio: ["ignore", "pipe", "pipe"],
        // Signals come from this launcher only, never straight from the terminal.
        detached: true
      })
      const prefix = `${styleText(COLORS[i % COLORS.length]!, name.padEnd(width))} | `
      let onListening: () => void = () => {}
      const node: Node = {
        name,
        port,
        clusterPort,
        child,
        exited: new Promise((resolve) => child.once("exit", () => resolve())),
        listening: new Promise((resolve) => {
          onListening = resolve
        }),
        stopping: false
      }
      for (const stream of [child.stdout!, child.stderr!]) {
        createInterface({ input: stream, crlfDelay: Infinity }).on("line", (line) => {
          process.stdout.write(`${prefix}${line}\n`)
          if (line.includes("listening on http://")) onListening()
        })
      }
      child.once("exit", (code, signal) => {
        const how = signal === null ? `code ${code}` : `signal ${signal}`
        if (node.stopping) say(`${name} exited (${how})`)
        else say(styleText("red", `${name} exited unexpectedly (${how}); the other nodes keep running`))
      })
      nodes.push(node)
    }

    await Promise.all(nodes.map((node) => waitUntilReady(node)))
    if (shuttingDown !== undefined) return
    say("every node is ready; checking that they form one cluster")
    const formed = await checkLocalFormation(nodes.map((node) => node.port), secret, (log) => {
      probeLog = log
    })
    probeLog = undefined
    if (shuttingDown !== undefined) return
    if (formed !== undefined) say(styleText("red", `the nodes do not form one cluster yet: ${formed}`))

    const lines = [
      `${nodes.length} node(s) ready:`,
      ...nodes.map((node) =>
        `  ${node.name.padEnd(width)}  http://127.0.0.1:${node.port}  ` +
        `ws://127.0.0.1:${node.port}/socket/websocket?app=demo&token=demo-alice&vsn=2.0.0  ` +
        `(cluster port ${node.clusterPort}, pid ${node.child.pid})`
      ),
      `demo tokens: demo-alice, demo-bob; channels room:{name} (with presence), user:{user_id}`,
      `broadcast through any node's server API:`,
      `  curl -X POST http://127.0.0.1:${nodes[0]!.port}/api/apps/demo/broadcast -H 'authorization: Bearer ${secret}' ` +
        `-H 'content-type: application/json' -d '{"topic":"room:lobby","event":"shout","payload":{"body":"hi"}}'`,
      `kill a node to see failover: kill -9 <pid>; stop everything: Ctrl-C`
    ]
    for (const line of lines) say(line)
    // From here on the nodes' pipes keep this process running until a signal ends it.
  } catch (error) {
    const byUser = shuttingDown !== undefined
    await shutdown("start failed")
    // A Ctrl-C during the start stops the nodes too; that is not an error.
    if (!byUser) throw error
  }
}

const PROBE_TOPIC = "room:cluster-probe"

/**
 * `checkFormation` with the demo app's probe clients; `setDemoLog` receives a
 * sink for the demo app's log lines while they are connected, so that their
 * lines are not shown (their "connection:closed" included).
 */
const checkLocalFormation = async (
  ports: ReadonlyArray<number>,
  secret: string,
  setDemoLog: (sink: (line: string) => void) => void
): Promise<string | undefined> => {
  let closedProbes = 0
  let allClosed: () => void = () => {}
  const probesClosed = new Promise<void>((resolve) => {
    allClosed = resolve
  })
  setDemoLog((line) => {
    if (line.startsWith("connection:closed") && ++closedProbes === ports.length) allClosed()
  })
  const failure = await checkFormation({
    ports,
    app: "demo",
    secret,
    token: () => "demo-alice",
    topic: PROBE_TOPIC
  })
  let timer: NodeJS.Timeout | undefined
  await Promise.race([probesClosed, new Promise((resolve) => timer = setTimeout(resolve, 2_000))])
  clearTimeout(timer)
  return failure
}

/**
 * Waits for the node's listener line, then polls `/health/ready` until 200 (no
 * event tells when it turns ready); fails when the node exits first or after
 * 60 s.
 */
const waitUntilReady = async (node: Node): Promise<void> => {
  const deadline = Date.now() + READY_TIMEOUT_MS
  let gone: string | undefined
  let timer: NodeJS.Timeout | undefined
  const stop = new Promise<never>((_, reject) => {
    void node.exited.then(() => reject(new Error(gone = `${node.name} exited before it was ready`)))
    timer = setTimeout(() => reject(new Error(gone = `${node.name}: not ready within ${READY_TIMEOUT_MS / 1000} s`)), READY_TIMEOUT_MS)
  })
  stop.catch(() => {})
  const readyUrl = `http://127.0.0.1:${node.port}/health/ready`
  const ready = (async () => {
    await node.listening
    while (gone === undefined && Date.now() < deadline) {
      const status = await fetch(readyUrl, { signal: AbortSignal.timeout(2_000) }).then((r) => r.status, () => 0)
      if (status === 200) return true
      await new Promise((resolve) => setTimeout(resolve, 200))
    }
    return false
  })()
  try {
    if (!(await Promise.race([ready, stop]))) throw new Error(gone ?? `${node.name}: not ready within ${READY_TIMEOUT_MS / 1000} s`)
  } finally {
    clearTimeout(timer)
  }
}

if (import.meta.main) {
  let options: LauncherOptions
  try {
    options = parseLauncherArgs(process.argv.slice(2))
  } catch (error) {
    process.stderr.write(`${error instanceof Error ? error.message : String(error)}\n`)
    process.exit(64)
  }
  main(options).catch((error: unknown) => {
    process.stderr.write(`cluster/local.ts: ${error instanceof Error ? error.message : String(error)}\n`)
    process.exit(1)
  })
}
