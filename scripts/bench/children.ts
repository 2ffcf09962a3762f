/**
 * The benchmark runner's child processes (measured servers and load
 * generators): spawning them with an IPC channel, keeping the tail of their
 * output for error messages, waiting for their IPC messages, asking a server
 * for its stats, and making sure none outlives the runner (`killAll` is called
 * on every way out, including `process.on("exit")`).
 */
import { spawn } from "node:child_process"
import type { ChildProcess } from "node:child_process"
import { createInterface } from "node:readline"
import type { ServerStats, StatsReply, StatsRequest } from "./messages.ts"

const TAIL_LINES = 40
/** Output lines of one child echoed to the runner's stderr before it goes quiet. */
const ECHO_LINES = 20
const ECHO_LINE_CHARS = 300

export interface ExitInfo {
  readonly code: number | null
  readonly signal: NodeJS.Signals | null
}

export interface Managed {
  readonly name: string
  readonly child: ChildProcess
  /** Resolves when the process has exited. */
  readonly exited: Promise<ExitInfo>
  /** `undefined` while running. */
  exitInfo(): ExitInfo | undefined
  /** The last lines it printed (stdout and stderr). */
  tail(): string
}

const running = new Set<Managed>()

export interface SpawnOptions {
  readonly cwd: string
  readonly env: NodeJS.ProcessEnv
  /** Echo every output line (otherwise only the first few). */
  readonly verbose: boolean
}

/** Starts `node <args>` (the runner's own Node binary) with an IPC channel. */
export const spawnManaged = (name: string, args: ReadonlyArray<string>, options: SpawnOptions): Managed => {
  const child = spawn(process.execPath, args, {
    cwd: options.cwd,
    env: options.env,
    stdio: ["ignore", "pipe", "pipe", "ipc"]
  })
  const lines: Array<string> = []
  let echoed = 0
  const onLine = (line: string) => {
    lines.push(line)
    if (lines.length > TAIL_LINES) lines.shift()
    if (options.verbose || echoed < ECHO_LINES) {
      echoed++
      const shown = line.length > ECHO_LINE_CHARS ? `${line.slice(0, ECHO_LINE_CHARS)}…` : line
      process.stderr.write(`[${name}] ${shown}\n`)
    } else if (echoed === ECHO_LINES) {
      echoed++
      process.stderr.write(`[${name}] (further output not shown; the last ${TAIL_LINES} lines are kept for errors)\n`)
    }
  }
  if (child.stdout !== null) createInterface({ input: child.stdout }).on("line", onLine)
  if (child.stderr !== null) createInterface({ input: child.stderr }).on("line", onLine)

  let info: ExitInfo | undefined
  const exited = new Promise<ExitInfo>((resolve) => {
    child.once("exit", (code, signal) => {
      info = { code, signal }
      running.delete(managed)
      resolve(info)
    })
    child.once("error", (error) => {
      lines.push(`spawn error: ${error.message}`)
      info = { code: null, signal: null }
      running.delete(managed)
      resolve(info)
    })
  })
  // A child that dies closes the channel; writes to it must not crash the runner.
  child.on("error", () => undefined)
  const managed: Managed = {
    name,
    child,
    exited,
    exitInfo: () => info,
    tail: () => lines.join("\n")
  }
  running.add(managed)
  return managed
}

export const describeExit = (info: ExitInfo): string =>
  info.signal !== null ? `was killed by ${info.signal}` : `exited with code ${info.code}`

/** Kills every child still running (synchronous, so it also works in an `exit` handler). */
export const killAll = (signal: NodeJS.Signals = "SIGKILL"): void => {
  for (const managed of running) {
    try {
      managed.child.kill(signal)
    } catch {
      // already gone
    }
  }
}

/** SIGTERM, then SIGKILL if it has not exited after `graceMs`. */
export const stop = async (managed: Managed, graceMs: number): Promise<void> => {
  if (managed.exitInfo() !== undefined) return
  managed.child.kill("SIGTERM")
  const timer = setTimeout(() => managed.child.kill("SIGKILL"), graceMs)
  await managed.exited
  clearTimeout(timer)
}

export class ChildError extends Error {}

const exitError = (managed: Managed, info: ExitInfo, waitingFor: string) =>
  new ChildError(
    `${managed.name} ${describeExit(info)} while the runner waited for ${waitingFor}` +
      (managed.tail() === "" ? " (it printed nothing)" : `; its last output:\n${managed.tail()}`)
  )

/**
 * The first IPC message from `managed` that `select` maps to a value; rejects
 * when the process exits first or after `timeoutMs`.
 */
export const nextMessage = <A>(
  managed: Managed,
  waitingFor: string,
  select: (message: unknown) => A | undefined,
  timeoutMs: number
): Promise<A> =>
  new Promise<A>((resolve, reject) => {
    const done = () => {
      clearTimeout(timer)
      managed.child.off("message", onMessage)
    }
    const onMessage = (message: unknown) => {
      const value = select(message)
      if (value === undefined) return
      done()
      resolve(value)
    }
    const timer = setTimeout(() => {
      done()
      reject(new ChildError(`${managed.name} did not send ${waitingFor} within ${Math.round(timeoutMs / 1000)} s`))
    }, timeoutMs)
    managed.child.on("message", onMessage)
    void managed.exited.then((info) => {
      done()
      reject(exitError(managed, info, waitingFor))
    })
  })

let statsRequestId = 0

/** Asks a server's stats agent for its figures, after a forced GC when `gc`. */
export const requestStats = (managed: Managed, gc: boolean, timeoutMs = 20_000): Promise<ServerStats> => {
  const id = ++statsRequestId
  const reply = nextMessage(
    managed,
    "its stats (is scripts/bench/stats-agent.ts preloaded with --import?)",
    (message) => {
      const candidate = message as Partial<StatsReply> | null
      return candidate?.type === "bench-stats" && candidate.id === id ? candidate.stats : undefined
    },
    timeoutMs
  )
  const request: StatsRequest = { type: "bench-stats", id, gc }
  managed.child.send(request)
  return reply
}
