/**
 * Structured logs to stdout: one JSON object per line (or a readable line with
 * `LOG_FORMAT=pretty`), with the node name and every log annotation
 * (`app_id`, `client_id`, `connection_id`, `topic`, ...) as top-level fields so
 * that log search needs no nested paths.
 */
import { Cause, Layer, Logger, References } from "effect"
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

const makeLineLogger = (nodeName: string, format: LogFormat) =>
  Logger.make<unknown, void>(({ cause, date, fiber, logLevel, message }) => {
    const annotations = fiber.getRef(References.CurrentLogAnnotations)
    const error = cause.reasons.length > 0 ? Cause.pretty(cause) : undefined
    if (format === "pretty") {
      const fields = Object.entries(annotations).map(([key, value]) => `${key}=${String(value)}`).join(" ")
      process.stdout.write(
        `${date.toISOString()} ${logLevel.toUpperCase().padEnd(5)} ${messageText(message)}` +
          `${fields ? ` ${fields}` : ""}${error ? `\n${error}` : ""}\n`
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
