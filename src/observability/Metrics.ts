/**
 * Every metric the gateway exports, declared here and only here, with its help
 * text; `GET /metrics` renders them in the Prometheus text format, together
 * with effect/cluster's own (`effect_cluster_*`) and the process's.
 *
 * Labels are bounded by construction: an app id (from the configuration), a
 * call kind, a reason or result from a fixed list, and an event name taken
 * from the app's compiled schema, never from what a client sent. A topic, a
 * client id or a connection id is never a label.
 *
 * The hot paths (every push, every delivery, every app call) update metrics
 * through objects bound once per app (`forApp`), whose series are looked up
 * without building a label set or allocating.
 */
import { readdirSync } from "node:fs"
import { PerformanceObserver } from "node:perf_hooks"
import type { PerformanceEntry } from "node:perf_hooks"
import { Context, Effect, Layer, Metric } from "effect"
import { PrometheusMetrics } from "effect/observability"
import type { CompiledEvent } from "../apps/CompiledSchema.ts"
import type { Event } from "../protocol/constants.ts"
import type { UpstreamCall } from "../upstream/errors.ts"
import { EventLoop } from "./EventLoop.ts"

// ---------------------------------------------------------------------------
// The catalogue
// ---------------------------------------------------------------------------

const counter = (name: string, description: string) => Metric.counter(name, { description, incremental: true })

/** Each histogram's boundaries, for its labelled series (effect keeps them private to the metric). */
const boundariesOf = new Map<string, ReadonlyArray<number>>()
const histogram = (name: string, description: string, boundaries: ReadonlyArray<number>) => {
  boundariesOf.set(name, boundaries)
  return Metric.histogram(name, { description, boundaries })
}

/** Boundaries of the app-call latency histograms, in seconds. */
const CALL_SECONDS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]
const GC_SECONDS = [0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1]

export const catalogue = {
  connections: Metric.gauge("gateway_connections", { description: "Open client connections, by app." }),
  connectionOpens: counter("gateway_connection_opens_total", "Connections accepted (upgrade completed), by app."),
  connectionCloses: counter(
    "gateway_connection_closes_total",
    "Connections closed, by app and by who closed them (client, or server: idle, limits, drain, app request)."
  ),
  connectionRefusals: counter(
    "gateway_connection_refusals_total",
    "WebSocket upgrades refused, by the reason the client was sent."
  ),
  authFailures: counter(
    "gateway_auth_failures_total",
    "Upgrades refused by the app's auth endpoint or because it could not be asked, by app and reason."
  ),
  joins: counter("gateway_joins_total", "Channel joins, by app and result (ok or the error reason)."),
  messagesIn: counter(
    "gateway_messages_in_total",
    "Client pushes on joined channels, by app and event (events not in the app's schema count as _not_in_schema)."
  ),
  pushRefusals: counter(
    "gateway_push_refusals_total",
    "Client pushes answered with an error, by app and reason."
  ),
  messagesOut: counter(
    "gateway_messages_out_total",
    "Broadcast frames written to this node's clients, by app and event (events not in the schema count as _not_in_schema)."
  ),
  broadcasts: counter(
    "gateway_broadcasts_total",
    "Broadcasts published through this node, by app and source (app_action or server_api)."
  ),
  deliveries: counter(
    "gateway_deliveries_total",
    "Broadcasts delivered to this node's subscribers (one per broadcast and node, whatever the subscriber count; a repeat not counted again), by app."
  ),
  appCallDuration: histogram(
    "gateway_app_call_duration_seconds",
    "Calls to the app's API, by app, call kind (auth, message, schema, notify) and outcome (ok, rejected: 4xx, " +
      "error_status: 5xx, timeout, unreachable, overloaded, breaker_open), in seconds.",
    CALL_SECONDS
  ),
  breakerState: Metric.gauge("gateway_app_call_breaker_state", {
    description: "Circuit breaker of each app and call kind: 0 closed, 1 open, 2 half-open (one trial call allowed)."
  }),
  rateLimited: counter(
    "gateway_rate_limited_total",
    "Refusals by a rate limit, by app and limit (connections_per_ip, push, pushes_in_flight, push_bytes_in_flight, joins, frames)."
  ),
  slowConsumerDisconnects: counter(
    "gateway_slow_consumer_disconnects_total",
    "Connections dropped because their outbox grew past the limit (the client did not read), by app."
  ),
  notificationsDropped: counter(
    "gateway_notifications_dropped_total",
    "Lifecycle notifications to the app that were given up, by app and reason (queue_full, failed)."
  ),
  schemaRefreshes: counter(
    "gateway_schema_refreshes_total",
    "Schema fetches, by app and result (changed, unchanged, failed)."
  ),
  clusterNodeLinks: Metric.gauge("gateway_cluster_node_links", {
    description: "Other nodes of the cluster this node currently sees as live and can deliver to."
  }),
  eventLoopLag: Metric.gauge("gateway_event_loop_lag_seconds", {
    description: "Longest event-loop delay over the last second, in seconds."
  }),
  eventLoopUtilization: Metric.gauge("gateway_event_loop_utilization_ratio", {
    description: "Share of the last second the event loop was busy (0 to 1)."
  }),
  gcDuration: histogram(
    "gateway_gc_duration_seconds",
    "Garbage collection pauses, by kind (minor, major, incremental, weakcb), in seconds.",
    GC_SECONDS
  ),
  cpuSeconds: counter("gateway_process_cpu_seconds_total", "CPU time used by the process (user and system), in seconds."),
  residentMemory: Metric.gauge("gateway_process_resident_memory_bytes", { description: "Resident set size, in bytes." }),
  heapUsed: Metric.gauge("gateway_process_heap_used_bytes", { description: "V8 heap in use, in bytes." }),
  heapTotal: Metric.gauge("gateway_process_heap_total_bytes", { description: "V8 heap reserved, in bytes." }),
  openFds: Metric.gauge("gateway_process_open_fds", { description: "Open file descriptors (sockets included)." }),
  startTime: Metric.gauge("gateway_process_start_time_seconds", {
    description: "When the process started, in seconds since the Unix epoch."
  })
} as const

/**
 * effect/cluster series left out of `/metrics`: the mailbox size per entity is
 * labelled with the entity id, which holds a topic or a client id.
 */
const UNBOUNDED_SERIES = new Set(["effect_cluster_entity_mailbox_size"])

// ---------------------------------------------------------------------------
// Label values
// ---------------------------------------------------------------------------

/** The `event` label of an event a client or app named that the app's schema does not have. */
const EVENT_NOT_IN_SCHEMA = "_not_in_schema"

export type ClosedBy = "client" | "server"
export type PresenceEvent = typeof Event.presenceState | typeof Event.presenceDiff
export type BroadcastSource = "app_action" | "server_api"
export type CallOutcome = "ok" | "rejected" | "error_status" | "timeout" | "unreachable" | "overloaded" | "breaker_open"
export type RateLimit =
  | "connections_per_ip"
  | "push"
  | "pushes_in_flight"
  | "push_bytes_in_flight"
  | "joins"
  | "frames"
export type NotificationDropReason = "queue_full" | "failed"
export type SchemaRefreshResult = "changed" | "unchanged" | "failed"
export type BreakerState = 0 | 1 | 2

/** What the gateway counts about one app; bound once per app, so that updates allocate nothing. */
export interface AppMetrics {
  readonly connectionOpened: () => void
  readonly connectionClosed: (closedBy: ClosedBy) => void
  /** `result` is `ok` or a reply reason. */
  readonly joined: (result: string) => void
  /** `event` is the schema's event the push named, undefined when the schema has none of that name. */
  readonly messageIn: (event: CompiledEvent | undefined) => void
  /** `event` as in `messageIn`, or one of the protocol's presence events. */
  readonly messagesOut: (event: CompiledEvent | PresenceEvent | undefined, frames: number) => void
  readonly pushRefused: (reason: string) => void
  readonly broadcast: (source: BroadcastSource) => void
  readonly delivered: () => void
  readonly appCall: (call: UpstreamCall, outcome: CallOutcome, seconds: number) => void
  /** `reason` is the upgrade refusal the client was sent. */
  readonly authFailed: (reason: string) => void
  readonly rateLimited: (limit: RateLimit) => void
  readonly slowConsumerDisconnected: () => void
  readonly notificationsDropped: (reason: NotificationDropReason, count: number) => void
  readonly schemaRefreshed: (result: SchemaRefreshResult) => void
  /** Reports the breaker state of a call kind on every scrape; the returned function stops it. */
  readonly watchBreaker: (call: UpstreamCall, state: () => BreakerState) => () => void
}

export interface MetricsShape {
  readonly forApp: (app: string) => AppMetrics
  /** `reason` is the upgrade refusal the client was sent. */
  readonly connectionRefused: (reason: string) => void
  /** Reports a value read on every scrape (cluster figures owned by another service); the returned function stops it. */
  readonly watch: (gauge: Metric.Gauge<number>, value: () => number) => () => void
  /** Every series in the Prometheus text format (version 0.0.4). */
  readonly render: () => string
}

const noop = () => {}

/**
 * The series of a catalogue metric with `labels`, as a metric of its own, so
 * that its key is made once. (`Metric.withAttributes` adds the labels to the
 * context on every update, and the shared metric remakes its series key each
 * time two of its series alternate: ~0.9 µs per update against ~0.05 µs.)
 */
const labelled = <In, State>(metric: Metric.Metric<In, State>, labels: Record<string, string>): Metric.Metric<In, State> => {
  const options = { description: metric.description, attributes: labels }
  const series = metric.type === "Counter"
    ? Metric.counter(metric.id, { ...options, incremental: true })
    : metric.type === "Histogram"
    ? Metric.histogram(metric.id, { ...options, boundaries: boundariesOf.get(metric.id)! })
    : Metric.gauge(metric.id, options)
  return series as unknown as Metric.Metric<In, State>
}

/** A series with fixed labels as an update function: each update is a registry lookup by a key made once. */
const bind = <In, State>(
  metric: Metric.Metric<In, State>,
  labels: Record<string, string>,
  context: Context.Context<never>
): ((value: In) => void) => {
  const series = labelled(metric, labels)
  return (value) => series.updateUnsafe(value, context)
}

/** Bound series made on first use, one per label value of a small fixed set. */
const lazily = <K, V>(make: (key: K) => V) => {
  const made = new Map<K, V>()
  return (key: K): V => {
    let value = made.get(key)
    if (value === undefined) made.set(key, value = make(key))
    return value
  }
}

const makeAppMetrics = (app: string, context: Context.Context<never>): AppMetrics => {
  const connections = labelled(catalogue.connections, { app })
  const opens = bind(catalogue.connectionOpens, { app }, context)
  const closes = lazily((closedBy: ClosedBy) => bind(catalogue.connectionCloses, { app, closed_by: closedBy }, context))
  const joins = lazily((result: string) => bind(catalogue.joins, { app, result }, context))
  // keyed by the compiled event: a schema version's events are few, and a name a client made up never gets here
  const inByEvent = lazily((event: string) => bind(catalogue.messagesIn, { app, event }, context))
  const outByEvent = lazily((event: string) => bind(catalogue.messagesOut, { app, event }, context))
  const pushRefusals = lazily((reason: string) => bind(catalogue.pushRefusals, { app, reason }, context))
  const broadcasts = lazily((source: BroadcastSource) => bind(catalogue.broadcasts, { app, source }, context))
  const deliveries = bind(catalogue.deliveries, { app }, context)
  const calls = lazily((call: UpstreamCall) =>
    lazily((outcome: CallOutcome) => bind(catalogue.appCallDuration, { app, call, outcome }, context))
  )
  const authFailures = lazily((reason: string) => bind(catalogue.authFailures, { app, reason }, context))
  const rateLimited = lazily((limit: RateLimit) => bind(catalogue.rateLimited, { app, limit }, context))
  const slowConsumers = bind(catalogue.slowConsumerDisconnects, { app }, context)
  const dropped = lazily((reason: NotificationDropReason) =>
    bind(catalogue.notificationsDropped, { app, reason }, context)
  )
  const refreshes = lazily((result: SchemaRefreshResult) => bind(catalogue.schemaRefreshes, { app, result }, context))
  // the app's main series exist from the start: a 0 reads differently from no series at all
  connections.modifyUnsafe(0, context)
  opens(0)
  deliveries(0)
  slowConsumers(0)

  return {
    connectionOpened: () => {
      opens(1)
      connections.modifyUnsafe(1, context)
    },
    connectionClosed: (closedBy) => {
      closes(closedBy)(1)
      connections.modifyUnsafe(-1, context)
    },
    joined: (result) => joins(result)(1),
    messageIn: (event) => inByEvent(event === undefined ? EVENT_NOT_IN_SCHEMA : event.name)(1),
    messagesOut: (event, frames) =>
      outByEvent(event === undefined ? EVENT_NOT_IN_SCHEMA : typeof event === "string" ? event : event.name)(frames),
    pushRefused: (reason) => pushRefusals(reason)(1),
    broadcast: (source) => broadcasts(source)(1),
    delivered: () => deliveries(1),
    appCall: (call, outcome, seconds) => calls(call)(outcome)(seconds),
    authFailed: (reason) => authFailures(reason)(1),
    rateLimited: (limit) => rateLimited(limit)(1),
    slowConsumerDisconnected: () => slowConsumers(1),
    notificationsDropped: (reason, count) => dropped(reason)(count),
    schemaRefreshed: (result) => refreshes(result)(1),
    watchBreaker: (call, state) => watchSeries(catalogue.breakerState, { app, call }, state, context)
  }
}

/** A gauge series whose value is read when metrics are rendered, not pushed. */
const watchSeries = (
  gauge: Metric.Gauge<number>,
  labels: Record<string, string> | undefined,
  value: () => number,
  context: Context.Context<never>
): (() => void) => {
  const series = labels === undefined ? gauge : labelled(gauge, labels)
  const registration = Metric.registerUnsafe(series, context, {
    get: () => ({ value: value() }),
    update: noop,
    modify: noop
  })
  return registration.remove
}

const watchCounter = (
  metric: Metric.Counter<number>,
  value: () => number,
  context: Context.Context<never>
): (() => void) =>
  Metric.registerUnsafe(metric, context, {
    get: () => ({ count: value(), incremental: true }),
    update: noop,
    modify: noop
  }).remove

const countOpenFds = (): number => readdirSync("/proc/self/fd").length
const hasProcFs = (() => {
  try {
    countOpenFds()
    return true
  } catch {
    return false
  }
})()

const GC_KINDS: Record<number, string> = { 1: "minor", 2: "major", 4: "incremental", 8: "weakcb" }

/**
 * The process's figures: memory, CPU and descriptors read on each scrape;
 * event-loop delay and utilisation as `EventLoop` last sampled them; GC
 * pauses as they are reported.
 */
const watchProcess = Effect.gen(function*() {
  const context = yield* Effect.context<never>()
  const eventLoop = yield* EventLoop
  const removals = [
    watchSeries(catalogue.eventLoopLag, undefined, () => eventLoop.lastSecond().maxLagMs / 1000, context),
    watchSeries(catalogue.eventLoopUtilization, undefined, () => eventLoop.lastSecond().utilization, context),
    watchCounter(catalogue.cpuSeconds, () => {
      const usage = process.cpuUsage()
      return (usage.user + usage.system) / 1e6
    }, context),
    watchSeries(catalogue.residentMemory, undefined, () => process.memoryUsage.rss(), context),
    watchSeries(catalogue.heapUsed, undefined, () => process.memoryUsage().heapUsed, context),
    watchSeries(catalogue.heapTotal, undefined, () => process.memoryUsage().heapTotal, context),
    ...(hasProcFs ? [watchSeries(catalogue.openFds, undefined, countOpenFds, context)] : [])
  ]
  catalogue.startTime.updateUnsafe(Math.floor((Date.now() - process.uptime() * 1000) / 1000), context)
  yield* Effect.addFinalizer(() => Effect.sync(() => removals.forEach((remove) => remove())))

  const gcByKind = lazily((kind: string) => bind(catalogue.gcDuration, { kind }, context))
  const gc = new PerformanceObserver((list) => {
    for (const entry of list.getEntries()) {
      const detail = (entry as PerformanceEntry & { readonly detail?: { readonly kind?: number } }).detail
      const kind = GC_KINDS[detail?.kind ?? 0] ?? "other"
      gcByKind(kind)(entry.duration / 1000)
    }
  })
  gc.observe({ entryTypes: ["gc"] })
  yield* Effect.addFinalizer(() => Effect.sync(() => gc.disconnect()))
})

/** `render` with the series of unbounded labels left out. */
const renderFrom = (context: Context.Context<never>) => (): string => {
  const registry = Context.get(context, Metric.MetricRegistry)
  const exported: Metric.MetricRegistry = new Map()
  for (const [key, metadata] of registry) {
    if (!UNBOUNDED_SERIES.has(metadata.id)) exported.set(key, metadata)
  }
  return PrometheusMetrics.formatUnsafe(Context.add(context, Metric.MetricRegistry, exported))
}

const disabledApp: AppMetrics = {
  connectionOpened: noop,
  connectionClosed: noop,
  joined: noop,
  messageIn: noop,
  messagesOut: noop,
  pushRefused: noop,
  broadcast: noop,
  delivered: noop,
  appCall: noop,
  authFailed: noop,
  rateLimited: noop,
  slowConsumerDisconnected: noop,
  notificationsDropped: noop,
  schemaRefreshed: noop,
  watchBreaker: () => noop
}

export class Metrics extends Context.Service<Metrics, MetricsShape>()("realtime-gateway/observability/Metrics") {
  /**
   * Metrics in the process's registry (effect's default one, which
   * effect/cluster writes to as well): a process is one node.
   */
  static readonly layer = Layer.effect(
    Metrics,
    Effect.gen(function*() {
      const context = yield* Effect.context<never>()
      yield* watchProcess
      const forApp = lazily((app: string) => makeAppMetrics(app, context))
      const refusals = lazily((reason: string) => bind(catalogue.connectionRefusals, { reason }, context))
      return Metrics.of({
        forApp,
        connectionRefused: (reason) => refusals(reason)(1),
        watch: (gauge, value) => watchSeries(gauge, undefined, value, context),
        render: renderFrom(context)
      })
    })
  )

  /** Nothing counted and `/metrics` empty: for measuring what metrics cost. */
  static readonly layerDisabled = Layer.succeed(
    Metrics,
    Metrics.of({
      forApp: () => disabledApp,
      connectionRefused: noop,
      watch: () => noop,
      render: () => ""
    })
  )
}
