/**
 * W3C trace context for calls to the apps. The gateway exports no spans yet,
 * so each call starts its own trace: the app can still tie its logs of one
 * call together, and our `x-request-id` ties them to ours.
 */
import { randomBytes } from "node:crypto"

/** A fresh `traceparent` header value: version 00, random trace and parent ids, sampled. */
export const newTraceparent = (): string => {
  const ids = randomBytes(24).toString("hex")
  return `00-${ids.slice(0, 32)}-${ids.slice(32)}-01`
}
