/**
 * The error raised when the gateway configuration is invalid, and the way the
 * process reports it at start.
 *
 * A bad configuration is an operator mistake, not a crash: the process prints
 * one line per problem (naming the environment variable or the JSON path of the
 * config file) and exits with EX_CONFIG (78) from sysexits.h, so supervisors can
 * tell "fix your settings" apart from a failure worth restarting for.
 */
import { writeSync } from "node:fs"
import { Schema } from "effect"

/** Exit code of a process stopped by a bad configuration (sysexits.h EX_CONFIG). */
export const CONFIG_ERROR_EXIT_CODE = 78

/**
 * One configuration problem. `key` is what the operator has to edit: an
 * environment variable name (`SOLO_UNICORN_API`) or the config file variable
 * followed by a JSON path (`GATEWAY_CONFIG apps[0].authEndpoint`).
 */
export const ConfigProblem = Schema.Struct({
  key: Schema.String,
  message: Schema.String
})
export type ConfigProblem = typeof ConfigProblem.Type

/**
 * Every problem found in the configuration, collected in one pass so that a
 * start attempt reports all of them instead of one per restart. Messages never
 * carry secret values.
 */
export class ConfigError extends Schema.TaggedError<ConfigError>()("ConfigError", {
  problems: Schema.Array(ConfigProblem)
}) {
  /** One `<key>: <message>` line per problem. */
  lines(): ReadonlyArray<string> {
    return this.problems.map(formatConfigProblem)
  }

  override get message(): string {
    const count = this.problems.length
    return [`invalid configuration (${count} ${count === 1 ? "problem" : "problems"})`, ...this.lines()].join("\n")
  }
}

/** Renders a problem as `<key>: <message>`. */
export const formatConfigProblem = (problem: ConfigProblem): string => `${problem.key}: ${problem.message}`

/**
 * Writes `config error: <key>: <message>` to stderr for every problem, then
 * exits the process with {@link CONFIG_ERROR_EXIT_CODE}.
 */
export function reportConfigErrorAndExit(error: ConfigError): never {
  const text = error.lines().map((line) => `config error: ${line}\n`).join("")
  try {
    // A synchronous write: `process.exit` right after an asynchronous
    // `process.stderr.write` may drop the output when stderr is a pipe.
    writeSync(2, text)
  } catch {
    process.stderr.write(text)
  }
  return process.exit(CONFIG_ERROR_EXIT_CODE)
}
