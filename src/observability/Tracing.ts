/**
 * W3C trace context for calls to the apps. The gateway exports no spans yet,
 * so each call starts its own trace: the app can still tie its logs of one
 * call together, and our `x-request-id` ties them to ours.
 */
import { randomFillSync } from "node:crypto"

/**
 * Random bytes drawn a few kilobytes at a time: ids are needed for every app
 * call, and one draw per id would be a system call each.
 */
const pool = Buffer.allocUnsafe(4096)
let poolOffset = pool.length

/** `bytes` random bytes as lowercase hex. */
const randomHex = (bytes: number): string => {
  if (poolOffset + bytes > pool.length) {
    randomFillSync(pool)
    poolOffset = 0
  }
  const hex = pool.toString("hex", poolOffset, poolOffset + bytes)
  poolOffset += bytes
  return hex
}

/** A fresh `traceparent` header value: version 00, random trace and parent ids, sampled. */
export const newTraceparent = (): string => `00-${randomHex(16)}-${randomHex(8)}-01`

/** A fresh `x-request-id`: 128 random bits in hex. */
export const newRequestId = (): string => randomHex(16)
