/**
 * Structured logs to stdout: one JSON object per line (or a readable line with
 * `LOG_FORMAT=pretty`), with the node name and every log annotation
 * (`app_id`, `client_id`, `connection_id`, `topic`, ...) as top-level fields so
 * that log search needs no nested paths.
 */
import { Cause, Effect, Layer, Logger, References } from "effect"
import type { LogLevel } from "effect"
import type { LogFormat, LogLevel as GatewayLogLevel } from "../config/GatewayConfig.ts"

const levelNames: Record<GatewayLogLevel, LogLevel.LogLevel> = {
  trace: "Trace",
  debug: "Debug",
  info: "Info",
  warn: "Warn",
  error: "Error"
}

const messageText = (message: unknown): string => {
  const parts = Array.isArray(message) ? message : [message]
  return parts.map((part) => (typeof part === "string" ? part : JSON.stringify(part))).join(" ")
}

// C0 and C1 controls (newlines, ESC of ANSI sequences), DEL, and the Unicode line and paragraph separators
const CONTROL_CHARACTERS = /[\u0000-\u001f\u007f-\u009f\u2028\u2029]/g

const escapeControl = (character: string) => {
  switch (character) {
    case "\n":
      return "\\n"
    case "\r":
      return "\\r"
    case "\t":
      return "\\t"
    default:
      return `\\u${character.charCodeAt(0).toString(16).padStart(4, "0")}`
  }
}

/**
 * A value for a `pretty` line: control characters escaped, so that a string
 * a client chose (a topic, a client id, an app's answer) can neither start a
 * line that looks like another log line nor send escape sequences to the
 * operator's terminal. JSON lines need nothing: JSON escapes them itself.
 */
const prettyText = (text: string): string => text.replace(CONTROL_CHARACTERS, escapeControl)

const makeLineLogger = (nodeName: string, format: LogFormat) =>
  Logger.make<unknown, void>(({ cause, date, fiber, logLevel, message }) => {
    const annotations = fiber.getRef(References.CurrentLogAnnotations)
    const error = cause.reasons.length > 0 ? Cause.pretty(cause) : undefined
    if (format === "pretty") {
      const fields = Object.entries(annotations).map(([key, value]) => `${prettyText(key)}=${prettyText(String(value))}`)
        .join(" ")
      // the error's stack stays on its own indented lines; only its text is escaped
      const errorLines = error?.split("\n").map((line) => `  ${prettyText(line)}`).join("\n")
      process.stdout.write(
        `${date.toISOString()} ${logLevel.toUpperCase().padEnd(5)} ${prettyText(messageText(message))}` +
          `${fields ? ` ${fields}` : ""}${errorLines ? `\n${errorLines}` : ""}\n`
      )
      return
    }
    const line: Record<string, unknown> = {
      time: date.toISOString(),
      level: logLevel.toLowerCase(),
      msg: messageText(message),
      node: nodeName,
      ...annotations
    }
    if (error !== undefined) line.error = error
    process.stdout.write(JSON.stringify(line) + "\n")
  })

/** Replaces Effect's default logger and sets the minimum level. */
export const layer = (options: { readonly nodeName: string; readonly format: LogFormat; readonly level: GatewayLogLevel }) =>
  Layer.mergeAll(
    Logger.layer([makeLineLogger(options.nodeName, options.format)]),
    Layer.succeed(References.MinimumLogLevel, levelNames[options.level])
  )

/** Lines of one message written per second before the rest are only counted. */
const DEFAULT_LINES_PER_SECOND = 50
const SAMPLING_WINDOW_MS = 1_000

interface SamplingWindow {
  startedAt: number
  written: number
  suppressed: number
}

/**
 * Keeps a flood of one kind of line (a reconnect storm, a refusal storm) from
 * drowning the log and the node: per message, the first lines of each second
 * are written, the rest counted, and one line per second then says how many
 * were left out. Ask `admit` before building a line, so a suppressed one costs
 * nothing but a count.
 */
export class LogSampler {
  private readonly windows = new Map<string, SamplingWindow>()
  private readonly run: (log: Effect.Effect<void>) => unknown
  private readonly level: LogLevel.Severity
  private readonly perSecond: number

  /** `run` runs the line that says how many were left out, written at `level`. */
  constructor(
    run: (log: Effect.Effect<void>) => unknown,
    options: { readonly level: LogLevel.Severity; readonly perSecond?: number }
  ) {
    this.run = run
    this.level = options.level
    this.perSecond = options.perSecond ?? DEFAULT_LINES_PER_SECOND
  }

  private report(message: string, suppressed: number): void {
    this.run(
      Effect.logWithLevel(this.level)(`${suppressed} more "${message}" lines left out in the last second`).pipe(
        Effect.annotateLogs({ suppressed, suppressed_message: message })
      )
    )
  }

  admit(message: string): boolean {
    const now = Date.now()
    let window = this.windows.get(message)
    if (window === undefined) this.windows.set(message, window = { startedAt: now, written: 0, suppressed: 0 })
    else if (now - window.startedAt >= SAMPLING_WINDOW_MS && window.suppressed === 0) {
      window.startedAt = now
      window.written = 0
    }
    if (window.written < this.perSecond) {
      window.written++
      return true
    }
    // the first line left out in a window schedules the count for its end
    if (window.suppressed++ === 0) {
      const flood = window
      setTimeout(() => {
        this.report(message, flood.suppressed)
        flood.startedAt = Date.now()
        flood.written = 0
        flood.suppressed = 0
      }, Math.max(0, flood.startedAt + SAMPLING_WINDOW_MS - now)).unref()
    }
    return false
  }
}
