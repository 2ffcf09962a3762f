/**
 * Small helpers for tests that talk HTTP and open sockets: a JSON POST, and
 * closing everything a test opened once it ends.
 */
import { afterEach } from "vitest"

export const postJson = (url: string, body: unknown, headers: Record<string, string> = {}) =>
  fetch(url, {
    method: "POST",
    headers: { "content-type": "application/json", ...headers },
    body: typeof body === "string" ? body : JSON.stringify(body)
  })

/** Collects things with a `close()` and closes them all after each test of the file. */
export const closedAfterEach = <A extends { close(): Promise<unknown> }>(): Array<A> => {
  const open: Array<A> = []
  afterEach(async () => {
    await Promise.all(open.splice(0).map((item) => item.close()))
  })
  return open
}
