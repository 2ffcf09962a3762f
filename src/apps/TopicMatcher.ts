/**
 * Matching a `:`-separated topic against a compiled pattern by scanning the
 * string (no split, no RegExp): the channel patterns of an app's schema, and
 * the wildcard grants of an auth answer, which follow the same segment rules
 * (a `*` segment is one non-empty segment, a trailing `*` the non-empty rest).
 */

export const LITERAL = 0
export const WILDCARD = 1
export const VARIABLE = 2
export const MIXED = 3

// One shape for every kind keeps the matching loop monomorphic.
export interface Segment {
  readonly kind: 0 | 1 | 2 | 3
  /** LITERAL: the text. */
  readonly text: string
  /** MIXED: text around the variables (`count + 1` entries). */
  readonly literals: ReadonlyArray<string>
  /** VARIABLE/MIXED: index of the segment's first variable in the pattern. */
  readonly slot: number
  /** VARIABLE/MIXED: number of variables in the segment. */
  readonly count: number
}

export interface Matcher {
  readonly matchesAll: boolean
  readonly segments: ReadonlyArray<Segment>
  readonly trailingWildcard: boolean
  readonly variableCount: number
}

/**
 * Matches the structure of a pattern against a topic by scanning the string
 * (no split, no RegExp). When `bounds` is given, the start and end offsets of
 * each variable are written to `bounds[2 * i]` and `bounds[2 * i + 1]`.
 */
export const matchTopic = (matcher: Matcher, topic: string, bounds: Int32Array | undefined): boolean => {
  if (matcher.matchesAll) return true
  const segments = matcher.segments
  const count = segments.length
  const length = topic.length
  let pos = 0
  for (let i = 0; i < count; i++) {
    const segment = segments[i]!
    const isLast = i === count - 1
    // Every earlier segment ended at a ":", so this is "the rest is non-empty".
    if (isLast && matcher.trailingWildcard) return pos < length
    let end = topic.indexOf(":", pos)
    if (isLast) {
      if (end !== -1) return false
      end = length
    } else if (end === -1) return false
    switch (segment.kind) {
      case LITERAL:
        if (end - pos !== segment.text.length || !topic.startsWith(segment.text, pos)) return false
        break
      case WILDCARD:
        if (end === pos) return false
        break
      case VARIABLE:
        if (end === pos) return false
        if (bounds !== undefined) {
          bounds[2 * segment.slot] = pos
          bounds[2 * segment.slot + 1] = end
        }
        break
      case MIXED:
        if (!matchMixed(segment, topic, pos, end, bounds)) return false
        break
    }
    pos = end + 1
  }
  return true
}

const matchMixed = (segment: Segment, topic: string, pos: number, end: number, bounds: Int32Array | undefined): boolean => {
  const literals = segment.literals
  const count = segment.count
  const prefix = literals[0]!
  const suffix = literals[count]!
  if (end - pos < prefix.length + suffix.length + count) return false
  const limit = end - suffix.length
  if (!topic.startsWith(prefix, pos) || !topic.startsWith(suffix, limit)) return false
  let cursor = pos + prefix.length
  for (let j = 1; j < count; j++) {
    const separator = literals[j]!
    // The variable before the separator is non-empty, and so must be the ones after it.
    const at = topic.indexOf(separator, cursor + 1)
    if (at === -1 || at + separator.length >= limit) return false
    if (bounds !== undefined) {
      bounds[2 * (segment.slot + j - 1)] = cursor
      bounds[2 * (segment.slot + j - 1) + 1] = at
    }
    cursor = at + separator.length
  }
  if (bounds !== undefined) {
    bounds[2 * (segment.slot + count - 1)] = cursor
    bounds[2 * (segment.slot + count - 1) + 1] = limit
  }
  return true
}
