/**
 * All live sessions of this node, and the node-wide hub they share: topic
 * subscription, lifecycle notifications to the app, push handling, the idle
 * sweep, and the connection counts and listings that capacity checks and the
 * server API read.
 *
 * Idle connections are found by one sweep per node rather than a timer per
 * socket, which would cost memory and timer churn on every frame.
 */
import type { Duplex } from "node:stream"
import { Context, Effect, Layer, Schedule } from "effect"
import type { WebSocket } from "ws"
import type { RegisteredApp } from "../apps/AppRegistry.ts"
import type { Identity } from "../auth/Auth.ts"
import { makeIdSource } from "../cluster/entityIds.ts"
import { TopicRegistry } from "../fanout/TopicRegistry.ts"
import { Presence } from "../presence/Presence.ts"
import { GatewayConfig } from "../config/GatewayConfig.ts"
import type { ConnectionInfo } from "../cluster/messages.ts"
import type { PresenceEntry } from "../cluster/messages.ts"
import { LogSampler } from "../observability/Logging.ts"
import { Metrics } from "../observability/Metrics.ts"
import { Tracing } from "../observability/Tracing.ts"
import { CloseCode, Event } from "../protocol/constants.ts"
import type { Serializer } from "../protocol/Serializer.ts"
import { Upstream } from "../upstream/Upstream.ts"
import { ClientLimits } from "../ratelimit/ClientLimits.ts"
import { PushHandler } from "./PushHandler.ts"
import { bucketLimit, monotonicMs, Session } from "./Session.ts"
import type { Closure, LifecycleEvent, SessionHub } from "./Session.ts"
import type { ConnectionPage } from "../cluster/LocalNode.ts"

import { SupervisedChild } from "../supervision/children.ts"
import { supervised } from "../supervision/Supervisor.ts"

export interface SessionsShape {
  readonly open: (options: {
    readonly socket: WebSocket
    /** The TCP socket `ws` took over at the upgrade. */
    readonly stream: Duplex
    readonly app: RegisteredApp
    readonly identity: Identity
    readonly serializer: Serializer
    /** The client's address, for the log line of the opened connection. */
    readonly remoteIp: string
  }) => Session
  readonly count: () => number
  readonly all: () => Iterable<Session>
  /** Closes every connection of the client on this node; answers how many. */
  readonly disconnectClient: (app: string, clientId: string) => number
  /** Closes every connection of the app on this node (the app was removed); answers how many. */
  readonly closeApp: (app: string) => number
  /** The app's connections on this node in `connection_id` order, those after `page.after` (when set), at most `page.limit`. */
  readonly connections: (app: string, page: ConnectionPage) => ReadonlyArray<ConnectionInfo>
}

/** How often idle connections are looked for; an idle socket lives at most this much past its timeout. */
const IDLE_SWEEP_INTERVAL_MS = 5_000

export class Sessions extends Context.Service<Sessions, SessionsShape>()("realtime-gateway/socket/Sessions") {
  static readonly layer = Layer.effect(
    Sessions,
    Effect.gen(function*() {
      const config = yield* GatewayConfig
      const topics = yield* TopicRegistry
      const presence = yield* Presence
      const upstream = yield* Upstream
      const pushHandler = yield* PushHandler
      const clientLimits = yield* ClientLimits
      const metrics = yield* Metrics
      const tracing = yield* Tracing
      const context = yield* Effect.context<never>()
      const runInBackground = Effect.runForkWith(context)
      // app → client id → its sessions on this node
      const byApp = new Map<string, Map<string, Set<Session>>>()
      let liveCount = 0
      let presenceRefs = 0
      // unique across the cluster and restarts without a random draw per connection
      const nextConnectionId = makeIdSource()

      function* allSessions(): Generator<Session> {
        for (const clients of byApp.values()) {
          for (const sessions of clients.values()) yield* sessions
        }
      }

      const addSession = (session: Session) => {
        const app = session.app.config.id
        let clients = byApp.get(app)
        if (clients === undefined) byApp.set(app, clients = new Map())
        let sessions = clients.get(session.identity.clientId)
        if (sessions === undefined) clients.set(session.identity.clientId, sessions = new Set())
        sessions.add(session)
        liveCount++
      }

      const removeSession = (session: Session) => {
        const app = session.app.config.id
        const clients = byApp.get(app)
        const sessions = clients?.get(session.identity.clientId)
        if (sessions === undefined || !sessions.delete(session)) return
        liveCount--
        if (sessions.size === 0) {
          clients!.delete(session.identity.clientId)
          clientLimits.released(app, session.identity.clientId)
        }
        if (clients!.size === 0) byApp.delete(app)
      }

      // a line per connection opened and closed; a storm of them is sampled
      const sampler = new LogSampler(runInBackground, { level: "Info" })
      // floods and undecodable frames come in storms too
      const warnings = new LogSampler(runInBackground, { level: "Warn" })
      const connectionFields = (session: Session) => ({
        app_id: session.app.config.id,
        client_id: session.identity.clientId,
        client_type: session.identity.clientType,
        connection_id: session.connectionId
      })
      const logOpened = (session: Session, remoteIp: string) => {
        if (!sampler.admit("connection opened")) return
        runInBackground(Effect.logInfo("connection opened").pipe(Effect.annotateLogs({
          ...connectionFields(session),
          remote_ip: remoteIp
        })))
      }
      const logClosed = (session: Session, closure: Closure) => {
        if (!sampler.admit("connection closed")) return
        runInBackground(Effect.logInfo("connection closed").pipe(Effect.annotateLogs({
          ...connectionFields(session),
          duration_ms: Date.now() - session.connectedAt,
          close_code: closure.code,
          close_reason: closure.reason,
          closed_by: closure.closedBy
        })))
      }
      const annotateSession = (session: Session) => Effect.annotateLogs(connectionFields(session))
      const hub: SessionHub = {
        maxChannelsPerConnection: config.limits.maxChannelsPerConnection,
        maxOutboxBytes: config.limits.maxOutboxBytes,
        frameLimit: bucketLimit(config.limits.framesPerSecond, config.limits.frameBurst),
        joinLimit: bucketLimit(config.limits.joinsPerSecond, config.limits.joinBurst),
        churnLimit: bucketLimit(config.limits.channelChurnPerSecond, config.limits.channelChurnBurst),
        tracing,
        subscribe: (session, topic) => topics.subscribe(session.app.config.id, topic, session),
        unsubscribe: (session, topic) => topics.unsubscribe(session.app.config.id, topic, session),
        admitsPresence: (session, topic) => presence.admitsPresence(session.app.config.id, topic),
        track: (session, topic, join) => {
          const ref = `${session.connectionId}.${presenceRefs++}`
          const entry: PresenceEntry = {
            key: session.identity.clientId,
            ref,
            meta: {
              ...session.identity.metadata,
              phx_ref: ref,
              client_type: session.identity.clientType,
              online_at: Math.floor(Date.now() / 1000)
            }
          }
          join.presence = entry
          runInBackground(presence.track(session.app.config.id, topic, entry).pipe(
            Effect.map((state) => {
              if (session.joins.get(topic) === join) {
                session.send(session.serializer.encodePush(join.joinRef, topic, Event.presenceState, state))
                join.presenceStateSent = true
              }
            })
          ))
        },
        untrack: (session, topic, join) => {
          if (join.presence === undefined) return
          presence.untrack(session.app.config.id, topic, join.presence)
          join.presence = undefined
        },
        notify: (session, event: LifecycleEvent, topic) => {
          const app = session.app.config
          // no body built for an app that turned notifications off
          if (app.notifyEndpoint === undefined) return
          upstream.notify(app, {
            app: app.id,
            event,
            channel: topic,
            client_id: session.identity.clientId,
            client_type: session.identity.clientType,
            metadata: session.identity.metadata,
            connection_id: session.connectionId,
            node: config.nodeName,
            at: new Date().toISOString()
          })
        },
        push: (session, frame, join, bytes) => pushHandler.handle(session, frame, join, bytes),
        flooded: (session) => {
          session.metrics.rateLimited("frames")
          if (!warnings.admit("connection flooded")) return
          runInBackground(
            Effect.logWarning(
              `connection closed (1008): more than ${config.limits.frameBurst} frames at once, ` +
                `or ${config.limits.framesPerSecond} per second sustained`
            ).pipe(annotateSession(session))
          )
        },
        failed: (session, error) => {
          runInBackground(
            Effect.logError("unexpected error handling a frame; connection closed", String(error)).pipe(annotateSession(session))
          )
        },
        undecodable: (session, what) => {
          if (!warnings.admit("undecodable frame")) return
          runInBackground(
            Effect.logWarning(`undecodable frame (${what}); connection closed with 1007`).pipe(annotateSession(session))
          )
        },
        closed: (session, closure) => {
          removeSession(session)
          session.metrics.connectionClosed(closure.closedBy)
          logClosed(session, closure)
        }
      }

      const idleTimeoutMs = config.limits.idleTimeoutMs
      yield* Effect.sync(() => {
        const deadline = monotonicMs() - idleTimeoutMs
        for (const session of allSessions()) {
          if (session.lastSeen < deadline) session.close(CloseCode.normal, "idle timeout")
        }
      }).pipe(Effect.repeat(Schedule.spaced(Math.min(IDLE_SWEEP_INTERVAL_MS, idleTimeoutMs))), supervised(SupervisedChild.idleSweep))

      yield* Effect.addFinalizer(() =>
        Effect.sync(() => {
          for (const session of [...allSessions()]) session.close(CloseCode.serviceRestart, "shutting down")
        })
      )

      const toInfo = (session: Session): ConnectionInfo => ({
        connection_id: session.connectionId,
        client_id: session.identity.clientId,
        client_type: session.identity.clientType,
        metadata: session.identity.metadata,
        node: config.nodeName,
        connected_at: new Date(session.connectedAt).toISOString(),
        last_ping: new Date(Date.now() - (monotonicMs() - session.lastSeen)).toISOString(),
        topics: [...session.joins.keys()]
      })

      return Sessions.of({
        open: ({ remoteIp, ...options }) => {
          const appMetrics = metrics.forApp(options.app.config.id)
          const session = new Session({ ...options, metrics: appMetrics, connectionId: nextConnectionId(), hub })
          addSession(session)
          appMetrics.connectionOpened()
          logOpened(session, remoteIp)
          return session
        },
        count: () => liveCount,
        all: allSessions,
        disconnectClient: (app, clientId) => {
          const sessions = [...(byApp.get(app)?.get(clientId) ?? [])]
          for (const session of sessions) session.close(CloseCode.policyViolation, "disconnected by the app")
          return sessions.length
        },
        closeApp: (app) => {
          const sessions = [...(byApp.get(app)?.values() ?? [])].flatMap((clients) => [...clients])
          for (const session of sessions) session.close(CloseCode.policyViolation, "app removed")
          return sessions.length
        },
        connections: (app, { after, limit }) => {
          const listed: Array<Session> = []
          for (const sessions of byApp.get(app)?.values() ?? []) {
            for (const session of sessions) if (after === undefined || session.connectionId > after) listed.push(session)
          }
          listed.sort((a, b) => (a.connectionId < b.connectionId ? -1 : 1))
          return listed.slice(0, limit).map(toInfo)
        }
      })
    })
  )
}
