/**
 * The four calls the gateway makes on an app, and the paths under the app's
 * base URL (`<APP>_API`) where it makes them unless an endpoint is set.
 */
export type CallKind = "schema" | "auth" | "message" | "notify"

export const callKinds: ReadonlyArray<CallKind> = ["schema", "auth", "message", "notify"]

export const defaultPaths: Readonly<Record<CallKind, string>> = {
  schema: "/messages-schema",
  auth: "/auth/websocket",
  message: "/messages",
  notify: "/notify"
}
