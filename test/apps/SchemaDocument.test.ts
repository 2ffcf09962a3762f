import { Effect, Result } from "effect"
import { describe, expect, it } from "vitest"
import {
  compilePayloadSpec,
  decodeSchemaDocument,
  InvalidSchemaDocument,
  isShorthandPayload,
  parseTemplate,
  parseTopicPattern
} from "../../src/apps/SchemaDocument.ts"
import type { SchemaDocument } from "../../src/apps/SchemaDocument.ts"

const decode = (input: unknown): Result.Result<SchemaDocument, InvalidSchemaDocument> =>
  Effect.runSync(Effect.result(decodeSchemaDocument(input)))

const decoded = (input: unknown): SchemaDocument => {
  const result = decode(input)
  if (Result.isFailure(result)) throw new Error(`expected a valid document, got: ${result.failure.reason}`)
  return result.success
}

const rejected = (input: unknown): InvalidSchemaDocument => {
  const result = decode(input)
  if (Result.isSuccess(result)) throw new Error("expected the document to be rejected")
  return result.failure
}

const problems = (input: unknown) => rejected(input).issues ?? []

const doc = (overrides: Record<string, unknown>) => ({
  version: "1",
  channels: [{ pattern: "room:{id}" }],
  events: [{ name: "msg", allowedChannels: ["room:*"] }],
  ...overrides
})

describe("decodeSchemaDocument: shape", () => {
  it("accepts the contract's example and normalizes it", () => {
    const result = decoded({
      version: 3,
      channels: [{
        pattern: "project:{resource}:{id}",
        description: "a project",
        variables: {
          resource: { enum: ["project", "board"] },
          id: { type: "integer", minimum: 1, maximum: 1000, description: "the id" }
        },
        permissions: { join: ["read:{resource}:{id}"], send: ["write:{resource}:{id}"] },
        presence: true
      }],
      events: [
        { name: "a", allowedChannels: ["project:*"] },
        { name: "b", channels: ["project:*"], payload: { title: "string" }, permissions: { send: ["post:{id}"] } }
      ],
      rateLimits: { default: { windowMs: 1000, maxRequests: 10 }, byEvent: { a: { windowMs: 500, maxRequests: 2 } } }
    })
    expect(result.version).toBe("3")
    expect(result.events[1]).toEqual({
      name: "b",
      allowedChannels: ["project:*"],
      payload: { title: "string" },
      permissions: { send: ["post:{id}"] }
    })
    expect(result.rateLimits?.byEvent?.["a"]).toEqual({ windowMs: 500, maxRequests: 2 })
  })

  it("keeps a string version as is", () => {
    expect(decoded(doc({ version: "2024-06-01" })).version).toBe("2024-06-01")
  })

  it("tolerates (and drops) unknown keys at every level", () => {
    const result = decoded({
      version: "1",
      futureKey: { anything: true },
      channels: [{ pattern: "room:{id}", color: "red", variables: { id: { type: "string", hint: "x" } } }],
      events: [{ name: "msg", allowedChannels: ["room:*"], deprecated: true }]
    })
    expect(result).toEqual({
      version: "1",
      channels: [{ pattern: "room:{id}", variables: { id: { type: "string" } } }],
      events: [{ name: "msg", allowedChannels: ["room:*"] }]
    })
  })

  it("normalizes numeric enum entries to strings", () => {
    const result = decoded(doc({ channels: [{ pattern: "v:{n}", variables: { n: { enum: [1, "2"] } } }] }))
    expect(result.channels[0]?.variables?.["n"]?.enum).toEqual(["1", "2"])
  })

  it("accepts a document without rateLimits, and rateLimits with only one part", () => {
    expect(decoded(doc({})).rateLimits).toBeUndefined()
    expect(decoded(doc({ rateLimits: { byEvent: { msg: { windowMs: 1, maxRequests: 1 } } } })).rateLimits).toEqual({
      byEvent: { msg: { windowMs: 1, maxRequests: 1 } }
    })
  })

  it("rejects wrong types with their paths, all at once", () => {
    const error = rejected({
      version: null,
      channels: [{ pattern: 42, presence: "yes" }],
      events: [{ name: "", allowedChannels: "room:*" }],
      rateLimits: { default: { windowMs: 0, maxRequests: 1.5 } }
    })
    expect(error).toBeInstanceOf(InvalidSchemaDocument)
    expect(error._tag).toBe("InvalidSchemaDocument")
    const paths = (error.issues ?? []).map((issue) => issue.path)
    expect(paths).toEqual(expect.arrayContaining([
      "version",
      "channels[0].pattern",
      "channels[0].presence",
      "events[0].name",
      "events[0].allowedChannels",
      "rateLimits.default.windowMs",
      "rateLimits.default.maxRequests"
    ]))
    expect(error.reason).toContain("version: Expected a string or a number")
    expect(error.reason).toContain("channels[0].pattern: Expected string")
    expect(error.message).toBe(error.reason)
  })

  it("rejects a document that is not an object, or misses required parts", () => {
    expect(rejected(null).reason).toBe("Expected object")
    expect(problems({ version: "1" }).map((p) => p.path)).toEqual(["channels", "events"])
    expect(problems(doc({ channels: "room:*" }))).toEqual([{ path: "channels", message: "Expected array" }])
  })

  it("rejects unknown variable types and formats", () => {
    const issues = problems(doc({
      channels: [{ pattern: "a:{x}:{y}", variables: { x: { type: "date" }, y: { format: "date-time" } } }]
    }))
    expect(issues.map((issue) => issue.path)).toEqual(["channels[0].variables.x.type", "channels[0].variables.y.format"])
  })

  it("rejects payloads that are neither an object nor a boolean", () => {
    expect(problems(doc({ events: [{ name: "m", allowedChannels: ["*"], payload: "string" }] }))[0]?.path).toBe(
      "events[0].payload"
    )
    expect(problems(doc({ events: [{ name: "m", allowedChannels: ["*"], payload: [] }] }))[0]?.path).toBe(
      "events[0].payload"
    )
  })
})

describe("decodeSchemaDocument: allowedChannels and its alias channels", () => {
  it("normalizes channels to allowedChannels", () => {
    const result = decoded(doc({ events: [{ name: "m", channels: ["room:*"] }] }))
    expect(result.events[0]).toEqual({ name: "m", allowedChannels: ["room:*"] })
    expect(result.events[0]).not.toHaveProperty("channels")
  })

  it("accepts both when they are identical", () => {
    const result = decoded(doc({ events: [{ name: "m", channels: ["room:*"], allowedChannels: ["room:*"] }] }))
    expect(result.events[0]?.allowedChannels).toEqual(["room:*"])
  })

  it("rejects both when they differ, neither, or an empty list", () => {
    expect(problems(doc({ events: [{ name: "m", channels: ["a"], allowedChannels: ["b"] }] }))).toEqual([
      { path: "events[0].channels", message: "allowedChannels and its alias channels are both present and differ" }
    ])
    expect(problems(doc({ events: [{ name: "m" }] }))[0]?.path).toBe("events[0].allowedChannels")
    expect(problems(doc({ events: [{ name: "m", channels: [] }] }))[0]?.path).toBe("events[0].channels")
  })

  it("checks the syntax of allowedChannels patterns under the key that was used", () => {
    expect(problems(doc({ events: [{ name: "m", channels: ["room:**"] }] }))[0]?.path).toBe("events[0].channels[0]")
    expect(problems(doc({ events: [{ name: "m", allowedChannels: ["ok", "a::b"] }] }))[0]?.path).toBe(
      "events[0].allowedChannels[1]"
    )
  })
})

describe("decodeSchemaDocument: semantic checks", () => {
  it("rejects a pattern that uses a variable twice", () => {
    expect(problems(doc({ channels: [{ pattern: "room:{id}:{id}" }] }))).toEqual([
      { path: "channels[0].pattern", message: "variable {id} is used twice in \"room:{id}:{id}\"" }
    ])
  })

  it("rejects malformed patterns with a reason", () => {
    const reasonFor = (pattern: string) => problems(doc({ channels: [{ pattern }] }))[0]?.message
    expect(reasonFor("")).toBe("the pattern is empty")
    expect(reasonFor("a::b")).toContain("empty segment 2")
    expect(reasonFor("room:")).toContain("empty segment 2")
    expect(reasonFor("room:ab*")).toContain("\"*\" must be a whole segment")
    expect(reasonFor("room:{id")).toContain("unbalanced \"{\"")
    expect(reasonFor("room:id}")).toContain("unbalanced \"}\"")
    expect(reasonFor("room:{1d}")).toContain("invalid variable name {1d}")
    expect(reasonFor("room:{}")).toContain("invalid variable name {}")
    expect(reasonFor("room:{__proto__}")).toContain("reserved")
    expect(reasonFor("room:{a}{b}")).toContain("must be separated by literal text")
  })

  it("rejects a variable pattern that is not a valid RegExp", () => {
    const issues = problems(doc({ channels: [{ pattern: "room:{id}", variables: { id: { pattern: "([a-z]" } } }] }))
    expect(issues).toHaveLength(1)
    expect(issues[0]?.path).toBe("channels[0].variables.id.pattern")
    expect(issues[0]?.message).toContain("\"([a-z]\" is not a valid regular expression")
  })

  it("rejects a variable pattern that cannot run in linear time, and accepts one that can", () => {
    const issues = problems(doc({ channels: [{ pattern: "room:{id}", variables: { id: { pattern: "^(?!admin)[a-z]+$" } } }] }))
    expect(issues).toEqual([{ path: "channels[0].variables.id.pattern", message: expect.stringContaining("cannot run in linear time") }])
    expect(decoded(doc({ channels: [{ pattern: "room:{id}", variables: { id: { pattern: "^(a+)+$" } } }] })).channels).toHaveLength(1)
  })

  it("rejects inconsistent variable rules", () => {
    const issues = problems(doc({
      channels: [{
        pattern: "a:{x}:{y}:{z}",
        variables: {
          x: { minimum: 1 },
          y: { type: "integer", minimum: 5, maximum: 1 },
          z: { minLength: 3, maxLength: 2, enum: [] }
        }
      }]
    }))
    expect(issues.map((issue) => issue.path).sort()).toEqual([
      "channels[0].variables.x.minimum",
      "channels[0].variables.y.minimum",
      "channels[0].variables.z.enum",
      "channels[0].variables.z.minLength"
    ])
  })

  it("rejects rules for variables the pattern does not have", () => {
    expect(problems(doc({ channels: [{ pattern: "room:{id}", variables: { room: { type: "integer" } } }] }))).toEqual([
      {
        path: "channels[0].variables.room",
        message: "the pattern \"room:{id}\" has no variable {room}, so this rule would never apply"
      }
    ])
  })

  it("rejects a permission template naming a variable the pattern does not have", () => {
    const issues = problems(doc({
      channels: [{ pattern: "project:{id}", permissions: { join: ["read:project:{id}", "read:{resource}:{id}"], send: ["w:{x"] } }]
    }))
    expect(issues).toEqual([
      { path: "channels[0].permissions.join[1]", message: "{resource} is not a variable of the pattern \"project:{id}\"" },
      { path: "channels[0].permissions.send[0]", message: "unbalanced \"{\" in \"w:{x\"" }
    ])
  })

  it("rejects an event-level permission naming a variable no channel binds", () => {
    const issues = problems(doc({
      events: [{ name: "m", allowedChannels: ["room:*"], permissions: { send: ["post:{id}", "post:{nope}"] } }]
    }))
    expect(issues).toEqual([
      { path: "events[0].permissions.send[1]", message: "{nope} is not a variable of any channel pattern" }
    ])
  })

  it("rejects duplicate event names", () => {
    const issues = problems(doc({
      events: [
        { name: "m", allowedChannels: ["*"] },
        { name: "n", allowedChannels: ["*"] },
        { name: "m", allowedChannels: ["room:*"] }
      ]
    }))
    expect(issues).toEqual([{ path: "events[2].name", message: "duplicate event name \"m\" (first defined at events[0])" }])
  })

  it("rejects payload JSON Schemas that Ajv cannot compile", () => {
    const issues = problems(doc({
      events: [
        { name: "a", allowedChannels: ["*"], payload: { type: "objekt" } },
        { name: "b", allowedChannels: ["*"], payload: { $ref: "https://example.com/schema.json" } },
        { name: "c", allowedChannels: ["*"], payload: { $schema: "http://json-schema.org/draft-04/schema#" } },
        { name: "d", allowedChannels: ["*"], payload: { type: "object", properties: { n: { minimum: "one" } } } },
        { name: "e", allowedChannels: ["*"], payload: { $async: true, type: "object" } }
      ]
    }))
    expect(issues.map((issue) => issue.path)).toEqual([
      "events[0].payload",
      "events[1].payload",
      "events[2].payload",
      "events[3].payload",
      "events[4].payload"
    ])
    expect(issues[0]?.message).toContain("invalid JSON Schema")
    expect(issues[1]?.message).toContain("\"https://example.com/schema.json\" is not a reference within this schema")
    expect(issues[2]?.message).toContain("unsupported $schema")
  })

  it("accepts draft-07 and 2020-12 payload schemas", () => {
    decoded(doc({
      events: [
        { name: "a", allowedChannels: ["*"], payload: { $schema: "http://json-schema.org/draft-07/schema#", type: "object" } },
        {
          name: "b",
          allowedChannels: ["*"],
          payload: { $schema: "https://json-schema.org/draft/2020-12/schema", type: "array", prefixItems: [{ type: "string" }] }
        }
      ]
    }))
  })

  it("lists every problem in the reason with its path", () => {
    const error = rejected(doc({
      channels: [{ pattern: "room:{id}:{id}" }, { pattern: "user:{id}", variables: { id: { pattern: "(" } } }],
      events: [{ name: "m", allowedChannels: ["*"] }, { name: "m", allowedChannels: ["*"] }]
    }))
    expect(error.reason.split("; ")).toEqual([
      "channels[0].pattern: variable {id} is used twice in \"room:{id}:{id}\"",
      expect.stringMatching(/^channels\[1\]\.variables\.id\.pattern: "\(" is not a valid regular expression/)
    ])
  })
})

describe("topic pattern and template parsing", () => {
  it("parses segments, variables and wildcards", () => {
    const parsed = parseTopicPattern("org:{org}:user-{id}:*")
    expect(Result.isSuccess(parsed) && parsed.success).toEqual({
      source: "org:{org}:user-{id}:*",
      matchesAll: false,
      segments: [
        { _tag: "Literal", text: "org" },
        { _tag: "Variable", name: "org" },
        { _tag: "Mixed", literals: ["user-", ""], names: ["id"] },
        { _tag: "Wildcard" }
      ],
      trailingWildcard: true,
      variables: ["org", "id"]
    })
    const all = parseTopicPattern("*")
    expect(Result.isSuccess(all) && all.success.matchesAll).toBe(true)
  })

  it("parses templates with placeholders anywhere", () => {
    const parsed = parseTemplate("read:{resource}-x:{id}")
    expect(Result.isSuccess(parsed) && parsed.success).toEqual({
      source: "read:{resource}-x:{id}",
      literals: ["read:", "-x:", ""],
      names: ["resource", "id"]
    })
    expect(Result.isFailure(parseTemplate(""))).toBe(true)
  })
})

describe("payload shorthand detection", () => {
  it("reads objects whose values are all type names as shorthand unless they read as a JSON Schema", () => {
    expect(isShorthandPayload({ title: "string", count: "integer" })).toBe(true)
    expect(isShorthandPayload({ title: "string?", tags: "array?" })).toBe(true)
    // Some key is not a JSON Schema keyword.
    expect(isShorthandPayload({ type: "string", body: "string" })).toBe(true)
    // "?" never appears in a JSON Schema type.
    expect(isShorthandPayload({ type: "string?" })).toBe(true)
  })

  it("reads everything else as JSON Schema", () => {
    expect(isShorthandPayload({ type: "object" })).toBe(false)
    expect(isShorthandPayload({ type: "string", format: "string" })).toBe(false)
    expect(isShorthandPayload({ type: "object", properties: { a: { type: "string" } } })).toBe(false)
    expect(isShorthandPayload({ title: "text" })).toBe(false)
    expect(isShorthandPayload({ title: "string", n: 1 })).toBe(false)
    expect(isShorthandPayload({})).toBe(false)
    expect(isShorthandPayload(true)).toBe(false)
  })

  it("memoizes compiled validators per spec object", () => {
    const spec = { title: "string" }
    const first = compilePayloadSpec(spec)
    const second = compilePayloadSpec(spec)
    expect(Result.isSuccess(first) && Result.isSuccess(second) && first.success === second.success).toBe(true)
  })
})

describe("payload schemas whose validation could cost more than linear time", () => {
  const refused = (payload: unknown) => {
    const result = compilePayloadSpec(payload as Record<string, unknown>)
    return Result.isFailure(result) ? result.failure : undefined
  }

  it("need maxItems beside uniqueItems, unless the items are scalars", () => {
    expect(refused({ type: "array", uniqueItems: true })).toContain("uniqueItems: needs maxItems of at most 256")
    expect(refused({ type: "object", properties: { tags: { type: "array", uniqueItems: true, maxItems: 257 } } }))
      .toContain("properties.tags.uniqueItems: needs maxItems of at most 256")
    expect(refused({ type: "array", uniqueItems: true, maxItems: 256 })).toBeUndefined()
    expect(refused({ type: "array", uniqueItems: true, items: { type: ["string", "integer"] } })).toBeUndefined()
    expect(refused({ type: "array", uniqueItems: true, items: { type: "object" } })).toContain("uniqueItems")
  })

  it("refuse $refs that compound, loop in place or cannot be followed; accept a tree", () => {
    const tree = {
      $defs: { node: { type: "object", properties: { children: { type: "array", items: { $ref: "#/$defs/node" } } } } },
      $ref: "#/$defs/node"
    }
    expect(refused(tree)).toBeUndefined()
    const defs: Record<string, unknown> = { d20: { type: "string" } }
    for (let i = 0; i < 20; i++) defs[`d${i}`] = { anyOf: [{ $ref: `#/$defs/d${i + 1}` }, { $ref: `#/$defs/d${i + 1}` }] }
    expect(refused({ $defs: defs, $ref: "#/$defs/d0" })).toContain("expands to more than 50000 subschemas")
    expect(refused({ allOf: [{ $ref: "#" }] })).toContain("refers back to itself without going into the payload")
    expect(refused({ properties: { a: { $id: "https://example.com/a", type: "string" } } })).toContain("$id below the schema's root")
    expect(refused({ $ref: "#/$defs/missing", $defs: {} })).toContain("is not a reference within this schema")
  })
})
