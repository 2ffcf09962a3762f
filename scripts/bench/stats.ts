/**
 * A server process's memory and CPU figures as the benchmark reads them, with
 * an optional forced garbage collection first so that RSS reflects live data.
 */
import type { ServerStats } from "./messages.ts"

const nextTurn = () => new Promise<void>((resolve) => setImmediate(resolve))

export const collectStats = async (forceGc: boolean): Promise<ServerStats> => {
  const gc = (globalThis as { gc?: () => void }).gc
  let gcForced = false
  if (forceGc && typeof gc === "function") {
    // Twice, with a turn of the event loop in between, so that objects kept
    // alive only by finalizers or weak callbacks of the first pass go too.
    gc()
    await nextTurn()
    gc()
    gcForced = true
  }
  const memory = process.memoryUsage()
  const cpu = process.cpuUsage()
  return {
    pid: process.pid,
    at: Date.now(),
    gcForced,
    rssBytes: memory.rss,
    maxRssBytes: process.resourceUsage().maxRSS * 1024,
    heapUsedBytes: memory.heapUsed,
    heapTotalBytes: memory.heapTotal,
    externalBytes: memory.external,
    arrayBuffersBytes: memory.arrayBuffers,
    cpuUserUs: cpu.user,
    cpuSystemUs: cpu.system
  }
}
