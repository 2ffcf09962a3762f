/**
 * Supervision of the gateway's background work, as an OTP supervisor does it
 * (CONTRACT §7): every long-lived loop runs as a named child
 * (`SupervisedChild` lists them all); a child that fails or dies is logged
 * with its name and cause and restarted after a backoff; a child that ends
 * normally is done (OTP's "transient" children). Too many restarts within a
 * period (OTP's intensity and period, `SUPERVISOR_MAX_RESTARTS` within
 * `SUPERVISOR_PERIOD_MS`, counted over all children) mean the node is sick
 * rather than unlucky: the supervisor escalates. Readiness turns 503 naming
 * the child, and shortly after the gateway ends with a failure, so that the
 * process exits non-zero (after the usual drain) and the service manager
 * starts it afresh.
 */
import { Cause, Context, Deferred, Effect, Exit, Layer, Schema } from "effect"
import type { Scope } from "effect"
import { GatewayConfig } from "../config/GatewayConfig.ts"
import type { SupervisedChildName } from "./children.ts"

/** The supervisor gave up: the node must be restarted. */
export class SupervisionEscalated extends Schema.TaggedError<SupervisionEscalated>()("SupervisionEscalated", {
  reason: Schema.String
}) {
  override get message() {
    return this.reason
  }
}

export interface SupervisedChildState {
  readonly name: SupervisedChildName
  /** Instances running now (entities run one instance each). */
  readonly running: number
  /** Restarts (and reported failures) within the current period. */
  readonly recentRestarts: number
}

export interface SupervisorShape {
  /**
   * Runs `child` under supervision until the caller's scope closes (forks it
   * there, like `Effect.forkScoped`). Failures and defects restart it after a
   * backoff; an interruption or a normal end stops it.
   */
  readonly supervise: <E, R>(
    name: SupervisedChildName,
    child: Effect.Effect<unknown, E, R>
  ) => Effect.Effect<void, never, Scope.Scope | R>
  /**
   * A unit of work of a child that is not a fiber (callbacks that isolate
   * their own failures) failed: logged and counted like a restart.
   */
  readonly reportFailure: (name: SupervisedChildName, error: unknown) => void
  /** Why the supervisor gave up, once it has; readiness reports it. */
  readonly escalation: () => string | undefined
  /** Fails with the escalation once it happened (and its grace has passed); never succeeds. */
  readonly awaitEscalation: Effect.Effect<never, SupervisionEscalated>
  /** The children known so far, running or not. */
  readonly children: () => ReadonlyArray<SupervisedChildState>
  /**
   * Makes every running instance of the child die with `defect`, as a bug in
   * it would; answers how many instances it hit. Lets tests (and an operator
   * rehearsing a failure) check that the child comes back.
   */
  readonly injectDefect: (name: SupervisedChildName, defect?: unknown) => Effect.Effect<number>
}

export interface SupervisorOptions {
  /** Restarts tolerated within `periodMs`, over all children; one more escalates. */
  readonly maxRestarts: number
  readonly periodMs: number
}

/** First restart delay; doubles with each restart of the same child within the period. */
const BACKOFF_BASE_MS = 100
const BACKOFF_MAX_MS = 5_000
/** Between readiness turning 503 and the gateway shutting down, so that load balancers see it first. */
const ESCALATION_GRACE = "1 second"

// restart times are read from the monotonic clock, which wall-clock adjustments do not move
interface ChildEntry {
  readonly name: SupervisedChildName
  /** Kill switches of the running instances (see `injectDefect`). */
  readonly instances: Set<Deferred.Deferred<never>>
  restarts: Array<number>
}

export const makeSupervisor = (options: SupervisorOptions) =>
  Effect.gen(function*() {
    const entries = new Map<SupervisedChildName, ChildEntry>()
    const restartTimes: Array<number> = []
    let escalationReason: string | undefined
    const escalated = Deferred.makeUnsafe<never, SupervisionEscalated>()
    const runInBackground = Effect.runForkWith(yield* Effect.context<never>())

    const entryOf = (name: SupervisedChildName) => {
      let entry = entries.get(name)
      if (entry === undefined) entries.set(name, entry = { name, instances: new Set(), restarts: [] })
      return entry
    }
    const withinPeriod = (times: Array<number>, now: number) => {
      while (times.length > 0 && times[0]! <= now - options.periodMs) times.shift()
      return times.length
    }

    const escalate = (name: SupervisedChildName, restarts: number) => {
      if (escalationReason !== undefined) return
      escalationReason = `supervised child "${name}" failing: ${restarts} restarts within ${options.periodMs} ms ` +
        `(at most ${options.maxRestarts}); the node is restarting`
      const error = new SupervisionEscalated({ reason: escalationReason })
      runInBackground(
        Effect.logError("restart intensity exceeded; shutting down so that the service manager restarts the node").pipe(
          Effect.annotateLogs({ supervised_child: name, restarts }),
          Effect.andThen(Effect.sleep(ESCALATION_GRACE)),
          Effect.andThen(Deferred.fail(escalated, error))
        )
      )
    }

    /** Counts a restart of `name`; answers the delay before it, or undefined once escalated. */
    const recordRestart = (name: SupervisedChildName): number | undefined => {
      const now = performance.now()
      const entry = entryOf(name)
      entry.restarts.push(now)
      restartTimes.push(now)
      const total = withinPeriod(restartTimes, now)
      const own = withinPeriod(entry.restarts, now)
      if (total > options.maxRestarts) {
        escalate(name, total)
        return undefined
      }
      return Math.min(BACKOFF_MAX_MS, BACKOFF_BASE_MS * 2 ** (own - 1))
    }

    const logFailure = (name: SupervisedChildName, cause: string, delayMs: number | undefined) =>
      Effect.logError(
        delayMs === undefined
          ? `supervised child "${name}" failed; not restarted (restart intensity exceeded)`
          : `supervised child "${name}" failed; restarting in ${delayMs} ms`,
        cause
      ).pipe(Effect.annotateLogs({ supervised_child: name, restarts: entryOf(name).restarts.length }))

    const run = <E, R>(name: SupervisedChildName, child: Effect.Effect<unknown, E, R>): Effect.Effect<void, never, R> =>
      Effect.gen(function*() {
        const { instances } = entryOf(name)
        for (;;) {
          const killSwitch = Deferred.makeUnsafe<never>()
          instances.add(killSwitch)
          const exit = yield* Effect.exit(Effect.raceFirst(child, Deferred.await(killSwitch))).pipe(
            Effect.ensuring(Effect.sync(() => instances.delete(killSwitch)))
          )
          // a normal end, or the owner's scope closing: nothing to restart
          if (Exit.isSuccess(exit) || Cause.hasInterruptsOnly(exit.cause)) return
          const delayMs = recordRestart(name)
          yield* logFailure(name, Cause.pretty(exit.cause), delayMs)
          if (delayMs === undefined) return
          yield* Effect.sleep(delayMs)
        }
      })

    return Supervisor.of({
      supervise: (name, child) => Effect.asVoid(Effect.forkScoped(run(name, child))),
      reportFailure: (name, error) => {
        recordRestart(name)
        runInBackground(
          Effect.logError(`supervised child "${name}" failed on one unit of work; it carries on`, String(error)).pipe(
            Effect.annotateLogs({ supervised_child: name, restarts: entryOf(name).restarts.length })
          )
        )
      },
      escalation: () => escalationReason,
      awaitEscalation: Deferred.await(escalated),
      children: () => {
        const now = performance.now()
        return [...entries.values()].map((entry) => ({
          name: entry.name,
          running: entry.instances.size,
          recentRestarts: withinPeriod(entry.restarts, now)
        }))
      },
      injectDefect: (name, defect = new Error(`defect injected into "${name}"`)) =>
        Effect.sync(() => {
          const instances = [...(entries.get(name)?.instances ?? [])]
          for (const killSwitch of instances) Deferred.doneUnsafe(killSwitch, Effect.die(defect))
          return instances.length
        })
    })
  })

export class Supervisor extends Context.Service<Supervisor, SupervisorShape>()("realtime-gateway/supervision/Supervisor") {
  /** Intensity and period from `SUPERVISOR_MAX_RESTARTS` / `SUPERVISOR_PERIOD_MS`. */
  static readonly layer = Layer.effect(
    Supervisor,
    Effect.flatMap(GatewayConfig, ({ limits }) =>
      makeSupervisor({ maxRestarts: limits.supervisorMaxRestarts, periodMs: limits.supervisorPeriodMs }))
  )

  /** With the given intensity and period, for a part of the gateway built on its own (tests). */
  static layerWith(options: SupervisorOptions): Layer.Layer<Supervisor> {
    return Layer.effect(Supervisor, makeSupervisor(options))
  }
}

/**
 * Forks `child` as the supervised child `name` in the current scope: the one
 * line at a fork site, in place of `Effect.forkScoped`.
 */
export const supervised = (name: SupervisedChildName) => <E, R>(child: Effect.Effect<unknown, E, R>) =>
  Effect.flatMap(Supervisor, (supervisor) => supervisor.supervise(name, child))
