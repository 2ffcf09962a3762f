import { describe, expect, it } from "vitest"
import { compileGrants, MAX_CACHED_GRANT_BYTES, MAX_CACHED_GRANT_SET_BYTES } from "../../src/apps/Grants.ts"

describe("compileGrants", () => {
  it("allows exact grants only for the same permission", () => {
    const grants = compileGrants(["read:project:42", "admin"])
    expect(grants.allows("read:project:42")).toBe(true)
    expect(grants.allows("admin")).toBe(true)
    expect(grants.allows("read:project:43")).toBe(false)
    expect(grants.allows("read:project")).toBe(false)
    expect(grants.allows("read:project:42:x")).toBe(false)
  })

  it("a trailing * covers one or more remaining segments", () => {
    const grants = compileGrants(["read:project:*"])
    expect(grants.allows("read:project:42")).toBe(true)
    expect(grants.allows("read:project:42:files")).toBe(true)
    expect(grants.allows("read:project")).toBe(false)
    expect(grants.allows("read:project:")).toBe(false)
    expect(grants.allows("read:projects:1")).toBe(false)
    expect(grants.allows("write:project:42")).toBe(false)
  })

  it("a middle * covers exactly one non-empty segment", () => {
    const grants = compileGrants(["read:*:42"])
    expect(grants.allows("read:project:42")).toBe(true)
    expect(grants.allows("read:board:42")).toBe(true)
    expect(grants.allows("read:project:43")).toBe(false)
    expect(grants.allows("read::42")).toBe(false)
    expect(grants.allows("read:a:b:42")).toBe(false)
    expect(grants.allows("read:project:42:x")).toBe(false)
  })

  it("several * segments", () => {
    const grants = compileGrants(["*:project:*"])
    expect(grants.allows("read:project:1")).toBe(true)
    expect(grants.allows("write:project:1:2")).toBe(true)
    expect(grants.allows("read:board:1")).toBe(false)
  })

  it("the grant * alone allows everything", () => {
    const grants = compileGrants(["*"])
    expect(grants.allows("anything")).toBe(true)
    expect(grants.allows("a:b:c")).toBe(true)
    expect(grants.allowsAll(["x", "y:z"])).toBe(true)
  })

  it("* inside a segment is literal", () => {
    const grants = compileGrants(["read:proj*"])
    expect(grants.allows("read:project")).toBe(false)
    expect(grants.allows("read:proj*")).toBe(true)
  })

  it("a * in a required permission is not a wildcard", () => {
    const grants = compileGrants(["read:project:42", "read:*:7"])
    expect(grants.allows("read:project:*")).toBe(false)
    expect(grants.allows("read:*:7")).toBe(true)
    expect(compileGrants(["read:project:*"]).allows("read:project:*")).toBe(true)
  })

  it("allowsAll needs every permission and accepts an empty list", () => {
    const grants = compileGrants(["read:project:*", "member"])
    expect(grants.allowsAll([])).toBe(true)
    expect(grants.allowsAll(["read:project:1", "member"])).toBe(true)
    expect(grants.allowsAll(["read:project:1", "admin"])).toBe(false)
    expect(compileGrants([]).allowsAll([])).toBe(true)
    expect(compileGrants([]).allows("x")).toBe(false)
  })

  it("keeps the granted list", () => {
    expect(compileGrants(["a", "b:*"]).granted).toEqual(["a", "b:*"])
  })
})

describe("the cache of compiled permission sets", () => {
  const permissions = (prefix: string, bytes: number) =>
    Array.from({ length: Math.ceil(bytes / 24) }, (_, i) => `${prefix}:p:${String(i).padStart(16, "0")}`)

  it("reuses a set, but does not keep one larger than its per-set bound", () => {
    const small = permissions("small", 1024)
    expect(compileGrants([...small])).toBe(compileGrants([...small]))
    const large = permissions("large", MAX_CACHED_GRANT_SET_BYTES + 1)
    const compiled = compileGrants(large)
    expect(compiled.allows(large[0]!)).toBe(true)
    expect(compileGrants([...large])).not.toBe(compiled)
  })

  it("drops the oldest sets once their text passes its byte bound, however few they are", () => {
    const first = permissions("first", 40 * 1024)
    const compiledFirst = compileGrants(first)
    expect(compileGrants([...first])).toBe(compiledFirst)
    for (let n = 0; n * 40 * 1024 <= MAX_CACHED_GRANT_BYTES; n++) compileGrants(permissions(`filler-${n}`, 40 * 1024))
    expect(compileGrants([...first])).not.toBe(compiledFirst)
  })
})
