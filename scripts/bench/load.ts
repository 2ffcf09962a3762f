/**
 * A benchmark load generator, run by `run.ts` as a child process with an IPC
 * channel (several of them share the connections). It gets a `LoadPlan`,
 * answers `ready`, and on `go` opens its share of raw `ws` connections at a
 * bounded concurrency, from its own source addresses, sending one `phx_join`
 * on each and waiting for the ok reply. It then reports the connect + join
 * timings and failures (`done`), keeps the joined connections open with a
 * heartbeat every `heartbeatIntervalMs` (as the phoenix client does), and on
 * `close` closes them all, reports and exits.
 *
 * It stops by itself when the runner goes away or after `lifetimeMs`, and it
 * only connects to 127.0.0.0/8.
 */
import WebSocket from "ws"
import type { CloseResult, FromLoad, LoadPlan, LoadResult, ToLoad } from "./messages.ts"

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

const validate = (candidate: LoadPlan): LoadPlan => {
  const url = new URL(candidate.url)
  if (url.protocol !== "ws:" || !isLoopback(url.hostname)) throw new Error(`refusing a non-loopback target: ${candidate.url}`)
  for (const address of candidate.localAddresses) {
    if (!isLoopback(address)) throw new Error(`refusing a non-loopback source address: ${address}`)
  }
  if (candidate.localAddresses.length === 0) throw new Error("no source address")
  return candidate
}

const urlFor = (p: LoadPlan, index: number): string =>
  `${p.url}?app=${encodeURIComponent(p.app)}&token=bench-${index}` +
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
      let settled = false
      let isJoined = false

      const ws = new WebSocket(urlFor(p, index), {
        localAddress,
        perMessageDeflate: false,
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
  heartbeat = startHeartbeat(p)
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

const startHeartbeat = (p: LoadPlan): NodeJS.Timeout => {
  let ref = 1000
  return setInterval(() => {
    for (const ws of open) {
      ref++
      ws.send(`[null,"${ref}","phoenix","heartbeat",{}]`)
    }
  }, p.heartbeatIntervalMs)
}

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
