/**
 * The channel-schema document an app publishes (CONTRACT §3), as it crosses
 * the wire: its shape, declared once for the gateway (which adds the rules a
 * shape cannot express, in `apps/SchemaDocument.ts`), the test kit and the
 * SDK (which builds documents of this type).
 *
 * `Encoded` is what an app writes (a numeric `version`, the event alias
 * `channels`); `Type` is what the gateway works with once decoded (`version`
 * a string, `allowedChannels` always present, numeric `enum` entries as
 * strings, unknown keys dropped).
 */
import { Schema, SchemaGetter } from "effect"

// A version or an enum entry may be written as a number; topic segments and
// versions are strings, so numbers are kept as their decimal text.
export const StringOrNumber = Schema.Union([Schema.String, Schema.flip(Schema.FiniteFromString)]).annotate({
  expected: "a string or a number"
})

export const VariableType = Schema.Literals(["string", "integer", "number", "uuid", "boolean"])
export type VariableType = typeof VariableType.Type

/** Formats usable on a topic segment (formats whose values contain `:` could never match one). */
export const VariableFormat = Schema.Literals(["uuid", "email", "hostname", "ipv4", "date"])
export type VariableFormat = typeof VariableFormat.Type

/** What a topic variable (`{name}` in a pattern) must look like. */
export const VariableRule = Schema.Struct({
  type: Schema.optionalKey(VariableType),
  enum: Schema.optionalKey(Schema.Array(StringOrNumber)),
  format: Schema.optionalKey(VariableFormat),
  pattern: Schema.optionalKey(Schema.String),
  minLength: Schema.optionalKey(Schema.Natural),
  maxLength: Schema.optionalKey(Schema.Natural),
  minimum: Schema.optionalKey(Schema.Finite),
  maximum: Schema.optionalKey(Schema.Finite),
  description: Schema.optionalKey(Schema.String)
})
export type VariableRule = typeof VariableRule.Type

/** Permission templates such as `read:{resource}:{id}`. */
export const PermissionList = Schema.Array(Schema.String)

export const ChannelDefinition = Schema.Struct({
  /** `:`-separated segments; `{var}` binds one segment, `*` is a wildcard. */
  pattern: Schema.String,
  description: Schema.optionalKey(Schema.String),
  variables: Schema.optionalKey(Schema.Record(Schema.String, VariableRule)),
  permissions: Schema.optionalKey(Schema.Struct({
    join: Schema.optionalKey(PermissionList),
    send: Schema.optionalKey(PermissionList)
  })),
  presence: Schema.optionalKey(Schema.Boolean)
})
export type ChannelDefinition = typeof ChannelDefinition.Type

/** An event's `payload`: a JSON Schema (object or boolean) or the shorthand `{"field": "string"}`. */
export const PayloadSpec = Schema.Union([Schema.Record(Schema.String, Schema.Unknown), Schema.Boolean]).annotate({
  expected: "a JSON Schema or a shorthand object such as {\"title\": \"string\"}"
})
export type PayloadSpec = typeof PayloadSpec.Type

export const EventPermissions = Schema.Struct({ send: Schema.optionalKey(PermissionList) })

/** The event as written: `allowedChannels` or its alias `channels`. */
export const EventInput = Schema.Struct({
  name: Schema.NonEmptyString,
  description: Schema.optionalKey(Schema.String),
  allowedChannels: Schema.optionalKey(PermissionList),
  channels: Schema.optionalKey(PermissionList),
  payload: Schema.optionalKey(PayloadSpec),
  permissions: Schema.optionalKey(EventPermissions)
})

/** The event once decoded: the alias folded into `allowedChannels`. */
export const EventShape = Schema.Struct({
  name: Schema.NonEmptyString,
  description: Schema.optionalKey(Schema.String),
  allowedChannels: PermissionList,
  payload: Schema.optionalKey(PayloadSpec),
  permissions: Schema.optionalKey(EventPermissions)
})

/** Decodes an event as written (`input`, possibly with more checks) into {@link EventShape}. */
export const withAllowedChannels = (input: typeof EventInput) =>
  input.pipe(Schema.decodeTo(EventShape, {
    decode: SchemaGetter.transform((event: typeof EventInput.Type): typeof EventShape.Encoded => {
      const { channels, allowedChannels, ...rest } = event
      return { ...rest, allowedChannels: allowedChannels ?? channels ?? [] }
    }),
    encode: SchemaGetter.transform((event: typeof EventShape.Encoded): typeof EventInput.Type => event)
  }))

/** An event as an app writes it. */
export type SchemaEventInput = typeof EventInput.Encoded

export const EventDefinition = withAllowedChannels(EventInput)
export type EventDefinition = typeof EventDefinition.Type

const PositiveInt = Schema.Int.check(Schema.isGreaterThan(0))

/** `maxRequests` per `windowMs`, both positive integers. */
export const RateLimit = Schema.Struct({ windowMs: PositiveInt, maxRequests: PositiveInt })
export type RateLimit = typeof RateLimit.Type

export const RateLimits = Schema.Struct({
  default: Schema.optionalKey(RateLimit),
  // Keys are event names; names the document does not define are allowed (e.g. "phx_join").
  byEvent: Schema.optionalKey(Schema.Record(Schema.String, RateLimit))
})
export type RateLimits = typeof RateLimits.Type

export const SchemaDocument = Schema.Struct({
  version: StringOrNumber,
  channels: Schema.Array(ChannelDefinition),
  events: Schema.Array(EventDefinition),
  rateLimits: Schema.optionalKey(RateLimits)
})
export type SchemaDocument = typeof SchemaDocument.Type
/** A schema document as an app writes it. */
export type SchemaDocumentInput = typeof SchemaDocument.Encoded

/**
 * Whether a schema fetch's `If-None-Match` names the document's `ETag` (the
 * app then answers 304): it may list several tags, weak ones, or `*`.
 */
export const etagMatches = (header: string | undefined, etag: string): boolean => {
  if (header === undefined) return false
  const bare = (tag: string) => tag.trim().replace(/^W\//, "")
  return header.split(",").some((tag) => tag.trim() === "*" || bare(tag) === bare(etag))
}
