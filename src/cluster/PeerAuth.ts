/**
 * Authentication of every connection between nodes, before either side reads
 * anything it carries: a challenge-response over `CLUSTER_SECRET`.
 *
 *   listener → dialer   32 random bytes (the listener's nonce)
 *   dialer → listener   1 byte: what the connection is for (runner or node link),
 *                       32 random bytes (the dialer's nonce),
 *                       HMAC-SHA256(secret, "dialer" · purpose · both nonces)
 *   listener → dialer   HMAC-SHA256(secret, "listener" · purpose · both nonces)
 *
 * The listener reads exactly the dialer's fixed-size answer and checks it
 * before anything else; a wrong one closes the connection, so a peer without
 * the secret gets the nonce and nothing more. The dialer checks the
 * listener's proof before it sends anything else, so a node with another
 * secret is never spoken to either. Fresh nonces on both sides make a
 * recorded exchange useless, and the role label keeps one side's proof from
 * being replayed as the other's.
 */
import { createHmac, randomBytes, timingSafeEqual } from "node:crypto"
import type { Duplex } from "node:stream"

/**
 * What an authenticated connection carries: effect/cluster's runner protocol,
 * a node link, or nothing (a joining node checking that it shares the secret).
 */
export type Purpose = "runner" | "link" | "probe"

const PURPOSE_BYTE: Record<Purpose, number> = { runner: 0x52, link: 0x4c, probe: 0x50 }
const NONCE_BYTES = 32
const PROOF_BYTES = 32
const ANSWER_BYTES = 1 + NONCE_BYTES + PROOF_BYTES

/** How long a peer has to finish the exchange. */
const AUTH_TIMEOUT_MS = 5_000

/** Why an exchange failed; `mismatch` means the peer proved a different secret (or none). */
export class PeerAuthError extends Error {
  readonly mismatch: boolean
  constructor(mismatch: boolean, message: string) {
    super(message)
    this.mismatch = mismatch
  }
}

const proof = (secret: Buffer, role: "dialer" | "listener", purpose: number, listenerNonce: Buffer, dialerNonce: Buffer) =>
  createHmac("sha256", secret).update(role).update(Buffer.of(purpose)).update(listenerNonce).update(dialerNonce).digest()

/**
 * Reads exactly `bytes` bytes; what came with them stays in the stream, unread,
 * for whoever reads it next.
 */
const readExactly = (stream: Duplex, bytes: number, what: string): Promise<Buffer> =>
  new Promise((resolve, reject) => {
    const chunks: Array<Buffer> = []
    let received = 0
    const timer = setTimeout(() => finish(new PeerAuthError(false, `no ${what} within ${AUTH_TIMEOUT_MS} ms`)), AUTH_TIMEOUT_MS)
    const onData = (chunk: Buffer) => {
      chunks.push(chunk)
      received += chunk.length
      if (received >= bytes) finish()
    }
    const onEnd = () =>
      finish(new PeerAuthError(true, `the peer closed the connection instead of sending its ${what}`))
    const onError = (error: Error) => finish(new PeerAuthError(false, error.message))
    const finish = (error?: PeerAuthError) => {
      clearTimeout(timer)
      stream.off("data", onData)
      stream.off("end", onEnd)
      stream.off("close", onEnd)
      stream.off("error", onError)
      stream.pause()
      if (error !== undefined) return reject(error)
      const all = Buffer.concat(chunks, received)
      if (received > bytes) stream.unshift(all.subarray(bytes))
      resolve(all.subarray(0, bytes))
    }
    stream.on("data", onData)
    stream.once("end", onEnd)
    stream.once("close", onEnd)
    stream.once("error", onError)
    stream.resume()
  })

/** The listener's side: answers what the peer proved it may use the connection for. */
export const admitPeer = async (stream: Duplex, secret: Buffer): Promise<Purpose> => {
  const listenerNonce = randomBytes(NONCE_BYTES)
  stream.write(listenerNonce)
  const answer = await readExactly(stream, ANSWER_BYTES, "answer to the challenge")
  const purposeByte = answer[0]!
  const purpose = (Object.keys(PURPOSE_BYTE) as Array<Purpose>).find((key) => PURPOSE_BYTE[key] === purposeByte)
  const dialerNonce = answer.subarray(1, 1 + NONCE_BYTES)
  const expected = proof(secret, "dialer", purposeByte, listenerNonce, dialerNonce)
  if (purpose === undefined || !timingSafeEqual(answer.subarray(1 + NONCE_BYTES), expected)) {
    throw new PeerAuthError(true, "the peer's proof does not match this node's CLUSTER_SECRET")
  }
  stream.write(proof(secret, "listener", purposeByte, listenerNonce, dialerNonce))
  return purpose
}

/** The dialer's side, on a fresh connection to a node's cluster port. */
export const provePeer = async (stream: Duplex, secret: Buffer, purpose: Purpose): Promise<void> => {
  const listenerNonce = await readExactly(stream, NONCE_BYTES, "challenge")
  const dialerNonce = randomBytes(NONCE_BYTES)
  const purposeByte = PURPOSE_BYTE[purpose]
  stream.write(Buffer.concat([Buffer.of(purposeByte), dialerNonce, proof(secret, "dialer", purposeByte, listenerNonce, dialerNonce)]))
  const answer = await readExactly(stream, PROOF_BYTES, "proof")
  if (!timingSafeEqual(answer, proof(secret, "listener", purposeByte, listenerNonce, dialerNonce))) {
    throw new PeerAuthError(true, "the node's proof does not match this node's CLUSTER_SECRET")
  }
}
