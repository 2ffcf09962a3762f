/**
 * Helpers for tests that run the gateway as a real process, as `npm start`
 * does: free ports, waiting for a log line, stopping the process.
 */
import { spawn } from "node:child_process"
import type { ChildProcess } from "node:child_process"
import { freePort } from "../../cluster/ports.ts"

export { freePort }

export interface GatewayProcess {
  readonly child: ChildProcess
  /** Everything the process wrote to stdout so far. */
  readonly output: () => string
  /** Resolves with the first stdout line containing `text`. */
  readonly waitForLine: (text: string, timeoutMs?: number) => Promise<string>
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>
  readonly stop: () => Promise<void>
}

/** Starts `src/main.ts` (or another entry point) with the given environment added to this process's. */
export const startGatewayProcess = (env: Readonly<Record<string, string>>, script = "src/main.ts"): GatewayProcess => {
  const child = spawn(process.execPath, [script], {
    cwd: new URL("../..", import.meta.url).pathname,
    env: { ...process.env, ...env },
    stdio: ["ignore", "pipe", "pipe"]
  })
  let stdout = ""
  const listeners = new Set<() => void>()
  child.stdout!.on("data", (chunk: Buffer) => {
    stdout += chunk.toString("utf8")
    for (const listener of listeners) listener()
  })
  child.stderr!.on("data", (chunk: Buffer) => {
    stdout += chunk.toString("utf8")
  })
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once("exit", (code, signal) => resolve({ code, signal }))
  )
  const waitForLine = (text: string, timeoutMs = 15_000) =>
    new Promise<string>((resolve, reject) => {
      const check = () => {
        const line = stdout.split("\n").find((candidate) => candidate.includes(text))
        if (line === undefined) return
        listeners.delete(check)
        clearTimeout(timer)
        resolve(line)
      }
      const timer = setTimeout(() => {
        listeners.delete(check)
        reject(new Error(`no line containing ${JSON.stringify(text)} within ${timeoutMs} ms; output:\n${stdout}`))
      }, timeoutMs)
      listeners.add(check)
      check()
    })
  return {
    child,
    output: () => stdout,
    waitForLine,
    exited,
    stop: async () => {
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGTERM")
      await exited
    }
  }
}
