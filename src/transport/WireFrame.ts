/**
 * Server-to-client WebSocket frames (RFC 6455 §5.2) as the bytes that go on
 * the wire: FIN set, no mask, no extension (the gateway offers no
 * compression), header and payload in one buffer.
 *
 * Sessions write these straight to their TCP socket instead of going through
 * `ws`'s sender, which copies a string payload, allocates a header and writes
 * the two with `writev` on every send. A broadcast is framed once and the
 * same buffer is written to every subscriber.
 */
import { Buffer } from "node:buffer"

const FIN_TEXT = 0x81
const FIN_BINARY = 0x82
const MAX_7_BIT_LENGTH = 125
const LENGTH_16_BIT = 126
const LENGTH_64_BIT = 127

const headerSize = (payloadBytes: number) =>
  payloadBytes <= MAX_7_BIT_LENGTH ? 2 : payloadBytes <= 0xffff ? 4 : 10

/** The frame of an encoded protocol message: a string goes as a text frame (UTF-8), bytes as a binary one. */
export const wireFrame = (message: string | Uint8Array): Buffer => {
  const text = typeof message === "string"
  const payloadBytes = text ? Buffer.byteLength(message, "utf8") : message.byteLength
  const offset = headerSize(payloadBytes)
  const frame = Buffer.allocUnsafe(offset + payloadBytes)
  frame[0] = text ? FIN_TEXT : FIN_BINARY
  if (offset === 2) {
    frame[1] = payloadBytes
  } else if (offset === 4) {
    frame[1] = LENGTH_16_BIT
    frame.writeUInt16BE(payloadBytes, 2)
  } else {
    frame[1] = LENGTH_64_BIT
    frame.writeUInt32BE(0, 2)
    frame.writeUInt32BE(payloadBytes, 6)
  }
  if (text) frame.write(message, offset, "utf8")
  else frame.set(message, offset)
  return frame
}
