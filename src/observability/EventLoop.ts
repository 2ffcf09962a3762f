/**
 * The event loop's delay and utilisation, kept per second for whoever reports
 * them (the metrics, the node status).
 *
 * The delay is how late a 100 ms timer of ours runs, measured against the
 * time it was due. Node's own delay histogram (`monitorEventLoopDelay`) loses
 * a stall whenever it is reset (as each reader's period ends) between the
 * stall and its next tick; a timer that keeps its own due time does not, and
 * a stall read late lands in the next second instead. One timer serves every
 * reader: each tick wakes the process (two histograms, at 50 and 100 ms,
 * cost about 0.1–0.15 % of a core more on every idle node than one tick).
 */
import { performance } from "node:perf_hooks"
import { Context, Effect, Layer, Schedule } from "effect"
import { SupervisedChild } from "../supervision/children.ts"
import { supervised } from "../supervision/Supervisor.ts"

const TICK_MS = 100
const SAMPLE_MS = 1_000
/** Seconds of figures kept: enough for the longest reader's period (the node status: 5 s). */
const KEPT_SECONDS = 10

export interface EventLoopSecond {
  /** The longest a tick of the second ran late, in milliseconds. */
  readonly maxLagMs: number
  /** The share of the second the loop was busy (0 to 1). */
  readonly utilization: number
}

export interface EventLoopShape {
  /** The last whole second's figures (zeros before the first). */
  readonly lastSecond: () => EventLoopSecond
  /** The longest delay of the last `seconds` seconds, in milliseconds. */
  readonly maxLagOverMs: (seconds: number) => number
}

const quiet: EventLoopSecond = { maxLagMs: 0, utilization: 0 }

export class EventLoop extends Context.Service<EventLoop, EventLoopShape>()("realtime-gateway/observability/EventLoop") {
  static readonly layer = Layer.effect(
    EventLoop,
    Effect.gen(function*() {
      let due = performance.now() + TICK_MS
      let longest = 0
      const tick = setInterval(() => {
        const now = performance.now()
        longest = Math.max(longest, now - due)
        due = now + TICK_MS
      }, TICK_MS)
      tick.unref()
      yield* Effect.addFinalizer(() => Effect.sync(() => clearInterval(tick)))

      const seconds: Array<EventLoopSecond> = []
      let utilization = performance.eventLoopUtilization()
      const sample = Effect.sync(() => {
        const now = performance.eventLoopUtilization()
        seconds.push({ maxLagMs: longest, utilization: performance.eventLoopUtilization(now, utilization).utilization })
        if (seconds.length > KEPT_SECONDS) seconds.shift()
        longest = 0
        utilization = now
      })
      yield* sample.pipe(Effect.repeat(Schedule.spaced(SAMPLE_MS)), Effect.delay(SAMPLE_MS), supervised(SupervisedChild.eventLoopSample))

      return EventLoop.of({
        lastSecond: () => seconds.at(-1) ?? quiet,
        maxLagOverMs: (count) => seconds.slice(-count).reduce((highest, second) => Math.max(highest, second.maxLagMs), 0)
      })
    })
  )
}
