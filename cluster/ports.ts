/**
 * Free local ports, for the nodes and databases that the local cluster and the
 * tests start on 127.0.0.1.
 *
 * Ports are drawn below the kernel's ephemeral range: a port the kernel handed
 * out by `listen(0)` is handed out again as the local end of some outgoing
 * connection, so between "found free" and "bound by a child process" another
 * process may take it. Ports under the ephemeral range are only ever taken by
 * someone asking for them by number.
 */
import { readFileSync } from "node:fs"
import { createServer } from "node:net"

const LOWEST = 10_000

/** The first port of the kernel's ephemeral range (32768 on Linux by default). */
const ephemeralStart = (): number => {
  try {
    const [low] = readFileSync("/proc/sys/net/ipv4/ip_local_port_range", "utf8").trim().split(/\s+/)
    const port = Number(low)
    return Number.isInteger(port) && port > LOWEST + 1_000 ? port : 32_768
  } catch {
    return 32_768
  }
}

/** Whether a TCP port on 127.0.0.1 can be bound right now. */
export const portIsFree = (port: number): Promise<boolean> =>
  new Promise((resolve) => {
    const server = createServer()
    server.once("error", () => resolve(false))
    server.listen(port, "127.0.0.1", () => server.close(() => resolve(true)))
  })

/** Ports this process handed out already: a child may not have bound one yet when the next is drawn. */
const handedOut = new Set<number>()

/** `count` consecutive ports on 127.0.0.1, below the ephemeral range, that are free right now. */
export const freePortRange = async (count: number): Promise<number> => {
  const highest = ephemeralStart() - count
  for (let attempt = 0; attempt < 100; attempt++) {
    const base = LOWEST + Math.floor(Math.random() * (highest - LOWEST))
    const ports = Array.from({ length: count }, (_, i) => base + i)
    if (ports.some((port) => handedOut.has(port))) continue
    const free = await Promise.all(ports.map(portIsFree))
    if (!free.every(Boolean)) continue
    for (const port of ports) handedOut.add(port)
    return base
  }
  throw new Error(`no ${count} consecutive free ports found between ${LOWEST} and ${highest + count}`)
}

export const freePort = (): Promise<number> => freePortRange(1)
