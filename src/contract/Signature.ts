/**
 * The signature of the gateway's calls to an app (CONTRACT §3).
 *
 * When an app has a secret, every call carries `x-gateway-timestamp: <unix
 * seconds>` and `x-gateway-signature: sha256=<hex HMAC-SHA256 of
 * "<timestamp>.<raw body>">` (the schema `GET` signs an empty body). Signing
 * the timestamp with the body lets an app refuse a call replayed later: a
 * call whose timestamp is further than the tolerance (5 minutes) from the
 * app's clock is refused even when its signature matches.
 *
 * The gateway signs with {@link signatureHeaders}; apps (the SDK, the test
 * kit, the demo app) check with {@link verifySignature}.
 */
import { createHmac, timingSafeEqual } from "node:crypto"

export const TIMESTAMP_HEADER = "x-gateway-timestamp"
export const SIGNATURE_HEADER = "x-gateway-signature"

/** How far a call's timestamp may be from the app's clock, either way. */
export const DEFAULT_TOLERANCE_SECONDS = 300

const PREFIX = "sha256="

/** `sha256=<hex>` over `"<timestamp>.<body>"`. */
export const signature = (secret: string, timestamp: string, body: string): string =>
  PREFIX + createHmac("sha256", secret).update(`${timestamp}.`).update(body).digest("hex")

/** The two headers of a signed call made at `nowMs`. */
export const signatureHeaders = (secret: string, body: string, nowMs: number = Date.now()) => {
  const timestamp = String(Math.floor(nowMs / 1000))
  return { [TIMESTAMP_HEADER]: timestamp, [SIGNATURE_HEADER]: signature(secret, timestamp, body) }
}

/** Why a call's signature was refused; `undefined` from {@link verifySignature} means it is good. */
export type SignatureProblem = "missing_signature" | "invalid_signature" | "stale_timestamp"

export interface VerifyOptions {
  /** Seconds; {@link DEFAULT_TOLERANCE_SECONDS} when omitted. */
  readonly toleranceSeconds?: number | undefined
  /** The app's clock, in milliseconds; `Date.now()` when omitted. */
  readonly nowMs?: number | undefined
}

const DIGITS = /^\d{1,15}$/

/**
 * Checks a call's two headers against its raw body. The signature is checked
 * before the timestamp, so that an unsigned caller learns nothing about the
 * app's clock; comparison takes the same time whatever the bytes.
 */
export const verifySignature = (
  secret: string,
  rawBody: string,
  timestampHeader: string | null | undefined,
  signatureHeader: string | null | undefined,
  options: VerifyOptions = {}
): SignatureProblem | undefined => {
  if (typeof timestampHeader !== "string" || typeof signatureHeader !== "string") return "missing_signature"
  if (!DIGITS.test(timestampHeader)) return "invalid_signature"
  const expected = Buffer.from(signature(secret, timestampHeader, rawBody))
  const given = Buffer.from(signatureHeader.trim().toLowerCase())
  if (given.length !== expected.length || !timingSafeEqual(given, expected)) return "invalid_signature"
  const tolerance = options.toleranceSeconds ?? DEFAULT_TOLERANCE_SECONDS
  const now = Math.floor((options.nowMs ?? Date.now()) / 1000)
  return Math.abs(now - Number(timestampHeader)) > tolerance ? "stale_timestamp" : undefined
}
