/**
 * Assertions an app's integration tests need beyond "this arrives": that
 * nothing arrives within a while (as Phoenix's `refute_push`), presence as the
 * `phoenix` client's `Presence` sees it, pushes until the rate limit refuses
 * one, and pushes typed by an SDK app's own event Schemas.
 */
import { Presence } from "phoenix"
import type { Channel } from "phoenix"
import type { Events, RealtimeApp } from "../sdk/App.ts"
import type { FakeApp, RecordedKind, RecordedRequest } from "./FakeApp.ts"
import { push } from "./PhoenixClient.ts"
import type { PushResult } from "./PhoenixClient.ts"

/**
 * Resolves after `withinMs` if no `event` (matching `predicate`, when given)
 * arrived on the channel meanwhile; rejects with the payload as soon as one does.
 */
export const refuteMessage = <T = unknown>(
  channel: Channel,
  event: string,
  withinMs: number,
  predicate: (payload: T) => boolean = () => true
): Promise<void> =>
  new Promise<void>((resolve, reject) => {
    const ref = channel.on(event, (payload: T) => {
      if (!predicate(payload)) return
      clearTimeout(timer)
      channel.off(event, ref)
      reject(new Error(`expected no "${event}" on ${channel.topic} within ${withinMs}ms, got ${JSON.stringify(payload)}`))
    })
    const timer = setTimeout(() => {
      channel.off(event, ref)
      resolve()
    }, withinMs)
  })

/**
 * Resolves after `withinMs` if the fake app received no request of `kind`
 * (matching `predicate`) after the call; rejects as soon as one arrives.
 */
export const refuteRequest = <K extends RecordedKind>(
  app: FakeApp,
  kind: K,
  withinMs: number,
  predicate: (request: RecordedRequest<K>) => boolean = () => true
): Promise<void> => {
  const after = app.requests.at(-1)?.seq ?? 0
  return app.waitFor(kind, (request) => request.seq > after && predicate(request), withinMs).then(
    (request) => {
      throw new Error(`expected no ${kind} request within ${withinMs}ms, got ${request.method} ${request.url} ${request.rawBody}`)
    },
    (error: unknown) => {
      // the wait's own timeout is the success; a closed fake app is not
      if (!(error instanceof Error && error.message.startsWith("no matching"))) throw error
    }
  )
}

/** Client id → its metas (one per connection), as the `phoenix` client's `Presence` lists them. */
export type PresenceList = Readonly<Record<string, ReadonlyArray<Readonly<Record<string, unknown>>>>>

export interface PresenceWatch {
  readonly presence: Presence
  list(): PresenceList
  /** Resolves with the list once it satisfies `predicate`; rejects with the last list after `timeoutMs` (default 5000). */
  until(predicate: (list: PresenceList) => boolean, timeoutMs?: number): Promise<PresenceList>
}

/** Watches a channel's presence with the `phoenix` client's own `Presence` (create it before joining). */
export const watchPresence = (channel: Channel): PresenceWatch => {
  const presence = new Presence(channel)
  const waiters = new Set<() => void>()
  presence.onSync(() => {
    for (const waiter of waiters) waiter()
  })
  const list = (): PresenceList =>
    Object.fromEntries(
      presence.list((key, { metas }) => [key, metas.map((meta: Record<string, unknown>) => meta)] as const)
    )
  const until = (predicate: (current: PresenceList) => boolean, timeoutMs = 5_000) =>
    new Promise<PresenceList>((resolve, reject) => {
      const check = () => {
        const current = list()
        if (!predicate(current)) return
        waiters.delete(check)
        clearTimeout(timer)
        resolve(current)
      }
      const timer = setTimeout(() => {
        waiters.delete(check)
        reject(new Error(`presence never matched; last list: ${JSON.stringify(list())}`))
      }, timeoutMs)
      waiters.add(check)
      check()
    })
  return { presence, list, until }
}

export interface RateLimitedOutcome {
  /** Pushes answered before the refusal (`ok`, or `error` for another reason). */
  readonly accepted: number
  /** The refusal's `retry_after_ms`. */
  readonly retryAfterMs: number
}

/**
 * Pushes `event` one after the other until one is refused `rate_limited`;
 * rejects when `maxPushes` went through without a refusal.
 */
export const pushUntilRateLimited = async (
  channel: Channel,
  event: string,
  payload: object = {},
  maxPushes = 1_000
): Promise<RateLimitedOutcome> => {
  for (let accepted = 0; accepted < maxPushes; accepted++) {
    const result = await push<{ reason?: unknown; retry_after_ms?: unknown }>(channel, event, payload)
    if (result.status === "error" && result.response.reason === "rate_limited") {
      return { accepted, retryAfterMs: Number(result.response.retry_after_ms) }
    }
    if (result.status === "timeout") throw new Error(`push ${accepted + 1} of "${event}" timed out`)
  }
  throw new Error(`${maxPushes} pushes of "${event}" on ${channel.topic} were never rate limited`)
}

/** The payload an SDK app's event takes from a client, as its Schema declares it. */
export type PayloadOf<E extends Events, K extends keyof E> = E[K]["payload"]["Encoded"]

/** Pushes one of an SDK app's events, its payload checked by the compiler against the event's Schema. */
export const pushEvent = <E extends Events, K extends keyof E & string, R = unknown>(
  _app: RealtimeApp<E>,
  channel: Channel,
  event: K,
  payload: PayloadOf<E, K>,
  timeoutMs?: number
): Promise<PushResult<R>> => push<R>(channel, event, payload as object, timeoutMs)
