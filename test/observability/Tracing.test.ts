/**
 * Trace and request ids stay well-formed and distinct across refills of the
 * random pool they are drawn from.
 */
import { expect, it } from "vitest"
import { newRequestId, newTraceparent } from "../../src/observability/Tracing.ts"

it("traceparents and request ids are well-formed and never repeat, across pool refills", () => {
  // 24 + 16 bytes per round: 1,000 rounds draw the 4 KiB pool about ten times over
  const seen = new Set<string>()
  for (let i = 0; i < 1_000; i++) {
    const traceparent = newTraceparent()
    const requestId = newRequestId()
    expect(traceparent).toMatch(/^00-[0-9a-f]{32}-[0-9a-f]{16}-01$/)
    expect(requestId).toMatch(/^[0-9a-f]{32}$/)
    seen.add(traceparent.slice(3, 35)).add(requestId)
  }
  expect(seen.size).toBe(2_000)
})
