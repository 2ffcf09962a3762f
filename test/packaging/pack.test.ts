/**
 * The package as an app team installs it: `npm pack` (which builds it), the
 * tarball unpacked into the `node_modules` of a temporary project that holds
 * nothing else of this repository, and there:
 * - the example app and its integration test (`examples/demo/`, importing
 *   `realtime-gateway/app` and `realtime-gateway/testing` by name) type-check
 *   and pass against a real gateway, on Node and on Bun;
 * - the SDK's fetch handler serves the app under `Bun.serve` and `Deno.serve`;
 * - an app that pushes or handles a payload of the wrong type fails `tsc`
 *   with a message naming the line and the types.
 *
 * No registry is needed: the packages an install of the tarball would bring
 * (its dependencies, and the project's TypeScript and Vitest) are linked
 * from this repository's `node_modules`, and nothing else is.
 */
import { execFile } from "node:child_process"
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { promisify } from "node:util"
import { afterAll, beforeAll, describe, expect, it } from "vitest"

const run = promisify(execFile)
const root = new URL("../..", import.meta.url).pathname
const repoModules = join(root, "node_modules")
const bun = join(repoModules, "bun", "bin", "bun.exe")
const deno = join(repoModules, "deno", "deno")

/** Fetches the app's schema document through the runtime's own server; prints `status etagMatches version`. */
const schemaFetch = (serveLine: string, port: string, stopLine: string) => [
  "import { makeDemoApp } from \"./app.ts\"",
  "const app = makeDemoApp()",
  serveLine,
  `const answer = await fetch(\`http://127.0.0.1:\${${port}}\${app.paths.schema}\`)`,
  "console.log(answer.status, answer.headers.get(\"etag\") === app.etag, (await answer.json()).version)",
  stopLine
].join("\n")

let project: string

const dependenciesOf = (packageDir: string): ReadonlyArray<string> => {
  const manifest = JSON.parse(readFileSync(join(packageDir, "package.json"), "utf8")) as Record<string, Record<string, string> | undefined>
  return [manifest["dependencies"], manifest["optionalDependencies"], manifest["peerDependencies"]]
    .flatMap((deps) => Object.keys(deps ?? {}))
}

/** Links `names` and everything they depend on from this repository's (flat) `node_modules`. */
const linkClosure = (names: ReadonlyArray<string>, into: string): void => {
  const seen = new Set<string>()
  const pending = [...names]
  while (pending.length > 0) {
    const name = pending.pop()!
    if (seen.has(name)) continue
    seen.add(name)
    const source = join(repoModules, name)
    // an optional dependency for another platform, or one nested inside the package that needs it
    if (!existsSync(join(source, "package.json"))) continue
    const target = join(into, name)
    mkdirSync(join(target, ".."), { recursive: true })
    symlinkSync(source, target, "dir")
    pending.push(...dependenciesOf(source))
  }
}

const tsconfig = {
  compilerOptions: {
    target: "ES2024",
    lib: ["ES2024"],
    module: "NodeNext",
    moduleResolution: "NodeNext",
    types: ["node"],
    strict: true,
    noEmit: true,
    allowImportingTsExtensions: true,
    // effect's own declarations name DOM types a Node project does not load
    skipLibCheck: true
  }
}

const tsc = (config: string) =>
  run(process.execPath, [join(project, "node_modules/typescript/bin/tsc"), "-p", config], { cwd: project, timeout: 120_000 })
    .then(() => "")
    .catch((error: { stdout?: string }) => error.stdout ?? String(error))

beforeAll(async () => {
  project = mkdtempSync(join(tmpdir(), "realtime-gateway-pack-"))
  const { stdout } = await run("npm", ["pack", "--pack-destination", project, "--json"], {
    cwd: root,
    timeout: 120_000,
    maxBuffer: 16 * 1024 * 1024
  })
  const [{ filename }] = JSON.parse(stdout) as [{ filename: string }]
  const installed = join(project, "node_modules", "realtime-gateway")
  mkdirSync(installed, { recursive: true })
  await run("tar", ["-xzf", join(project, filename), "-C", installed, "--strip-components=1"])
  linkClosure([...dependenciesOf(installed), "effect", "typescript", "vitest", "@types/node"], join(project, "node_modules"))

  writeFileSync(join(project, "package.json"), JSON.stringify({ name: "typed-app", private: true, type: "module" }))
  // the example as an app team copies it: the SDK by the package's name
  const app = readFileSync(join(root, "examples/demo/app.ts"), "utf8").replaceAll("\"../../src/sdk/index.ts\"", "\"realtime-gateway/app\"")
  writeFileSync(join(project, "app.ts"), app)
  writeFileSync(join(project, "app.test.ts"), readFileSync(join(root, "examples/demo/app.test.ts"), "utf8"))
  writeFileSync(join(project, "tsconfig.json"), JSON.stringify({ ...tsconfig, include: ["app.ts", "app.test.ts"] }))
}, 180_000)

afterAll(() => {
  if (project !== undefined) rmSync(project, { recursive: true, force: true })
})

describe("the packed package, installed in a fresh project", () => {
  it("ships built JavaScript and declarations for both entry points, and nothing of the repository's own tests", () => {
    const installed = join(project, "node_modules", "realtime-gateway")
    for (const file of ["dist/sdk/index.js", "dist/sdk/index.d.ts", "dist/testing/index.js", "dist/testing/index.d.ts"]) {
      expect(existsSync(join(installed, file)), file).toBe(true)
    }
    expect(existsSync(join(installed, "test"))).toBe(false)
    expect(readFileSync(join(project, "app.ts"), "utf8")).not.toContain("src/sdk")
  })

  it("type-checks the example app and its integration test", async () => {
    expect(await tsc("tsconfig.json")).toBe("")
  })

  it("runs the example's integration test against a real gateway on Node", async () => {
    const { stdout } = await run(process.execPath, [join(project, "node_modules/vitest/vitest.mjs"), "run"], {
      cwd: project,
      timeout: 120_000,
      env: { ...process.env, NO_COLOR: "1" }
    })
    expect(stdout).toContain("5 passed")
  })

  it("runs the same test on Bun, and serves the app with Bun.serve", async () => {
    const test = await run(bun, ["test", "./app.test.ts"], { cwd: project, timeout: 120_000 })
    expect(test.stderr).toContain("5 pass")
    expect(test.stderr).toContain("0 fail")
    writeFileSync(join(project, "serve-on-bun.mjs"), schemaFetch(
      "const server = Bun.serve({ port: 0, hostname: \"127.0.0.1\", fetch: app.fetch })",
      "server.port",
      "server.stop(true)"
    ))
    const served = await run(bun, ["serve-on-bun.mjs"], { cwd: project, timeout: 60_000 })
    expect(served.stdout.trim()).toBe("200 true 1")
  })

  it("serves the app with Deno.serve", async () => {
    writeFileSync(join(project, "serve-on-deno.ts"), schemaFetch(
      "const server = Deno.serve({ port: 0, hostname: \"127.0.0.1\", onListen: () => {} }, app.fetch)",
      "server.addr.port",
      "await server.shutdown()"
    ))
    const served = await run(deno, ["run", "-A", "--node-modules-dir=manual", "serve-on-deno.ts"], {
      cwd: project,
      timeout: 60_000,
      env: { ...process.env, DENO_NO_UPDATE_CHECK: "1", DENO_DIR: join(project, ".deno") }
    })
    expect(served.stdout.trim()).toBe("200 true 1")
  })

  it("refuses a wrongly typed payload at compile time, saying where and why", async () => {
    writeFileSync(join(project, "wrong.ts"), [
      "import { Schema } from \"effect\"",
      "import { defineApp, event, reply } from \"realtime-gateway/app\"",
      "import { pushEvent } from \"realtime-gateway/testing\"",
      "import type { ConnectedSocket } from \"realtime-gateway/testing\"",
      "",
      "const app = defineApp({",
      "  version: \"1\",",
      "  channels: [],",
      "  events: { echo: event({ channels: [\"*\"], payload: Schema.Struct({ body: Schema.String }) }) },",
      "  auth: () => null,",
      "  messages: { echo: ({ payload }) => reply({ doubled: payload.body * 2 }) }",
      "})",
      "",
      "export const pushWrong = async (socket: ConnectedSocket) => {",
      "  const { channel } = await socket.join(\"room:1\")",
      "  return pushEvent(app, channel, \"echo\", { body: 42 })",
      "}"
    ].join("\n"))
    writeFileSync(join(project, "tsconfig.wrong.json"), JSON.stringify({ ...tsconfig, include: ["wrong.ts"] }))
    const output = await tsc("tsconfig.wrong.json")
    expect(output).toContain("wrong.ts(11,55): error TS2362: The left-hand side of an arithmetic operation must be of type")
    expect(output).toContain("wrong.ts(16,44): error TS2322: Type 'number' is not assignable to type 'string'.")
  })
})
