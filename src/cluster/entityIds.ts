/**
 * Entity ids of the app-scoped entities (Topic, Client): `<app>/<key>`. App
 * ids cannot contain `/`, keys (topics, client ids) may.
 */

export const appScopedId = (app: string, key: string) => `${app}/${key}`

export const parseAppScopedId = (entityId: string): { readonly app: string; readonly key: string } => {
  const separator = entityId.indexOf("/")
  return { app: entityId.slice(0, separator), key: entityId.slice(separator + 1) }
}
