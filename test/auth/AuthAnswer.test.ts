/**
 * The connect path's hand-written decoder of auth answers gives the same
 * verdict as the `AuthAnswer` schema over every field set to every kind of
 * JSON value, and keeps what the schema keeps.
 */
import { Exit, Schema } from "effect"
import { describe, expect, it } from "vitest"
import { parseAuthAnswer } from "../../src/auth/Auth.ts"
import { AuthAnswer } from "../../src/contract/Auth.ts"

const decodeWithSchema = Schema.decodeUnknownExit(Schema.fromJsonString(AuthAnswer))

const values: ReadonlyArray<unknown> = [
  undefined, null, "", "x", true, 0, 1.5, {}, { a: 1 }, [], ["a", "b"], ["a", 1], [null]
]
const fields = ["client_id", "client_type", "metadata", "permissions"] as const
const valid = { client_id: "c1", client_type: "web", metadata: { plan: "pro" }, permissions: ["read:*"] }

/** What the schema keeps of an answer: its own fields. */
const known = (answer: Record<string, unknown>) => Object.fromEntries(fields.filter((f) => f in answer).map((f) => [f, answer[f]]))

const expectSameVerdict = (body: string) => {
  const reference = decodeWithSchema(body)
  const parsed = parseAuthAnswer(body)
  if (Exit.isFailure(reference)) expect(parsed, body).toBeUndefined()
  else expect(parsed && known(parsed), body).toEqual(reference.value)
}

describe("parseAuthAnswer agrees with the AuthAnswer schema", () => {
  it("with each field set to each kind of value", () => {
    expectSameVerdict(JSON.stringify(valid))
    expectSameVerdict(JSON.stringify({ ...valid, extra: 1 }))
    for (const field of fields) {
      for (const value of values) {
        const candidate: Record<string, unknown> = { ...valid }
        if (value === undefined) delete candidate[field]
        else candidate[field] = value
        expectSameVerdict(JSON.stringify(candidate))
      }
    }
  })

  it("on bodies that are not an object", () => {
    for (const body of ["", "{", "null", "[]", "\"c1\"", "1", JSON.stringify([valid]), `${JSON.stringify(valid)} x`]) {
      expectSameVerdict(body)
    }
  })
})
