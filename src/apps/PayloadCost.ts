/**
 * Payload JSON Schemas whose validation could cost more than linear time in
 * the payload are refused when the schema loads (CONTRACT §3: "no schema makes
 * one client's frame stall other clients"). Ajv's generated validators are
 * linear in the payload times the schema's size, except for:
 *
 * - `uniqueItems`: Ajv compares every pair of items (quadratic) unless the
 *   items are declared scalars (`items.type` without `object` or `array`, then
 *   a hash set). It is accepted with `maxItems` at most
 *   {@link MAX_UNIQUE_ITEMS}, or with scalar items.
 * - `$ref`: a definition used N times is validated N times over the same data,
 *   and references compound (a definition whose `anyOf` refers twice to the
 *   next one doubles per level; a recursive one that refers to itself twice
 *   doubles per level of payload nesting). The schema is expanded as Ajv runs
 *   it, every `$ref` followed, recursion only as deep as a payload may nest
 *   (`MAX_JSON_DEPTH`), and refused past {@link MAX_EXPANDED_SUBSCHEMAS}. A
 *   reference that loops without going into the payload would never end and is
 *   refused; so are references this expansion cannot follow (anything but `#`
 *   and `#/json/pointer` within the document, `$dynamicRef`, `$recursiveRef`,
 *   `$id` below the root), since their cost could not be bounded.
 *
 * Regular expressions are linear by construction (see LinearRegExp.ts).
 */
import { isJsonObject, MAX_JSON_DEPTH } from "../protocol/json.ts"

/** Largest `maxItems` accepted beside `uniqueItems` on items that are not declared scalars. */
const MAX_UNIQUE_ITEMS = 256

/** Subschemas a payload schema may expand to once its `$ref`s are followed. */
const MAX_EXPANDED_SUBSCHEMAS = 50_000

type SchemaObject = { readonly [key: string]: unknown }

// Keywords whose value is a subschema (or a list or map of them), by whether
// it applies to the same value or to values inside it. Anything else (`enum`,
// `const`, `default`, `examples`, `$defs`...) holds data or is only reached by `$ref`.
const SAME_VALUE_ONE = ["not", "if", "then", "else"]
const SAME_VALUE_LIST = ["allOf", "anyOf", "oneOf"]
const SAME_VALUE_MAP = ["dependentSchemas", "dependencies"]
const INNER_VALUE_ONE = [
  "items",
  "additionalItems",
  "contains",
  "additionalProperties",
  "propertyNames",
  "unevaluatedItems",
  "unevaluatedProperties"
]
const INNER_VALUE_LIST = ["items", "prefixItems"]
const INNER_VALUE_MAP = ["properties", "patternProperties"]
const UNFOLLOWED_REFS = ["$dynamicRef", "$recursiveRef"]

const SCALAR_TYPES: ReadonlySet<unknown> = new Set(["string", "number", "integer", "boolean", "null"])

/** Whether Ajv checks `uniqueItems` with a hash set: the items are declared scalars. */
const hasScalarItems = (schema: SchemaObject): boolean => {
  const items = schema["items"]
  if (!isJsonObject(items)) return false
  const type = items["type"]
  const types = Array.isArray(type) ? type : [type]
  return types.length > 0 && types.every((t) => SCALAR_TYPES.has(t))
}

/** The value a `#` or `#/json/pointer` reference names, or undefined when there is none. */
const resolveLocalRef = (root: unknown, ref: string): unknown => {
  if (ref === "#") return root
  if (!ref.startsWith("#/")) return undefined
  let node: unknown = root
  for (const raw of ref.slice(2).split("/")) {
    const segment = decodeURIComponent(raw).replace(/~1/g, "/").replace(/~0/g, "~")
    if (Array.isArray(node)) node = node[Number(segment)]
    else if (isJsonObject(node) && Object.hasOwn(node, segment)) node = node[segment]
    else return undefined
  }
  return node
}

/** A `$ref` being expanded on the way to a subschema, and those before it. */
interface RefExpansion {
  readonly target: unknown
  /** The payload depth it was met at. */
  readonly depth: number
  readonly outer: RefExpansion | undefined
}

const expandsAt = (refs: RefExpansion | undefined, target: unknown, depth: number): boolean => {
  for (let ref = refs; ref !== undefined; ref = ref.outer) if (ref.target === target && ref.depth === depth) return true
  return false
}

interface Visit {
  readonly schema: unknown
  /** Levels of the payload below the value the schema applies to. */
  readonly depth: number
  readonly refs: RefExpansion | undefined
  /** Where it was met, for the reasons: the visit it was found in and its key there. */
  readonly parent: Visit | undefined
  readonly key: string
}

/** `properties.a.items.$ref→#/$defs/b.anyOf[0]`: spelled out only for a reason. */
const pathOf = (visit: Visit | undefined, key?: string): string => {
  const keys = key === undefined ? [] : [key]
  for (let at = visit; at !== undefined && at.parent !== undefined; at = at.parent) keys.push(at.key)
  return keys.reverse().join(".")
}

/**
 * The reasons a payload JSON Schema could cost more than linear time in the
 * payload (empty when it cannot). `path` names the schema in the reasons.
 */
export const payloadCostProblems = (root: unknown): ReadonlyArray<string> => {
  const problems: Array<string> = []
  const reported = new Set<string>()
  const report = (visit: Visit | undefined, key: string | undefined, message: string) => {
    const path = pathOf(visit, key)
    const line = `${path === "" ? "the schema" : path}: ${message}`
    if (!reported.has(line)) {
      reported.add(line)
      problems.push(line)
    }
  }
  // explicit stack: schemas and their expansions may nest deeper than the call stack
  const stack: Array<Visit> = isJsonObject(root) ? [{ schema: root, depth: 0, refs: undefined, parent: undefined, key: "" }] : []
  let expanded = 0
  while (stack.length > 0) {
    const visit = stack.pop()!
    const { depth, refs } = visit
    const schema = visit.schema as SchemaObject
    if (++expanded > MAX_EXPANDED_SUBSCHEMAS) {
      report(
        undefined,
        undefined,
        `expands to more than ${MAX_EXPANDED_SUBSCHEMAS} subschemas once its $refs are followed ` +
          "(a definition referred to from many places, or a recursive one that refers to itself more than once), " +
          "so validating a payload would cost more than linear time"
      )
      break
    }
    const push = (child: unknown, key: string, inner: boolean) => {
      // booleans cost nothing; a payload never nests deeper than the limit, so nothing is validated there
      if (!isJsonObject(child) || (inner && depth + 1 > MAX_JSON_DEPTH)) return
      stack.push({ schema: child, depth: inner ? depth + 1 : depth, refs, parent: visit, key })
    }

    if (schema["uniqueItems"] === true && !hasScalarItems(schema)) {
      const maxItems = schema["maxItems"]
      if (typeof maxItems !== "number" || maxItems > MAX_UNIQUE_ITEMS) {
        report(
          visit,
          "uniqueItems",
          `needs maxItems of at most ${MAX_UNIQUE_ITEMS} (or items of a scalar type): ` +
            "checking that items are unique compares every pair of them"
        )
      }
    }
    if (visit.parent !== undefined && typeof schema["$id"] === "string") {
      report(visit, "$id", "$id below the schema's root is not supported (its $refs could not be followed to bound their cost)")
    }
    for (const keyword of UNFOLLOWED_REFS) {
      if (keyword in schema) report(visit, keyword, `${keyword} is not supported (its cost could not be bounded)`)
    }
    const ref = schema["$ref"]
    if (typeof ref === "string") {
      const target = resolveLocalRef(root, ref)
      if (target === undefined) {
        report(visit, "$ref", `${JSON.stringify(ref)} is not a reference within this schema (# or #/json/pointer)`)
      } else if (expandsAt(refs, target, depth)) {
        report(visit, "$ref", `${JSON.stringify(ref)} refers back to itself without going into the payload: validation would never end`)
      } else if (isJsonObject(target)) {
        stack.push({ schema: target, depth, refs: { target, depth, outer: refs }, parent: visit, key: `$ref→${ref}` })
      }
    }
    for (const keyword of SAME_VALUE_ONE) push(schema[keyword], keyword, false)
    for (const keyword of INNER_VALUE_ONE) push(schema[keyword], keyword, true)
    for (const keyword of SAME_VALUE_LIST) {
      const list = schema[keyword]
      if (Array.isArray(list)) list.forEach((child, index) => push(child, `${keyword}[${index}]`, false))
    }
    for (const keyword of INNER_VALUE_LIST) {
      const list = schema[keyword]
      if (Array.isArray(list)) list.forEach((child, index) => push(child, `${keyword}[${index}]`, true))
    }
    for (const keyword of SAME_VALUE_MAP) {
      const map = schema[keyword]
      if (isJsonObject(map)) for (const key of Object.keys(map)) push(map[key], `${keyword}.${key}`, false)
    }
    for (const keyword of INNER_VALUE_MAP) {
      const map = schema[keyword]
      if (isJsonObject(map)) for (const key of Object.keys(map)) push(map[key], `${keyword}.${key}`, true)
    }
  }
  return problems
}
