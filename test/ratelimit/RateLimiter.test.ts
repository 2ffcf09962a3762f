/**
 * The rate limiter's in-memory store on an injected clock: per-client and
 * per-event push buckets, all-or-nothing takes, retry times, limit changes,
 * eviction of full buckets, per-IP connection limits and refusal counters;
 * and the layer's periodic sweep on the TestClock.
 */
import { it as effectIt } from "@effect/vitest"
import { Clock, Effect, Layer } from "effect"
import { TestClock } from "effect/testing"
import { describe, expect, it } from "vitest"
import type { CompiledRateLimits } from "../../src/apps/CompiledSchema.ts"
import { MAX_EVENT_LABELS_PER_APP, RateLimiter } from "../../src/ratelimit/RateLimiter.ts"
import type { RateLimit } from "../../src/contract/SchemaDocument.ts"
import type { Decision, RateLimits } from "../../src/ratelimit/RateLimiter.ts"
import { Supervisor } from "../../src/supervision/Supervisor.ts"

const supervisor = Supervisor.layerWith({ maxRestarts: 10, periodMs: 60_000 })

const limits = (fallback: RateLimit | undefined, byEvent: Record<string, RateLimit> = {}): RateLimits => ({
  default: fallback,
  byEvent: new Map(Object.entries(byEvent))
})

const setup = () => {
  const clock = { t: 1_000_000 }
  const limiter = RateLimiter.makeMemory(() => clock.t)
  const advance = (ms: number) => {
    clock.t += ms
  }
  return { limiter, advance }
}

const pushes = (n: number, check: () => Decision): Array<boolean> => Array.from({ length: n }, () => check().allowed)

describe("RateLimiter push limits", () => {
  const perSecond3 = limits({ windowMs: 1_000, maxRequests: 3 })

  it("refuses once the default bucket is empty, and allows again as it refills", () => {
    const { limiter, advance } = setup()
    const push = () => limiter.checkPush("chat", "alice", "msg", perSecond3)
    expect(pushes(4, push)).toEqual([true, true, true, false])
    advance(333)
    expect(push().allowed).toBe(false)
    advance(1)
    expect(push().allowed).toBe(true)
    expect(push().allowed).toBe(false)
    advance(1_000)
    expect(pushes(4, push)).toEqual([true, true, true, false])
  })

  it("tells how long until the refusing bucket has a whole token", () => {
    const { limiter, advance } = setup()
    const push = () => limiter.checkPush("chat", "alice", "msg", perSecond3)
    pushes(3, push)
    expect(push()).toEqual({ allowed: false, retryAfterMs: 334 })
    advance(100)
    expect(push()).toEqual({ allowed: false, retryAfterMs: 234 })
    advance(234)
    expect(push()).toEqual({ allowed: true })
  })

  it("gives the longest wait when several buckets refuse", () => {
    const { limiter, advance } = setup()
    const both = limits({ windowMs: 1_000, maxRequests: 2 }, { typing: { windowMs: 10_000, maxRequests: 2 } })
    const push = () => limiter.checkPush("chat", "alice", "typing", both)
    expect(pushes(2, push)).toEqual([true, true])
    // default: 500 ms to a token; typing: 5000 ms
    expect(push()).toEqual({ allowed: false, retryAfterMs: 5_000 })
    advance(600)
    // only typing refuses now
    expect(push()).toEqual({ allowed: false, retryAfterMs: 4_400 })
  })

  it("limits an event by its own bucket, independent of other events, while it also draws from the default", () => {
    const { limiter } = setup()
    const schema = limits({ windowMs: 60_000, maxRequests: 5 }, { typing: { windowMs: 60_000, maxRequests: 2 } })
    const typing = () => limiter.checkPush("chat", "alice", "typing", schema)
    const msg = () => limiter.checkPush("chat", "alice", "msg", schema)
    expect(pushes(3, typing)).toEqual([true, true, false])
    // typing is exhausted, other events are not: they have the default's remaining 3
    expect(pushes(4, msg)).toEqual([true, true, true, false])
  })

  it("limits events with only a byEvent entry and leaves other events unlimited", () => {
    const { limiter } = setup()
    const schema = limits(undefined, { typing: { windowMs: 60_000, maxRequests: 1 } })
    expect(pushes(2, () => limiter.checkPush("chat", "alice", "typing", schema))).toEqual([true, false])
    expect(pushes(100, () => limiter.checkPush("chat", "alice", "msg", schema)).every(Boolean)).toBe(true)
    expect(limiter.bucketCount()).toBe(1)
  })

  it("takes nothing from any bucket when one of them refuses", () => {
    const { limiter } = setup()
    const schema = limits({ windowMs: 60_000, maxRequests: 3 }, { typing: { windowMs: 60_000, maxRequests: 1 } })
    expect(limiter.checkPush("chat", "alice", "typing", schema).allowed).toBe(true)
    // refused by the typing bucket: the default bucket must keep its 2 tokens
    expect(pushes(5, () => limiter.checkPush("chat", "alice", "typing", schema))).toEqual([
      false,
      false,
      false,
      false,
      false
    ])
    expect(pushes(3, () => limiter.checkPush("chat", "alice", "msg", schema))).toEqual([true, true, false])

    // and the other way round: an empty default leaves the event bucket untouched
    const clock = { t: 0 }
    const other = RateLimiter.makeMemory(() => clock.t)
    const tight = limits({ windowMs: 1_000, maxRequests: 1 }, { typing: { windowMs: 60_000, maxRequests: 1 } })
    expect(other.checkPush("chat", "bob", "msg", tight).allowed).toBe(true)
    expect(other.checkPush("chat", "bob", "typing", tight)).toEqual({ allowed: false, retryAfterMs: 1_000 })
    clock.t = 1_000
    expect(other.checkPush("chat", "bob", "typing", tight).allowed).toBe(true)
  })

  it("shares the buckets of a client between its connections", () => {
    const { limiter } = setup()
    // two connections of alice check with the same (app, client_id)
    const fromFirst = () => limiter.checkPush("chat", "alice", "msg", perSecond3)
    const fromSecond = () => limiter.checkPush("chat", "alice", "msg", perSecond3)
    expect([fromFirst().allowed, fromSecond().allowed, fromFirst().allowed]).toEqual([true, true, true])
    expect(fromSecond().allowed).toBe(false)
    expect(fromFirst().allowed).toBe(false)
  })

  it("keeps clients, and the same client id in different apps, independent", () => {
    const { limiter } = setup()
    expect(pushes(4, () => limiter.checkPush("chat", "alice", "msg", perSecond3))).toEqual([true, true, true, false])
    expect(pushes(4, () => limiter.checkPush("chat", "bob", "msg", perSecond3))).toEqual([true, true, true, false])
    expect(pushes(4, () => limiter.checkPush("docs", "alice", "msg", perSecond3))).toEqual([true, true, true, false])
  })

  it("takes the compiled schema's limits as they are", () => {
    const { limiter } = setup()
    const compiled: CompiledRateLimits = { default: { windowMs: 1_000, maxRequests: 1 }, byEvent: new Map() }
    expect(pushes(2, () => limiter.checkPush("chat", "alice", "msg", compiled))).toEqual([true, false])
  })

  it("allows everything, and keeps no bucket, when the schema has no limits", () => {
    const { limiter } = setup()
    const none = limits(undefined)
    expect(pushes(1_000, () => limiter.checkPush("chat", "alice", "msg", none)).every(Boolean)).toBe(true)
    expect(limiter.bucketCount()).toBe(0)
  })

  it("applies a new schema's limits at once", () => {
    const { limiter, advance } = setup()
    const v1 = limits({ windowMs: 60_000, maxRequests: 10 })
    expect(pushes(4, () => limiter.checkPush("chat", "alice", "msg", v1)).every(Boolean)).toBe(true)

    // lowered below what was spent: refused at once, refilled at the new rate (1 per second)
    const v2 = limits({ windowMs: 2_000, maxRequests: 2 })
    expect(limiter.checkPush("chat", "alice", "msg", v2)).toEqual({ allowed: true })
    expect(limiter.checkPush("chat", "alice", "msg", v2)).toEqual({ allowed: true })
    expect(limiter.checkPush("chat", "alice", "msg", v2)).toEqual({ allowed: false, retryAfterMs: 1_000 })
    advance(1_000)
    expect(pushes(2, () => limiter.checkPush("chat", "alice", "msg", v2))).toEqual([true, false])

    // raised: the higher rate applies, without a fresh allowance
    const v3 = limits({ windowMs: 1_000, maxRequests: 100 })
    expect(limiter.checkPush("chat", "alice", "msg", v3)).toEqual({ allowed: false, retryAfterMs: 10 })
    advance(1_000)
    expect(pushes(101, () => limiter.checkPush("chat", "alice", "msg", v3)).filter(Boolean)).toHaveLength(100)

    // removed: no limit, and the bucket is gone
    const v4 = limits(undefined)
    expect(limiter.checkPush("chat", "alice", "msg", v4)).toEqual({ allowed: true })
    expect(limiter.bucketCount()).toBe(0)
  })

  it("drops an event's bucket when its limit is removed, so a limit added later starts afresh", () => {
    const { limiter } = setup()
    const limited = limits(undefined, { typing: { windowMs: 60_000, maxRequests: 1 } })
    expect(pushes(2, () => limiter.checkPush("chat", "alice", "typing", limited))).toEqual([true, false])
    expect(limiter.checkPush("chat", "alice", "typing", limits(undefined)).allowed).toBe(true)
    expect(limiter.bucketCount()).toBe(0)
    expect(limiter.checkPush("chat", "alice", "typing", limited).allowed).toBe(true)
  })
})

describe("RateLimiter eviction", () => {
  it("drops buckets that are full again, and keeps those that are not", () => {
    const { limiter, advance } = setup()
    const schema = limits({ windowMs: 10_000, maxRequests: 1 }, { typing: { windowMs: 1_000, maxRequests: 1 } })
    for (let i = 0; i < 1_000; i++) limiter.checkPush("chat", `client-${i}`, "typing", schema)
    limiter.checkConnection("chat", "10.0.0.1", 60)
    expect(limiter.bucketCount()).toBe(2_001)

    // typing buckets (1 s) and the IP bucket (1 token per second) are full again; the defaults are not
    advance(1_000)
    expect(limiter.sweep()).toBe(1_001)
    expect(limiter.bucketCount()).toBe(1_000)

    advance(9_000)
    expect(limiter.sweep()).toBe(1_000)
    expect(limiter.bucketCount()).toBe(0)
  })

  it("keeps the state of a client across a sweep when its bucket is not full", () => {
    const { limiter, advance } = setup()
    const schema = limits({ windowMs: 1_000, maxRequests: 2 })
    pushes(2, () => limiter.checkPush("chat", "alice", "msg", schema))
    advance(400)
    expect(limiter.sweep()).toBe(0)
    expect(limiter.checkPush("chat", "alice", "msg", schema)).toEqual({ allowed: false, retryAfterMs: 100 })
  })

  it("drops a bucket left over from a removed event limit once it is full", () => {
    const { limiter, advance } = setup()
    const v1 = limits(undefined, { typing: { windowMs: 1_000, maxRequests: 1 } })
    limiter.checkPush("chat", "alice", "typing", v1)
    // the new schema has no typing limit, and alice does not type again
    limiter.checkPush("chat", "alice", "msg", limits(undefined))
    advance(1_000)
    expect(limiter.sweep()).toBe(1)
    expect(limiter.bucketCount()).toBe(0)
  })
})

describe("RateLimiter connection limits", () => {
  it("limits connection attempts per IP and app, refilled over a minute", () => {
    const { limiter, advance } = setup()
    const connect = (ip: string, app = "chat") => limiter.checkConnection(app, ip, 3)
    expect(pushes(4, () => connect("10.0.0.1"))).toEqual([true, true, true, false])
    expect(connect("10.0.0.1")).toEqual({ allowed: false, retryAfterMs: 20_000 })
    expect(connect("10.0.0.2").allowed).toBe(true)
    expect(connect("10.0.0.1", "docs").allowed).toBe(true)
    advance(20_000)
    expect(pushes(2, () => connect("10.0.0.1"))).toEqual([true, false])
  })

  it("applies a changed per-minute limit at once", () => {
    const { limiter } = setup()
    expect(pushes(2, () => limiter.checkConnection("chat", "10.0.0.1", 2))).toEqual([true, true])
    expect(limiter.checkConnection("chat", "10.0.0.1", 2).allowed).toBe(false)
    // 600 per minute: one token per 100 ms
    expect(limiter.checkConnection("chat", "10.0.0.1", 600)).toEqual({ allowed: false, retryAfterMs: 100 })
  })
})

describe("RateLimiter refusal counters", () => {
  it("counts refusals by app and kind, and pushes by event", () => {
    const { limiter } = setup()
    const schema = limits({ windowMs: 60_000, maxRequests: 1 }, { typing: { windowMs: 60_000, maxRequests: 1 } })
    expect(limiter.refusals()).toEqual([])
    limiter.checkPush("chat", "alice", "msg", schema)
    limiter.checkPush("chat", "alice", "msg", schema)
    limiter.checkPush("chat", "alice", "msg", schema)
    limiter.checkPush("chat", "alice", "typing", schema)
    limiter.checkPush("docs", "alice", "msg", schema)
    limiter.checkPush("docs", "alice", "msg", schema)
    limiter.checkConnection("chat", "10.0.0.1", 1)
    limiter.checkConnection("chat", "10.0.0.1", 1)
    limiter.checkConnection("chat", "10.0.0.2", 1)
    limiter.checkConnection("chat", "10.0.0.2", 1)

    expect(limiter.refusals()).toEqual(
      expect.arrayContaining([
        { app: "chat", kind: "push", event: "msg", count: 2 },
        { app: "chat", kind: "push", event: "typing", count: 1 },
        { app: "docs", kind: "push", event: "msg", count: 1 },
        { app: "chat", kind: "connection", count: 2 }
      ])
    )
    expect(limiter.refusals()).toHaveLength(4)
  })

  it("bounds the number of event names counted per app", () => {
    const { limiter } = setup()
    const schema = limits({ windowMs: 60_000, maxRequests: 1 })
    limiter.checkPush("chat", "alice", "first", schema)
    for (let i = 0; i < MAX_EVENT_LABELS_PER_APP + 10; i++) limiter.checkPush("chat", "alice", `event-${i}`, schema)
    const counts = limiter.refusals()
    expect(counts).toHaveLength(MAX_EVENT_LABELS_PER_APP + 1)
    expect(counts).toContainEqual({ app: "chat", kind: "push", count: 10 })
    expect(counts.reduce((sum, entry) => sum + entry.count, 0)).toBe(MAX_EVENT_LABELS_PER_APP + 10)
  })
})

describe("RateLimiter.layerMemory", () => {
  effectIt.effect("checks on the Clock", () =>
    Effect.gen(function*() {
      const limiter = yield* RateLimiter
      const schema = limits({ windowMs: 10_000, maxRequests: 2 })
      expect(pushes(3, () => limiter.checkPush("chat", "alice", "msg", schema))).toEqual([true, true, false])
      yield* TestClock.adjust("5 seconds")
      expect(limiter.checkPush("chat", "alice", "msg", schema)).toEqual({ allowed: true })
      expect(limiter.checkPush("chat", "alice", "msg", schema)).toEqual({ allowed: false, retryAfterMs: 5_000 })
      expect(limiter.refusals()).toEqual([{ app: "chat", kind: "push", event: "msg", count: 2 }])
    }).pipe(Effect.provide(RateLimiter.layerMemory.pipe(Layer.provide(supervisor)))))
})

describe("RateLimiter.layerFromMemory", () => {
  effectIt.effect("sweeps full buckets every 30 seconds while the layer is up", () =>
    Effect.gen(function*() {
      const clock = yield* Clock.Clock
      const store = RateLimiter.makeMemory(() => clock.currentTimeMillisUnsafe())
      yield* Effect.gen(function*() {
        const limiter = yield* RateLimiter
        const schema = limits({ windowMs: 20_000, maxRequests: 2 })
        limiter.checkPush("chat", "alice", "msg", schema)
        limiter.checkPush("chat", "bob", "msg", schema)
        limiter.checkPush("chat", "bob", "msg", schema)
        // full again after 10 s (alice) and 20 s (bob), but only dropped by the sweep
        yield* TestClock.adjust("29 seconds")
        expect(store.bucketCount()).toBe(2)
        yield* TestClock.adjust("1 second")
        expect(store.bucketCount()).toBe(0)

        limiter.checkPush("chat", "alice", "msg", schema)
        yield* TestClock.adjust("30 seconds")
        expect(store.bucketCount()).toBe(0)
      }).pipe(Effect.provide(RateLimiter.layerFromMemory(store).pipe(Layer.provide(supervisor))))
    }))
})
