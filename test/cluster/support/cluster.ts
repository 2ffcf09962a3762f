/**
 * Harness for the multi-process cluster tests: a PostgreSQL server per test
 * file (a fresh database per cluster), gateway clusters of real `src/main.ts`
 * processes on 127.0.0.1, the server API of any node, and clients that move to
 * another node when theirs goes away.
 *
 * Waiting is driven by events: a node is up when it logs its listener line,
 * then ready when `/health/ready` answers 200 (polled with bounded retries,
 * since no event announces readiness); a cluster has formed when a broadcast
 * made through each node reaches a client on every node and each node lists
 * the connections of all nodes.
 */
import { Presence, Socket } from "phoenix"
import type { Channel } from "phoenix"
import WebSocket from "ws"
import { freePort } from "../../../cluster/ports.ts"
import { createDatabase, startPostgres as startPostgresServer } from "../../../cluster/postgres.ts"
import { connectSocket, defaultTokens } from "../../../src/testing/index.ts"
import type { AuthHandler, ConnectedSocket, FakeApp } from "../../../src/testing/index.ts"
import { startGatewayProcess } from "../../support/processes.ts"
import type { GatewayProcess } from "../../support/processes.ts"


// ---------------------------------------------------------------------------
// Small utilities
// ---------------------------------------------------------------------------

export const delay = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms))

/** Rejects with `what did not happen within N ms` unless `promise` settles first. */
export const within = <A>(promise: Promise<A>, ms: number, what: string): Promise<A> => {
  let timer: NodeJS.Timeout | undefined
  return Promise.race([
    promise,
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what} did not happen within ${ms} ms`)), ms)
    })
  ]).finally(() => clearTimeout(timer))
}

/**
 * Retries `attempt` every `intervalMs` until it answers something other than
 * `undefined`; for conditions that no event announces. Bounded by `timeoutMs`.
 */
export const poll = async <A>(
  what: string,
  attempt: () => Promise<A | undefined>,
  { timeoutMs = 20_000, intervalMs = 100, giveUp }: {
    readonly timeoutMs?: number
    readonly intervalMs?: number
    /** Checked before each attempt: a reason to stop retrying at once. */
    readonly giveUp?: () => string | undefined
  } = {}
): Promise<A> => {
  const deadline = Date.now() + timeoutMs
  let lastError: unknown
  for (;;) {
    const reason = giveUp?.()
    if (reason !== undefined) throw new Error(`${what}: ${reason}`)
    try {
      const result = await attempt()
      if (result !== undefined) return result
    } catch (error) {
      lastError = error
    }
    if (Date.now() >= deadline) {
      const cause = lastError === undefined ? "" : ` (last error: ${String(lastError)})`
      throw new Error(`${what} did not happen within ${timeoutMs} ms${cause}`)
    }
    await delay(intervalMs)
  }
}

// ---------------------------------------------------------------------------
// PostgreSQL
// ---------------------------------------------------------------------------

export interface TestPostgres {
  /** A database created for the caller (one test file). */
  readonly url: string
  /** Another fresh database on the same server (one per cluster, so clusters never see each other's runners). */
  readonly createDatabase: () => Promise<string>
  readonly stop: () => Promise<void>
  /** The server's (postmaster's) process id; undefined for a server this harness did not start. */
  readonly pid: number | undefined
}

/**
 * An embedded PostgreSQL on a free port in a temporary directory, with a fresh
 * database. With `CLUSTER_TEST_DATABASE_URL` (a URL of an existing server's
 * maintenance database) the databases are created there instead and nothing
 * is started.
 */
export const startPostgres = async (): Promise<TestPostgres> => {
  const external = process.env["CLUSTER_TEST_DATABASE_URL"]
  if (external !== undefined && external !== "") {
    return {
      url: await createDatabase(external),
      createDatabase: () => createDatabase(external),
      stop: async () => {},
      pid: undefined
    }
  }
  let log = ""
  const server = await startPostgresServer({ onLog: (text) => void (log = (log + text).slice(-20_000)) })
  try {
    return {
      url: await server.createDatabase(),
      createDatabase: () => server.createDatabase(),
      stop: server.stop,
      pid: server.pid
    }
  } catch (error) {
    await server.stop()
    throw new Error(`${String(error)}\npostgres log:\n${log}`)
  }
}

// ---------------------------------------------------------------------------
// Apps and clients
// ---------------------------------------------------------------------------

/**
 * Auth for fake apps in cluster tests: `as:<client_id>` authenticates as that
 * client (permissions `user:<client_id>`), plus the fake app's default tokens.
 * Tests give each scenario its own client ids, so that a disconnect or a rate
 * limit in one cannot touch another.
 */
export const clientTokens: AuthHandler = (body) => {
  if (body.token.startsWith("as:")) {
    const clientId = body.token.slice("as:".length)
    return { client_id: clientId, client_type: "web", metadata: { name: clientId }, permissions: [`user:${clientId}`] }
  }
  const identity = defaultTokens[body.token]
  return identity !== undefined && "client_id" in identity ? identity : null
}

export const tokenFor = (clientId: string): string => `as:${clientId}`

export interface ReceivedBroadcast {
  readonly event: string
  readonly payload: unknown
}

/** Records every payload of `event` on a channel, with a way to wait for one matching a predicate. */
export interface Inbox<T> {
  readonly items: ReadonlyArray<T>
  waitFor(predicate: (item: T) => boolean, timeoutMs?: number, what?: string): Promise<T>
  stop(): void
}

export const inbox = <T = unknown>(channel: Channel, event: string): Inbox<T> => {
  const items: Array<T> = []
  const waiters = new Set<() => void>()
  const ref = channel.on(event, (payload: T) => {
    items.push(payload)
    for (const wake of waiters) wake()
  })
  return {
    items,
    waitFor: (predicate, timeoutMs = 5_000, what = `a matching "${event}" on ${channel.topic}`) => {
      let wake: () => void = () => {}
      const found = new Promise<T>((resolve) => {
        wake = () => {
          const item = items.find(predicate)
          if (item !== undefined) resolve(item)
        }
        waiters.add(wake)
        wake()
      })
      return within(found, timeoutMs, what).finally(() => waiters.delete(wake))
    },
    stop: () => channel.off(event, ref)
  }
}

/** A client that is connected and joined to one topic. */
export interface JoinedClient {
  readonly socket: ConnectedSocket
  readonly channel: Channel
  close(): Promise<void>
}

export const connectAndJoin = async (
  node: ClusterNode,
  app: string,
  clientId: string,
  topic: string
): Promise<JoinedClient> => {
  const socket = await connectSocket(node.socketUrl, { app, token: tokenFor(clientId), timeoutMs: 10_000 })
  const joined = await socket.join(topic, {}, { timeoutMs: 10_000 })
  if (joined.status !== "ok") {
    await socket.close()
    throw new Error(`join of ${topic} on ${node.name} refused: ${JSON.stringify(joined.response)}`)
  }
  return { socket, channel: joined.channel, close: () => socket.close() }
}

/** A phoenix `Presence` on a channel, created before the join so that it gets the initial `presence_state`. */
export interface PresenceWatch {
  readonly socket: ConnectedSocket
  readonly channel: Channel
  readonly presence: Presence
  /** Client ids present now. */
  keys(): ReadonlyArray<string>
  /** Resolves when the presence list satisfies `predicate` (checked after every sync). */
  until(predicate: (keys: ReadonlyArray<string>) => boolean, timeoutMs: number, what: string): Promise<number>
  close(): Promise<void>
}

export const watchPresence = async (
  node: ClusterNode,
  app: string,
  clientId: string,
  topic: string
): Promise<PresenceWatch> => {
  const socket = await connectSocket(node.socketUrl, { app, token: tokenFor(clientId), timeoutMs: 10_000 })
  const channel = socket.socket.channel(topic, {})
  const presence = new Presence(channel)
  const syncWaiters = new Set<() => void>()
  const keys = () => presence.list((key: string) => key)
  presence.onSync(() => {
    for (const wake of syncWaiters) wake()
  })
  await within(
    new Promise<void>((resolve, reject) => {
      channel.join(10_000)
        .receive("ok", () => resolve())
        .receive("error", (response: unknown) => reject(new Error(`join refused: ${JSON.stringify(response)}`)))
    }),
    12_000,
    `join of ${topic} on ${node.name}`
  )
  return {
    socket,
    channel,
    presence,
    keys,
    until: (predicate, timeoutMs, what) => {
      let wake: () => void = () => {}
      const reached = new Promise<number>((resolve) => {
        wake = () => {
          if (predicate(keys())) resolve(Date.now())
        }
        syncWaiters.add(wake)
        wake()
      })
      return within(reached, timeoutMs, what).finally(() => syncWaiters.delete(wake))
    },
    close: () => socket.close()
  }
}

/**
 * A phoenix client given several node URLs, as a client behind a load
 * balancer would be: every (re)connection goes to the next URL in the list, so
 * when its node closes the connection it reconnects to another node, and the
 * phoenix client rejoins its channels there on its own.
 */
export interface RoamingClient {
  readonly socket: Socket
  /** `host:port` of every connection attempt, in order. */
  readonly attempts: ReadonlyArray<string>
  /** Close code and `Date.now()` of every close of an open connection. */
  readonly closes: ReadonlyArray<{ readonly code: number; readonly at: number }>
  /** Joins `topic` (once); the returned promise resolves at the first successful join. */
  join(topic: string): Promise<Channel>
  /** Resolves once the channel has been joined `count` times in all (1 = the first join). */
  joined(count: number, timeoutMs: number): Promise<void>
  disconnect(): void
}

export const roamingClient = (urls: ReadonlyArray<string>, app: string, clientId: string): RoamingClient => {
  const hosts = urls.map((url) => new URL(url).host)
  const attempts: Array<string> = []
  const closes: Array<{ code: number; at: number }> = []
  let joins = 0
  const joinWaiters = new Set<() => void>()
  class RotatingTransport extends WebSocket {
    constructor(url: string, protocols?: string | Array<string>) {
      const target = new URL(url)
      target.host = hosts[attempts.length % hosts.length]!
      attempts.push(target.host)
      super(target.href, protocols)
    }
  }
  const socket = new Socket(urls[0]!, {
    params: { app, token: tokenFor(clientId) },
    transport: RotatingTransport,
    reconnectAfterMs: (tries: number) => [50, 100, 200, 500][tries - 1] ?? 1000,
    rejoinAfterMs: (tries: number) => [100, 200, 500][tries - 1] ?? 1000
  })
  socket.onClose((event: unknown) => {
    const code = typeof event === "object" && event !== null && "code" in event ? Number(event.code) : 1006
    closes.push({ code, at: Date.now() })
  })
  socket.connect()
  return {
    socket,
    attempts,
    closes,
    join: (topic) => {
      const channel = socket.channel(topic, {})
      return new Promise<Channel>((resolve, reject) => {
        // The join push's hooks fire again on every rejoin.
        channel.join(10_000)
          .receive("ok", () => {
            joins += 1
            for (const wake of joinWaiters) wake()
            resolve(channel)
          })
          .receive("error", (response: unknown) => reject(new Error(`join refused: ${JSON.stringify(response)}`)))
      })
    },
    joined: (count, timeoutMs) => {
      let wake: () => void = () => {}
      const reached = new Promise<void>((resolve) => {
        wake = () => {
          if (joins >= count) resolve()
        }
        joinWaiters.add(wake)
        wake()
      })
      return within(reached, timeoutMs, `join number ${count} of ${clientId} (got ${joins})`).finally(() =>
        joinWaiters.delete(wake)
      )
    },
    disconnect: () => socket.disconnect()
  }
}

// ---------------------------------------------------------------------------
// Nodes and clusters
// ---------------------------------------------------------------------------

export interface HttpAnswer {
  readonly status: number
  readonly body: any
}

export interface ServerApi {
  broadcast(body: unknown, timeoutMs?: number): Promise<HttpAnswer>
  connections(): Promise<HttpAnswer>
  disconnect(clientId: string): Promise<HttpAnswer>
  presence(topic: string): Promise<HttpAnswer>
}

export interface ClusterNode {
  readonly name: string
  readonly port: number
  readonly clusterPort: number
  /** `http://127.0.0.1:<port>` */
  readonly httpUrl: string
  /** `ws://127.0.0.1:<port>/socket`, as the phoenix client takes it. */
  readonly socketUrl: string
  readonly process: GatewayProcess
  /** Whether the process is still running. */
  alive(): boolean
  kill(signal?: NodeJS.Signals): void
  /** Resolves once the node listens and `/health/ready` answers 200; rejects if the process exits first. */
  ready(timeoutMs?: number): Promise<void>
  /** One `GET /health/ready`. */
  readiness(): Promise<HttpAnswer>
  /** The server API of `app` (default: the cluster's first app) through this node. */
  api(app?: string): ServerApi
}

export interface ClusterOptions {
  /** Default 4. */
  readonly nodes?: number
  /** The `chat` app's backend. */
  readonly fakeApp: FakeApp
  /** More apps by id, each with its own backend. */
  readonly apps?: Readonly<Record<string, FakeApp>>
  /** Where runners register; default: a fresh database on `postgres`. */
  readonly databaseUrl?: string
  readonly postgres?: TestPostgres
  /** Added to every node's environment (e.g. `DRAIN_WINDOW_MS`). */
  readonly env?: Readonly<Record<string, string>>
}

export interface Cluster {
  readonly nodes: ReadonlyArray<ClusterNode>
  readonly databaseUrl: string
  /** The server API secret of every app. */
  readonly secret: string
  node(name: string): ClusterNode
  /** The nodes whose process still runs. */
  live(): ReadonlyArray<ClusterNode>
  /**
   * Resolves once the live nodes form one cluster as clients see it (see the
   * file header); uses clients `probe-<node>` on `room:cluster-probe` of the
   * first app, closed again before it resolves.
   */
  converged(timeoutMs?: number): Promise<void>
  /** The last `lines` log lines of every node, for failure messages. */
  logs(lines?: number): string
  /** SIGTERM to every live node, SIGKILL after 35 s; resolves when all have exited. */
  stop(): Promise<void>
  /**
   * Stops the node (SIGTERM) and starts a new process under the same name and
   * ports, which takes its place in `nodes`; resolves with it once it is ready.
   */
  restart(name: string): Promise<ClusterNode>
  /**
   * Starts one more node with the cluster's environment (plus `env`), as a
   * node added to a running cluster; it joins `nodes` (and is stopped with
   * them) but is not awaited: call its `ready()`.
   */
  addNode(name: string, env?: Readonly<Record<string, string>>): Promise<ClusterNode>
}

export const SECRET = "cluster-test-secret-0123456789abcdef"
/** The nodes' shared secret (at least 32 bytes). */
export const CLUSTER_SECRET = "cluster-test-secret-shared-by-every-node"

const envName = (appId: string) => appId.toUpperCase().replaceAll("-", "_")

const answer = async (response: Response): Promise<HttpAnswer> => {
  const text = await response.text()
  let body: unknown = text
  try {
    body = JSON.parse(text)
  } catch {
    // not JSON: keep the text
  }
  return { status: response.status, body }
}

const makeApi = (httpUrl: string, app: string): ServerApi => {
  const call = (method: string, path: string, body?: unknown, timeoutMs = 10_000) =>
    fetch(`${httpUrl}/api/apps/${app}${path}`, {
      method,
      headers: { authorization: `Bearer ${SECRET}`, "content-type": "application/json" },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
      signal: AbortSignal.timeout(timeoutMs)
    }).then(answer)
  return {
    broadcast: (body, timeoutMs) => call("POST", "/broadcast", body, timeoutMs),
    connections: () => call("GET", "/connections"),
    disconnect: (clientId) => call("DELETE", `/clients/${encodeURIComponent(clientId)}`),
    presence: (topic) => call("GET", `/topics/${encodeURIComponent(topic)}/presence`)
  }
}

const startNode = (
  name: string,
  port: number,
  clusterPort: number,
  env: Readonly<Record<string, string>>,
  defaultApp: string
): ClusterNode => {
  const httpUrl = `http://127.0.0.1:${port}`
  const child = startGatewayProcess({ ...env, NODE_NAME: name, PORT: String(port), CLUSTER_PORT: String(clusterPort) })
  let exitStatus: { code: number | null; signal: NodeJS.Signals | null } | undefined
  void child.exited.then((status) => {
    exitStatus = status
  })
  const readiness = () => fetch(`${httpUrl}/health/ready`, { signal: AbortSignal.timeout(5_000) }).then(answer)
  const exitedEarly = child.exited.then((status) => {
    throw new Error(`${name} exited (code ${status.code}, signal ${status.signal}) before it was ready:\n${child.output()}`)
  })
  exitedEarly.catch(() => {})
  return {
    name,
    port,
    clusterPort,
    httpUrl,
    socketUrl: `ws://127.0.0.1:${port}/socket`,
    process: child,
    alive: () => exitStatus === undefined,
    kill: (signal = "SIGTERM") => {
      if (exitStatus === undefined) child.child.kill(signal)
    },
    readiness,
    ready: async (timeoutMs = 60_000) => {
      const deadline = Date.now() + timeoutMs
      const listening = child.waitForLine("listening on http://", timeoutMs)
      listening.catch(() => {})
      await Promise.race([listening, exitedEarly])
      const readyNow = poll(`readiness of ${name}`, async () => ((await readiness()).status === 200 ? true : undefined), {
        timeoutMs: Math.max(1, deadline - Date.now()),
        giveUp: () => (exitStatus === undefined ? undefined : "the process exited")
      })
      readyNow.catch(() => {})
      await Promise.race([readyNow, exitedEarly])
    },
    api: (app = defaultApp) => makeApi(httpUrl, app)
  }
}

/** Starts `nodes` gateway processes forming one cluster and waits until every one is ready. */
export const startCluster = async (options: ClusterOptions): Promise<Cluster> => {
  const count = options.nodes ?? 4
  const databaseUrl = options.databaseUrl ??
    (options.postgres !== undefined ? await options.postgres.createDatabase() : undefined)
  if (databaseUrl === undefined) throw new Error("startCluster needs a databaseUrl or a postgres")
  const apps: Record<string, FakeApp> = { chat: options.fakeApp, ...options.apps }
  const appIds = Object.keys(apps)
  const names = Array.from({ length: count }, (_, i) => `node-${i + 1}`)
  const env: Record<string, string> = {
    HOST: "127.0.0.1",
    CLUSTER_HOST: "127.0.0.1",
    CLUSTER_SECRET,
    DATABASE_URL: databaseUrl,
    GATEWAY_APPS: appIds.join(","),
    LOG_LEVEL: process.env["CLUSTER_TEST_LOG_LEVEL"] ?? "info",
    LOG_FORMAT: "json",
    // Stopping a cluster at the end of a test file need not take the production drain window.
    DRAIN_WINDOW_MS: "500",
    ...options.env
  }
  for (const id of appIds) {
    env[`${envName(id)}_API`] = apps[id]!.url
    env[`${envName(id)}_SECRET`] = SECRET
  }

  const nodes: Array<ClusterNode> = []
  for (const name of names) {
    nodes.push(startNode(name, await freePort(), await freePort(), env, appIds[0]!))
  }

  const logs = (lines = 40) =>
    nodes.map((node) => {
      const tail = node.process.output().trimEnd().split("\n").slice(-lines).join("\n")
      return `--- ${node.name} (${node.alive() ? "running" : "exited"}) ---\n${tail}`
    }).join("\n")

  const stop = async () => {
    await Promise.all(nodes.map(async (node) => {
      if (!node.alive()) return
      node.kill("SIGTERM")
      const timer = setTimeout(() => node.kill("SIGKILL"), 35_000)
      await node.process.exited
      clearTimeout(timer)
    }))
  }

  /**
   * Waits until node `index` is ready; when another process bound one of its
   * ports between the check and the node's own bind (EADDRINUSE), starts it
   * again on ports drawn afresh.
   */
  const readyOnFreePorts = async (index: number): Promise<void> => {
    for (let attempt = 1; ; attempt++) {
      const node = nodes[index]!
      try {
        return await node.ready()
      } catch (error) {
        if (attempt >= 3 || node.alive() || !node.process.output().includes("EADDRINUSE")) throw error
        nodes[index] = startNode(node.name, await freePort(), await freePort(), env, appIds[0]!)
      }
    }
  }

  const cluster: Cluster = {
    nodes,
    databaseUrl,
    secret: SECRET,
    node: (name) => {
      const node = nodes.find((candidate) => candidate.name === name)
      if (node === undefined) throw new Error(`no node ${name}`)
      return node
    },
    live: () => nodes.filter((node) => node.alive()),
    converged: (timeoutMs = 30_000) => converge(cluster, appIds[0]!, timeoutMs),
    logs,
    stop,
    restart: async (name) => {
      const index = nodes.findIndex((candidate) => candidate.name === name)
      const old = nodes[index]
      if (old === undefined) throw new Error(`no node ${name}`)
      await old.process.stop()
      const fresh = startNode(name, old.port, old.clusterPort, env, appIds[0]!)
      nodes[index] = fresh
      await fresh.ready()
      return fresh
    },
    addNode: async (name, extra = {}) => {
      const node = startNode(name, await freePort(), await freePort(), { ...env, ...extra }, appIds[0]!)
      nodes.push(node)
      return node
    }
  }

  try {
    await Promise.all(nodes.map((_, index) => readyOnFreePorts(index)))
  } catch (error) {
    await stop()
    throw error
  }
  return cluster
}

let probeRound = 0

const converge = async (cluster: Cluster, app: string, timeoutMs: number): Promise<void> => {
  const deadline = Date.now() + timeoutMs
  const left = () => Math.max(1, deadline - Date.now())
  const topic = "room:cluster-probe"
  const nodes = cluster.live()
  const probes = await Promise.all(nodes.map((node) => connectAndJoin(node, app, `probe-${node.name}`, topic)))
  try {
    const inboxes = probes.map((probe) => inbox<{ id: string }>(probe.channel, "probe"))
    for (const entry of nodes) {
      const id = `${entry.name}-${++probeRound}`
      const arrived = Promise.all(
        inboxes.map((box) => box.waitFor((item) => item.id === id, timeoutMs, `probe ${id} on every node`))
      )
      arrived.catch(() => {})
      // A node may not know every other node yet: publish again until everyone has it.
      await poll(`a broadcast through ${entry.name} reaching every node`, async () => {
        const published = await entry.api(app).broadcast({ topic, event: "probe", payload: { id } })
        if (published.status !== 202) throw new Error(`broadcast answered ${published.status}`)
        return Promise.race([arrived.then(() => true), delay(500).then(() => undefined)])
      }, { timeoutMs: left(), intervalMs: 0 })
    }
    const probeIds = new Set(probes.map((_, i) => `probe-${nodes[i]!.name}`))
    for (const entry of nodes) {
      await poll(`${entry.name} listing the connections of every node`, async () => {
        const listed = await entry.api(app).connections()
        const clients = new Set<string>(
          (listed.body?.connections ?? []).map((connection: { client_id: string }) => connection.client_id)
        )
        return [...probeIds].every((id) => clients.has(id)) ? true : undefined
      }, { timeoutMs: left(), intervalMs: 200 })
    }
  } catch (error) {
    throw new Error(`${String(error)}\n${cluster.logs()}`)
  } finally {
    await Promise.all(probes.map((probe) => probe.close()))
  }
}
