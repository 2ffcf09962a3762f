/**
 * W3C trace context for calls to the apps. The gateway exports no spans yet,
 * so each call starts its own trace: the app can still tie its logs of one
 * call together, and our `x-request-id` ties them to ours.
 */
import { randomUUID } from "node:crypto"

/**
 * A fresh `traceparent` header value: version 00, random trace and parent
 * ids, sampled. `randomUUID` draws from a buffer, where `randomBytes` would
 * make a system call per header.
 */
export const newTraceparent = (): string =>
  `00-${randomUUID().replaceAll("-", "")}-${randomUUID().replaceAll("-", "").slice(0, 16)}-01`
