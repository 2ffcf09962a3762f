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

/** One frame carrying `data`: a text frame unless `binary` (a string is sent as UTF-8). */
export const wireFrame = (data: string | Uint8Array, binary: boolean): Buffer => {
  const payloadBytes = typeof data === "string" ? Buffer.byteLength(data, "utf8") : data.byteLength
  const offset = headerSize(payloadBytes)
  const frame = Buffer.allocUnsafe(offset + payloadBytes)
  frame[0] = binary ? FIN_BINARY : FIN_TEXT
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
  if (typeof data === "string") frame.write(data, offset, "utf8")
  else frame.set(data, offset)
  return frame
}

/** The frame of an encoded protocol message: a string goes as a text frame, bytes as a binary one. */
export const messageFrame = (message: string | Uint8Array): Buffer => wireFrame(message, typeof message !== "string")
