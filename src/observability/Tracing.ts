/**
 * Traces (CONTRACT §8): spans for connects, joins, pushes, app calls,
 * server-API broadcasts and cross-node deliveries, exported over OTLP/HTTP
 * with `@effect/opentelemetry` when `OTEL_EXPORTER_OTLP_ENDPOINT` is set. The
 * OpenTelemetry SDK reads the standard `OTEL_*` variables itself (sampler and
 * ratio, batch sizes and delays, exporter headers and timeouts); the resource
 * takes `OTEL_SERVICE_NAME` and `OTEL_RESOURCE_ATTRIBUTES` over its defaults.
 *
 * The hot paths run in plain callbacks, so they start and end spans by hand
 * through `start` rather than `Effect.withSpan`. With tracing off, `start`
 * returns one shared span that does nothing: no span, no timestamp, no
 * allocation; an app call then carries a fresh random `traceparent`, so the
 * app can still tie its own logs of one call together.
 */
import { randomFillSync } from "node:crypto"
import * as NodeSdk from "@effect/opentelemetry/NodeSdk"
import * as OtelTracer from "@effect/opentelemetry/OtelTracer"
import * as OtelResource from "@effect/opentelemetry/Resource"
import { OTLPTraceExporter } from "@opentelemetry/exporter-trace-otlp-http"
import { resourceFromAttributes } from "@opentelemetry/resources"
import { BatchSpanProcessor } from "@opentelemetry/sdk-trace-base"
import { Context, Effect, Exit, Layer, Option, Tracer } from "effect"

/**
 * Random bytes drawn a few kilobytes at a time: ids are needed for every app
 * call, and one draw per id would be a system call each.
 */
const pool = Buffer.allocUnsafe(4096)
let poolOffset = pool.length

/** `bytes` random bytes as lowercase hex. */
const randomHex = (bytes: number): string => {
  if (poolOffset + bytes > pool.length) {
    randomFillSync(pool)
    poolOffset = 0
  }
  const hex = pool.toString("hex", poolOffset, poolOffset + bytes)
  poolOffset += bytes
  return hex
}

/** A fresh `traceparent` header value: version 00, random trace and parent ids, sampled. */
export const newTraceparent = (): string => `00-${randomHex(16)}-${randomHex(8)}-01`

/** A fresh `x-request-id`: 128 random bits in hex. */
export const newRequestId = (): string => randomHex(16)

/** One unit of work in a trace, started and ended by hand. */
export interface TraceSpan {
  /** The W3C `traceparent` naming this span, for a call that continues the trace elsewhere. */
  readonly traceparent: () => string
  readonly attribute: (key: string, value: string | number | boolean) => void
  /** Ends the span; with `failure`, as failed with that message. Only the first call counts. */
  readonly end: (failure?: string) => void
  /** The span as Effect code sees it (`Effect.withParentSpan`); undefined when tracing is off. */
  readonly effectSpan: Tracer.Span | undefined
}

type SpanKind = Tracer.SpanKind

export interface TracingShape {
  readonly enabled: boolean
  /** Starts a span, a child of `parent` or else the root of a new trace. */
  readonly start: (name: string, kind: SpanKind, parent?: TraceSpan) => TraceSpan
  /** Runs `self` inside a span (and its children below it); `self` unchanged when tracing is off. */
  readonly around: (
    name: string,
    attributes: Readonly<Record<string, unknown>>,
    kind?: SpanKind
  ) => <A, E, R>(self: Effect.Effect<A, E, R>) => Effect.Effect<A, E, R>
}

const noop = () => {}

/** The span of a gateway whose tracing is off. */
export const NO_SPAN: TraceSpan = {
  traceparent: newTraceparent,
  attribute: noop,
  end: noop,
  effectSpan: undefined
}

/** Wall-clock nanoseconds with the monotonic clock's resolution. */
const nanosOrigin = BigInt(Date.now()) * 1_000_000n - process.hrtime.bigint()
const nowNanos = () => nanosOrigin + process.hrtime.bigint()

class HandSpan implements TraceSpan {
  readonly effectSpan: Tracer.Span
  private ended = false

  constructor(effectSpan: Tracer.Span) {
    this.effectSpan = effectSpan
  }

  traceparent = (): string =>
    `00-${this.effectSpan.traceId}-${this.effectSpan.spanId}-${this.effectSpan.sampled ? "01" : "00"}`

  attribute = (key: string, value: string | number | boolean): void => {
    this.effectSpan.attribute(key, value)
  }

  end = (failure?: string): void => {
    if (this.ended) return
    this.ended = true
    this.effectSpan.end(nowNanos(), failure === undefined ? Exit.void : Exit.fail(new Error(failure)))
  }
}

const makeTracing = (tracer: Tracer.Tracer): TracingShape => ({
  enabled: true,
  start: (name, kind, parent) =>
    new HandSpan(tracer.span({
      name,
      parent: parent?.effectSpan === undefined ? Option.none() : Option.some(parent.effectSpan),
      annotations: Context.empty(),
      links: [],
      startTime: nowNanos(),
      kind,
      root: parent?.effectSpan === undefined,
      sampled: true
    })),
  around: (name, attributes, kind = "internal") => Effect.withSpan(name, { attributes, kind })
})

/** The resource's defaults, under what `OTEL_SERVICE_NAME` and `OTEL_RESOURCE_ATTRIBUTES` say. */
const resourceLayer = (nodeName: string) =>
  Layer.effect(
    OtelResource.Resource,
    Effect.gen(function*() {
      const fromEnv = yield* OtelResource.Resource
      return resourceFromAttributes({ "service.name": "realtime-gateway", "service.instance.id": nodeName }).merge(fromEnv)
    })
  ).pipe(Layer.provide(OtelResource.layerFromEnv()))

/** Where spans go: `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` when set (read by the exporter), else `<endpoint>/v1/traces`. */
const exporterFor = (endpoint: string) =>
  new OTLPTraceExporter(
    process.env["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"] ? {} : { url: `${endpoint.replace(/\/+$/, "")}/v1/traces` }
  )

export class Tracing extends Context.Service<Tracing, TracingShape>()("realtime-gateway/observability/Tracing") {
  /** Tracing off: every span is `NO_SPAN`. */
  static readonly layerOff = Layer.succeed(
    Tracing,
    Tracing.of({ enabled: false, start: () => NO_SPAN, around: () => (self) => self })
  )

  /**
   * Spans exported in batches over OTLP/HTTP; also installs the OpenTelemetry
   * tracer as Effect's, so that the spans of Effect code (the HTTP server,
   * effect/cluster's calls) join the same traces. Pending spans are flushed
   * when the layer is released.
   */
  static readonly layerOtlp = (options: { readonly endpoint: string; readonly nodeName: string }) =>
    Layer.effect(Tracing, Effect.map(Effect.context<never>(), (context) => makeTracing(Context.get(context, Tracer.Tracer))))
      .pipe(
        Layer.provideMerge(OtelTracer.layer),
        Layer.provide(Layer.unwrap(Effect.sync(() =>
          NodeSdk.layerTracerProvider(new BatchSpanProcessor(exporterFor(options.endpoint)))
        ))),
        Layer.provide(resourceLayer(options.nodeName))
      )
}
