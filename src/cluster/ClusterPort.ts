/**
 * The cluster port (`CLUSTER_HOST:CLUSTER_PORT`): one listener for everything
 * nodes say to each other, and the way this node dials the others. Every
 * connection, in either direction, is authenticated with `CLUSTER_SECRET`
 * (`PeerAuth.ts`) before a byte of what it carries is read; optionally over
 * TLS (`CLUSTER_TLS_CERT`/`_KEY`/`_CA`).
 *
 * An admitted connection says what it is for: effect/cluster's runner protocol
 * (handed to the runner's RPC server through the `SocketServer` this module
 * provides) or a node link (handed to `NodeRouter`, see `NodeLink`). A peer that fails is
 * dropped and logged (at most once a minute per address, so that a scanner
 * cannot flood the log).
 *
 * Before this node registers as a runner, it checks that the nodes already
 * registered in PostgreSQL share its secret: a node started with another
 * secret refuses to join (exit 78) rather than take shards it could never
 * serve.
 */
import * as NodeSocket from "@effect/platform-node-shared/NodeSocket"
import { Context, Effect, Exit, Fiber, Layer, Redacted, Scope } from "effect"
import { RunnerStorage } from "effect/cluster"
import * as NetAddress from "effect/net/NetAddress"
import * as Socket from "effect/socket/Socket"
import * as SocketServer from "effect/socket/SocketServer"
import { readFileSync } from "node:fs"
import * as Net from "node:net"
import type { Duplex } from "node:stream"
import * as Tls from "node:tls"
import type { ClusterTls } from "../config/GatewayConfig.ts"
import { ConfigError } from "../config/errors.ts"
import { admitPeer, PeerAuthError, provePeer } from "./PeerAuth.ts"
import type { Purpose } from "./PeerAuth.ts"

export interface ClusterPortShape {
  /** What effect/cluster's runner server listens with: admitted runner connections only. */
  readonly runnerServer: SocketServer.SocketServer["Service"]
  /** Receives every admitted node-link connection from now on. */
  readonly acceptLinks: (accept: (connection: Duplex) => void) => void
  /** Opens an authenticated connection to a node's cluster port. */
  readonly dial: (host: string, port: number, purpose: Purpose) => Promise<Duplex>
}

export interface ClusterPortOptions {
  readonly host: string
  readonly port: number
  readonly secret: Redacted.Redacted<string>
  readonly tls: ClusterTls | undefined
}

const CONNECT_TIMEOUT_MS = 2_000
/** A peer that keeps failing is logged once per this period. */
const FAILURE_LOG_PERIOD_MS = 60_000
/** Addresses remembered for that; beyond this many the memory starts over. */
const FAILURE_LOG_ADDRESSES = 1_000

/** Logs a failing peer at most once per period per address. */
const makeFailureLog = (log: (message: string, address: string) => void) => {
  const lastLogged = new Map<string, number>()
  return (message: string, address: string) => {
    const now = Date.now()
    const last = lastLogged.get(address)
    if (last !== undefined && now - last < FAILURE_LOG_PERIOD_MS) return
    if (lastLogged.size >= FAILURE_LOG_ADDRESSES) lastLogged.clear()
    lastLogged.set(address, now)
    log(message, address)
  }
}

const tlsFiles = (tls: ClusterTls) => ({
  cert: readFileSync(tls.certFile),
  key: readFileSync(tls.keyFile),
  ca: tls.caFile === undefined ? undefined : readFileSync(tls.caFile)
})

const connect = (host: string, port: number, tls: ReturnType<typeof tlsFiles> | undefined): Promise<Duplex> =>
  new Promise((resolve, reject) => {
    const socket = tls === undefined
      ? Net.createConnection({ host, port })
      : Tls.connect({
        host,
        port,
        ...tls,
        // the peer's identity is proven by the secret; the CA check keeps strangers' certificates out
        checkServerIdentity: () => undefined
      })
    const timer = setTimeout(() => {
      socket.destroy()
      reject(new Error(`no connection within ${CONNECT_TIMEOUT_MS} ms`))
    }, CONNECT_TIMEOUT_MS)
    socket.once(tls === undefined ? "connect" : "secureConnect", () => {
      clearTimeout(timer)
      socket.off("error", onError)
      resolve(socket)
    })
    const onError = (error: Error) => {
      clearTimeout(timer)
      reject(error)
    }
    socket.once("error", onError)
  })

const remoteOf = (connection: Net.Socket) => `${connection.remoteAddress}:${connection.remotePort}`

export class ClusterPort extends Context.Service<ClusterPort, ClusterPortShape>()("realtime-gateway/cluster/ClusterPort") {
  static readonly layer = (options: ClusterPortOptions) =>
    Layer.effect(
      ClusterPort,
      Effect.gen(function*() {
        const secret = Buffer.from(Redacted.value(options.secret))
        const tls = options.tls === undefined ? undefined : tlsFiles(options.tls)
        const services = yield* Effect.context<never>()
        const runLog = Effect.runForkWith(services)
        const logRefused = makeFailureLog((message, address) =>
          runLog(Effect.logWarning(`cluster port: connection dropped, ${message}`).pipe(
            Effect.annotateLogs({ peer: address })
          ))
        )

        const logForeign = makeFailureLog((message, address) =>
          runLog(Effect.logError(message).pipe(Effect.annotateLogs({ peer: address })))
        )
        const dial = async (host: string, port: number, purpose: Purpose): Promise<Duplex> => {
          const connection = await connect(host, port, tls)
          try {
            await provePeer(connection, secret, purpose)
            return connection
          } catch (error) {
            connection.destroy()
            if (error instanceof PeerAuthError && error.mismatch && purpose !== "probe") {
              logForeign(
                `the node at ${host}:${port} does not share this node's CLUSTER_SECRET: ${error.message}; it is not part of this cluster`,
                `${host}:${port}`
              )
            }
            throw error
          }
        }

        yield* refuseForeignCluster(dial)

        // Connections admitted before their consumer is there wait for it.
        let acceptRunner: ((connection: Duplex) => void) | undefined
        let acceptLink: ((connection: Duplex) => void) | undefined
        const waitingRunners: Array<Duplex> = []
        const waitingLinks: Array<Duplex> = []

        const onConnection = (connection: Net.Socket) => {
          connection.on("error", () => {}) // reported by whoever reads it, or by the failure below
          admitPeer(connection, secret).then(
            (purpose) => {
              if (purpose === "runner") acceptRunner === undefined ? waitingRunners.push(connection) : acceptRunner(connection)
              else if (purpose === "link") acceptLink === undefined ? waitingLinks.push(connection) : acceptLink(connection)
              else connection.end()
            },
            (error: unknown) => {
              connection.destroy()
              const detail = error instanceof PeerAuthError && error.mismatch
                ? `${error.message} (a stranger, or a node with another CLUSTER_SECRET)`
                : `authentication failed: ${error instanceof Error ? error.message : String(error)}`
              logRefused(detail, remoteOf(connection))
            }
          )
        }

        const server = tls === undefined
          ? Net.createServer(onConnection)
          : Tls.createServer({ ...tls, requestCert: tls.ca !== undefined, rejectUnauthorized: tls.ca !== undefined })
        if (tls !== undefined) {
          server.on("secureConnection", onConnection)
          server.on("tlsClientError", (error, connection) => {
            connection.destroy()
            logRefused(`TLS failed: ${error.message}`, remoteOf(connection))
          })
        }
        yield* Effect.acquireRelease(
          Effect.callback<void, SocketServer.SocketServerError>((resume) => {
            server.once("error", (cause) =>
              resume(Effect.fail(new SocketServer.SocketServerError({ reason: new SocketServer.SocketServerOpenError({ cause }) }))))
            server.listen({ host: options.host, port: options.port }, () => resume(Effect.void))
          }),
          () =>
            Effect.callback<void>((resume) => {
              for (const connection of [...waitingRunners, ...waitingLinks]) connection.destroy()
              server.close(() => resume(Effect.void))
            })
        )
        const bound = server.address() as Net.AddressInfo
        const address = yield* Effect.fromResult(NetAddress.inetAddressFromIpString(bound.address, bound.port)).pipe(
          Effect.mapError((cause) => new SocketServer.SocketServerError({ reason: new SocketServer.SocketServerOpenError({ cause }) }))
        )

        // effect/cluster's RPC server runs a handler per admitted runner connection
        const run = Effect.fnUntraced(function*<R, E, _>(handler: (socket: Socket.Socket) => Effect.Effect<_, E, R>) {
          const scope = yield* Scope.make()
          const handlerServices = Context.omit(Scope.Scope)(yield* Effect.context<R>()) as Context.Context<R>
          acceptRunner = (connection) => {
            const socketEffect = NodeSocket.fromDuplex(
              Effect.acquireRelease(Effect.succeed(connection), (open) => Effect.sync(() => open.destroy()))
            )
            Fiber.runIn(
              socketEffect.pipe(
                Effect.flatMap(handler),
                Effect.ignoreCause({ log: "Debug", message: "runner connection ended" }),
                Effect.runForkWith(handlerServices)
              ),
              scope
            )
          }
          for (const connection of waitingRunners.splice(0)) acceptRunner(connection)
          return yield* Effect.never.pipe(Effect.ensuring(Effect.suspend(() => {
            acceptRunner = undefined
            return Scope.close(scope, Exit.void)
          })))
        })

        return ClusterPort.of({
          runnerServer: SocketServer.SocketServer.of({ address, run }),
          acceptLinks: (accept) => {
            acceptLink = accept
            for (const connection of waitingLinks.splice(0)) accept(connection)
          },
          dial
        })
      })
    )
}

/**
 * Fails with a config error when a node already registered in the cluster's
 * storage answers with another secret. Nodes that do not answer (gone, not
 * yet marked unhealthy) say nothing either way.
 */
const refuseForeignCluster = (dial: ClusterPortShape["dial"]) =>
  Effect.gen(function*() {
    const storage = yield* RunnerStorage.RunnerStorage
    const runners = yield* storage.getRunners.pipe(Effect.orElseSucceed(() => []))
    const verdicts = yield* Effect.forEach(
      runners.filter(([, healthy]) => healthy),
      ([runner]) =>
        Effect.promise(() =>
          dial(runner.address.host, runner.address.port, "probe").then(
            (connection) => {
              connection.destroy()
              return undefined
            },
            (error: unknown) => error instanceof PeerAuthError && error.mismatch ? `${runner.address.host}:${runner.address.port}` : undefined
          )
        ),
      { concurrency: "unbounded" }
    )
    const foreign = verdicts.filter((address) => address !== undefined)
    if (foreign.length === 0) return
    return yield* new ConfigError({
      problems: [{
        key: "CLUSTER_SECRET",
        message: `differs from the secret of the cluster this DATABASE_URL holds (the node at ${foreign.join(", ")} ` +
          "refused it); this node does not join"
      }]
    })
  })

/** effect/cluster's client protocol for runner calls, over authenticated connections. */
export const runnerSocket = (port: ClusterPortShape, host: string, runnerPort: number): Effect.Effect<Socket.Socket> =>
  NodeSocket.fromDuplex(
    Effect.acquireRelease(
      Effect.tryPromise({
        try: () => port.dial(host, runnerPort, "runner"),
        catch: (cause) => new Socket.SocketError({ reason: new Socket.SocketOpenError({ kind: "Unknown", cause }) })
      }),
      (connection) => Effect.sync(() => connection.destroy())
    )
  )
