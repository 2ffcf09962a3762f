/**
 * Ids in the cluster: entity ids of the app-scoped entities (Topic, Client),
 * `<app>/<key>` (app ids cannot contain `/`, keys such as topics and client
 * ids may), and unique ids for connections and broadcasts.
 */
import { randomBytes } from "node:crypto"

export const appScopedId = (app: string, key: string) => `${app}/${key}`

export const parseAppScopedId = (entityId: string): { readonly app: string; readonly key: string } => {
  const separator = entityId.indexOf("/")
  return { app: entityId.slice(0, separator), key: entityId.slice(separator + 1) }
}

/**
 * A source of ids unique across nodes and restarts: a random prefix drawn
 * once, then a counter, so that no id costs a random draw.
 */
export const makeIdSource = (): (() => string) => {
  const prefix = `${randomBytes(6).toString("base64url")}-`
  let count = 0
  return () => `${prefix}${(count++).toString(36)}`
}
