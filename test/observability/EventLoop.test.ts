/**
 * The process's event-loop figures: a stall shows as lag for the seconds it
 * happened in, whether it ran in an I/O callback or in a timer, and a quiet
 * loop shows little. Run in a process of its own
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
    const { stdout } = await run(process.execPath, [fixture], { timeout: 20_000 })
    const figures = JSON.parse(stdout) as {
      readonly quiet: EventLoopSecond
      readonly afterIoStallMs: number
      readonly afterTimerStallMs: number
    }
    expect(figures.quiet.maxLagMs).toBeLessThan(200)
    expect(figures.quiet.utilization).toBeLessThan(0.5)
    for (const lag of [figures.afterIoStallMs, figures.afterTimerStallMs]) {
      expect(lag).toBeGreaterThan(250)
      expect(lag).toBeLessThan(1_000)
    }
  })
})
