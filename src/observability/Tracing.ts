/**
 * Tracing conventions. Spans are made per connect, auth call, forwarded
 * message and app call; they run for every connection and message, so they
 * never capture a stack trace (which costs more than the rest of the span).
 */
import type { Tracer } from "effect"

export const NO_STACK_TRACE: Tracer.TraceOptions = { captureStackTrace: false }
