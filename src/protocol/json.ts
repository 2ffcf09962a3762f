/** Small JSON helpers shared by the decoders of client frames, app answers and server-API bodies. */

/**
 * The deepest nesting of arrays and objects accepted from outside (CONTRACT §9):
 * client payloads, app answers, server-API bodies. Deeper values would make
 * `JSON.stringify` and the payload validators recurse past the stack, and
 * parsing one megabyte of `[` alone takes half a second.
 */
export const MAX_JSON_DEPTH = 128

const QUOTE = 0x22
const BACKSLASH = 0x5c
const OPEN_ARRAY = 0x5b
const CLOSE_ARRAY = 0x5d
const OPEN_OBJECT = 0x7b
const CLOSE_OBJECT = 0x7d

/** The index of the quote that closes the string whose opening quote is at `open` (text.length when unclosed). */
const stringEnd = (text: string, open: number): number => {
  let i = open + 1
  while (i < text.length) {
    const c = text.charCodeAt(i)
    if (c === BACKSLASH) i += 2
    else if (c === QUOTE) return i
    else i++
  }
  return text.length
}

/**
 * Whether a JSON text nests arrays and objects more than `limit` levels deep
 * (`[]` is one level). Brackets inside strings do not count; the text is not
 * otherwise checked, so this runs before `JSON.parse` and in linear time.
 */
export const jsonDepthExceeds = (text: string, limit: number): boolean => {
  // `limit + 1` levels need at least that many characters
  if (text.length <= limit) return false
  let depth = 0
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i)
    if (c === QUOTE) i = stringEnd(text, i)
    else if (c === OPEN_ARRAY || c === OPEN_OBJECT) {
      if (++depth > limit) return true
    } else if (c === CLOSE_ARRAY || c === CLOSE_OBJECT) depth--
  }
  return false
}

/**
 * The value of a JSON text; undefined when the text is not JSON (JSON itself
 * has no undefined) or nests deeper than {@link MAX_JSON_DEPTH} plus
 * `envelopeLevels`, the levels of a known shape around the values the limit is
 * about (a message answer's `[{"data": ...}]` is two).
 */
export const parseJsonText = (text: string, envelopeLevels = 0): unknown =>
  jsonDepthExceeds(text, MAX_JSON_DEPTH + envelopeLevels) ? undefined : parseAnyDepth(text)

/**
 * The envelope levels of a JSON text that holds either one item or an array
 * of them, each item `itemLevels` deep around the values the depth limit is
 * about: one more for an array (told by the first character, which in valid
 * JSON is `[` exactly when the value is an array).
 */
export const itemOrItemsLevels = (text: string, itemLevels: number): number =>
  /^\s*\[/.test(text) ? itemLevels + 1 : itemLevels

/** The value of a JSON text, whatever its depth (the caller checked it); undefined when it is not JSON. */
export const parseAnyDepth = (text: string): unknown => {
  try {
    return JSON.parse(text)
  } catch {
    return undefined
  }
}

/** A top-level element (array item or object member value) of a JSON text that nests too deep. */
export interface DeepElement {
  /** Its position among the top-level elements. */
  readonly index: number
  /** Its member name when the text is an object. */
  readonly key: string | undefined
}

/**
 * A JSON array or object whose top-level elements may each nest at most
 * `limit` levels, parsed: elements nested deeper are not parsed but replaced
 * by `null` and listed in `deep`, so that the rest of a client frame (its ref
 * and topic) can still be read and the frame answered. `value` is undefined
 * when the text is not JSON.
 */
const NOTHING_DEEP: ReadonlyArray<DeepElement> = Object.freeze([])

export const parseShallowJson = (
  text: string,
  limit: number
): { readonly value: unknown; readonly deep: ReadonlyArray<DeepElement> } => {
  if (!jsonDepthExceeds(text, limit + 1)) return { value: parseAnyDepth(text), deep: NOTHING_DEEP }
  const isObject = text.charCodeAt(text.search(/\S/)) === OPEN_OBJECT
  const deep: Array<DeepElement> = []
  let kept = ""
  let keptUpTo = 0
  let depth = 0
  let index = 0
  let elementStart = -1
  let tooDeep = false
  let lastKeyStart = -1
  let lastKeyEnd = -1
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i)
    if (c === QUOTE) {
      const end = stringEnd(text, i)
      if (depth === 1) {
        lastKeyStart = i
        lastKeyEnd = end
      }
      i = end
    } else if (c === OPEN_ARRAY || c === OPEN_OBJECT) {
      depth++
      if (depth === 2) {
        elementStart = i
        tooDeep = false
      } else if (depth - 1 > limit) tooDeep = true
    } else if (c === CLOSE_ARRAY || c === CLOSE_OBJECT) {
      depth--
      if (depth === 1 && tooDeep) {
        const key = isObject && lastKeyStart >= 0 ? parseJsonText(text.slice(lastKeyStart, lastKeyEnd + 1)) : undefined
        deep.push({ index, key: typeof key === "string" ? key : undefined })
        kept += text.slice(keptUpTo, elementStart) + "null"
        keptUpTo = i + 1
        tooDeep = false
      }
    } else if (c === 0x2c && depth === 1) index++
  }
  if (depth > 1) return { value: undefined, deep }
  return { value: parseAnyDepth(kept + text.slice(keptUpTo)), deep }
}

/** A JSON object: not null, not an array. */
export const isJsonObject = (value: unknown): value is Record<string, unknown> =>
  typeof value === "object" && value !== null && !Array.isArray(value)

const IDENTIFIER = /^[A-Za-z_$][A-Za-z0-9_$]*$/

/**
 * A path into a JSON document as JavaScript would write it:
 * `["channels", 0, "variables", "id"]` → `channels[0].variables.id`. Segments
 * may be Schema issue path entries (`{key}`).
 */
export const formatJsonPath = (path: ReadonlyArray<PropertyKey | { readonly key: PropertyKey }>): string => {
  let out = ""
  for (const segment of path) {
    const key = typeof segment === "object" ? segment.key : segment
    if (typeof key === "number") out += `[${key}]`
    else if (typeof key === "string" && IDENTIFIER.test(key)) out += out === "" ? key : `.${key}`
    else out += `[${JSON.stringify(String(key))}]`
  }
  return out
}
