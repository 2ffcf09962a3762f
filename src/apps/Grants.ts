/**
 * The permissions an app's auth answer granted to a connection, compiled once
 * per connection and asked on every join and push whether they cover the
 * permissions the channel schema requires.
 *
 * Permissions are `:`-separated segments (`read:project:42`). In a grant:
 * - a `*` segment matches exactly one non-empty segment (`read:*:42`);
 * - a trailing `*` segment matches the non-empty rest, i.e. one or more
 *   segments (`read:project:*` covers `read:project:42` and
 *   `read:project:42:files`, not `read:project`);
 * - the grant `*` alone allows everything;
 * - `*` inside a segment (`read:proj*`) has no special meaning.
 * A `*` in a required permission is literal: it is only covered by a grant
 * that is at least as broad (a `*` segment, or the same text).
 *
 * Exact grants are a Set lookup; the few wildcard grants are then matched
 * the way channel patterns are (`TopicMatcher.ts`).
 */
import { LITERAL, matchTopic, WILDCARD } from "./TopicMatcher.ts"
import type { Matcher, Segment } from "./TopicMatcher.ts"

export interface Grants {
  /** The permissions as granted, for logs and diagnostics. */
  readonly granted: ReadonlyArray<string>
  allows(required: string): boolean
  allowsAll(required: ReadonlyArray<string>): boolean
}

const segmentOf = (text: string): Segment =>
  text === "*"
    ? { kind: WILDCARD, text: "", literals: [], slot: 0, count: 0 }
    : { kind: LITERAL, text, literals: [], slot: 0, count: 0 }

/** A wildcard grant follows the rules of channel patterns without variables. */
const wildcardMatcher = (segments: ReadonlyArray<string>): Matcher => ({
  matchesAll: false,
  segments: segments.map(segmentOf),
  trailingWildcard: segments[segments.length - 1] === "*",
  variableCount: 0
})

/**
 * Compiles the permissions of one auth answer. Clients of an app mostly share
 * a few permission sets (roles), so compiled sets are reused: every connection
 * then holds a reference instead of its own copy. The cache is bounded by
 * bytes as well as by count, since an auth answer's permissions may be large:
 * a set over {@link MAX_CACHED_GRANT_SET_BYTES} is compiled for its connection
 * only, and the oldest sets are dropped past {@link MAX_CACHED_GRANT_BYTES}.
 */
export const compileGrants = (granted: ReadonlyArray<string>): Grants => {
  const key = JSON.stringify(granted)
  const cached = compiledGrants.get(key)
  if (cached !== undefined) return cached
  const compiled = compileGrantsUncached(granted)
  if (key.length > MAX_CACHED_GRANT_SET_BYTES) return compiled
  while (compiledGrants.size > 0 && (compiledGrants.size >= MAX_CACHED_GRANT_SETS || cachedBytes + key.length > MAX_CACHED_GRANT_BYTES)) {
    const oldest = compiledGrants.keys().next().value!
    compiledGrants.delete(oldest)
    cachedBytes -= oldest.length
  }
  compiledGrants.set(key, compiled)
  cachedBytes += key.length
  return compiled
}

/** Distinct permission sets kept compiled; the oldest is dropped past this. */
const MAX_CACHED_GRANT_SETS = 10_000
/**
 * Permission text (as JSON) of the sets kept compiled; the oldest are dropped
 * past this. A compiled set takes a few times its text.
 */
export const MAX_CACHED_GRANT_BYTES = 8 * 1024 * 1024
/** A permission set whose text is larger is not kept for other connections. */
export const MAX_CACHED_GRANT_SET_BYTES = 64 * 1024
const compiledGrants = new Map<string, Grants>()
let cachedBytes = 0

const compileGrantsUncached = (granted: ReadonlyArray<string>): Grants => {
  const exact = new Set<string>()
  const wildcards: Array<Matcher> = []
  let allowsEverything = false
  for (const grant of granted) {
    if (grant === "*") {
      allowsEverything = true
      continue
    }
    const segments = grant.split(":")
    if (!segments.includes("*")) {
      exact.add(grant)
      continue
    }
    wildcards.push(wildcardMatcher(segments))
  }
  const wildcardCount = wildcards.length

  const allows = (required: string): boolean => {
    if (allowsEverything || exact.has(required)) return true
    for (let i = 0; i < wildcardCount; i++) if (matchTopic(wildcards[i]!, required, undefined)) return true
    return false
  }
  return {
    granted,
    allows,
    allowsAll: (required) => {
      for (let i = 0; i < required.length; i++) if (!allows(required[i]!)) return false
      return true
    }
  }
}
