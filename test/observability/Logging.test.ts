/**
 * Log lines cannot be forged: in the `pretty` format, a client-chosen string
 * (a topic, a client id, a message) with newlines or terminal escapes stays
 * inside its own line, escaped; JSON lines escape them by being JSON.
 */
import { Effect } from "effect"
import { expect, it, vi } from "vitest"
import * as Logging from "../../src/observability/Logging.ts"

const FORGED = "room:x\n2026-12-03T00:00:00.000Z ERROR disk full\r\u001b[2K\u001b[31mred\u2028"

const linesLogged = (format: "pretty" | "json") => {
  const written: Array<string> = []
  const spy = vi.spyOn(process.stdout, "write").mockImplementation((chunk: string | Uint8Array) => {
    written.push(String(chunk))
    return true
  })
  try {
    Effect.runSync(
      Effect.logWarning(`joined ${FORGED}`).pipe(
        Effect.annotateLogs({ topic: FORGED, [`key\n${FORGED}`]: 1 }),
        Effect.provide(Logging.layer({ nodeName: "node-a", format, level: "info" }))
      )
    )
  } finally {
    spy.mockRestore()
  }
  return written.join("").split("\n").slice(0, -1)
}

it("a pretty line escapes newlines and control characters from every part it prints", () => {
  const lines = linesLogged("pretty")
  expect(lines).toHaveLength(1)
  const [line] = lines as [string]
  expect(line).not.toMatch(/[\u0000-\u001f\u007f-\u009f\u2028\u2029]/)
  expect(line).toContain("joined room:x\\n2026-12-03T00:00:00.000Z ERROR disk full\\r\\u001b[2K\\u001b[31mred\\u2028")
  expect(line).toContain("topic=room:x\\n2026")
})

it("a JSON line keeps the strings whole and on one line", () => {
  const lines = linesLogged("json")
  expect(lines).toHaveLength(1)
  expect(JSON.parse(lines[0]!)).toMatchObject({ msg: `joined ${FORGED}`, topic: FORGED, level: "warn" })
})
