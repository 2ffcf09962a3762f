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

/**
 * Starts `src/main.ts` (or `options.script`) with the given environment added
 * to this process's; `maxOpenFiles` starts it under that `ulimit -n`.
 */
export const startGatewayProcess = (
  env: Readonly<Record<string, string>>,
  options: { readonly maxOpenFiles?: number; readonly script?: string } = {}
): GatewayProcess => {
  const script = options.script ?? "src/main.ts"
  const command = options.maxOpenFiles === undefined
    ? [process.execPath, [script]] as const
    : ["bash", ["-c", `ulimit -n ${options.maxOpenFiles} && exec "$0" "$1"`, process.execPath, script]] as const
  const child = spawn(command[0], [...command[1]], {
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
