/**
 * The Topic entity: one per `(app, topic)` in the whole cluster, a single
 * mailbox through which every broadcast and every presence diff of the topic
 * passes, so that all subscribers on all nodes see them in one order.
 *
 * It forwards each broadcast to every live node; a node without local
 * subscribers to the topic drops it. Broadcasts that reach the node holding
 * the topic's shard are handed on there directly, in arrival order, without a
 * pass through this mailbox (`PublishRoute`); `Publish` is for publishers
 * that know no route to that node. With the handful of nodes a gateway runs
 * on, this costs less than keeping every topic's subscriber nodes in an
 * entity: a join makes no cluster call, and a topic that nobody broadcasts to
 * has no live entity at all (an entity costs ~16 KiB and ~0.4 ms to start,
 * measured with effect 4.1 on this project's machines).
 *
 * For presence channels it holds who is present through each node. That state
 * is only what nodes tell it, so it can be lost at any time (a move, a crash,
 * idle reaping) and is rebuilt by the nodes re-sending their presences on an
 * interval (`Presence`).
 */
import { Effect, Schedule, Schema } from "effect"
import { Entity } from "effect/cluster"
import { Rpc } from "effect/rpc"
import { appScopedId, makeIdSource, parseAppScopedId } from "./entityIds.ts"
import { Event } from "../protocol/constants.ts"
import { AppRegistry } from "../apps/AppRegistry.ts"
import { PresenceEntry, PresenceState } from "./messages.ts"
import { NodeRouter } from "./NodeRouter.ts"
import { SupervisedChild } from "../supervision/children.ts"
import { supervised } from "../supervision/Supervisor.ts"

/** A broadcast to every subscriber; `id` is unique per broadcast (repeats are dropped by the nodes). */
export const Publish = Rpc.make("Publish", {
  payload: {
    id: Schema.String,
    event: Schema.String,
    payload: Schema.Unknown,
    excludeConnectionId: Schema.optional(Schema.String)
  }
})
/** A node's complete presence list for the topic; replaces what the entity had for the node. */
export const SyncPresences = Rpc.make("SyncPresences", {
  payload: { node: Schema.String, presences: Schema.Array(PresenceEntry) }
})
/** Adds a presence; answers the state the joiner is sent as `presence_state`. */
export const Track = Rpc.make("Track", {
  payload: { node: Schema.String, entry: PresenceEntry },
  success: PresenceState
})
export const Untrack = Rpc.make("Untrack", { payload: { node: Schema.String, ref: Schema.String } })
export const Presences = Rpc.make("Presences", { success: PresenceState })

export const Topic = Entity.make("Topic", [Publish, SyncPresences, Track, Untrack, Presences])

/** How long a starting presence entity waits before it sends the full presence state. */
const PRESENCE_STATE_SETTLE = "1 second"

/** How often an entity with presences checks that their nodes are alive. */
const DEAD_NODE_CHECK_INTERVAL = "2 seconds"

export const topicEntityId = appScopedId

const addMeta = (state: Record<string, { metas: Array<unknown> }>, entry: PresenceEntry) => {
  const existing = state[entry.key]
  if (existing === undefined) state[entry.key] = { metas: [entry.meta] }
  else existing.metas.push(entry.meta)
}

export const TopicEntityLayer = Topic.toLayer(
  Effect.gen(function*() {
    const { app, key: topic } = parseAppScopedId((yield* Entity.CurrentAddress).entityId)
    const router = yield* NodeRouter
    const apps = yield* AppRegistry
    // presence diffs are broadcasts made here; their ids only need to be unique
    const nextDiffId = makeIdSource()

    // node → presence ref → entry
    const presences = new Map<string, Map<string, PresenceEntry>>()

    /**
     * Hands the broadcast to every live node at once, in call order: this
     * node's subscribers directly, the others' through their node links,
     * which keep that order.
     */
    const publish = (id: string, event: string, payload: unknown, excludeConnectionId?: string) =>
      Effect.sync(() => router.broadcast({ id, app, topic, event, payload, excludeConnectionId }))

    const publishDiff = (joins: ReadonlyArray<PresenceEntry>, leaves: ReadonlyArray<PresenceEntry>) => {
      if (joins.length === 0 && leaves.length === 0) return Effect.void
      const diff: Record<"joins" | "leaves", Record<string, { metas: Array<unknown> }>> = { joins: {}, leaves: {} }
      for (const entry of joins) addMeta(diff.joins, entry)
      for (const entry of leaves) addMeta(diff.leaves, entry)
      return publish(nextDiffId(), Event.presenceDiff, diff)
    }

    const presenceState = () => {
      const state: Record<string, { metas: Array<unknown> }> = {}
      for (const entries of presences.values()) {
        for (const entry of entries.values()) addMeta(state, entry)
      }
      return state
    }

    /** Replaces a node's presences, announcing only what changed. */
    const syncNode = (node: string, next: ReadonlyArray<PresenceEntry>) => {
      const previous = presences.get(node) ?? new Map<string, PresenceEntry>()
      const current = new Map(next.map((entry) => [entry.ref, entry]))
      const joins = next.filter((entry) => !previous.has(entry.ref))
      const leaves = [...previous.values()].filter((entry) => !current.has(entry.ref))
      if (current.size === 0) presences.delete(node)
      else presences.set(node, current)
      return publishDiff(joins, leaves)
    }

    // A presence channel's entity that starts (first use, or after a move or a
    // crash) asks every node for its presences at once, rather than waiting
    // for their next re-sync.
    const isPresenceChannel = apps.get(app)?.schema?.matchChannel(topic)?.channel.presence === true
    let everyNodeAnswered = true
    if (isPresenceChannel) {
      const nodes = yield* router.nodes
      yield* Effect.forEach(nodes, (node) =>
        router.presences(node, app, topic).pipe(
          Effect.map((entries) => {
            if (entries === undefined) everyNodeAnswered = false
            else if (entries.length > 0) presences.set(node, new Map(entries.map((entry) => [entry.ref, entry])))
          })
        ), { concurrency: "unbounded", discard: true })
    }

    // An entity that replaces one whose node died cannot know the presences
    // only that node had, while its subscribers' presence lists may still show
    // them. Once any deliveries of an old entity still on their way are over,
    // the full state goes out in order with the diffs, and each client's
    // `Presence` drops what it no longer contains (joins still waiting for
    // their own state are skipped, see LocalFanout). Only when every live
    // node told its presences: a state missing a live node's clients would
    // make them leave everywhere until its next re-sync.
    if (isPresenceChannel && everyNodeAnswered) {
      yield* Effect.sleep(PRESENCE_STATE_SETTLE).pipe(
        Effect.andThen(Effect.suspend(() => publish(nextDiffId(), Event.presenceState, presenceState()))),
        Effect.forkScoped
      )
    }

    // The presences of a node that died leave with it.
    yield* Effect.suspend(() => {
      if (presences.size === 0) return Effect.void
      return router.nodes.pipe(
        Effect.flatMap((live) =>
          Effect.forEach([...presences.keys()].filter((node) => !live.includes(node)), (node) => syncNode(node, []), {
            discard: true
          })
        )
      )
    }).pipe(Effect.repeat(Schedule.spaced(DEAD_NODE_CHECK_INTERVAL)), supervised(SupervisedChild.presenceDeadNodeCheck))

    return Topic.of({
      SyncPresences: ({ payload: { node, presences: nodePresences } }) => syncNode(node, nodePresences),
      Publish: ({ payload }) => publish(payload.id, payload.event, payload.payload, payload.excludeConnectionId),
      Track: ({ payload: { node, entry } }) =>
        Effect.suspend(() => {
          let entries = presences.get(node)
          if (entries === undefined) presences.set(node, entries = new Map())
          entries.set(entry.ref, entry)
          return publishDiff([entry], []).pipe(Effect.as(presenceState()))
        }),
      Untrack: ({ payload: { node, ref } }) =>
        Effect.suspend(() => {
          const entries = presences.get(node)
          const entry = entries?.get(ref)
          if (entry === undefined) return Effect.void
          entries!.delete(ref)
          if (entries!.size === 0) presences.delete(node)
          return publishDiff([], [entry])
        }),
      Presences: () => Effect.sync(presenceState)
    })
  }),
  // handlers start in mailbox order and hand broadcasts on synchronously, so
  // running them concurrently keeps the order. Released after
  // `ENTITY_IDLE_MS` without a message (the sharding config), longer than the
  // presence re-sync interval, so that a topic with presences keeps its state.
  { concurrency: "unbounded" }
)
