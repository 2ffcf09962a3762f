/**
 * The decoded Phoenix Channels message, and Schema descriptions of the two
 * JSON text encodings. The schemas are the readable reference for what a
 * well-formed text frame is; the hand-written codec in Serializer.ts is the
 * one used on the hot path and is tested to agree with them.
 */
import { Schema } from "effect"

/** One message, whatever encoding it arrived in. */
export interface Frame {
  /** ref of the join that opened the channel this message belongs to; null outside a channel */
  readonly joinRef: string | null
  /** set when the sender expects a reply carrying the same ref */
  readonly ref: string | null
  readonly topic: string
  readonly event: string
  /**
   * any JSON value for text frames; a Uint8Array (Buffer) for binary frames;
   * {@link PAYLOAD_TOO_DEEP} for a payload that was not parsed
   */
  readonly payload: unknown
}

/**
 * Stands for a payload nested deeper than `MAX_JSON_DEPTH`: the frame's other
 * fields were read, so that the push can be answered `invalid_payload`.
 */
export const PAYLOAD_TOO_DEEP: unique symbol = Symbol("payload nested too deep")

const Ref = Schema.NullOr(Schema.String)

/** V2 text frame: `[join_ref, ref, topic, event, payload]`. */
export const V2TextFrame = Schema.fromJsonString(
  Schema.Tuple([Ref, Ref, Schema.String, Schema.String, Schema.Json])
)
export type V2TextFrame = typeof V2TextFrame.Type

/** V1 text frame: `{topic, event, payload, ref, join_ref?}`; other keys are ignored, as Phoenix does. */
export const V1TextFrame = Schema.fromJsonString(
  Schema.Struct({
    topic: Schema.String,
    event: Schema.String,
    payload: Schema.Json,
    ref: Ref,
    join_ref: Schema.optionalKey(Ref)
  })
)
export type V1TextFrame = typeof V1TextFrame.Type
