/**
 * A benchmark load generator, run by `run.ts` as a child process with an IPC
 * channel (several of them share the connections). It gets a `LoadPlan`,
 * answers `ready`, and on `go` opens its share of raw `ws` connections at a
 * bounded concurrency, from its own source addresses, sending one `phx_join`
 * on each and waiting for the ok reply. It then reports the connect + join
 * timings and failures (`done`), keeps the joined connections open with a
 * heartbeat every `heartbeatIntervalMs` (as the phoenix client does), and on
 * `close` closes them all, reports and exits. `more` opens further
 * connections the same way; `heartbeat` sends one heartbeat round at once.
 *
 * For the fan-out and cross-node suites, every broadcast frame with the plan's
 * `broadcastEvent` that a joined connection receives is counted and timed
 * (arrival time taken when the frame is handed to the connection's message
 * handler) per `seq` of its payload; `arrivals` reports the counts, the first
 * and last arrival of each broadcast and this process's CPU time. With several
 * target servers (`urls`, the nodes of a cluster) connection n goes to target
 * n mod targets, and the arrivals are also counted and timed per target.
 *
 * It stops by itself when the runner goes away or after `lifetimeMs`, and it
 * only connects to 127.0.0.0/8.
 */
import WebSocket from "ws"
import type { ArrivalsResult, BroadcastArrival, CloseResult, FromLoad, LoadPlan, LoadResult, ToLoad } from "./messages.ts"

const CLOSE_TIMEOUT_MS = 10_000

const now = () => performance.timeOrigin + performance.now()

const send = (message: FromLoad) => process.send?.(message)

const isLoopback = (host: string) => /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host)

const bump = (counts: Map<string, number>, key: string) => counts.set(key, (counts.get(key) ?? 0) + 1)

let plan: LoadPlan | undefined
const open = new Set<WebSocket>()
const dropped = new Map<string, number>()
let closing = false
let heartbeat: NodeJS.Timeout | undefined

interface Arrival {
  count: number
  firstAt: number
  lastAt: number
  /** With several targets: per target, count and last arrival. */
  byTarget: Array<{ count: number; lastAt: number }> | undefined
}

/** Broadcast seq → how many connections got it, first and last arrival. */
const arrivals = new Map<number, Arrival>()
let delivered = 0

let seqMarker: Buffer | undefined

/**
 * The `seq` of a timed broadcast frame `[null,null,topic,"<event>",{"seq":n,…}]`,
 * found without parsing the whole frame (this runs once per delivery, on the
 * cores the servers need too); `undefined` for any other frame.
 */
const broadcastSeq = (p: LoadPlan, data: WebSocket.RawData): number | undefined => {
  if (Buffer.isBuffer(data)) {
    seqMarker ??= Buffer.from(`${JSON.stringify(p.broadcastEvent)},{"seq":`)
    const at = data.indexOf(seqMarker)
    if (at < 0) return undefined
    let seq = 0
    let digits = 0
    for (let i = at + seqMarker.length; i < data.length; i++, digits++) {
      const c = data[i]!
      if (c < 48 || c > 57) break
      seq = seq * 10 + (c - 48)
    }
    return digits === 0 ? undefined : seq
  }
  let frame: unknown
  try {
    frame = JSON.parse(Buffer.concat(Array.isArray(data) ? data : [Buffer.from(data)]).toString())
  } catch {
    return undefined
  }
  if (!Array.isArray(frame) || frame[3] !== p.broadcastEvent) return undefined
  const seq = (frame[4] as { seq?: unknown } | null)?.seq
  return typeof seq === "number" ? seq : undefined
}

const targetCount = (p: LoadPlan) => (p.urls === undefined || p.urls.length === 0 ? 1 : p.urls.length)

const onBroadcast = (p: LoadPlan, target: number, data: WebSocket.RawData): void => {
  const at = now()
  // heartbeat replies and anything else but the timed broadcasts are ignored
  const seq = broadcastSeq(p, data)
  if (seq === undefined) return
  delivered++
  let record = arrivals.get(seq)
  if (record === undefined) {
    const targets = targetCount(p)
    record = {
      count: 1,
      firstAt: at,
      lastAt: at,
      byTarget: targets > 1 ? Array.from({ length: targets }, () => ({ count: 0, lastAt: 0 })) : undefined
    }
    arrivals.set(seq, record)
  } else {
    record.count++
    if (at > record.lastAt) record.lastAt = at
  }
  const mine = record.byTarget?.[target]
  if (mine !== undefined) {
    mine.count++
    if (at > mine.lastAt) mine.lastAt = at
  }
}

const reportArrivals = (detail: boolean, reset: boolean): ArrivalsResult => {
  const cpu = process.cpuUsage()
  const broadcasts: Array<BroadcastArrival> = detail
    ? [...arrivals].map(([seq, record]) => ({
      seq,
      count: record.count,
      firstAt: record.firstAt,
      lastAt: record.lastAt,
      ...(record.byTarget === undefined ? {} : { byTarget: record.byTarget })
    }))
    : []
  const result: ArrivalsResult = { delivered, cpuUs: cpu.user + cpu.system, ...(detail ? { broadcasts } : {}) }
  if (reset) {
    arrivals.clear()
    delivered = 0
  }
  return result
}

const validate = (candidate: LoadPlan): LoadPlan => {
  for (const target of [candidate.url, ...(candidate.urls ?? [])]) {
    const url = new URL(target)
    if (url.protocol !== "ws:" || !isLoopback(url.hostname)) throw new Error(`refusing a non-loopback target: ${target}`)
  }
  for (const address of candidate.localAddresses) {
    if (!isLoopback(address)) throw new Error(`refusing a non-loopback source address: ${address}`)
  }
  if (candidate.localAddresses.length === 0) throw new Error("no source address")
  return candidate
}

/** Which of the plan's targets connection `index` goes to (0 with a single one). */
const targetFor = (p: LoadPlan, index: number): number => index % targetCount(p)

const urlFor = (p: LoadPlan, index: number): string =>
  `${p.urls?.[targetFor(p, index)] ?? p.url}?app=${encodeURIComponent(p.app)}&token=bench-${index}` +
  `&client_type=${encodeURIComponent(p.clientType)}&vsn=2.0.0`

const topicFor = (p: LoadPlan, index: number): string => `room:${p.topics > 0 ? index % p.topics : index}`

const run = async (p: LoadPlan): Promise<LoadResult> => {
  const failures = new Map<string, number>()
  const latenciesMs: Array<number> = []
  let joined = 0
  let firstAttemptAt: number | undefined
  let lastJoinAt: number | undefined

  const attempt = (index: number) =>
    new Promise<void>((resolve) => {
      const started = now()
      firstAttemptAt ??= started
      const localAddress = p.localAddresses[index % p.localAddresses.length]!
      const topic = topicFor(p, index)
      const target = targetFor(p, index)
      let settled = false
      let isJoined = false

      const ws = new WebSocket(urlFor(p, index), {
        localAddress,
        perMessageDeflate: false,
        // the load generator trusts the servers' text: less of its CPU per received frame
        skipUTF8Validation: true,
        handshakeTimeout: p.attemptTimeoutMs
      })

      const fail = (reason: string) => {
        if (settled) return
        settled = true
        clearTimeout(timer)
        bump(failures, reason)
        ws.terminate()
        resolve()
      }
      const timer = setTimeout(() => fail("timeout"), p.attemptTimeoutMs)

      ws.on("unexpected-response", (_request, response) => {
        // A refused upgrade: the reason is in the JSON body.
        const chunks: Array<Buffer> = []
        response.on("data", (chunk: Buffer) => chunks.push(chunk))
        response.on("end", () => {
          let reason = ""
          try {
            const body = JSON.parse(Buffer.concat(chunks).toString("utf8")) as { reason?: unknown }
            if (typeof body.reason === "string") reason = ` ${body.reason}`
          } catch {
            // no JSON body
          }
          fail(`http ${response.statusCode ?? "?"}${reason}`)
        })
        response.on("error", () => fail(`http ${response.statusCode ?? "?"}`))
      })
      ws.on("error", (error: Error & { code?: string }) => fail(`error ${error.code ?? error.message}`))
      ws.on("open", () => ws.send(JSON.stringify(["1", "1", topic, "phx_join", {}])))
      ws.on("message", (data) => {
        if (isJoined) return onBroadcast(p, target, data)
        if (settled) return
        let frame: unknown
        try {
          frame = JSON.parse(data.toString())
        } catch {
          return fail("join: reply is not JSON")
        }
        if (!Array.isArray(frame) || frame[1] !== "1" || frame[3] !== "phx_reply") return
        const payload = frame[4] as { status?: unknown; response?: unknown } | null
        if (payload?.status !== "ok") {
          return fail(`join ${String(payload?.status)} ${JSON.stringify(payload?.response ?? null).slice(0, 80)}`)
        }
        settled = true
        isJoined = true
        clearTimeout(timer)
        const at = now()
        lastJoinAt = at
        latenciesMs.push(at - started)
        joined++
        open.add(ws)
        resolve()
      })
      ws.on("close", (code) => {
        if (!settled) return fail(`closed ${code} before join`)
        if (isJoined) {
          open.delete(ws)
          if (!closing) bump(dropped, `closed ${code}`)
        }
      })
    })

  let next = 0
  const lane = async () => {
    while (next < p.count) {
      const index = p.firstIndex + next
      next++
      await attempt(index)
    }
  }
  heartbeat ??= startHeartbeat(p)
  await Promise.all(Array.from({ length: Math.min(p.concurrency, p.count) }, lane))
  const first = firstAttemptAt ?? now()
  return {
    attempted: p.count,
    joined,
    failures: Object.fromEntries(failures),
    firstAttemptAt: first,
    lastJoinAt: lastJoinAt ?? first,
    latenciesMs
  }
}

let heartbeatRef = 1000

const heartbeatRound = (): number => {
  for (const ws of open) {
    heartbeatRef++
    ws.send(`[null,"${heartbeatRef}","phoenix","heartbeat",{}]`)
  }
  return open.size
}

const startHeartbeat = (p: LoadPlan): NodeJS.Timeout => setInterval(heartbeatRound, p.heartbeatIntervalMs)

const closeAll = async (): Promise<CloseResult> => {
  closing = true
  if (heartbeat !== undefined) clearInterval(heartbeat)
  const pending = [...open].map((ws) =>
    new Promise<void>((resolve) => {
      if (ws.readyState === WebSocket.CLOSED) return resolve()
      ws.once("close", () => resolve())
      ws.close(1000)
    })
  )
  const deadline = new Promise<"timeout">((resolve) => setTimeout(() => resolve("timeout"), CLOSE_TIMEOUT_MS).unref())
  await Promise.race([Promise.all(pending), deadline])
  const terminated = open.size
  for (const ws of open) ws.terminate()
  return { droppedWhileIdle: Object.fromEntries(dropped), terminated }
}

const exitSoon = (code: number) => {
  for (const ws of open) ws.terminate()
  process.exit(code)
}

process.on("disconnect", () => exitSoon(0))
process.on("message", (message: ToLoad) => {
  switch (message.type) {
    case "plan":
      plan = validate(message.plan)
      setTimeout(() => {
        console.error(`load generator: lifetime of ${plan?.lifetimeMs} ms reached, exiting`)
        exitSoon(2)
      }, plan.lifetimeMs).unref()
      send({ type: "ready" })
      break
    case "go":
      if (plan === undefined) throw new Error("go before plan")
      run(plan).then((result) => send({ type: "done", result }))
      break
    case "more":
      if (plan === undefined) throw new Error("more before plan")
      run({ ...plan, firstIndex: message.firstIndex, count: message.count }).then((result) => send({ type: "done", result }))
      break
    case "heartbeat": {
      if (plan === undefined) throw new Error("heartbeat before plan")
      if (heartbeat !== undefined) clearInterval(heartbeat)
      const count = heartbeatRound()
      heartbeat = startHeartbeat(plan)
      send({ type: "heartbeats-sent", count })
      break
    }
    case "arrivals":
      send({ type: "arrivals", id: message.id, result: reportArrivals(message.detail, message.reset) })
      break
    case "close":
      closeAll().then((result) => {
        process.send?.({ type: "closed", result } satisfies FromLoad, () => process.exit(0))
      })
      break
  }
})

if (typeof process.send !== "function") {
  console.error("load.ts is run by run.ts (it needs an IPC channel)")
  process.exit(1)
}
