/**
 * Preloaded into every server the benchmark measures
 * (`node --expose-gc --import ./stats-agent.ts <server>`), so that the gateway
 * and the bare `ws` server are measured the same way without either knowing:
 * it answers the runner's IPC stats requests (optionally after a forced GC),
 * and ends the process when the runner goes away. Without an IPC channel
 * (server started by hand) it does nothing.
 */
import { isStatsRequest } from "./messages.ts"
import type { StatsReply } from "./messages.ts"
import { collectStats } from "./stats.ts"

if (typeof process.send === "function") {
  process.on("message", (message: unknown) => {
    if (!isStatsRequest(message)) return
    void collectStats(message.gc).then((stats) => {
      const reply: StatsReply = { type: "bench-stats", id: message.id, stats }
      process.send?.(reply)
    })
  })
  // The runner is gone (it exited or was killed): do not outlive it.
  process.on("disconnect", () => process.exit(0))
  // The channel alone must not keep the server alive once it shuts down.
  process.channel?.unref()
}
