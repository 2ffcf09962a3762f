/**
 * Process entry point: load and validate the configuration (exit 78 when it is
 * wrong), start the bundled demo app when no app is configured, then run the
 * gateway until SIGINT/SIGTERM.
 */
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import { Cause, Effect, Exit, Runtime } from "effect"
import { loadFromProcess, makeAppConfig, reportConfigErrorAndExit } from "./config/GatewayConfig.ts"
import type { GatewayConfigShape } from "./config/GatewayConfig.ts"
import { startDemoApp } from "../examples/demo/app.ts"
import { makeGatewayLayer, serveGateway } from "./Gateway.ts"
import * as Logging from "./observability/Logging.ts"

const program = Effect.gen(function*() {
  const loaded = yield* loadFromProcess
  return yield* run(loaded).pipe(
    Effect.provide(Logging.layer({ nodeName: loaded.nodeName, format: loaded.log.format, level: loaded.log.level }))
  )
}).pipe(
  // a bad configuration, or a cluster that refuses this node (another CLUSTER_SECRET)
  Effect.catchTag("ConfigError", (error) => Effect.sync(() => reportConfigErrorAndExit(error)))
)

const run = (loaded: GatewayConfigShape) => Effect.gen(function*() {
  let config = loaded
  if (loaded.demo !== undefined) {
    const demo = yield* Effect.acquireRelease(
      Effect.promise(() => startDemoApp({ port: loaded.demo!.port, host: "127.0.0.1" })),
      (demo) => Effect.promise(() => demo.close())
    )
    config = { ...loaded, apps: [makeAppConfig({ id: "demo", api: demo.url })] }
    yield* Effect.logInfo(
      `no app configured: serving the bundled demo app (${demo.url}); connect to ` +
        `ws://localhost:${loaded.port}/socket/websocket?app=demo&token=demo-alice&vsn=2.0.0`
    )
  }
  return yield* serveGateway(makeGatewayLayer(config))
})

// SIGTERM/SIGINT interrupt the program; once the drain and shutdown finished
// that way, the process exits 0 (a service manager asked for it, nothing
// failed). A failure (the supervisor escalating) exits 1 after the same drain.
NodeRuntime.runMain(Effect.scoped(program), {
  teardown: (exit, onExit) =>
    Exit.isFailure(exit) && Cause.hasInterruptsOnly(exit.cause) ? onExit(0) : Runtime.defaultTeardown(exit, onExit)
})
