/**
 * The key per-address limits count a client under. An IPv4 address is its own
 * key; an IPv6 client is keyed by its /64, the prefix one subscriber line gets,
 * since anyone holding a /64 can pick from 2^64 addresses at will. An
 * IPv4-mapped IPv6 address (`::ffff:10.0.0.1`, as a dual-stack listener sees
 * IPv4 clients) is keyed as the IPv4 address it maps.
 */
import { isIP } from "node:net"

const IPV4_MAPPED_PREFIX = "::ffff:"

/** The first four 16-bit groups of an IPv6 address, without leading zeros. */
const prefix64 = (address: string): string => {
  const [head = "", tail] = address.split("::")
  const headGroups = head === "" ? [] : head.split(":")
  const tailGroups = tail === undefined || tail === "" ? [] : tail.split(":")
  // an embedded IPv4 address (`64:ff9b::10.0.0.1`) fills the last two groups
  const tailWidth = tailGroups.length + (tailGroups.at(-1)?.includes(".") ? 1 : 0)
  const zeros = tail === undefined ? 0 : 8 - headGroups.length - tailWidth
  const groups = [...headGroups, ...Array<string>(Math.max(0, zeros)).fill("0"), ...tailGroups]
  return groups.slice(0, 4).map((group) => Number.parseInt(group, 16).toString(16)).join(":")
}

export const addressKey = (ip: string): string => {
  if (isIP(ip) !== 6) return ip
  let address = ip.toLowerCase()
  const zone = address.indexOf("%")
  if (zone >= 0) address = address.slice(0, zone)
  if (address.startsWith(IPV4_MAPPED_PREFIX) && isIP(address.slice(IPV4_MAPPED_PREFIX.length)) === 4) {
    return address.slice(IPV4_MAPPED_PREFIX.length)
  }
  return `${prefix64(address)}::/64`
}
