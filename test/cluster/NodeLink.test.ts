/**
 * The node link's hot-path codec is held to its Schema, and the secret's
 * exchange admits a peer with the same secret only, over real TCP sockets.
 */
import { Schema } from "effect"
import * as Net from "node:net"
import type { AddressInfo } from "node:net"
import { afterEach, describe, expect, it } from "vitest"
import { decodeDelivery, DeliveryTuple, encodeDelivery } from "../../src/cluster/NodeLink.ts"
import { admitPeer, PeerAuthError, provePeer } from "../../src/cluster/PeerAuth.ts"

describe("link deliveries", () => {
  const decodeReference = Schema.decodeUnknownResult(DeliveryTuple)

  it("decode what they encode, with and without an excluded connection", () => {
    const broadcast = { id: "b1", app: "chat", topic: "room:1", event: "shout", payload: { n: [1, "x"] } }
    expect(decodeDelivery(JSON.parse(encodeDelivery(broadcast)))).toEqual(broadcast)
    const excluding = { ...broadcast, excludeConnectionId: "c9" }
    expect(decodeDelivery(JSON.parse(encodeDelivery(excluding)))).toEqual(excluding)
  })

  it("accept exactly what the Schema accepts", () => {
    const samples: Array<unknown> = [
      ["id", "app", "topic", "event", { a: 1 }, null],
      ["id", "app", "topic", "event", null, "conn"],
      ["id", "app", "topic", "event", "text", 7],
      ["id", "app", "topic", 5, {}, null],
      ["id", "app", "topic", "event", {}],
      ["id", "app", "topic", "event", {}, null, "extra"],
      { id: "id" },
      "id",
      null
    ]
    for (const sample of samples) {
      expect(decodeDelivery(sample) !== undefined, JSON.stringify(sample)).toBe(decodeReference(sample)._tag === "Success")
    }
  })
})

describe("the secret's exchange", () => {
  const servers: Array<Net.Server> = []
  afterEach(() => {
    for (const server of servers.splice(0)) server.close()
  })

  /** A listener admitting with `listenerSecret`; resolves each connection's outcome. */
  const exchange = async (listenerSecret: string, dialerSecret: string) => {
    let admitted!: Promise<unknown>
    const server = Net.createServer((connection) => {
      admitted = admitPeer(connection, Buffer.from(listenerSecret)).then(
        async (purpose) => {
          // the exchange leaves the connection paused, for whoever reads it next
          const first = new Promise<string>((resolve) => connection.once("data", (chunk) => resolve(String(chunk))))
          connection.resume()
          const text = await first
          connection.end()
          return { purpose, first: text }
        },
        (error: unknown) => {
          connection.destroy()
          return error
        }
      )
    })
    servers.push(server)
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))
    const dialer = Net.createConnection({ host: "127.0.0.1", port: (server.address() as AddressInfo).port })
    dialer.on("error", () => {})
    await new Promise((resolve) => dialer.once("connect", resolve))
    const proved = await provePeer(dialer, Buffer.from(dialerSecret), "link").then(() => {
      dialer.write("hello after the exchange")
      return "proved"
    }, (error: unknown) => error)
    return { proved, admitted: await admitted }
  }

  it("admits a peer with the same secret, which then speaks", async () => {
    const secret = "the-same-secret-on-both-sides-0123456789"
    expect(await exchange(secret, secret)).toEqual({
      proved: "proved",
      admitted: { purpose: "link", first: "hello after the exchange" }
    })
  })

  it("drops a peer with another secret on both sides", async () => {
    const { proved, admitted } = await exchange("the-listener-secret-0123456789-0123", "the-dialer-secret-0123456789-012345")
    expect(admitted).toBeInstanceOf(PeerAuthError)
    expect((admitted as PeerAuthError).mismatch).toBe(true)
    expect(proved).toBeInstanceOf(PeerAuthError)
    expect((proved as PeerAuthError).mismatch).toBe(true)
  })
})
