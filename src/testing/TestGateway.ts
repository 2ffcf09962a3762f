/**
 * A real gateway in the test's own process, on an ephemeral 127.0.0.1 port,
 * for integration tests that connect real clients to it. Everything is the
 * production wiring (`makeGatewayLayer`); only the config is made in code.
 */
import { Context, Effect, Exit, Layer, Scope } from "effect"
import { makeAppConfig, makeGatewayConfig } from "../config/GatewayConfig.ts"
import type { AppConfig, AppConfigInit, GatewayConfigInit } from "../config/GatewayConfig.ts"
import { makeGatewayLayer } from "../Gateway.ts"
import { HttpListener } from "../server/HttpListener.ts"
import type { FakeApp } from "./FakeApp.ts"

export interface TestGatewayOptions extends Omit<GatewayConfigInit, "apps"> {
  /** Apps by fake app (id + the fake app serving it) or by plain app settings. */
  readonly apps: ReadonlyArray<
    | (Omit<AppConfigInit, "api"> & { readonly fakeApp: FakeApp })
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

const appConfigOf = (app: TestGatewayOptions["apps"][number]): AppConfig =>
  "fakeApp" in app ? makeAppConfig({ ...app, api: app.fakeApp.url }) : makeAppConfig(app)

export const startTestGateway = async (options: TestGatewayOptions): Promise<TestGateway> => {
  const config = makeGatewayConfig({
    host: "127.0.0.1",
    port: 0,
    nodeName: "test",
    log: { level: "error", format: "json" },
    ...options,
    apps: options.apps.map(appConfigOf)
  })
  const scope = Scope.makeUnsafe()
  const context = await Effect.runPromise(Layer.buildWithScope(makeGatewayLayer(config), scope)).catch(
    async (error: unknown) => {
      await Effect.runPromise(Scope.close(scope, Exit.void))
      throw error
    }
  )
  const { port } = Context.get(context, HttpListener)
  let closed: Promise<void> | undefined
  return {
    port,
    url: `http://127.0.0.1:${port}`,
    socketUrl: `ws://127.0.0.1:${port}/socket`,
    close: () => (closed ??= Effect.runPromise(Scope.close(scope, Exit.void)))
  }
}
