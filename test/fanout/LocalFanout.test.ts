/**
 * Local delivery of broadcasts: a broadcast that cannot be encoded is
 * dropped (and logged) without costing the broadcasts delivered after it; a
 * repeat of a broadcast (a cluster retry) is neither written nor counted.
 */
import { Effect, Layer } from "effect"
import { describe, expect, it } from "vitest"
import { TopicRegistry } from "../../src/fanout/TopicRegistry.ts"
import type { TopicRegistryShape, TopicSubscriber } from "../../src/fanout/TopicRegistry.ts"
import { AppRegistry } from "../../src/apps/AppRegistry.ts"
import type { AppRegistryShape } from "../../src/apps/AppRegistry.ts"
import { LocalFanout } from "../../src/fanout/LocalFanout.ts"
import { EventLoop } from "../../src/observability/EventLoop.ts"
import { Metrics } from "../../src/observability/Metrics.ts"
import { V1, V2 } from "../../src/protocol/Serializer.ts"
import { Supervisor } from "../../src/supervision/Supervisor.ts"

describe("LocalFanout", () => {
  it("drops a broadcast it cannot encode and delivers the next ones", async () => {
    const frames: Array<string> = []
    const subscriber = (serializer: typeof V1): TopicSubscriber => ({
      connectionId: `c-${serializer.vsn}`,
      serializer,
      sendFrame: (frame) => frames.push(frame.toString("utf8")),
      acceptsPresenceState: () => true
    })
    const subscribers = new Set([subscriber(V1), subscriber(V2)])
    // only what delivery reads: every topic has these two local subscribers
    const registry = { subscribersFor: () => subscribers } as unknown as TopicRegistryShape
    // and no app has a schema (events are counted as not in one)
    const apps = { get: () => undefined } as unknown as AppRegistryShape
    const layer = LocalFanout.layer.pipe(
      Layer.provide(Layer.succeed(TopicRegistry, registry)),
      Layer.provide(Layer.succeed(AppRegistry, apps)),
      Layer.provide(Metrics.layerDisabled)
    )
    await Effect.runPromise(Effect.gen(function*() {
      const fanout = yield* LocalFanout
      const unencodable = { id: "1", app: "chat", topic: "room:a", event: "big", payload: { n: 10n } }
      expect(() => fanout.deliver(unencodable)).not.toThrow()
      fanout.deliver({ id: "2", app: "chat", topic: "room:a", event: "fine", payload: { n: 1 } })
    }).pipe(Effect.provide(layer)))
    expect(frames).toHaveLength(2)
    expect(frames.every((frame) => frame.includes("\"fine\""))).toBe(true)
  })

  it("writes and counts a repeated broadcast once, and counts one for a topic without subscribers here", async () => {
    const frames: Array<string> = []
    const subscriber: TopicSubscriber = {
      connectionId: "c-1",
      serializer: V2,
      sendFrame: (frame) => frames.push(frame.toString("utf8")),
      acceptsPresenceState: () => true
    }
    const apps = { get: () => undefined } as unknown as AppRegistryShape
    const layer = LocalFanout.layer.pipe(
      Layer.provideMerge(TopicRegistry.layer),
      Layer.provide(Layer.succeed(AppRegistry, apps)),
      Layer.provideMerge(Metrics.layer),
      Layer.provide(EventLoop.layer),
      Layer.provide(Supervisor.layerWith({ maxRestarts: 3, periodMs: 10_000 }))
    )
    const rendered = await Effect.runPromise(Effect.scoped(Effect.gen(function*() {
      const fanout = yield* LocalFanout
      const topics = yield* TopicRegistry
      topics.subscribe("dedupe", "room:a", subscriber)
      const broadcast = { id: "b-1", app: "dedupe", topic: "room:a", event: "tick", payload: { n: 1 } }
      fanout.deliver(broadcast)
      fanout.deliver(broadcast)
      fanout.deliver({ ...broadcast, id: "b-2", topic: "room:nobody" })
      return (yield* Metrics).render()
    }).pipe(Effect.provide(layer))))
    expect(frames).toHaveLength(1)
    expect(rendered).toMatch(/^gateway_deliveries_total\{app="dedupe"\} 2$/m)
  })
})
