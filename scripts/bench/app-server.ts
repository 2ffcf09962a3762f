/**
 * The fake app behind the gateway (`bench-app.ts`) as a process of its own,
 * run by `run.ts` with an IPC channel and the stats agent preloaded, so that it
 * takes no CPU from the runner or the load generators and its own CPU can be
 * read. It answers `{type: "app-ready", url}` once listening on 127.0.0.1,
 * counts the calls it gets by kind (answering `app-calls` with the counts since
 * the previous question), and forgets the recorded requests every second so
 * that a long run does not fill its memory. It exits when the runner goes away.
 */
import { countCalls, startBenchApp } from "./bench-app.ts"
import type { FromApp, ToApp } from "./messages.ts"

const FORGET_EVERY_MS = 1_000

if (typeof process.send !== "function") {
  console.error("app-server.ts is run by run.ts (it needs an IPC channel)")
  process.exit(1)
}

const app = await startBenchApp()
let counts: Record<string, number> = {}

const tally = () => {
  for (const [key, n] of Object.entries(countCalls(app))) counts[key] = (counts[key] ?? 0) + n
  app.clearRequests()
}
setInterval(tally, FORGET_EVERY_MS)

const send = (message: FromApp) => process.send?.(message)

process.on("message", (message: ToApp) => {
  if (message.type !== "app-calls") return
  tally()
  send({ type: "app-calls", id: message.id, counts })
  counts = {}
})
process.on("disconnect", () => process.exit(0))
process.on("SIGTERM", () => {
  void app.close().then(() => process.exit(0))
})

send({ type: "app-ready", url: app.url })
