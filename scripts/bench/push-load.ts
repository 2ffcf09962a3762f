/**
 * The push suite's load generator, run by `run.ts` as a child process with an
 * IPC channel. It gets a `PushPlan`, answers `ready`, and then on command:
 *   - `connect`: opens raw `ws` V2 clients (token `bench-<n>`, source addresses
 *     round-robin) and joins client n to `room:<n>`;
 *   - `sequential`: client 0 alone, one round trip at a time, alternating
 *     blocks through the gateway (push `[join_ref, ref, topic, event, payload]`,
 *     wait for its `phx_reply`) and straight to the app (POST to its message
 *     endpoint, over a keep-alive undici pool of one connection, with the body
 *     the gateway would send for that push: `{app, event, payload, channel,
 *     ref, client_id, client_type, metadata, connection_id}`; the answer is
 *     read and parsed as JSON as the gateway does), so that both see the same
 *     machine conditions; reports every round-trip time after the warm-up;
 *   - `concurrent`: N clients, each with one round trip in flight at a time,
 *     all through the gateway or all straight to the app (a keep-alive pool
 *     with one connection per client); counts and times the round trips
 *     completed inside the window and reads this process's CPU over it;
 *   - `close`: closes the clients and exits.
 * A push or a call that fails, is refused or takes longer than
 * `roundTripTimeoutMs` counts as an error (reason → count).
 *
 * It stops by itself when the runner goes away or after `lifetimeMs`, and it
 * only connects to 127.0.0.0/8.
 */
import { randomUUID } from "node:crypto"
import { Pool } from "undici"
import WebSocket from "ws"
import type { ConcurrentResult, FromPush, PushPlan, PushTarget, SequentialResult, ToPush } from "./messages.ts"

const CLOSE_TIMEOUT_MS = 5_000

const now = () => performance.timeOrigin + performance.now()

const send = (message: FromPush) => process.send?.(message)

const isLoopback = (host: string) => /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host)

const bump = (counts: Map<string, number>, key: string) => counts.set(key, (counts.get(key) ?? 0) + 1)

const validate = (candidate: PushPlan): PushPlan => {
  const ws = new URL(candidate.url)
  if (ws.protocol !== "ws:" || !isLoopback(ws.hostname)) throw new Error(`refusing a non-loopback target: ${candidate.url}`)
  const app = new URL(candidate.messageUrl)
  if (app.protocol !== "http:" || !isLoopback(app.hostname)) {
    throw new Error(`refusing a non-loopback app: ${candidate.messageUrl}`)
  }
  if (candidate.localAddresses.length === 0) throw new Error("no source address")
  for (const address of candidate.localAddresses) {
    if (!isLoopback(address)) throw new Error(`refusing a non-loopback source address: ${address}`)
  }
  return candidate
}

/** A JSON payload of `bytes` bytes (at least its fixed part): `{"seq":n,"pad":"xx…"}`. */
const payloadOf = (seq: number, bytes: number): { readonly seq: number; readonly pad: string } => {
  const fixed = JSON.stringify({ seq, pad: "" }).length
  return { seq, pad: "x".repeat(Math.max(0, bytes - fixed)) }
}

/** What one round trip ended with: `undefined` when ok, else the failure reason. */
type Outcome = string | undefined

interface Client {
  readonly index: number
  readonly topic: string
  readonly ws: WebSocket
  /** Stands for the gateway's connection id in the direct calls' bodies. */
  readonly connectionId: string
  nextRef: number
  waiting: { readonly ref: string; readonly done: (outcome: Outcome) => void } | undefined
}

let plan: PushPlan | undefined
const clients: Array<Client> = []
let closing = false
let heartbeat: NodeJS.Timeout | undefined
let seq = 0
/** Index of the next client to open (its token and topic). */
let nextIndex: number | undefined
let messagePath: string | undefined
const pools = new Map<number, Pool>()

/** A keep-alive pool to the app with `connections` connections (one per client using it). */
const poolFor = (p: PushPlan, connections: number): Pool => {
  let pool = pools.get(connections)
  if (pool === undefined) {
    pool = new Pool(new URL(p.messageUrl).origin, { connections, pipelining: 1, keepAliveTimeout: 60_000 })
    pools.set(connections, pool)
  }
  return pool
}

const connectOne = (p: PushPlan, index: number) =>
  new Promise<string | undefined>((resolve) => {
    const topic = `room:${index}`
    const ws = new WebSocket(
      `${p.url}?app=${encodeURIComponent(p.app)}&token=bench-${index}&client_type=${encodeURIComponent(p.clientType)}&vsn=2.0.0`,
      { localAddress: p.localAddresses[index % p.localAddresses.length]!, perMessageDeflate: false, handshakeTimeout: p.attemptTimeoutMs }
    )
    let settled = false
    const finish = (failure: string | undefined) => {
      if (settled) return
      settled = true
      clearTimeout(timer)
      if (failure !== undefined) ws.terminate()
      resolve(failure)
    }
    const timer = setTimeout(() => finish("timeout"), p.attemptTimeoutMs)
    const client: Client = { index, topic, ws, connectionId: randomUUID(), nextRef: 1, waiting: undefined }
    ws.on("unexpected-response", (_request, response) => finish(`http ${response.statusCode ?? "?"}`))
    ws.on("error", (error: Error & { code?: string }) => finish(`error ${error.code ?? error.message}`))
    ws.on("open", () => ws.send(JSON.stringify(["1", "1", topic, "phx_join", {}])))
    ws.on("message", (data) => {
      let frame: unknown
      try {
        frame = JSON.parse(data.toString())
      } catch {
        return
      }
      if (!Array.isArray(frame) || frame[3] !== "phx_reply") return
      const status = (frame[4] as { status?: unknown } | null)?.status
      if (!settled) {
        if (frame[1] !== "1") return
        if (status !== "ok") return finish(`join ${String(status)}`)
        clients.push(client)
        return finish(undefined)
      }
      const waiting = client.waiting
      if (waiting === undefined || frame[1] !== waiting.ref) return
      client.waiting = undefined
      if (status === "ok") return waiting.done(undefined)
      const reason = (frame[4] as { response?: { reason?: unknown } } | null)?.response?.reason
      waiting.done(`reply ${String(status)} ${String(reason)}`)
    })
    ws.on("close", (code) => {
      if (!settled) return finish(`closed ${code} before join`)
      const waiting = client.waiting
      client.waiting = undefined
      waiting?.done(`closed ${code}`)
      if (!closing) {
        const at = clients.indexOf(client)
        if (at >= 0) clients.splice(at, 1)
      }
    })
  })

const connect = async (p: PushPlan, count: number) => {
  const failures = new Map<string, number>()
  const wanted = count - clients.length
  let joined = 0
  for (let i = 0; i < wanted; i += 50) {
    const batch = Array.from({ length: Math.min(50, wanted - i) }, () => {
      nextIndex ??= p.firstIndex
      return nextIndex++
    })
    const outcomes = await Promise.all(batch.map((index) => connectOne(p, index)))
    for (const outcome of outcomes) {
      if (outcome === undefined) joined++
      else bump(failures, outcome)
    }
  }
  heartbeat ??= setInterval(() => {
    for (const client of clients) client.ws.send(`[null,"hb${client.nextRef++}","phoenix","heartbeat",{}]`)
  }, p.heartbeatIntervalMs)
  return { joined, failures: Object.fromEntries(failures) }
}

/** Time-bounded wait for one answer; resolves with the outcome. */
const withTimeout = (p: PushPlan, start: (done: (outcome: Outcome) => void) => void): Promise<Outcome> =>
  new Promise<Outcome>((resolve) => {
    let finished = false
    const done = (outcome: Outcome) => {
      if (finished) return
      finished = true
      clearTimeout(timer)
      resolve(outcome)
    }
    const timer = setTimeout(() => done("timeout"), p.roundTripTimeoutMs)
    start(done)
  })

const viaGateway = (p: PushPlan, client: Client): Promise<Outcome> =>
  withTimeout(p, (done) => {
    if (client.ws.readyState !== WebSocket.OPEN) return done("not open")
    const ref = String(++client.nextRef)
    client.waiting = { ref, done }
    client.ws.send(JSON.stringify(["1", ref, client.topic, p.event, payloadOf(++seq, p.payloadBytes)]))
  })

const direct = (p: PushPlan, client: Client, pool: Pool): Promise<Outcome> => {
  const path = messagePath ??= new URL(p.messageUrl).pathname
  return withTimeout(p, (done) => {
    const body = JSON.stringify({
      app: p.app,
      event: p.event,
      payload: payloadOf(++seq, p.payloadBytes),
      channel: client.topic,
      ref: String(++client.nextRef),
      client_id: `bench-${client.index}`,
      client_type: p.clientType,
      metadata: {},
      connection_id: client.connectionId
    })
    pool.request({ path, method: "POST", headers: { "content-type": "application/json" }, body })
      .then(async (response) => {
        const text = await response.body.text()
        if (response.statusCode !== 200) return done(`http ${response.statusCode}`)
        const answer = JSON.parse(text) as { action?: unknown }
        done(answer.action === "reply" ? undefined : `answer ${String(answer.action)}`)
      })
      .catch((error: unknown) => done(`error ${error instanceof Error ? error.message : String(error)}`))
  })
}

const roundTrip = (p: PushPlan, target: PushTarget, client: Client, pool: Pool) =>
  target === "gateway" ? viaGateway(p, client) : direct(p, client, pool)

const sequential = async (
  p: PushPlan,
  settings: { readonly roundTrips: number; readonly warmup: number; readonly block: number; readonly maxMs: number }
): Promise<SequentialResult> => {
  const client = clients[0]
  if (client === undefined) throw new Error("sequential before connect")
  const pool = poolFor(p, 1)
  const timed: Record<PushTarget, Array<number>> = { gateway: [], direct: [] }
  const seen: Record<PushTarget, number> = { gateway: 0, direct: 0 }
  const errors = new Map<string, number>()
  const started = now()
  const deadline = started + settings.maxMs
  const targets: ReadonlyArray<PushTarget> = ["direct", "gateway"]
  let turn = 0
  while (
    (timed.gateway.length < settings.roundTrips || timed.direct.length < settings.roundTrips) && now() < deadline
  ) {
    const target = targets[turn++ % 2]!
    if (timed[target].length >= settings.roundTrips) continue
    for (let i = 0; i < settings.block && now() < deadline; i++) {
      const t0 = now()
      const outcome = await roundTrip(p, target, client, pool)
      const elapsed = now() - t0
      if (outcome !== undefined) {
        bump(errors, `${target}: ${outcome}`)
        continue
      }
      if (seen[target]++ >= settings.warmup && timed[target].length < settings.roundTrips) timed[target].push(elapsed)
    }
  }
  return { gatewayMs: timed.gateway, directMs: timed.direct, errors: Object.fromEntries(errors), durationMs: now() - started }
}

const sleepUntil = (at: number) => new Promise<void>((resolve) => setTimeout(resolve, Math.max(0, at - now())))

const concurrent = async (
  p: PushPlan,
  settings: {
    readonly target: PushTarget
    readonly clients: number
    readonly startAt: number
    readonly warmupMs: number
    readonly durationMs: number
  }
): Promise<ConcurrentResult> => {
  const mine = clients.slice(0, settings.clients)
  const pool = poolFor(p, Math.max(1, mine.length))
  const windowStart = settings.startAt + settings.warmupMs
  const windowEnd = windowStart + settings.durationMs
  const latenciesMs: Array<number> = []
  const errors = new Map<string, number>()
  // CPU over the window, read by timers so that the loops do not have to
  let cpuAtStart = process.cpuUsage()
  let cpuUs: number | undefined
  const startTimer = setTimeout(() => {
    cpuAtStart = process.cpuUsage()
  }, Math.max(0, windowStart - now()))
  const endTimer = setTimeout(() => {
    const used = process.cpuUsage(cpuAtStart)
    cpuUs = used.user + used.system
  }, Math.max(0, windowEnd - now()))
  await sleepUntil(settings.startAt)
  const loop = async (client: Client) => {
    while (now() < windowEnd) {
      const t0 = now()
      const outcome = await roundTrip(p, settings.target, client, pool)
      const t1 = now()
      if (t1 < windowStart || t1 >= windowEnd) continue
      if (outcome === undefined) latenciesMs.push(t1 - t0)
      else bump(errors, outcome)
    }
  }
  await Promise.all(mine.map(loop))
  clearTimeout(startTimer)
  clearTimeout(endTimer)
  if (cpuUs === undefined) {
    const used = process.cpuUsage(cpuAtStart)
    cpuUs = used.user + used.system
  }
  return {
    target: settings.target,
    clients: mine.length,
    roundTrips: latenciesMs.length,
    errors: Object.fromEntries(errors),
    latenciesMs,
    windowStart,
    windowEnd,
    cpuUs
  }
}

const closeAll = async (): Promise<void> => {
  closing = true
  if (heartbeat !== undefined) clearInterval(heartbeat)
  const pending = clients.map((client) =>
    new Promise<void>((resolve) => {
      if (client.ws.readyState === WebSocket.CLOSED) return resolve()
      client.ws.once("close", () => resolve())
      client.ws.close(1000)
    })
  )
  const deadline = new Promise<void>((resolve) => setTimeout(resolve, CLOSE_TIMEOUT_MS).unref())
  await Promise.race([Promise.all(pending), deadline])
  for (const client of clients) client.ws.terminate()
  await Promise.allSettled([...pools.values()].map((pool) => pool.close()))
}

const exitSoon = (code: number) => {
  for (const client of clients) client.ws.terminate()
  process.exit(code)
}

const fail = (error: unknown) => {
  console.error(`push load generator: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}`)
  exitSoon(1)
}

process.on("disconnect", () => exitSoon(0))
process.on("message", (message: ToPush) => {
  switch (message.type) {
    case "plan":
      plan = validate(message.plan)
      setTimeout(() => {
        console.error(`push load generator: lifetime of ${plan?.lifetimeMs} ms reached, exiting`)
        exitSoon(2)
      }, plan.lifetimeMs).unref()
      send({ type: "ready" })
      break
    case "connect":
      if (plan === undefined) throw new Error("connect before plan")
      connect(plan, message.clients).then((result) => send({ type: "connected", ...result }), fail)
      break
    case "sequential":
      if (plan === undefined) throw new Error("sequential before plan")
      sequential(plan, message).then((result) => send({ type: "sequential", result }), fail)
      break
    case "concurrent":
      if (plan === undefined) throw new Error("concurrent before plan")
      concurrent(plan, message).then((result) => send({ type: "concurrent", result }), fail)
      break
    case "close":
      closeAll().then(() => {
        process.send?.({ type: "closed" } satisfies FromPush, () => process.exit(0))
      }, fail)
      break
  }
})

if (typeof process.send !== "function") {
  console.error("push-load.ts is run by run.ts (it needs an IPC channel)")
  process.exit(1)
}
