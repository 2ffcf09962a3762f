import { Effect, Result } from "effect"
import { describe, expect, it } from "vitest"
import { compileSchema, loadSchemaDocument } from "../../src/apps/CompiledSchema.ts"
import type { CompiledAppSchema } from "../../src/apps/CompiledSchema.ts"
import type { SchemaDocument } from "../../src/apps/SchemaDocument.ts"

const load = (input: unknown): CompiledAppSchema => Effect.runSync(loadSchemaDocument(input))

const withChannels = (channels: ReadonlyArray<unknown>, events: ReadonlyArray<unknown> = []) =>
  load({ version: 1, channels, events })

const channelOf = (schema: CompiledAppSchema, topic: string) => schema.matchChannel(topic)?.channel.pattern

const UUID = "0b3f7a52-3c1e-4a8e-9f5d-2d6c1b7e8a90"

describe("loadSchemaDocument", () => {
  it("exposes version, document and channel metadata", () => {
    const schema = withChannels([
      { pattern: "room:{id}", description: "a room", presence: true },
      { pattern: "lobby" }
    ])
    expect(schema.version).toBe("1")
    expect(schema.document.channels).toHaveLength(2)
    expect(schema.channels.map((c) => [c.pattern, c.presence, c.description, c.index, c.variableNames])).toEqual([
      ["room:{id}", true, "a room", 0, ["id"]],
      ["lobby", false, undefined, 1, []]
    ])
  })

  it("fails with InvalidSchemaDocument for a bad document", () => {
    const result = Effect.runSync(Effect.result(loadSchemaDocument({ version: "1", channels: [{ pattern: "a::b" }], events: [] })))
    expect(Result.isFailure(result) && result.failure._tag).toBe("InvalidSchemaDocument")
  })
})

describe("compileSchema on documents that were not decoded", () => {
  it("rejects what decoding would have rejected", () => {
    const doc: SchemaDocument = {
      version: "1",
      channels: [
        { pattern: "room:{id}:{id}" },
        { pattern: "user:{id}", variables: { id: { pattern: "(" }, other: {} }, permissions: { join: ["r:{nope}"] } }
      ],
      events: [
        { name: "m", allowedChannels: ["a::b"], payload: { type: "nope" } },
        { name: "m", allowedChannels: ["*"] }
      ]
    }
    const result = Effect.runSync(Effect.result(compileSchema(doc)))
    if (Result.isSuccess(result)) throw new Error("expected a failure")
    expect((result.failure.issues ?? []).map((issue) => issue.path)).toEqual([
      "channels[0].pattern",
      "channels[1].variables.other",
      "channels[1].variables.id.pattern",
      "channels[1].permissions.join[0]",
      "events[0].allowedChannels[0]",
      "events[0].payload",
      "events[1].name"
    ])
  })

  it("compiles a valid hand-built document", () => {
    const doc: SchemaDocument = {
      version: "7",
      channels: [{ pattern: "room:{id}" }],
      events: [{ name: "m", allowedChannels: ["room:*"], payload: { text: "string" } }]
    }
    const schema = Effect.runSync(compileSchema(doc))
    expect(schema.matchChannel("room:1")?.variables).toEqual({ id: "1" })
    expect(schema.event("m")?.validatePayload({})).toEqual([{ path: "/text", message: "must have required property 'text'" }])
  })
})

describe("topic patterns", () => {
  it("matches literal segments exactly", () => {
    const schema = withChannels([{ pattern: "lobby" }, { pattern: "game:lobby" }])
    expect(channelOf(schema, "lobby")).toBe("lobby")
    expect(channelOf(schema, "game:lobby")).toBe("game:lobby")
    expect(channelOf(schema, "lobb")).toBeUndefined()
    expect(channelOf(schema, "lobby:x")).toBeUndefined()
    expect(channelOf(schema, "game:lobby:x")).toBeUndefined()
    expect(channelOf(schema, "game")).toBeUndefined()
  })

  it("binds {var} to exactly one non-empty segment", () => {
    const schema = withChannels([{ pattern: "room:{id}" }])
    expect(schema.matchChannel("room:42")?.variables).toEqual({ id: "42" })
    expect(schema.matchChannel("room:")).toBeUndefined()
    expect(schema.matchChannel("room")).toBeUndefined()
    expect(schema.matchChannel("room:1:2")).toBeUndefined()
    expect(schema.matchChannel("other:1")).toBeUndefined()
  })

  it("binds several variables", () => {
    const schema = withChannels([{ pattern: "org:{org}:project:{project}" }])
    expect(schema.matchChannel("org:acme:project:p1")?.variables).toEqual({ org: "acme", project: "p1" })
    expect(schema.matchChannel("org:acme:projects:p1")).toBeUndefined()
  })

  it("supports text mixed with variables in one segment", () => {
    const schema = withChannels([{ pattern: "user-{id}:inbox" }, { pattern: "pair:{a}-{b}.x" }, { pattern: "v:{n}v" }])
    expect(schema.matchChannel("user-7:inbox")?.variables).toEqual({ id: "7" })
    expect(schema.matchChannel("user-:inbox")).toBeUndefined()
    expect(schema.matchChannel("usr-7:inbox")).toBeUndefined()
    // The first variable ends at the first "-" after it.
    expect(schema.matchChannel("pair:x-y-z.x")?.variables).toEqual({ a: "x", b: "y-z" })
    expect(schema.matchChannel("pair:x-.x")).toBeUndefined()
    expect(schema.matchChannel("pair:-y.x")).toBeUndefined()
    expect(schema.matchChannel("pair:xy.x")).toBeUndefined()
    expect(schema.matchChannel("v:1v")?.variables).toEqual({ n: "1" })
    expect(schema.matchChannel("v:v")).toBeUndefined()
  })

  it("matches a middle * against exactly one non-empty segment", () => {
    const schema = withChannels([{ pattern: "a:*:c" }])
    expect(channelOf(schema, "a:b:c")).toBe("a:*:c")
    expect(channelOf(schema, "a::c")).toBeUndefined()
    expect(channelOf(schema, "a:b:b:c")).toBeUndefined()
  })

  it("matches a trailing * against one or more remaining segments", () => {
    const schema = withChannels([{ pattern: "room:*" }])
    expect(channelOf(schema, "room:1")).toBe("room:*")
    expect(channelOf(schema, "room:1:2:3")).toBe("room:*")
    expect(channelOf(schema, "room:")).toBeUndefined()
    expect(channelOf(schema, "room")).toBeUndefined()
    expect(channelOf(schema, "rooms:1")).toBeUndefined()
  })

  it("matches any topic with the bare *", () => {
    const schema = withChannels([{ pattern: "*" }])
    for (const topic of ["x", "a:b:c", "", "::"]) expect(channelOf(schema, topic)).toBe("*")
  })

  it("returns the first channel in document order", () => {
    const schema = withChannels([
      { pattern: "room:lobby" },
      { pattern: "room:{id}", variables: { id: { type: "integer" } } },
      { pattern: "room:{name}" },
      { pattern: "room:*" }
    ])
    expect(channelOf(schema, "room:lobby")).toBe("room:lobby")
    expect(channelOf(schema, "room:42")).toBe("room:{id}")
    // A broken variable rule falls through to the next channel.
    expect(schema.matchChannel("room:kitchen")?.variables).toEqual({ name: "kitchen" })
    expect(channelOf(schema, "room:a:b")).toBe("room:*")
    expect(channelOf(schema, "hall:1")).toBeUndefined()
  })

  it("returns the same match object for channels without variables", () => {
    const schema = withChannels([{ pattern: "lobby", permissions: { join: ["lobby:join"] } }])
    const match = schema.matchChannel("lobby")
    expect(match).toBe(schema.matchChannel("lobby"))
    expect(match?.variables).toEqual({})
    expect(match?.joinPermissions).toEqual(["lobby:join"])
  })

  it("binds variable names that exist on Object.prototype as plain own keys", () => {
    const schema = withChannels([{ pattern: "x:{constructor}:{toString}" }])
    const variables = schema.matchChannel("x:a:b")?.variables
    expect(variables).toEqual({ constructor: "a", toString: "b" })
  })
})

describe("variable rules", () => {
  const one = (rule: Record<string, unknown>) => withChannels([{ pattern: "t:{v}", variables: { v: rule } }])
  const accepts = (rule: Record<string, unknown>, value: string) => one(rule).matchChannel(`t:${value}`) !== undefined

  it("string (the default) accepts any non-empty segment", () => {
    expect(accepts({}, "anything-at_all.~")).toBe(true)
    expect(accepts({ type: "string" }, "x")).toBe(true)
  })

  it("integer", () => {
    for (const value of ["0", "42", "-7", "007"]) expect(accepts({ type: "integer" }, value)).toBe(true)
    for (const value of ["4.2", "1e3", "x", "+1", "--1", " 1"]) expect(accepts({ type: "integer" }, value)).toBe(false)
  })

  it("number", () => {
    for (const value of ["0", "-1.5", "3.14", "1e3", "2.5E-2"]) expect(accepts({ type: "number" }, value)).toBe(true)
    for (const value of ["1.", ".5", "NaN", "Infinity", "0x10", "1e"]) expect(accepts({ type: "number" }, value)).toBe(false)
  })

  it("uuid as a type and as a format", () => {
    for (const rule of [{ type: "uuid" }, { format: "uuid" }]) {
      expect(accepts(rule, UUID)).toBe(true)
      expect(accepts(rule, UUID.toUpperCase())).toBe(true)
      expect(accepts(rule, UUID.slice(1))).toBe(false)
      expect(accepts(rule, "not-a-uuid")).toBe(false)
    }
  })

  it("boolean", () => {
    expect(accepts({ type: "boolean" }, "true")).toBe(true)
    expect(accepts({ type: "boolean" }, "false")).toBe(true)
    expect(accepts({ type: "boolean" }, "yes")).toBe(false)
  })

  it("enum", () => {
    expect(accepts({ enum: ["red", "green"] }, "green")).toBe(true)
    expect(accepts({ enum: ["red", "green"] }, "blue")).toBe(false)
    expect(accepts({ type: "integer", enum: [1, 2] }, "2")).toBe(true)
    expect(accepts({ type: "integer", enum: [1, 2] }, "3")).toBe(false)
  })

  it("formats email, hostname, ipv4, date", () => {
    expect(accepts({ format: "email" }, "a@example.com")).toBe(true)
    expect(accepts({ format: "email" }, "nope")).toBe(false)
    expect(accepts({ format: "hostname" }, "api.example.com")).toBe(true)
    expect(accepts({ format: "hostname" }, "-bad-")).toBe(false)
    expect(accepts({ format: "ipv4" }, "10.0.0.1")).toBe(true)
    expect(accepts({ format: "ipv4" }, "10.0.0.256")).toBe(false)
    expect(accepts({ format: "date" }, "2024-02-29")).toBe(true)
    expect(accepts({ format: "date" }, "2023-02-29")).toBe(false)
  })

  it("pattern must match the whole segment", () => {
    const rule = { pattern: "[a-z]+" }
    expect(accepts(rule, "abc")).toBe(true)
    expect(accepts(rule, "abc1")).toBe(false)
    expect(accepts(rule, "1abc")).toBe(false)
    // Alternation is anchored as a whole, not per branch.
    expect(accepts({ pattern: "a|b" }, "ab")).toBe(false)
    expect(accepts({ pattern: "^[0-9]{3}$" }, "123")).toBe(true)
  })

  it("minLength and maxLength", () => {
    const rule = { minLength: 2, maxLength: 3 }
    expect(accepts(rule, "a")).toBe(false)
    expect(accepts(rule, "ab")).toBe(true)
    expect(accepts(rule, "abc")).toBe(true)
    expect(accepts(rule, "abcd")).toBe(false)
  })

  it("minimum and maximum for numeric types", () => {
    const rule = { type: "integer", minimum: 1, maximum: 10 }
    expect(accepts(rule, "0")).toBe(false)
    expect(accepts(rule, "1")).toBe(true)
    expect(accepts(rule, "10")).toBe(true)
    expect(accepts(rule, "11")).toBe(false)
    expect(accepts({ type: "number", minimum: 0.5 }, "0.25")).toBe(false)
    expect(accepts({ type: "number", minimum: 0.5 }, "0.75")).toBe(true)
  })

  it("combines all rules of a variable", () => {
    const rule = { type: "integer", minimum: 100, pattern: "1[0-9]+", maxLength: 3 }
    expect(accepts(rule, "150")).toBe(true)
    expect(accepts(rule, "250")).toBe(false)
    expect(accepts(rule, "1000")).toBe(false)
    expect(accepts(rule, "99")).toBe(false)
  })

  it("applies rules to variables inside mixed segments", () => {
    const schema = withChannels([{ pattern: "user-{id}", variables: { id: { type: "integer" } } }])
    expect(schema.matchChannel("user-12")?.variables).toEqual({ id: "12" })
    expect(schema.matchChannel("user-ab")).toBeUndefined()
  })
})

describe("permissions of a channel match", () => {
  const schema = withChannels([{
    pattern: "{resource}:{id}",
    variables: { resource: { enum: ["project", "board"] } },
    permissions: { join: ["read:{resource}:{id}", "member"], send: ["write:{resource}:{id}"] }
  }, { pattern: "open:{id}" }])

  it("fills join and send templates with the topic's variables", () => {
    const match = schema.matchChannel("project:42")
    expect(match?.joinPermissions).toEqual(["read:project:42", "member"])
    expect(match?.sendPermissions).toEqual(["write:project:42"])
  })

  it("requires nothing when the channel lists no permissions", () => {
    const match = schema.matchChannel("open:1")
    expect(match?.joinPermissions).toEqual([])
    expect(match?.sendPermissions).toEqual([])
  })
})

describe("events", () => {
  const schema = load({
    version: "2",
    channels: [
      { pattern: "project:{id}", permissions: { send: ["write:project:{id}"] } },
      { pattern: "lobby" }
    ],
    events: [
      { name: "comment", allowedChannels: ["project:*"], permissions: { send: ["comment:project:{id}"] } },
      { name: "ping", channels: ["lobby", "project:{id}"] },
      { name: "any", allowedChannels: ["*"] },
      { name: "deep", allowedChannels: ["project:*:files"] }
    ]
  })

  it("looks events up by name", () => {
    expect(schema.event("comment")?.name).toBe("comment")
    expect(schema.event("nope")).toBeUndefined()
    expect(schema.event("constructor")).toBeUndefined()
    expect([...schema.events.keys()]).toEqual(["comment", "ping", "any", "deep"])
  })

  it("allows an event only on topics its allowedChannels patterns match", () => {
    const comment = schema.event("comment")!
    expect(comment.allowedOn("project:1")).toBe(true)
    expect(comment.allowedOn("project:1:2")).toBe(true)
    expect(comment.allowedOn("lobby")).toBe(false)
    expect(comment.allowedOn("project")).toBe(false)
  })

  it("treats the channels alias like allowedChannels", () => {
    const ping = schema.event("ping")!
    expect(ping.definition.allowedChannels).toEqual(["lobby", "project:{id}"])
    expect(ping.allowedOn("lobby")).toBe(true)
    expect(ping.allowedOn("project:9")).toBe(true)
    expect(ping.allowedOn("project:9:x")).toBe(false)
  })

  it("allows * everywhere and middle * on one segment", () => {
    expect(schema.event("any")!.allowedOn("whatever:goes")).toBe(true)
    expect(schema.event("deep")!.allowedOn("project:1:files")).toBe(true)
    expect(schema.event("deep")!.allowedOn("project:1:2:files")).toBe(false)
  })

  it("fills event-level send permissions with the channel's variables", () => {
    const match = schema.matchChannel("project:5")!
    expect(match.sendPermissions).toEqual(["write:project:5"])
    expect(schema.event("comment")!.sendPermissions(match.variables)).toEqual(["comment:project:5"])
    expect(schema.event("ping")!.sendPermissions(match.variables)).toEqual([])
  })

  it("keeps an unbound placeholder literally", () => {
    const lobby = schema.matchChannel("lobby")!
    expect(schema.event("comment")!.sendPermissions(lobby.variables)).toEqual(["comment:project:{id}"])
  })
})

describe("payload validation", () => {
  const schema = load({
    version: "1",
    channels: [{ pattern: "*" }],
    events: [
      { name: "free", allowedChannels: ["*"] },
      { name: "short", allowedChannels: ["*"], payload: { title: "string", count: "integer?", tags: "array?", type: "string" } },
      {
        name: "full",
        allowedChannels: ["*"],
        payload: {
          type: "object",
          required: ["user", "items"],
          additionalProperties: false,
          properties: {
            user: { type: "object", required: ["name"], properties: { name: { type: "string", minLength: 1 } } },
            items: { type: "array", items: { type: "object", properties: { qty: { type: "integer", minimum: 1 } } } },
            email: { type: "string", format: "email" }
          }
        }
      },
      { name: "typeOnly", allowedChannels: ["*"], payload: { type: "object" } },
      { name: "never", allowedChannels: ["*"], payload: false },
      { name: "modern", allowedChannels: ["*"], payload: { $schema: "https://json-schema.org/draft/2020-12/schema", type: "array", prefixItems: [{ type: "string" }], items: false } },
      { name: "many", allowedChannels: ["*"], payload: { type: "array", items: { type: "string" } } }
    ]
  })
  const validate = (event: string, payload: unknown) => schema.event(event)!.validatePayload(payload)

  it("accepts anything when the event has no payload schema", () => {
    expect(validate("free", { any: [1, 2] })).toBeUndefined()
    expect(validate("free", "text")).toBeUndefined()
  })

  it("shorthand: required, optional and typed fields, extra fields allowed", () => {
    expect(validate("short", { title: "t", type: "x" })).toBeUndefined()
    expect(validate("short", { title: "t", type: "x", count: 3, tags: [], extra: true })).toBeUndefined()
    expect(validate("short", { count: 1.5, type: "x", title: "t" })).toEqual([
      { path: "/count", message: "must be integer" }
    ])
    expect(validate("short", { count: 1, type: "x" })).toEqual([
      { path: "/title", message: "must have required property 'title'" }
    ])
    expect(validate("short", "not an object")).toEqual([{ path: "", message: "must be object" }])
  })

  it("full JSON Schema: nested errors with JSON Pointer paths", () => {
    expect(validate("full", { user: { name: "a" }, items: [{ qty: 1 }] })).toBeUndefined()
    expect(validate("full", { user: {}, items: [{ qty: 1 }] })).toEqual([
      { path: "/user/name", message: "must have required property 'name'" }
    ])
    expect(validate("full", { user: { name: "a" }, items: [{ qty: 1 }, { qty: 0 }] })).toEqual([
      { path: "/items/1/qty", message: "must be >= 1" }
    ])
    expect(validate("full", { user: { name: "a" }, items: [], email: "nope" })).toEqual([
      { path: "/email", message: "must match format \"email\"" }
    ])
    expect(validate("full", { user: { name: "a" }, items: [], extra: 1 })).toEqual([
      { path: "/extra", message: "must NOT have additional properties" }
    ])
  })

  it("{type: \"object\"} is a JSON Schema, not a field named type", () => {
    expect(validate("typeOnly", {})).toBeUndefined()
    expect(validate("typeOnly", [])).toEqual([{ path: "", message: "must be object" }])
  })

  it("payload: false rejects everything", () => {
    expect(validate("never", {})).toEqual([{ path: "", message: "this event accepts no payload" }])
  })

  it("uses the 2020-12 dialect when $schema says so", () => {
    expect(validate("modern", ["a"])).toBeUndefined()
    expect(validate("modern", [1])).toEqual([{ path: "/0", message: "must be string" }])
    expect(validate("modern", ["a", "b"])).toEqual([{ path: "", message: "must NOT have more than 1 items" }])
  })

  it("stops at the first error, however many the payload has", () => {
    expect(validate("many", Array.from({ length: 100 }, (_, i) => i))).toEqual([{ path: "/0", message: "must be string" }])
  })

  it("keeps schemas of different documents apart even with the same $id", () => {
    const withId = (type: string) =>
      load({ version: "1", channels: [], events: [{ name: "e", allowedChannels: ["*"], payload: { $id: "https://x/p", type } }] })
    const a = withId("string")
    const b = withId("number")
    expect(a.event("e")!.validatePayload("s")).toBeUndefined()
    expect(b.event("e")!.validatePayload(1)).toBeUndefined()
    expect(b.event("e")!.validatePayload("s")).toEqual([{ path: "", message: "must be number" }])
  })
})

describe("rate limits", () => {
  it("exposes the default and a map by event", () => {
    const schema = load({
      version: "1",
      channels: [],
      events: [],
      rateLimits: { default: { windowMs: 1000, maxRequests: 10 }, byEvent: { ping: { windowMs: 100, maxRequests: 1 } } }
    })
    expect(schema.rateLimits.default).toEqual({ windowMs: 1000, maxRequests: 10 })
    expect(schema.rateLimits.byEvent.get("ping")).toEqual({ windowMs: 100, maxRequests: 1 })
    expect(schema.rateLimits.byEvent.get("other")).toBeUndefined()
  })

  it("has no default and an empty map when the document has none", () => {
    const schema = load({ version: "1", channels: [], events: [] })
    expect(schema.rateLimits.default).toBeUndefined()
    expect(schema.rateLimits.byEvent.size).toBe(0)
  })
})
