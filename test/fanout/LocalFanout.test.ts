/**
 * Local delivery of broadcasts: a broadcast that cannot be encoded is
 * dropped (and logged) without costing the broadcasts delivered after it.
 */
import { Effect, Layer } from "effect"
import { describe, expect, it } from "vitest"
import { TopicRegistry } from "../../src/fanout/TopicRegistry.ts"
import type { TopicRegistryShape, TopicSubscriber } from "../../src/fanout/TopicRegistry.ts"
import { AppRegistry } from "../../src/apps/AppRegistry.ts"
import type { AppRegistryShape } from "../../src/apps/AppRegistry.ts"
import { LocalFanout } from "../../src/fanout/LocalFanout.ts"
import { Metrics } from "../../src/observability/Metrics.ts"
import { V1, V2 } from "../../src/protocol/Serializer.ts"

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
})
