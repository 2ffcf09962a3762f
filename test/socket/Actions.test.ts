/**
 * The push path's hand-written decoder of message answers gives the same
 * verdict, and the same actions, as the Schema definition, over every
 * combination of fields and value types an app could send.
 */
import { Exit, Schema } from "effect"
import { describe, expect, it } from "vitest"
import { MessageAnswer } from "../../src/contract/Messages.ts"
import { parseMessageAnswer } from "../../src/socket/Actions.ts"

const decodeWithSchema = Schema.decodeUnknownExit(MessageAnswer)

const values: ReadonlyArray<unknown> = [undefined, null, "", "x", "phx_close", true, false, 0, 1, {}, [], { nested: [1] }]
const fieldsOf: Record<string, ReadonlyArray<string>> = {
  reply: ["data"],
  broadcast: ["event", "data", "topic", "exclude_sender"],
  noreply: [],
  error: ["reason"]
}

/** Every action kind (and some that are not) with each field set to each value, one field at a time and all valid. */
const candidateActions = (): Array<unknown> => {
  const candidates: Array<unknown> = [...values, { action: "unknown" }, { action: 1 }, { data: 1 }]
  for (const [action, fields] of Object.entries(fieldsOf)) {
    const valid: Record<string, unknown> = { action, event: "e", reason: "r" }
    candidates.push({ action }, { ...valid }, { ...valid, extra: 1 })
    for (const field of fields) {
      for (const value of values) {
        const candidate: Record<string, unknown> = { ...valid }
        if (value === undefined) delete candidate[field]
        else candidate[field] = value
        candidates.push(candidate)
      }
    }
  }
  return candidates
}

/** What the Schema keeps of an action: its kind's keys only. */
const known = (action: unknown) => {
  const record = action as Record<string, unknown>
  const keys = ["action", ...fieldsOf[record["action"] as string]!]
  return Object.fromEntries(Object.entries(record).filter(([key]) => keys.includes(key)))
}

const expectSameVerdict = (body: string) => {
  const parsed = parseMessageAnswer(body)
  const reference = decodeWithSchema(body)
  if (Exit.isFailure(reference)) {
    expect(parsed, body).toBeUndefined()
    return
  }
  const expected = Array.isArray(reference.value) ? reference.value : [reference.value]
  expect(parsed?.map(known), body).toEqual(expected.map(known))
}

describe("parseMessageAnswer agrees with the MessageAnswer schema", () => {
  const actions = candidateActions()

  it("on single actions", () => {
    for (const action of actions) expectSameVerdict(JSON.stringify(action) ?? "undefined")
  })

  it("on arrays of actions, valid and mixed", () => {
    const valid = actions.filter((action) => Exit.isSuccess(decodeWithSchema(JSON.stringify(action) ?? "")))
    expect(valid.length).toBeGreaterThan(10)
    expectSameVerdict("[]")
    expectSameVerdict(JSON.stringify(valid))
    for (const action of actions) {
      expectSameVerdict(JSON.stringify([valid[0], action]))
      expectSameVerdict(JSON.stringify([[action]]))
    }
  })

  it("on bodies that are not JSON", () => {
    for (const body of ["", "{", "reply", "[{\"action\":\"reply\"}", "\u0000", "{\"action\":\"reply\"} trailing"]) {
      expectSameVerdict(body)
    }
  })
})
