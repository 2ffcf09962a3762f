/**
 * The supervisor's own rules (CONTRACT §7): a child that fails or dies is
 * restarted after a backoff, one that ends normally is not, and more
 * restarts within the period than the intensity allows escalate.
 */
import { Cause, Deferred, Effect, Exit, Logger, Queue, References, Scope } from "effect"
import { describe, expect, it } from "vitest"
import { SupervisedChild } from "../../src/supervision/children.ts"
import { makeSupervisor } from "../../src/supervision/Supervisor.ts"

interface LogLine {
  readonly level: string
  readonly text: string
  readonly annotations: Record<string, unknown>
}
let logged: Array<LogLine> = []
const logging = Logger.layer([
  Logger.make<unknown, void>(({ fiber, logLevel, message }) => {
    logged.push({
      level: logLevel,
      text: (Array.isArray(message) ? message : [message]).map(String).join(" "),
      annotations: { ...fiber.getRef(References.CurrentLogAnnotations) }
    })
  })
])

/** Runs `body` with a supervisor of the given intensity, in a scope closed afterwards. */
const withSupervisor = <A>(
  options: { readonly maxRestarts: number; readonly periodMs: number },
  body: (supervisor: Effect.Success<ReturnType<typeof makeSupervisor>>) => Effect.Effect<A, unknown, Scope.Scope>
) => {
  logged = []
  return Effect.runPromise(
    Effect.scoped(Effect.flatMap(makeSupervisor(options), body)).pipe(Effect.provide(logging))
  )
}

describe("Supervisor", () => {
  it("restarts a child that dies or fails, logging each restart with the child's name and cause", async () => {
    const runs = await withSupervisor({ maxRestarts: 10, periodMs: 60_000 }, (supervisor) =>
      Effect.gen(function*() {
        const started = yield* Queue.unbounded<number>()
        let run = 0
        const child = Effect.suspend(() => {
          run++
          Queue.offerUnsafe(started, run)
          if (run === 1) return Effect.die(new Error("a bug"))
          if (run === 2) return Effect.fail("a failure")
          return Effect.never
        })
        yield* supervisor.supervise(SupervisedChild.idleSweep, child)
        const seen = [yield* Queue.take(started), yield* Queue.take(started), yield* Queue.take(started)]
        const [state] = supervisor.children()
        return { seen, state }
      }))
    expect(runs.seen).toEqual([1, 2, 3])
    expect(runs.state).toEqual({ name: "idle sweep", running: 1, recentRestarts: 2 })
    const restarts = logged.filter((line) => line.annotations["supervised_child"] === "idle sweep")
    expect(restarts.map((line) => line.level)).toEqual(["Error", "Error"])
    expect(restarts[0]!.text).toContain(`supervised child "idle sweep" failed; restarting in 100 ms`)
    expect(restarts[0]!.text).toContain("a bug")
    expect(restarts[1]!.text).toContain(`restarting in 200 ms`)
    expect(restarts[1]!.text).toContain("a failure")
  })

  it("does not restart a child that ends normally", async () => {
    const state = await withSupervisor({ maxRestarts: 10, periodMs: 60_000 }, (supervisor) =>
      Effect.gen(function*() {
        const done = yield* Deferred.make<void>()
        yield* supervisor.supervise(SupervisedChild.schemaRetry, Deferred.succeed(done, undefined))
        yield* Deferred.await(done)
        // the child's own fiber removes it after it returned
        yield* Effect.yieldNow
        return supervisor.children()
      }))
    expect(state).toEqual([{ name: "schema retry", running: 0, recentRestarts: 0 }])
  })

  it("injectDefect kills the named child's running instances, which come back", async () => {
    const result = await withSupervisor({ maxRestarts: 10, periodMs: 60_000 }, (supervisor) =>
      Effect.gen(function*() {
        const started = yield* Queue.unbounded<void>()
        const child = Effect.andThen(Queue.offer(started, undefined), Effect.never)
        yield* supervisor.supervise(SupervisedChild.presenceDeadNodeCheck, child)
        yield* supervisor.supervise(SupervisedChild.presenceDeadNodeCheck, child)
        yield* Queue.take(started)
        yield* Queue.take(started)
        const hit = yield* supervisor.injectDefect(SupervisedChild.presenceDeadNodeCheck)
        yield* Queue.take(started)
        yield* Queue.take(started)
        return { hit, children: supervisor.children() }
      }))
    expect(result.hit).toBe(2)
    expect(result.children).toEqual([{ name: "presence dead-node check", running: 2, recentRestarts: 2 }])
  })

  it("backs off: each restart of a child within the period waits twice as long", async () => {
    const gaps = await withSupervisor({ maxRestarts: 10, periodMs: 60_000 }, (supervisor) =>
      Effect.gen(function*() {
        const started = yield* Queue.unbounded<number>()
        const child = Effect.suspend(() => Queue.offer(started, performance.now())).pipe(Effect.andThen(Effect.die("always")))
        yield* supervisor.supervise(SupervisedChild.rateLimitSweep, child)
        const times = [yield* Queue.take(started), yield* Queue.take(started), yield* Queue.take(started), yield* Queue.take(started)]
        return times.slice(1).map((time, i) => time - times[i]!)
      }))
    expect(gaps[0]).toBeGreaterThanOrEqual(95)
    expect(gaps[1]).toBeGreaterThanOrEqual(195)
    expect(gaps[2]).toBeGreaterThanOrEqual(395)
  })

  it("escalates past the intensity: names the child, stops restarting it, and awaitEscalation fails", async () => {
    const result = await withSupervisor({ maxRestarts: 2, periodMs: 60_000 }, (supervisor) =>
      Effect.gen(function*() {
        let runs = 0
        yield* supervisor.supervise(SupervisedChild.liveNodeRefresh, Effect.suspend(() => {
          runs++
          return Effect.die("always")
        }))
        const exit = yield* Effect.exit(supervisor.awaitEscalation)
        return { exit, runs, escalation: supervisor.escalation() }
      }))
    expect(result.runs).toBe(3)
    expect(result.escalation).toContain(`supervised child "live-node refresh" failing: 3 restarts`)
    expect(Exit.isFailure(result.exit)).toBe(true)
    if (Exit.isFailure(result.exit)) {
      expect(String(Cause.squash(result.exit.cause))).toContain("live-node refresh")
    }
  })

  it("counts failures reported by callback-driven children towards the intensity", async () => {
    const escalation = await withSupervisor({ maxRestarts: 1, periodMs: 60_000 }, (supervisor) =>
      Effect.sync(() => {
        supervisor.reportFailure(SupervisedChild.notificationDelivery, new Error("one"))
        const afterOne = supervisor.escalation()
        supervisor.reportFailure(SupervisedChild.notificationDelivery, new Error("two"))
        return [afterOne, supervisor.escalation()]
      }))
    expect(escalation[0]).toBeUndefined()
    expect(escalation[1]).toContain(`"notification delivery"`)
  })
})
