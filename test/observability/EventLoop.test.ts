/**
 * The process's one event-loop monitor: a stall shows as lag for the seconds
 * it happened in, and a quiet loop shows little. Run in a process of its own
 * (`fixtures/event-loop-stall.ts`), as the gateway runs it.
 */
import { execFile } from "node:child_process"
import { promisify } from "node:util"
import { describe, expect, it } from "vitest"
import type { EventLoopSecond } from "../../src/observability/EventLoop.ts"

const run = promisify(execFile)

describe("EventLoop", () => {
  it("reports a 400 ms stall as lag, and nothing like it on a quiet loop", async () => {
    const fixture = new URL("fixtures/event-loop-stall.ts", import.meta.url).pathname
    const { stdout } = await run(process.execPath, [fixture], { timeout: 15_000 })
    const figures = JSON.parse(stdout) as {
      readonly quiet: EventLoopSecond
      readonly p99LagOverTwoSecondsMs: number
      readonly afterStall: EventLoopSecond
    }
    expect(figures.quiet.maxLagMs).toBeLessThan(100)
    expect(figures.quiet.utilization).toBeLessThan(0.2)
    expect(figures.p99LagOverTwoSecondsMs).toBeGreaterThan(250)
    expect(figures.p99LagOverTwoSecondsMs).toBeLessThan(1_000)
    expect(figures.afterStall.utilization).toBeGreaterThan(0)
  })
})
