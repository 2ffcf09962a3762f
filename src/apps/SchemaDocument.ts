/**
 * The "channel schema" document an app publishes to describe its realtime
 * surface: which topics may be joined (channel patterns with typed
 * variables), which events may be pushed on them, the permissions both need,
 * the payload each event accepts, and optional rate limits.
 *
 * The document's shape is declared in `contract/SchemaDocument.ts` (shared
 * with the SDK and the test kit); this module adds to it the rules of the
 * small languages embedded in it, because a document is only accepted when
 * every part of it can later be compiled:
 *
 * - topic patterns (`room:{id}`, `user-{id}:inbox`, `room:*`), see
 *   {@link parseTopicPattern};
 * - permission templates (`read:{resource}:{id}`), see {@link parseTemplate};
 * - payload specs, either a full JSON Schema or the shorthand
 *   `{"field": "string", "other": "integer?"}`, see {@link compilePayloadSpec}.
 *
 * {@link decodeSchemaDocument} checks the shape and then the rules a shape
 * cannot express (a variable used twice in a pattern, a variable `pattern`
 * that is not a RegExp, a payload schema Ajv cannot compile, duplicate event
 * names, a template naming a variable its pattern lacks, ...). Every problem
 * is reported with its path in one {@link InvalidSchemaDocument}, so an app
 * sees all of its mistakes at once while the gateway keeps the last good
 * document.
 *
 * Decoding normalizes: `version` becomes a string, the event alias `channels`
 * becomes `allowedChannels`, numeric `enum` entries become strings (they are
 * compared with topic segments) and unknown keys are dropped (apps may add
 * keys before the gateway knows them; wrong types are still rejected).
 */
import { Ajv } from "ajv"
import type { AnySchema, ErrorObject, Format, ValidateFunction } from "ajv"
import { Ajv2020 } from "ajv/dist/2020.js"
import type * as AjvCoreModule from "ajv/dist/core.js"
import addFormats from "ajv-formats"
import { Effect, Result, Schema, Struct } from "effect"
import * as Contract from "../contract/SchemaDocument.ts"
import type { VariableFormat } from "../contract/SchemaDocument.ts"
import { describeIssue, Problem } from "../contract/Problems.ts"
import { compileLinearRegExp, linearRegExpEngine } from "./LinearRegExp.ts"
import { payloadCostProblems } from "./PayloadCost.ts"

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

/** One problem of a rejected document; `path` looks like `channels[0].variables.id.pattern` ("" = the document itself). */
export type DocumentProblem = Problem

export class InvalidSchemaDocument extends Schema.TaggedError<InvalidSchemaDocument>()("InvalidSchemaDocument", {
  /** Human-readable list of every problem with its path, one per line. */
  reason: Schema.String,
  /** The same problems, structured (absent when the error did not come from decoding, e.g. unparsable JSON). */
  issues: Schema.optionalKey(Schema.Array(Problem))
}) {
  // Logs and `Cause` renderings show `message`; without this it would be empty.
  override get message(): string {
    return this.reason
  }
}

// ---------------------------------------------------------------------------
// Topic patterns and permission templates
// ---------------------------------------------------------------------------

export type PatternSegment =
  | { readonly _tag: "Literal"; readonly text: string }
  | { readonly _tag: "Wildcard" }
  | { readonly _tag: "Variable"; readonly name: string }
  /** Literal text around variables inside one segment: `literals.length === names.length + 1`. */
  | { readonly _tag: "Mixed"; readonly literals: ReadonlyArray<string>; readonly names: ReadonlyArray<string> }

export interface ParsedPattern {
  readonly source: string
  /** The bare `*` pattern: any topic. */
  readonly matchesAll: boolean
  readonly segments: ReadonlyArray<PatternSegment>
  /** The last segment is `*`: it matches the (non-empty) rest of the topic. */
  readonly trailingWildcard: boolean
  /** Variable names in order of appearance. */
  readonly variables: ReadonlyArray<string>
}

/** A template split at its placeholders: `literals.length === names.length + 1`. */
export interface ParsedTemplate {
  readonly source: string
  readonly literals: ReadonlyArray<string>
  readonly names: ReadonlyArray<string>
}

const VARIABLE_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/

const checkVariableName = (name: string): string | undefined => {
  if (!VARIABLE_NAME.test(name)) {
    return `invalid variable name {${name}} (letters, digits and _, not starting with a digit)`
  }
  // Variables become keys of plain objects; this one would replace the prototype instead.
  if (name === "__proto__") return "the variable name {__proto__} is reserved"
  return undefined
}

/** Splits `a{x}b{y}c` into literals and names; shared by patterns and templates. */
const splitPlaceholders = (text: string): Result.Result<ParsedTemplate, string> => {
  const literals: Array<string> = []
  const names: Array<string> = []
  let literal = ""
  let i = 0
  while (i < text.length) {
    const c = text[i]!
    if (c === "}") return Result.fail(`unbalanced "}" in "${text}"`)
    if (c !== "{") {
      literal += c
      i++
      continue
    }
    const close = text.indexOf("}", i + 1)
    if (close === -1) return Result.fail(`unbalanced "{" in "${text}"`)
    const name = text.slice(i + 1, close)
    const nameProblem = checkVariableName(name)
    if (nameProblem !== undefined) return Result.fail(nameProblem)
    literals.push(literal)
    names.push(name)
    literal = ""
    i = close + 1
  }
  literals.push(literal)
  return Result.succeed({ source: text, literals, names })
}

/**
 * Parses a topic pattern. Topics are `:`-separated segments; in a pattern
 * - a literal segment matches itself exactly;
 * - `{name}` matches exactly one non-empty segment and binds it to `name`;
 * - text mixed with variables in one segment (`user-{id}`, `{a}-{b}`) matches
 *   a segment with that literal text; each variable binds a non-empty part and
 *   consecutive variables must be separated by literal text (`{a}{b}` has no
 *   single reading); a variable followed by text ends at the first occurrence
 *   of that text;
 * - `*` as a segment matches exactly one non-empty segment, except as the last
 *   segment, where it matches the non-empty rest of the topic (one or more
 *   segments, like Phoenix's `"room:*"`);
 * - the bare pattern `*` matches any topic.
 * Empty segments, `*` inside a segment and a variable used twice are errors.
 */
export const parseTopicPattern = (pattern: string): Result.Result<ParsedPattern, string> => {
  if (pattern === "") return Result.fail("the pattern is empty")
  if (pattern === "*") {
    return Result.succeed({ source: pattern, matchesAll: true, segments: [], trailingWildcard: false, variables: [] })
  }
  const parts = pattern.split(":")
  const segments: Array<PatternSegment> = []
  const variables: Array<string> = []
  for (let index = 0; index < parts.length; index++) {
    const part = parts[index]!
    if (part === "") return Result.fail(`empty segment ${index + 1} in "${pattern}"`)
    if (part === "*") {
      segments.push({ _tag: "Wildcard" })
      continue
    }
    if (part.includes("*")) {
      return Result.fail(`"*" must be a whole segment, found "${part}" in "${pattern}"`)
    }
    const split = splitPlaceholders(part)
    if (Result.isFailure(split)) return Result.fail(`${split.failure} in "${pattern}"`)
    const { literals, names } = split.success
    for (let k = 1; k < literals.length - 1; k++) {
      if (literals[k] === "") {
        return Result.fail(`variables {${names[k - 1]}}{${names[k]}} must be separated by literal text in "${pattern}"`)
      }
    }
    for (const name of names) {
      if (variables.includes(name)) return Result.fail(`variable {${name}} is used twice in "${pattern}"`)
      variables.push(name)
    }
    if (names.length === 0) segments.push({ _tag: "Literal", text: part })
    else if (names.length === 1 && literals[0] === "" && literals[1] === "") {
      segments.push({ _tag: "Variable", name: names[0]! })
    } else segments.push({ _tag: "Mixed", literals, names })
  }
  return Result.succeed({
    source: pattern,
    matchesAll: false,
    segments,
    trailingWildcard: segments[segments.length - 1]?._tag === "Wildcard",
    variables
  })
}

/** Parses a permission template; `{name}` placeholders may appear anywhere. */
export const parseTemplate = (template: string): Result.Result<ParsedTemplate, string> => {
  if (template === "") return Result.fail("the permission is empty")
  return splitPlaceholders(template)
}

// ---------------------------------------------------------------------------
// Payload specs
// ---------------------------------------------------------------------------

/** An event's `payload`: a JSON Schema (object or boolean) or the shorthand form. */
export type PayloadSpec = Contract.PayloadSpec

/** One payload validation failure; `path` is a JSON Pointer into the payload ("" = the payload itself). */
export interface PayloadError {
  readonly path: string
  readonly message: string
}

/**
 * `undefined` when the payload is valid; otherwise its first error (validation
 * stops there, so a hostile payload with many faults costs no more than one).
 */
export type PayloadValidator = (payload: unknown) => ReadonlyArray<PayloadError> | undefined

const SHORTHAND_TYPE = /^(string|number|integer|boolean|object|array)(\?)?$/

// Keywords of draft-07 and 2020-12 (plus OpenAPI's `nullable`). Only used to
// tell a JSON Schema from a shorthand whose values all look like type names.
const JSON_SCHEMA_KEYWORDS: ReadonlySet<string> = new Set([
  "$schema", "$id", "$ref", "$defs", "definitions", "$comment", "$anchor", "$dynamicRef", "$dynamicAnchor",
  "$recursiveRef", "$recursiveAnchor", "$vocabulary", "type", "enum", "const", "properties", "patternProperties",
  "additionalProperties", "required", "items", "prefixItems", "additionalItems", "contains", "minContains",
  "maxContains", "minItems", "maxItems", "uniqueItems", "minLength", "maxLength", "pattern", "format", "minimum",
  "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf", "minProperties", "maxProperties",
  "propertyNames", "dependencies", "dependentRequired", "dependentSchemas", "allOf", "anyOf", "oneOf", "not", "if",
  "then", "else", "title", "description", "default", "examples", "readOnly", "writeOnly", "deprecated",
  "contentEncoding", "contentMediaType", "contentSchema", "unevaluatedProperties", "unevaluatedItems", "nullable"
])

/**
 * Whether a payload spec is the shorthand `{"field": "<type>[?]"}` rather than
 * a JSON Schema. It is shorthand when it has at least one key, every value is
 * a type name (`string`, `number`, `integer`, `boolean`, `object`, `array`,
 * optionally suffixed with `?`), and it cannot be read as a JSON Schema: some
 * value carries `?` (never valid in JSON Schema) or some key is not a JSON
 * Schema keyword. So `{"type": "object"}` is a JSON Schema (any object) while
 * `{"type": "string", "body": "string"}` and `{"type": "string?"}` are
 * shorthand. `{}` is the JSON Schema that accepts anything.
 */
export const isShorthandPayload = (spec: PayloadSpec): boolean => {
  if (typeof spec === "boolean") return false
  let entries = 0
  let onlyKeywords = true
  let optionalMarker = false
  for (const key in spec) {
    if (!Object.hasOwn(spec, key)) continue
    const value = spec[key]
    if (typeof value !== "string") return false
    const match = SHORTHAND_TYPE.exec(value)
    if (match === null) return false
    entries++
    if (match[2] !== undefined) optionalMarker = true
    if (!JSON_SCHEMA_KEYWORDS.has(key)) onlyKeywords = false
  }
  return entries > 0 && (optionalMarker || !onlyKeywords)
}

/** The JSON Schema a shorthand stands for: an object with those properties, required unless `?`, others allowed. */
const shorthandToJsonSchema = (spec: { readonly [key: string]: unknown }): Record<string, unknown> => {
  const properties: Record<string, unknown> = {}
  const required: Array<string> = []
  for (const key of Object.keys(spec)) {
    const match = SHORTHAND_TYPE.exec(spec[key] as string)!
    // defineProperty: a field may legitimately be called "__proto__".
    Object.defineProperty(properties, key, { value: { type: match[1] }, enumerable: true, writable: true, configurable: true })
    if (match[2] === undefined) required.push(key)
  }
  return { type: "object", properties, required }
}

type Dialect = "draft-07" | "2020-12"

const dialectOf = (schema: { readonly [key: string]: unknown }): Result.Result<Dialect, string> => {
  const uri = schema["$schema"]
  if (uri === undefined) return Result.succeed("draft-07")
  if (typeof uri === "string") {
    if (/^https?:\/\/json-schema\.org\/draft-07\/schema#?$/.test(uri)) return Result.succeed("draft-07")
    if (/^https?:\/\/json-schema\.org\/draft\/2020-12\/schema#?$/.test(uri)) return Result.succeed("2020-12")
  }
  return Result.fail(
    `unsupported $schema ${JSON.stringify(uri)} (supported: http://json-schema.org/draft-07/schema#, https://json-schema.org/draft/2020-12/schema)`
  )
}

// Both Ajv classes share this base; typing with it avoids a union of overloaded classes.
type AjvCore = AjvCoreModule.default

// Not `allErrors`: on hostile payloads it walks every property and item, which
// measured as hundreds of milliseconds for one 1 MiB frame. The first error is enough.
// `code.regExp`: patterns run in linear time (LinearRegExp.ts).
const AJV_OPTIONS = { allErrors: false, strict: false, logger: false, code: { regExp: linearRegExpEngine } } as const

const makeAjv = (dialect: Dialect, validateSchema: boolean): AjvCore => {
  const ajv = dialect === "draft-07"
    ? new Ajv({ ...AJV_OPTIONS, validateSchema })
    : new Ajv2020({ ...AJV_OPTIONS, validateSchema })
  addFormats.default(ajv)
  return ajv
}

// Checking a schema against its meta-schema needs the meta-schema compiled
// (~10 ms), so that is done by long-lived instances that never store app
// schemas. Compiling happens in an instance per document instead: Ajv keeps
// every schema it compiled (and registers `$id`s), so a shared instance would
// grow with each published version and let one app's `$id` collide with
// another's; a per-document instance is collected with the document.
const metaValidators = new Map<Dialect, AjvCore>()
const metaValidator = (dialect: Dialect): AjvCore => {
  let ajv = metaValidators.get(dialect)
  if (ajv === undefined) {
    ajv = makeAjv(dialect, true)
    metaValidators.set(dialect, ajv)
  }
  return ajv
}

/** Ajv instances for compiling the payload schemas of one document. */
export interface PayloadCompiler {
  readonly instances: Map<Dialect, AjvCore>
}

export const makePayloadCompiler = (): PayloadCompiler => ({ instances: new Map() })

const escapePointer = (segment: string): string => segment.replace(/~/g, "~0").replace(/\//g, "~1")

const toPayloadError = (error: ErrorObject): PayloadError => {
  // Point at the property a "required"/"additionalProperties" error is about, not at its parent.
  const params = error.params as Record<string, unknown>
  const property = params["missingProperty"] ?? params["additionalProperty"] ?? params["unevaluatedProperty"]
  const path = typeof property === "string" ? `${error.instancePath}/${escapePointer(property)}` : error.instancePath
  return { path, message: error.message ?? error.keyword }
}

const acceptAll: PayloadValidator = () => undefined
const REJECT_ALL: ReadonlyArray<PayloadError> = Object.freeze([{ path: "", message: "this event accepts no payload" }])
const rejectAll: PayloadValidator = () => REJECT_ALL
// Ajv always explains a failure; this only keeps "invalid" from ever looking like "valid".
const UNEXPLAINED: ReadonlyArray<PayloadError> = Object.freeze([{ path: "", message: "invalid payload" }])

// Decoding compiles every payload schema to prove it compiles; compileSchema
// then picks the validators up here instead of compiling them a second time.
// Keyed by the (decoded) spec object, so they live exactly as long as the document.
const compiledPayloads = new WeakMap<object, PayloadValidator>()

/**
 * Compiles a payload spec (shorthand or JSON Schema, see
 * {@link isShorthandPayload}) into a validator, or explains why it cannot be
 * compiled. JSON Schemas are draft-07 unless `$schema` says 2020-12; external
 * `$ref`s are not fetched (they fail to compile). Results are memoized per
 * spec object.
 */
export const compilePayloadSpec = (
  spec: PayloadSpec,
  compiler: PayloadCompiler = makePayloadCompiler()
): Result.Result<PayloadValidator, string> => {
  if (spec === true) return Result.succeed(acceptAll)
  if (spec === false) return Result.succeed(rejectAll)
  const memo = compiledPayloads.get(spec)
  if (memo !== undefined) return Result.succeed(memo)
  const schema = isShorthandPayload(spec) ? shorthandToJsonSchema(spec) : spec
  const dialect = dialectOf(schema)
  if (Result.isFailure(dialect)) return Result.fail(dialect.failure)
  // Only the root may be async in Ajv, and an async validator would need awaiting per message.
  if (schema["$async"] === true) return Result.fail("asynchronous JSON Schemas ($async) are not supported")
  let validate: ValidateFunction
  try {
    const meta = metaValidator(dialect.success)
    if (meta.validateSchema(schema as AnySchema) !== true) {
      return Result.fail(`invalid JSON Schema: ${meta.errorsText(meta.errors, { dataVar: "schema" })}`)
    }
    const costs = payloadCostProblems(schema)
    if (costs.length > 0) return Result.fail(costs.join("; "))
    let ajv = compiler.instances.get(dialect.success)
    if (ajv === undefined) {
      ajv = makeAjv(dialect.success, false)
      compiler.instances.set(dialect.success, ajv)
    }
    validate = ajv.compile(schema as AnySchema) as ValidateFunction
  } catch (error) {
    return Result.fail(`Ajv cannot compile the JSON Schema: ${error instanceof Error ? error.message : String(error)}`)
  }
  const validator: PayloadValidator = (payload) => {
    if (validate(payload) === true) return undefined
    const first = validate.errors?.[0]
    return first === undefined ? UNEXPLAINED : [toPayloadError(first)]
  }
  compiledPayloads.set(spec, validator)
  return Result.succeed(validator)
}

// ---------------------------------------------------------------------------
// Variable rules
// ---------------------------------------------------------------------------


/** Any version, either case; also used for variables of type "uuid". */
export const UUID_PATTERN = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i

const formatTest = (format: Format): (value: string) => boolean => {
  if (format === true) return () => true
  if (typeof format === "string") {
    const re = new RegExp(format, "u")
    return (value) => re.test(value)
  }
  if (format instanceof RegExp) return (value) => format.test(value)
  if (typeof format === "function") return (value) => format(value) === true
  if ("async" in format && format.async === true) throw new Error("asynchronous formats cannot validate topic segments")
  return formatTest(format.validate as Format)
}

/** A predicate for a topic-segment format, built once per compiled channel. */
export const variableFormatTest = (format: VariableFormat): (value: string) => boolean =>
  format === "uuid" ? (value) => UUID_PATTERN.test(value) : formatTest(addFormats.default.get(format, "full"))

/** A variable `pattern` as a predicate that the whole segment must pass, run in linear time. */
export const compileVariablePattern = (pattern: string): Result.Result<(value: string) => boolean, string> =>
  Result.map(compileLinearRegExp(pattern), (re) => (value: string) => re.testExact(value))

const NUMERIC_TYPES: ReadonlySet<string> = new Set(["integer", "number"])

export const VariableRule = Contract.VariableRule.check(Schema.makeFilter((rule) => {
  const issues: Array<Schema.FilterIssue> = []
  if (rule.pattern !== undefined) {
    const compiled = compileVariablePattern(rule.pattern)
    if (Result.isFailure(compiled)) issues.push({ path: ["pattern"], issue: compiled.failure })
  }
  if (rule.enum !== undefined && rule.enum.length === 0) {
    issues.push({ path: ["enum"], issue: "an empty enum matches nothing" })
  }
  for (const key of ["minimum", "maximum"] as const) {
    if (rule[key] !== undefined && !NUMERIC_TYPES.has(rule.type ?? "string")) {
      issues.push({ path: [key], issue: `${key} needs type "integer" or "number"` })
    }
  }
  if (rule.minLength !== undefined && rule.maxLength !== undefined && rule.minLength > rule.maxLength) {
    issues.push({ path: ["minLength"], issue: "minLength is greater than maxLength" })
  }
  if (rule.minimum !== undefined && rule.maximum !== undefined && rule.minimum > rule.maximum) {
    issues.push({ path: ["minimum"], issue: "minimum is greater than maximum" })
  }
  return issues
}))
export type VariableRule = typeof VariableRule.Type

// ---------------------------------------------------------------------------
// Channels
// ---------------------------------------------------------------------------

export const ChannelDefinition = Contract.ChannelDefinition.mapFields(Struct.assign({
  variables: Schema.optionalKey(Schema.Record(Schema.String, VariableRule))
})).check(Schema.makeFilter((channel) => {
  const issues: Array<Schema.FilterIssue> = []
  const parsed = parseTopicPattern(channel.pattern)
  if (Result.isFailure(parsed)) return { path: ["pattern"], issue: parsed.failure }
  const bound = parsed.success.variables
  for (const name of Object.keys(channel.variables ?? {})) {
    if (!bound.includes(name)) {
      issues.push({
        path: ["variables", name],
        issue: `the pattern "${channel.pattern}" has no variable {${name}}, so this rule would never apply`
      })
    }
  }
  for (const kind of ["join", "send"] as const) {
    const templates = channel.permissions?.[kind] ?? []
    templates.forEach((template, index) => {
      const path = ["permissions", kind, index]
      const parsedTemplate = parseTemplate(template)
      if (Result.isFailure(parsedTemplate)) return issues.push({ path, issue: parsedTemplate.failure })
      for (const name of parsedTemplate.success.names) {
        if (!bound.includes(name)) {
          issues.push({ path, issue: `{${name}} is not a variable of the pattern "${channel.pattern}"` })
        }
      }
    })
  }
  return issues
}))
export type ChannelDefinition = typeof ChannelDefinition.Type

// ---------------------------------------------------------------------------
// Events
// ---------------------------------------------------------------------------

const sameList = (a: ReadonlyArray<string>, b: ReadonlyArray<string>): boolean =>
  a.length === b.length && a.every((value, index) => value === b[index])

/** The event as written: `allowedChannels` or its alias `channels`. */
const EventInput = Contract.EventInput.check(Schema.makeFilter((event) => {
  const { allowedChannels, channels } = event
  if (allowedChannels === undefined && channels === undefined) {
    return { path: ["allowedChannels"], issue: "missing allowedChannels (or its alias channels), use [\"*\"] for any topic" }
  }
  if (allowedChannels !== undefined && channels !== undefined && !sameList(allowedChannels, channels)) {
    return { path: ["channels"], issue: "allowedChannels and its alias channels are both present and differ" }
  }
  const key = allowedChannels !== undefined ? "allowedChannels" : "channels"
  const patterns = allowedChannels ?? channels ?? []
  if (patterns.length === 0) {
    return { path: [key], issue: "lists no channel pattern, so the event could never be sent (use [\"*\"] for any topic)" }
  }
  const issues: Array<Schema.FilterIssue> = []
  patterns.forEach((pattern, index) => {
    const parsed = parseTopicPattern(pattern)
    if (Result.isFailure(parsed)) issues.push({ path: [key, index], issue: parsed.failure })
  })
  event.permissions?.send?.forEach((template, index) => {
    const parsed = parseTemplate(template)
    if (Result.isFailure(parsed)) issues.push({ path: ["permissions", "send", index], issue: parsed.failure })
  })
  return issues
}))

export const EventDefinition = Contract.withAllowedChannels(EventInput)
export type EventDefinition = typeof EventDefinition.Type

// ---------------------------------------------------------------------------
// Rate limits
// ---------------------------------------------------------------------------


// ---------------------------------------------------------------------------
// The document
// ---------------------------------------------------------------------------

const patternVariables = (pattern: string): ReadonlyArray<string> => {
  const parsed = parseTopicPattern(pattern)
  return Result.isSuccess(parsed) ? parsed.success.variables : []
}

export const SchemaDocument = Contract.SchemaDocument.mapFields(Struct.assign({
  channels: Schema.Array(ChannelDefinition),
  events: Schema.Array(EventDefinition)
})).check(Schema.makeFilter((doc) => {
  const issues: Array<Schema.FilterIssue> = []
  const firstIndex = new Map<string, number>()
  // Event-level send permissions are filled with the variables of the channel
  // the topic matched, so they may only name variables some channel binds.
  const channelVariables = new Set(doc.channels.flatMap((channel) => patternVariables(channel.pattern)))
  const compiler = makePayloadCompiler()
  doc.events.forEach((event, index) => {
    const first = firstIndex.get(event.name)
    if (first === undefined) firstIndex.set(event.name, index)
    else issues.push({ path: ["events", index, "name"], issue: `duplicate event name "${event.name}" (first defined at events[${first}])` })
    event.permissions?.send?.forEach((template, t) => {
      const parsed = parseTemplate(template)
      if (Result.isFailure(parsed)) return
      for (const name of parsed.success.names) {
        if (!channelVariables.has(name)) {
          issues.push({ path: ["events", index, "permissions", "send", t], issue: `{${name}} is not a variable of any channel pattern` })
        }
      }
    })
    if (event.payload !== undefined) {
      const compiled = compilePayloadSpec(event.payload, compiler)
      if (Result.isFailure(compiled)) issues.push({ path: ["events", index, "payload"], issue: compiled.failure })
    }
  })
  return issues
}))
export type SchemaDocument = typeof SchemaDocument.Type

// ---------------------------------------------------------------------------
// Decoding
// ---------------------------------------------------------------------------

/**
 * Builds the error from problems (also used by the compiler for documents that
 * were not decoded). The reason is one line, `path: message` per problem
 * joined by "; ", so that it fits a log line.
 */
export const invalidSchemaDocument = (problems: ReadonlyArray<DocumentProblem>): InvalidSchemaDocument =>
  new InvalidSchemaDocument({
    reason: problems.map((problem) => problem.path === "" ? problem.message : `${problem.path}: ${problem.message}`).join("; "),
    issues: problems
  })

const decodeShape = Schema.decodeUnknownEffect(SchemaDocument, { errors: "all" })

/**
 * Decodes and checks an app's schema document. Fails with every problem found
 * (shape problems first; the cross-cutting checks run once the shape is right).
 */
export const decodeSchemaDocument = (input: unknown): Effect.Effect<SchemaDocument, InvalidSchemaDocument> =>
  decodeShape(input).pipe(
    Effect.mapError((error) => invalidSchemaDocument(describeIssue(error.issue)))
  )
