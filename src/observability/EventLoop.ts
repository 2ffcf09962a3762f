/**
 * The event loop's delay and utilisation, sampled once a second for whoever
 * reports them (the metrics, the node status), from the one delay monitor of
 * the process.
 *
 * The monitor's timer wakes the process at every step of its resolution: one
 * monitor at 100 ms, in place of one per reader (at 50 and 100 ms), took
 * about 0.2 % of a core off every idle node. A stall longer than the step is
 * always seen; what the monitor measures beyond its own step is lag.
 */
import { monitorEventLoopDelay, performance } from "node:perf_hooks"
import { Context, Effect, Layer, Schedule } from "effect"
import { SupervisedChild } from "../supervision/children.ts"
import { supervised } from "../supervision/Supervisor.ts"

const RESOLUTION_MS = 100
const SAMPLE_MS = 1_000
/** Seconds of figures kept, for readers that report over a longer period. */
const KEPT_SECONDS = 60

export interface EventLoopSecond {
  /** The longest delay beyond the monitor's step, in milliseconds. */
  readonly maxLagMs: number
  /** The 99th percentile of the delays beyond the step, in milliseconds. */
  readonly p99LagMs: number
  /** The share of the second the loop was busy (0 to 1). */
  readonly utilization: number
}

export interface EventLoopShape {
  /** The last whole second's figures (zeros before the first). */
  readonly lastSecond: () => EventLoopSecond
  /** The highest 99th-percentile lag of the last `seconds` seconds, in milliseconds. */
  readonly p99LagOverMs: (seconds: number) => number
}

const quiet: EventLoopSecond = { maxLagMs: 0, p99LagMs: 0, utilization: 0 }

export class EventLoop extends Context.Service<EventLoop, EventLoopShape>()("realtime-gateway/observability/EventLoop") {
  static readonly layer = Layer.effect(
    EventLoop,
    Effect.gen(function*() {
      const delay = monitorEventLoopDelay({ resolution: RESOLUTION_MS })
      delay.enable()
      yield* Effect.addFinalizer(() => Effect.sync(() => delay.disable()))
      const seconds: Array<EventLoopSecond> = []
      let utilization = performance.eventLoopUtilization()
      const lag = (nanoseconds: number) => Math.max(0, nanoseconds / 1e6 - RESOLUTION_MS)

      const sample = Effect.sync(() => {
        const now = performance.eventLoopUtilization()
        const ticked = delay.count > 0
        const second: EventLoopSecond = {
          maxLagMs: ticked ? lag(delay.max) : 0,
          p99LagMs: ticked ? lag(delay.percentile(99)) : 0,
          utilization: performance.eventLoopUtilization(now, utilization).utilization
        }
        delay.reset()
        utilization = now
        seconds.push(second)
        if (seconds.length > KEPT_SECONDS) seconds.shift()
      })
      yield* sample.pipe(Effect.repeat(Schedule.spaced(SAMPLE_MS)), Effect.delay(SAMPLE_MS), supervised(SupervisedChild.eventLoopSample))

      return EventLoop.of({
        lastSecond: () => seconds.at(-1) ?? quiet,
        p99LagOverMs: (count) => seconds.slice(-count).reduce((highest, second) => Math.max(highest, second.p99LagMs), 0)
      })
    })
  )
}
