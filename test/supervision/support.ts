/**
 * A gateway in the test's own process, built from the production wiring, with
 * its supervisor at hand: tests inject defects into its children by name.
 */
import { Context, Effect, Exit, Layer, Scope } from "effect"
import { makeGatewayConfig } from "../../src/config/GatewayConfig.ts"
import type { GatewayConfigInit, GatewayConfigShape } from "../../src/config/GatewayConfig.ts"
import { makeGatewayLayer } from "../../src/Gateway.ts"
import { HttpListener } from "../../src/server/HttpListener.ts"
import type { SupervisedChildName } from "../../src/supervision/children.ts"
import { Supervisor } from "../../src/supervision/Supervisor.ts"

export interface SupervisedGateway {
  readonly url: string
  readonly socketUrl: string
  readonly supervisor: Supervisor["Service"]
  close(): Promise<void>
}

/** A config for a gateway on an ephemeral 127.0.0.1 port that logs errors only. */
export const inProcessConfig = (init: GatewayConfigInit): GatewayConfigShape =>
  makeGatewayConfig({ host: "127.0.0.1", port: 0, nodeName: "test", log: { level: "error", format: "json" }, ...init })

export const startSupervisedGateway = async (config: GatewayConfigShape): Promise<SupervisedGateway> => {
  const scope = Scope.makeUnsafe()
  const context = await Effect.runPromise(Layer.buildWithScope(makeGatewayLayer(config), scope))
  const { port } = Context.get(context, HttpListener)
  return {
    url: `http://127.0.0.1:${port}`,
    socketUrl: `ws://127.0.0.1:${port}/socket`,
    supervisor: Context.get(context, Supervisor),
    close: () => Effect.runPromise(Scope.close(scope, Exit.void))
  }
}

/** Retries `check` every 20 ms until it holds; for supervisor state, which no event announces. */
export const eventually = async (what: string, check: () => boolean, timeoutMs = 10_000): Promise<void> => {
  const deadline = Date.now() + timeoutMs
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`${what} did not happen within ${timeoutMs} ms`)
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
}

/**
 * Kills every running instance of the child with a defect and waits until as
 * many run again, each restart counted.
 */
export const injectAndAwaitRestart = async (gateway: SupervisedGateway, name: SupervisedChildName): Promise<number> => {
  const before = gateway.supervisor.children().find((child) => child.name === name)
  if (before === undefined || before.running === 0) throw new Error(`"${name}" is not running`)
  const hit = await Effect.runPromise(gateway.supervisor.injectDefect(name))
  await eventually(`"${name}" restarted`, () => {
    const after = gateway.supervisor.children().find((child) => child.name === name)!
    return after.recentRestarts >= before.recentRestarts + hit && after.running === before.running
  })
  return hit
}
