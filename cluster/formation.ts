/**
 * Whether a set of gateway nodes forms one cluster: nodes that each answer
 * ready may not reach one another yet. A client joins a probe topic on every
 * node; then a broadcast through each node's server API, repeated until it
 * does, must reach every one of them. Used by the local cluster launcher and
 * by the cluster benchmark before anything is measured.
 */
import { connectSocket } from "../src/testing/index.ts"
import type { ConnectedSocket } from "../src/testing/index.ts"

export interface FormationCheck {
  /** HTTP ports of the nodes, on 127.0.0.1. */
  readonly ports: ReadonlyArray<number>
  readonly app: string
  /** The app's secret: the server API's bearer token. */
  readonly secret: string
  /** The token of the probe client on the node at `index`. */
  readonly token: (index: number) => string
  readonly clientType?: string
  readonly topic: string
}

/** How long the nodes may take to form one cluster. */
const FORMATION_TIMEOUT_MS = 30_000
/** How long one probe broadcast may take to reach every node before it is made again. */
const PROBE_WAIT_MS = 500
const HTTP_TIMEOUT_MS = 5_000

/** Answers `undefined` once the nodes form one cluster, or what failed (after 30 s at most). */
export const checkFormation = async (check: FormationCheck): Promise<string | undefined> => {
  const deadline = Date.now() + FORMATION_TIMEOUT_MS
  const probes: Array<ConnectedSocket> = []
  try {
    const channels = await Promise.all(check.ports.map(async (port, index) => {
      const socket = await connectSocket(`ws://127.0.0.1:${port}/socket`, {
        app: check.app,
        token: check.token(index),
        ...(check.clientType === undefined ? {} : { clientType: check.clientType })
      })
      probes.push(socket)
      const joined = await socket.join(check.topic)
      if (joined.status !== "ok") throw new Error(`join refused on port ${port}: ${JSON.stringify(joined.response)}`)
      return joined.channel
    }))
    const received = channels.map(() => new Set<string>())
    const waiters = new Set<() => void>()
    channels.forEach((channel, i) =>
      channel.on("probe", (payload: { id?: unknown }) => {
        received[i]!.add(String(payload.id))
        for (const wake of waiters) wake()
      })
    )
    const everyoneGot = (id: string) => {
      let wake: () => void = () => {}
      let timer: NodeJS.Timeout | undefined
      return new Promise<boolean>((resolve) => {
        wake = () => {
          if (received.every((ids) => ids.has(id))) resolve(true)
        }
        timer = setTimeout(() => resolve(false), PROBE_WAIT_MS)
        waiters.add(wake)
        wake()
      }).finally(() => {
        waiters.delete(wake)
        clearTimeout(timer)
      })
    }
    for (const [n, port] of check.ports.entries()) {
      for (let attempt = 1; ; attempt++) {
        if (Date.now() > deadline) return `a broadcast through port ${port} did not reach every node`
        const id = `probe ${n}.${attempt}`
        const answer = await fetch(`http://127.0.0.1:${port}/api/apps/${check.app}/broadcast`, {
          method: "POST",
          headers: { authorization: `Bearer ${check.secret}`, "content-type": "application/json" },
          body: JSON.stringify({ topic: check.topic, event: "probe", payload: { id } }),
          signal: AbortSignal.timeout(HTTP_TIMEOUT_MS)
        }).then(async (response) => {
          await response.body?.cancel()
          return response.status
        }, (error: unknown) => String(error))
        if (typeof answer === "number" && answer >= 400 && answer < 500) {
          return `a broadcast through port ${port} was refused with ${answer}`
        }
        if (answer === 202 ? await everyoneGot(id) : false) break
        if (answer !== 202) await new Promise((resolve) => setTimeout(resolve, 200))
      }
    }
    return undefined
  } catch (error) {
    return error instanceof Error ? error.message : String(error)
  } finally {
    await Promise.all(probes.map((socket) => socket.close()))
  }
}
