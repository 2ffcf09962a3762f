/**
 * An app's schema document compiled for the per-message hot path: joins ask
 * {@link CompiledAppSchema.matchChannel} which channel a topic is and which
 * permissions it needs, pushes ask {@link CompiledAppSchema.event} whether the
 * event may go to the topic, which permissions it needs and whether the
 * payload is valid. Topic patterns, variable rules, permission templates and
 * payload validators are compiled once per schema version; matching a topic
 * or checking an event allocates nothing but its result.
 *
 * Topic pattern semantics (topics are `:`-separated segments):
 * - a literal segment matches itself exactly;
 * - `{name}` matches exactly one non-empty segment and binds it to `name`;
 * - a segment mixing text and variables (`user-{id}`, `{a}-{b}`) matches a
 *   segment carrying that text, each variable binding a non-empty part; a
 *   variable followed by text ends at the first occurrence of that text
 *   (`{a}-{b}` on `x-y-z` binds a=`x`, b=`y-z`);
 * - `*` matches exactly one non-empty segment, except as the last segment,
 *   where it matches the non-empty rest of the topic, i.e. one or more
 *   segments (`room:*` matches `room:1` and `room:1:2`, not `room` or `room:`);
 * - the bare pattern `*` matches any topic.
 * The same syntax is used by an event's `allowedChannels`, whose variables
 * match any non-empty segment (rules belong to channels).
 *
 * Variable rules (a topic whose variable breaks one does not match that
 * channel; the next channel in document order is tried):
 * - `type`: `string` (default, any non-empty segment), `integer`
 *   (`/^-?\d+$/`), `number` (decimal with optional fraction and exponent),
 *   `uuid` (8-4-4-4-12 hex, any version, either case), `boolean`
 *   (`true`/`false`);
 * - `enum`: the segment is one of the listed strings;
 * - `format`: `uuid`, `email`, `hostname`, `ipv4`, `date` (ajv-formats' full
 *   definitions, so the same as in payload schemas);
 * - `pattern`: a regular expression that must match the whole segment, run
 *   in linear time by RE2 (see LinearRegExp.ts);
 * - `minLength`/`maxLength`: in UTF-16 code units (`String#length`);
 * - `minimum`/`maximum`: inclusive bounds of the numeric value, only for
 *   `integer` and `number`.
 *
 * Permission templates are filled with the matched topic's variables.
 * Variables never contain `:`, so a topic cannot add segments to a required
 * permission. An event-level template naming a variable the matched channel
 * does not bind keeps its `{name}` text, which only a `*` grant segment covers.
 */
import { Effect, Result } from "effect"
import { formatJsonPath } from "../protocol/json.ts"
import { LITERAL, matchTopic, MIXED, VARIABLE, WILDCARD } from "./TopicMatcher.ts"
import type { Matcher, Segment } from "./TopicMatcher.ts"
import type {
  ChannelDefinition,
  DocumentProblem,
  EventDefinition,
  InvalidSchemaDocument,
  ParsedPattern,
  ParsedTemplate,
  PayloadCompiler,
  PayloadError,
  PayloadValidator,
  SchemaDocument,
  VariableRule
} from "./SchemaDocument.ts"
import type { RateLimit } from "../contract/SchemaDocument.ts"
import {
  compilePayloadSpec,
  compileVariablePattern,
  decodeSchemaDocument,
  invalidSchemaDocument,
  makePayloadCompiler,
  parseTemplate,
  parseTopicPattern,
  UUID_PATTERN,
  variableFormatTest
} from "./SchemaDocument.ts"


// ---------------------------------------------------------------------------
// Public interface
// ---------------------------------------------------------------------------

export type Variables = Readonly<Record<string, string>>

export interface CompiledChannel {
  readonly pattern: string
  readonly description: string | undefined
  readonly presence: boolean
  /** Position in the document's `channels`. */
  readonly index: number
  /** Variable names in order of appearance in the pattern. */
  readonly variableNames: ReadonlyArray<string>
  readonly definition: ChannelDefinition
}

export interface ChannelMatch {
  readonly channel: CompiledChannel
  readonly variables: Variables
  /** `permissions.join` filled with the variables. */
  readonly joinPermissions: ReadonlyArray<string>
  /** The channel's `permissions.send` filled with the variables. */
  readonly sendPermissions: ReadonlyArray<string>
}

export interface CompiledEvent {
  readonly name: string
  readonly definition: EventDefinition
  /** Whether one of the event's `allowedChannels` patterns matches the topic. */
  allowedOn(topic: string): boolean
  /** The event-level `permissions.send` filled with the variables of the matched channel (empty when none). */
  sendPermissions(variables: Variables): ReadonlyArray<string>
  /** `undefined` when the payload is valid (or the event has no `payload`), else the errors (paths are JSON Pointers). */
  validatePayload(payload: unknown): ReadonlyArray<PayloadError> | undefined
}

export interface CompiledRateLimits {
  readonly default?: RateLimit
  readonly byEvent: ReadonlyMap<string, RateLimit>
}

export interface CompiledAppSchema {
  readonly version: string
  readonly document: SchemaDocument
  readonly channels: ReadonlyArray<CompiledChannel>
  readonly events: ReadonlyMap<string, CompiledEvent>
  /** The first channel (document order) whose pattern and variable rules accept the topic. */
  matchChannel(topic: string): ChannelMatch | undefined
  event(name: string): CompiledEvent | undefined
  readonly rateLimits: CompiledRateLimits
}

// ---------------------------------------------------------------------------
// Topic matching (the scan itself is in TopicMatcher.ts)
// ---------------------------------------------------------------------------

const toMatcher = (parsed: ParsedPattern): Matcher => {
  let slot = 0
  const segments = parsed.segments.map((segment): Segment => {
    switch (segment._tag) {
      case "Literal":
        return { kind: LITERAL, text: segment.text, literals: [], slot: 0, count: 0 }
      case "Wildcard":
        return { kind: WILDCARD, text: "", literals: [], slot: 0, count: 0 }
      case "Variable":
        return { kind: VARIABLE, text: "", literals: [], slot: slot++, count: 1 }
      case "Mixed": {
        const first = slot
        slot += segment.names.length
        return { kind: MIXED, text: "", literals: segment.literals, slot: first, count: segment.names.length }
      }
    }
  })
  return {
    matchesAll: parsed.matchesAll,
    segments,
    trailingWildcard: parsed.trailingWildcard,
    variableCount: parsed.variables.length
  }
}

// ---------------------------------------------------------------------------
// Variable rules
// ---------------------------------------------------------------------------

type SegmentTest = (value: string) => boolean

const INTEGER = /^-?\d+$/
const NUMBER = /^-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?$/

const TYPE_TESTS: Readonly<Record<NonNullable<VariableRule["type"]>, SegmentTest | undefined>> = {
  string: undefined,
  integer: (value) => INTEGER.test(value),
  number: (value) => NUMBER.test(value),
  uuid: (value) => UUID_PATTERN.test(value),
  boolean: (value) => value === "true" || value === "false"
}

/** One predicate for all the rules of a variable, or `undefined` when any segment is accepted. */
const compileRule = (rule: VariableRule, problem: (path: ReadonlyArray<PropertyKey>, message: string) => void): SegmentTest | undefined => {
  const tests: Array<SegmentTest> = []
  const typeTest = TYPE_TESTS[rule.type ?? "string"]
  if (typeTest !== undefined) tests.push(typeTest)
  if (rule.enum !== undefined) {
    const allowed: ReadonlySet<string> = new Set(rule.enum)
    tests.push((value) => allowed.has(value))
  }
  if (rule.format !== undefined) tests.push(variableFormatTest(rule.format))
  if (rule.pattern !== undefined) {
    const compiled = compileVariablePattern(rule.pattern)
    if (Result.isFailure(compiled)) problem(["pattern"], compiled.failure)
    else tests.push(compiled.success)
  }
  const { minLength, maxLength, minimum, maximum } = rule
  if (minLength !== undefined) tests.push((value) => value.length >= minLength)
  if (maxLength !== undefined) tests.push((value) => value.length <= maxLength)
  // The type test runs first, so Number() only sees integer/number text here.
  if (minimum !== undefined) tests.push((value) => Number(value) >= minimum)
  if (maximum !== undefined) tests.push((value) => Number(value) <= maximum)
  if (tests.length === 0) return undefined
  if (tests.length === 1) return tests[0]
  return (value) => {
    for (let i = 0; i < tests.length; i++) if (!tests[i]!(value)) return false
    return true
  }
}

// ---------------------------------------------------------------------------
// Permission templates
// ---------------------------------------------------------------------------

const EMPTY: ReadonlyArray<string> = Object.freeze([])

const fillTemplate = (template: ParsedTemplate, variables: Variables): string => {
  const { literals, names } = template
  let out = literals[0]!
  for (let i = 0; i < names.length; i++) {
    const name = names[i]!
    // hasOwn: a name such as "constructor" must not be read from Object.prototype.
    out += (Object.hasOwn(variables, name) ? variables[name] : `{${name}}`) + literals[i + 1]!
  }
  return out
}

/** A filler for a list of templates; lists without placeholders are computed once. */
const compileTemplates = (
  templates: ReadonlyArray<string> | undefined,
  problem: (index: number, message: string) => void
): (variables: Variables) => ReadonlyArray<string> => {
  if (templates === undefined || templates.length === 0) return () => EMPTY
  const parsed: Array<ParsedTemplate> = []
  templates.forEach((template, index) => {
    const result = parseTemplate(template)
    if (Result.isFailure(result)) problem(index, result.failure)
    else parsed.push(result.success)
  })
  if (parsed.every((template) => template.names.length === 0)) {
    const constant = Object.freeze(parsed.map((template) => template.source))
    return () => constant
  }
  return (variables) => {
    const out: Array<string> = new Array(parsed.length)
    for (let i = 0; i < parsed.length; i++) out[i] = fillTemplate(parsed[i]!, variables)
    return out
  }
}

// ---------------------------------------------------------------------------
// Compilation
// ---------------------------------------------------------------------------

interface ChannelEntry {
  readonly channel: CompiledChannel
  readonly matcher: Matcher
  /** Reused scratch space for variable offsets; matching is synchronous, so it is never shared by two calls. */
  readonly bounds: Int32Array
  readonly names: ReadonlyArray<string>
  readonly tests: ReadonlyArray<SegmentTest | undefined>
  readonly join: (variables: Variables) => ReadonlyArray<string>
  readonly send: (variables: Variables) => ReadonlyArray<string>
  /** The match of a channel without variables is always the same object. */
  readonly constantMatch: ChannelMatch | undefined
}

const NO_VARIABLES: Variables = Object.freeze({})

const matchEntry = (entry: ChannelEntry, topic: string): ChannelMatch | undefined => {
  if (!matchTopic(entry.matcher, topic, entry.bounds)) return undefined
  if (entry.constantMatch !== undefined) return entry.constantMatch
  const { bounds, names, tests } = entry
  const variables: Record<string, string> = {}
  for (let i = 0; i < names.length; i++) {
    const value = topic.slice(bounds[2 * i]!, bounds[2 * i + 1]!)
    const test = tests[i]
    if (test !== undefined && !test(value)) return undefined
    variables[names[i]!] = value
  }
  return {
    channel: entry.channel,
    variables,
    joinPermissions: entry.join(variables),
    sendPermissions: entry.send(variables)
  }
}

const compileChannel = (
  definition: ChannelDefinition,
  index: number,
  report: (path: ReadonlyArray<PropertyKey>, message: string) => void
): ChannelEntry | undefined => {
  const parsed = parseTopicPattern(definition.pattern)
  if (Result.isFailure(parsed)) {
    report(["channels", index, "pattern"], parsed.failure)
    return undefined
  }
  const names = parsed.success.variables
  const rules = definition.variables ?? {}
  for (const name of Object.keys(rules)) {
    if (!names.includes(name)) report(["channels", index, "variables", name], `the pattern has no variable {${name}}`)
  }
  const tests = names.map((name) =>
    Object.hasOwn(rules, name)
      ? compileRule(rules[name]!, (path, message) => report(["channels", index, "variables", name, ...path], message))
      : undefined
  )
  const templates = (kind: "join" | "send") => {
    const list = definition.permissions?.[kind]
    list?.forEach((template, t) => {
      const parsedTemplate = parseTemplate(template)
      if (Result.isSuccess(parsedTemplate)) {
        for (const name of parsedTemplate.success.names) {
          if (!names.includes(name)) report(["channels", index, "permissions", kind, t], `{${name}} is not a variable of the pattern`)
        }
      }
    })
    return compileTemplates(list, (t, message) => report(["channels", index, "permissions", kind, t], message))
  }
  const join = templates("join")
  const send = templates("send")
  const channel: CompiledChannel = {
    pattern: definition.pattern,
    description: definition.description,
    presence: definition.presence ?? false,
    index,
    variableNames: names,
    definition
  }
  return {
    channel,
    matcher: toMatcher(parsed.success),
    bounds: new Int32Array(2 * names.length),
    names,
    tests,
    join,
    send,
    constantMatch: names.length === 0
      ? { channel, variables: NO_VARIABLES, joinPermissions: join(NO_VARIABLES), sendPermissions: send(NO_VARIABLES) }
      : undefined
  }
}

const acceptAnyPayload: PayloadValidator = () => undefined

const compileEvent = (
  definition: EventDefinition,
  index: number,
  compiler: PayloadCompiler,
  report: (path: ReadonlyArray<PropertyKey>, message: string) => void
): CompiledEvent => {
  const matchers: Array<Matcher> = []
  definition.allowedChannels.forEach((pattern, p) => {
    const parsed = parseTopicPattern(pattern)
    if (Result.isFailure(parsed)) report(["events", index, "allowedChannels", p], parsed.failure)
    else matchers.push(toMatcher(parsed.success))
  })
  const anyTopic = matchers.some((matcher) => matcher.matchesAll)
  const allowedOn = anyTopic
    ? () => true
    : (topic: string) => {
      for (let i = 0; i < matchers.length; i++) if (matchTopic(matchers[i]!, topic, undefined)) return true
      return false
    }
  let validatePayload = acceptAnyPayload
  if (definition.payload !== undefined) {
    const compiled = compilePayloadSpec(definition.payload, compiler)
    if (Result.isFailure(compiled)) report(["events", index, "payload"], compiled.failure)
    else validatePayload = compiled.success
  }
  return {
    name: definition.name,
    definition,
    allowedOn,
    sendPermissions: compileTemplates(
      definition.permissions?.send,
      (t, message) => report(["events", index, "permissions", "send", t], message)
    ),
    validatePayload
  }
}

const compileRateLimits = (doc: SchemaDocument): CompiledRateLimits => {
  const byEvent: ReadonlyMap<string, RateLimit> = new Map(Object.entries(doc.rateLimits?.byEvent ?? {}))
  const fallback = doc.rateLimits?.default
  return fallback === undefined ? { byEvent } : { default: fallback, byEvent }
}

const compile = (doc: SchemaDocument): Result.Result<CompiledAppSchema, InvalidSchemaDocument> => {
  const problems: Array<DocumentProblem> = []
  const report = (path: ReadonlyArray<PropertyKey>, message: string) => {
    problems.push({ path: formatJsonPath(path), message })
  }
  const entries: Array<ChannelEntry> = []
  doc.channels.forEach((definition, index) => {
    const entry = compileChannel(definition, index, report)
    if (entry !== undefined) entries.push(entry)
  })
  const compiler = makePayloadCompiler()
  const events = new Map<string, CompiledEvent>()
  doc.events.forEach((definition, index) => {
    if (events.has(definition.name)) report(["events", index, "name"], `duplicate event name "${definition.name}"`)
    else events.set(definition.name, compileEvent(definition, index, compiler, report))
  })
  if (problems.length > 0) return Result.fail(invalidSchemaDocument(problems))

  const channelCount = entries.length
  return Result.succeed({
    version: doc.version,
    document: doc,
    channels: entries.map((entry) => entry.channel),
    events,
    matchChannel: (topic) => {
      for (let i = 0; i < channelCount; i++) {
        const match = matchEntry(entries[i]!, topic)
        if (match !== undefined) return match
      }
      return undefined
    },
    event: (name) => events.get(name),
    rateLimits: compileRateLimits(doc)
  })
}

/**
 * Compiles a decoded document. A document from {@link decodeSchemaDocument}
 * always compiles (its payload validators are reused, not compiled again);
 * one built by other means is checked here and may be rejected the same way.
 */
export const compileSchema = (doc: SchemaDocument): Effect.Effect<CompiledAppSchema, InvalidSchemaDocument> =>
  Effect.suspend(() => Effect.fromResult(compile(doc)))

/** Decodes, checks and compiles a document fetched from an app. */
export const loadSchemaDocument = (input: unknown): Effect.Effect<CompiledAppSchema, InvalidSchemaDocument> =>
  Effect.flatMap(decodeSchemaDocument(input), compileSchema)
