/**
 * A real gateway in the test's own process, on an ephemeral 127.0.0.1 port,
 * for integration tests that connect real clients to it. Everything is the
 * production wiring (`makeGatewayLayer`); only the config is made in code.
 *
 * An app may be a fake app (`fakeApp`), an app written with the SDK
 * (`realtimeApp`: served on its own ephemeral port for as long as the
 * gateway runs, with its secret), or plain settings pointing elsewhere.
 */
import { Context, Effect, Exit, Layer, Scope } from "effect"
import { makeAppConfig, makeGatewayConfig } from "../config/GatewayConfig.ts"
import type { AppConfig, AppConfigInit, GatewayConfigInit } from "../config/GatewayConfig.ts"
import { makeGatewayLayer } from "../Gateway.ts"
import { HttpListener } from "../server/HttpListener.ts"
import type { RealtimeApp } from "../sdk/App.ts"
import { serve } from "../sdk/serve.ts"
import type { Served } from "../sdk/serve.ts"
import type { FakeApp } from "./FakeApp.ts"

export interface TestGatewayOptions extends Omit<GatewayConfigInit, "apps"> {
  /** Apps by fake app (id + the fake app serving it), by SDK app, or by plain app settings. */
  readonly apps: ReadonlyArray<
    | (Omit<AppConfigInit, "api"> & { readonly fakeApp: FakeApp })
    | (Omit<AppConfigInit, "api" | "secret"> & { readonly realtimeApp: RealtimeApp; readonly secret?: string })
    | AppConfigInit
  >
}

export interface TestGateway {
  readonly port: number
  /** `http://127.0.0.1:<port>` */
  readonly url: string
  /** `ws://127.0.0.1:<port>/socket`, the form the `phoenix` client takes. */
  readonly socketUrl: string
  close(): Promise<void>
}

const appConfigOf = async (
  app: TestGatewayOptions["apps"][number],
  servedApps: Array<Served>
): Promise<AppConfig> => {
  if ("fakeApp" in app) return makeAppConfig({ ...app, api: app.fakeApp.url })
  if (!("realtimeApp" in app)) return makeAppConfig(app)
  const { realtimeApp, ...settings } = app
  const served = await serve(realtimeApp.fetch)
  servedApps.push(served)
  return makeAppConfig({
    ...settings,
    api: served.url,
    schemaEndpoint: served.url + realtimeApp.paths.schema,
    authEndpoint: served.url + realtimeApp.paths.auth,
    messageEndpoint: served.url + realtimeApp.paths.message,
    notifyEndpoint: served.url + realtimeApp.paths.notify
  })
}

export const startTestGateway = async (options: TestGatewayOptions): Promise<TestGateway> => {
  const servedApps: Array<Served> = []
  const closeServedApps = () => Promise.all(servedApps.map((served) => served.close())).then(() => {})
  const scope = Scope.makeUnsafe()
  let context: Context.Context<HttpListener>
  try {
    const config = makeGatewayConfig({
      host: "127.0.0.1",
      port: 0,
      nodeName: "test",
      log: { level: "error", format: "json" },
      ...options,
      apps: await Promise.all(options.apps.map((app) => appConfigOf(app, servedApps)))
    })
    context = await Effect.runPromise(Layer.buildWithScope(makeGatewayLayer(config), scope))
  } catch (error) {
    await Effect.runPromise(Scope.close(scope, Exit.void))
    await closeServedApps()
    throw error
  }
  const { port } = Context.get(context, HttpListener)
  let closed: Promise<void> | undefined
  return {
    port,
    url: `http://127.0.0.1:${port}`,
    socketUrl: `ws://127.0.0.1:${port}/socket`,
    close: () => (closed ??= Effect.runPromise(Scope.close(scope, Exit.void)).then(closeServedApps))
  }
}
