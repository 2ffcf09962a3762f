/**
 * A token bucket with continuous refill: `capacity` tokens, refilled evenly
 * over `windowMs` (capacity / windowMs tokens per ms), starting full.
 *
 * Pure and synchronous: every function takes the current time, so callers
 * decide where time comes from (the service's clock, a test's counter). The
 * bucket is a plain mutable record so that a check on the hot path allocates
 * nothing.
 *
 * The level is kept in units of 1/windowMs token (`level = tokens × windowMs`),
 * so a refill adds `elapsedMs × capacity` units. With integer milliseconds all
 * arithmetic is on integers and exact: "has a whole token" and "is full" never
 * hinge on a rounding error, and `msUntilToken` is exact.
 */

export interface TokenBucket {
  /** Tokens when full (the limit's `maxRequests`). */
  capacity: number
  /** Time to refill from empty to full (the limit's `windowMs`). */
  windowMs: number
  /** Tokens × windowMs as of `lastRefill`; between 0 and capacity × windowMs. */
  level: number
  /** Time of the last refill, in the clock's milliseconds. */
  lastRefill: number
}

/** A full bucket. `capacity` and `windowMs` are positive integers. */
export const make = (capacity: number, windowMs: number, now: number): TokenBucket => ({
  capacity,
  windowMs,
  level: capacity * windowMs,
  lastRefill: now
})

/** Tokens added per millisecond. */
export const refillRate = (bucket: TokenBucket): number => bucket.capacity / bucket.windowMs

/** Adds what has trickled in since the last refill, up to capacity. */
export const refill = (bucket: TokenBucket, now: number): void => {
  const elapsed = now - bucket.lastRefill
  if (elapsed <= 0) {
    // A clock that stepped back: start counting from the new time rather than
    // withholding tokens until the clock has caught up again.
    if (elapsed < 0) bucket.lastRefill = now
    return
  }
  const full = bucket.capacity * bucket.windowMs
  // Past one window the bucket is full whatever the level was; checking first
  // also keeps `elapsed × capacity` small.
  bucket.level = elapsed >= bucket.windowMs ? full : Math.min(full, bucket.level + elapsed * bucket.capacity)
  bucket.lastRefill = now
}

/** Tokens available at `now` (fractional); refills the bucket. */
export const peek = (bucket: TokenBucket, now: number): number => {
  refill(bucket, now)
  return bucket.level / bucket.windowMs
}

/** Whether a whole token is available at `now`; refills the bucket. */
export const hasToken = (bucket: TokenBucket, now: number): boolean => {
  refill(bucket, now)
  return bucket.level >= bucket.windowMs
}

/** Takes one token if a whole one is available; returns whether it did. */
export const take = (bucket: TokenBucket, now: number): boolean => {
  if (!hasToken(bucket, now)) return false
  bucket.level -= bucket.windowMs
  return true
}

/** Milliseconds from `now` until a whole token is available (0 when one is). Refills the bucket. */
export const msUntilToken = (bucket: TokenBucket, now: number): number => {
  refill(bucket, now)
  const missing = bucket.windowMs - bucket.level
  return missing <= 0 ? 0 : Math.ceil(missing / bucket.capacity)
}

/** Whether the bucket is full at `now`: it then carries no information and can be dropped. Refills the bucket. */
export const isFull = (bucket: TokenBucket, now: number): boolean => {
  refill(bucket, now)
  return bucket.level >= bucket.capacity * bucket.windowMs
}

/** Whether the bucket was made for these limit parameters. */
export const hasLimit = (bucket: TokenBucket, capacity: number, windowMs: number): boolean =>
  bucket.capacity === capacity && bucket.windowMs === windowMs

/**
 * Applies new limit parameters to a bucket in use: what the client has spent
 * stays spent (the tokens it holds carry over, up to the new capacity), and
 * refill continues at the new rate. A limit change thus applies at once
 * without handing every client a fresh allowance.
 */
export const reconfigure = (bucket: TokenBucket, capacity: number, windowMs: number, now: number): void => {
  refill(bucket, now)
  // Multiplied before dividing so that whole tokens stay whole; rounded down:
  // never more than the client had.
  const level = Math.floor((bucket.level * windowMs) / bucket.windowMs)
  bucket.capacity = capacity
  bucket.windowMs = windowMs
  bucket.level = Math.min(level, capacity * windowMs)
}

/** Sets the tokens left (at most the capacity), e.g. to carry a bucket over from another store. */
export const setTokens = (bucket: TokenBucket, tokens: number, now: number): void => {
  bucket.level = Math.max(0, Math.min(tokens, bucket.capacity)) * bucket.windowMs
  bucket.lastRefill = now
}
