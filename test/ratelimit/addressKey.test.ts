/**
 * The key per-address limits count under: IPv4 as is, IPv6 by its /64
 * whatever way it is written, IPv4-mapped IPv6 as the IPv4 address.
 */
import { expect, it } from "vitest"
import { addressKey } from "../../src/ratelimit/addressKey.ts"

it("keys IPv4 by the address and IPv6 by its /64, however it is written", () => {
  expect(addressKey("203.0.113.9")).toBe("203.0.113.9")
  expect(addressKey("::ffff:203.0.113.9")).toBe("203.0.113.9")
  expect(addressKey("::FFFF:203.0.113.9")).toBe("203.0.113.9")
  const sameSlash64 = [
    "2001:db8:1:2::1",
    "2001:0DB8:0001:0002:ffff:ffff:ffff:ffff",
    "2001:db8:1:2:0:0:0:0",
    "2001:db8:1:2::1%eth0",
    "2001:db8:1:2::203.0.113.9"
  ]
  for (const address of sameSlash64) expect(addressKey(address)).toBe("2001:db8:1:2::/64")
  expect(addressKey("2001:db8:1:3::1")).toBe("2001:db8:1:3::/64")
  expect(addressKey("2001:db8::1")).toBe("2001:db8:0:0::/64")
  expect(addressKey("::1")).toBe("0:0:0:0::/64")
  expect(addressKey("1::2:3:4:5:6:7")).toBe("1:0:2:3::/64")
  expect(addressKey("fe80::1:2:3:4")).toBe("fe80:0:0:0::/64")
  // not an address at all (an unknown peer): its own key
  expect(addressKey("unknown")).toBe("unknown")
})
