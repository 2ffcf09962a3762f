/**
 * App-supplied regular expressions (channel variable `pattern`s, payload JSON
 * Schema `pattern`, `patternProperties` and `propertyNames` patterns) run on
 * RE2 (the `re2js` port), whose matching time grows linearly with the input:
 * no schema makes one client's frame freeze the event loop, as a backtracking
 * engine does on `^(a+)+$` against thirty `a`s and a `!` (seconds per test).
 *
 * V8's own linear engine (`--enable-experimental-regexp-engine`, the `l` flag)
 * was measured first and left aside: in Node 24 it refuses the `u` flag that
 * JSON Schema patterns use, case-insensitivity and bounded repetitions past
 * about sixteen (`[a-z]{1,32}`), and its fallback on excessive backtracking
 * only covers the expressions it accepts.
 *
 * A pattern must be valid ECMA-262 (JSON Schema's dialect) and RE2: lookahead,
 * lookbehind and backreferences have no linear-time implementation and are
 * refused when the schema loads, with the reason.
 */
import type { RegExpEngine } from "ajv/dist/types/index.js"
import { Result } from "effect"
import { RE2JS } from "re2js"

const errorText = (error: unknown): string => (error instanceof Error ? error.message : String(error))

/** The pattern compiled by RE2, or why it cannot be. */
export const compileLinearRegExp = (pattern: string): Result.Result<RE2JS, string> => {
  try {
    // Compiled by V8 first: the pattern must mean the same in JSON Schema's dialect.
    new RegExp(pattern, "u")
  } catch (error) {
    return Result.fail(`"${pattern}" is not a valid regular expression (${errorText(error)})`)
  }
  try {
    return Result.succeed(RE2JS.compile(RE2JS.translateRegExp(pattern)))
  } catch (error) {
    return Result.fail(
      `"${pattern}" cannot run in linear time (lookahead, lookbehind and backreferences are not supported): ${errorText(error)}`
    )
  }
}

/**
 * Ajv's `code.regExp`: payload schemas' patterns compiled by
 * {@link compileLinearRegExp}. Ajv asks for the `u` flag, which RE2 always has.
 */
export const linearRegExpEngine: RegExpEngine = Object.assign(
  (pattern: string, flags: string) => {
    const compiled = compileLinearRegExp(pattern)
    if (Result.isFailure(compiled)) throw new Error(compiled.failure)
    const re = compiled.success
    // Ajv shares one compiled pattern per `toString()`
    const source = `/${pattern}/${flags}`
    return { test: (value: string) => re.test(value), toString: () => source }
  },
  // only read by Ajv's standalone code generation, which the gateway does not use
  { code: "linearRegExp" }
)
