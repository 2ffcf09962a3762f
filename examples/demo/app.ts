/**
 * The demo app bundled with the gateway (`npm start` serves it when no app is
 * configured), written with the SDK as an app team would write theirs.
 *
 * Channels:
 * - `room:{name}`: public rooms (name matching `^[a-z0-9_-]{1,32}$`) with
 *   presence; any authenticated client may join.
 * - `user:{user_id}`: a user's private channel; joining needs the permission
 *   `user:{user_id}`.
 *
 * Events (payload `{body: string}`):
 * - `echo` (on `room:*` and `user:*`): replies `{body}` to the sender;
 * - `shout` (on `room:*`): broadcasts `shout` `{from: <client_id>, body}` to
 *   everyone in the room.
 *
 * Tokens: `demo-alice` (client `alice`, permission `user:alice`) and
 * `demo-bob` (client `bob`, permission `user:bob`); any other is refused.
 *
 * With a `secret`, every call must be signed by the gateway within 5 minutes.
 */
import { Schema } from "effect"
// In an app's own project: `from "realtime-gateway/app"` (the gateway runs this file from its sources).
import { broadcast, channel, defineApp, event, reply, serve } from "../../src/sdk/index.ts"
import type { Served } from "../../src/sdk/index.ts"

const Message = Schema.Struct({ body: Schema.String })

const users: Readonly<Record<string, { readonly client_id: string; readonly name: string }>> = {
  "demo-alice": { client_id: "alice", name: "Alice" },
  "demo-bob": { client_id: "bob", name: "Bob" }
}

export interface DemoAppOptions {
  /** Shared secret the gateway signs its calls with, if configured. */
  readonly secret?: string
  /** Receives one line per notification (connections, joins, leaves). */
  readonly log?: (line: string) => void
}

export const makeDemoApp = (options: DemoAppOptions = {}) =>
  defineApp({
    version: "1",
    secret: options.secret,
    channels: [
      channel("room:{name}", {
        description: "Public room; any authenticated client may join",
        variables: { name: { type: "string", pattern: "^[a-z0-9_-]{1,32}$" } },
        presence: true
      }),
      channel("user:{user_id}", {
        description: "Private channel of one user",
        variables: { user_id: { type: "string" } },
        permissions: { join: ["user:{user_id}"] }
      })
    ],
    events: {
      echo: event({ channels: ["room:*", "user:*"], payload: Message }),
      shout: event({ channels: ["room:*"], payload: Message })
    },
    auth: ({ token, client_type }) => {
      const user = Object.hasOwn(users, token) ? users[token] : undefined
      if (user === undefined) return null
      return { client_id: user.client_id, client_type, metadata: { name: user.name }, permissions: [`user:${user.client_id}`] }
    },
    messages: {
      echo: ({ payload }) => reply({ body: payload.body }),
      // no topic: the broadcast goes to the room the message came from
      shout: ({ payload, client_id }) => broadcast("shout", { from: client_id, body: payload.body })
    },
    notify: ({ event, client_id, channel }) => options.log?.(`${event} client=${client_id} channel=${channel ?? "-"}`)
  })

/** Serves the demo app on `host:port` (0: a free port). */
export const startDemoApp = (options: DemoAppOptions & { readonly port: number; readonly host?: string }): Promise<Served> =>
  serve(makeDemoApp(options).fetch, { port: options.port, host: options.host ?? "127.0.0.1" })
