/**
 * The pure token bucket: continuous refill, whole-token checks, the wait
 * until the next token, and limit changes.
 */
import { describe, expect, it } from "vitest"
import * as TokenBucket from "../../src/ratelimit/TokenBucket.ts"

describe("TokenBucket", () => {
  it("starts full and gives out capacity tokens, then none", () => {
    const bucket = TokenBucket.make(3, 1_000, 0)
    expect(TokenBucket.peek(bucket, 0)).toBe(3)
    expect([1, 2, 3, 4].map(() => TokenBucket.take(bucket, 0))).toEqual([true, true, true, false])
    expect(TokenBucket.peek(bucket, 0)).toBe(0)
  })

  it("refills evenly at capacity / windowMs tokens per ms, up to capacity", () => {
    const bucket = TokenBucket.make(4, 1_000, 0)
    expect(TokenBucket.refillRate(bucket)).toBe(0.004)
    for (let i = 0; i < 4; i++) TokenBucket.take(bucket, 0)
    expect(TokenBucket.peek(bucket, 125)).toBe(0.5)
    expect(TokenBucket.hasToken(bucket, 249)).toBe(false)
    expect(TokenBucket.hasToken(bucket, 250)).toBe(true)
    expect(TokenBucket.peek(bucket, 500)).toBe(2)
    expect(TokenBucket.peek(bucket, 10_000)).toBe(4)
    expect(TokenBucket.isFull(bucket, 10_000)).toBe(true)
  })

  it("says exactly how long until a whole token", () => {
    const bucket = TokenBucket.make(3, 1_000, 0)
    expect(TokenBucket.msUntilToken(bucket, 0)).toBe(0)
    for (let i = 0; i < 3; i++) TokenBucket.take(bucket, 0)
    // one token per 333.33 ms: the first whole token is there at 334 ms
    expect(TokenBucket.msUntilToken(bucket, 0)).toBe(334)
    expect(TokenBucket.hasToken(bucket, 333)).toBe(false)
    expect(TokenBucket.msUntilToken(bucket, 333)).toBe(1)
    expect(TokenBucket.hasToken(bucket, 334)).toBe(true)
    expect(TokenBucket.msUntilToken(bucket, 334)).toBe(0)
  })

  it("keeps exact whole tokens over many small refills", () => {
    const bucket = TokenBucket.make(7, 3_000, 0)
    for (let i = 0; i < 7; i++) TokenBucket.take(bucket, 0)
    for (let t = 1; t <= 3_000; t++) TokenBucket.refill(bucket, t)
    expect(TokenBucket.isFull(bucket, 3_000)).toBe(true)
    expect(TokenBucket.peek(bucket, 3_000)).toBe(7)
  })

  it("is not full until refilled to capacity", () => {
    const bucket = TokenBucket.make(2, 1_000, 0)
    TokenBucket.take(bucket, 0)
    expect(TokenBucket.isFull(bucket, 499)).toBe(false)
    expect(TokenBucket.isFull(bucket, 500)).toBe(true)
  })

  it("does not refill for a clock that stepped back, and counts on from the new time", () => {
    const bucket = TokenBucket.make(2, 1_000, 10_000)
    TokenBucket.take(bucket, 10_000)
    TokenBucket.take(bucket, 10_000)
    expect(TokenBucket.peek(bucket, 5_000)).toBe(0)
    expect(TokenBucket.peek(bucket, 5_500)).toBe(1)
  })

  it("keeps spent tokens spent when the limit changes, capped at the new capacity", () => {
    const bucket = TokenBucket.make(10, 1_000, 0)
    for (let i = 0; i < 8; i++) TokenBucket.take(bucket, 0)
    TokenBucket.reconfigure(bucket, 5, 2_000, 0)
    expect(TokenBucket.hasLimit(bucket, 5, 2_000)).toBe(true)
    expect(TokenBucket.peek(bucket, 0)).toBe(2)
    // new rate: 5 tokens per 2 s
    expect(TokenBucket.peek(bucket, 400)).toBe(3)

    const full = TokenBucket.make(10, 1_000, 0)
    TokenBucket.reconfigure(full, 3, 1_000, 0)
    expect(TokenBucket.peek(full, 0)).toBe(3)
    expect(TokenBucket.isFull(full, 0)).toBe(true)
  })
})
