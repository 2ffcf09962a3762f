/**
 * The bound on every call to a cluster entity (Topic, Client).
 *
 * effect/cluster retries a call whose entity has no owner (its shard is
 * unassigned during a failover, or while PostgreSQL is unreachable and shard
 * locks cannot be renewed) for as long as it takes: without a bound, a push
 * waiting on its client's rate limit, a presence join or a server-API call
 * would wait for ever. Each caller says what it does once the bound is hit
 * (limit locally, answer an error reason, leave it to the next re-sync).
 */
import { Effect, Schema } from "effect"

export class EntityCallTimeout extends Schema.TaggedError<EntityCallTimeout>()("EntityCallTimeout", {
  /** `<Entity>.<Rpc>`, e.g. `Client.Attach`. */
  call: Schema.String,
  timeoutMs: Schema.Number
}) {
  override get message() {
    return `${this.call}: no answer from the entity within ${this.timeoutMs} ms`
  }
}

/** Fails the call with `EntityCallTimeout` (interrupting it) when it has no answer within `timeoutMs`. */
export const boundEntityCall = (call: string, timeoutMs: number) =>
<A, E, R>(self: Effect.Effect<A, E, R>): Effect.Effect<A, E | EntityCallTimeout, R> =>
  Effect.timeoutOrElse(self, {
    duration: timeoutMs,
    orElse: () => Effect.fail(new EntityCallTimeout({ call, timeoutMs }))
  })
