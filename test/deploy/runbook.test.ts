/**
 * docs/deploy.md is pasted by operators: every shell block and the scripts it
 * runs pass `bash -n`, every `cluster.sh` subcommand it uses exists, its links
 * inside the page lead somewhere, and no deployment file names a package
 * registry's host.
 */
import { execFileSync } from "node:child_process"
import { readdirSync, readFileSync, statSync } from "node:fs"
import { describe, expect, it } from "vitest"

const root = new URL("../..", import.meta.url).pathname
const runbook = readFileSync(`${root}docs/deploy.md`, "utf8")
const clusterScript = `${root}scripts/deploy/cluster.sh`

const shellBlocks = [...runbook.matchAll(/```sh\n([\s\S]*?)```/g)].map((match) => match[1]!)

/** `bash -n` on the text; returns bash's complaint, empty when the syntax is right. */
const bashSyntaxErrors = (script: string): string => {
  try {
    execFileSync("bash", ["-n"], { input: script, encoding: "utf8", stdio: ["pipe", "pipe", "pipe"] })
    return ""
  } catch (error) {
    return String((error as { stderr?: string }).stderr)
  }
}

const filesUnder = (folder: string): Array<string> =>
  readdirSync(`${root}${folder}`).flatMap((name) => {
    const path = `${folder}/${name}`
    return statSync(`${root}${path}`).isDirectory() ? filesUnder(path) : [path]
  })

describe("the runbook", () => {
  it("has shell blocks, and each passes bash -n", () => {
    expect(shellBlocks.length).toBeGreaterThan(20)
    for (const block of shellBlocks) expect(bashSyntaxErrors(block), block).toBe("")
  })

  it("bash -n catches a broken block, so that the check above can fail", () => {
    expect(bashSyntaxErrors("for node in a b; do echo \"$node\"\n")).toMatch(/syntax error|unexpected end of file/)
  })

  it("the scripts it runs pass bash -n and are executable", () => {
    for (const script of [clusterScript, `${root}scripts/ensure-node.sh`]) {
      expect(bashSyntaxErrors(readFileSync(script, "utf8")), script).toBe("")
      expect(statSync(script).mode & 0o111, script).not.toBe(0)
    }
  })

  it("uses only subcommands that scripts/deploy/cluster.sh has, and names all of them", () => {
    const script = readFileSync(clusterScript, "utf8")
    const handled = new Set([...script.matchAll(/^ {2}([a-z-]+)\)$/gm)].map((match) => match[1]!))
    const used = new Set([...runbook.matchAll(/scripts\/deploy\/cluster\.sh ([a-z-]+)/g)].map((match) => match[1]!))
    const usedInProse = new Set([...runbook.matchAll(/`cluster\.sh ([a-z-]+)/g)].map((match) => match[1]!))
    expect([...handled].sort()).toEqual(["deploy", "install", "restart", "restart-all", "secrets", "status"])
    for (const command of [...used, ...usedInProse]) expect(handled, command).toContain(command)
    expect([...used].sort()).toEqual([...handled].sort())
  })

  it("links to sections of itself that exist", () => {
    const anchors = new Set([...runbook.matchAll(/^#+ (.+)$/gm)].map((match) =>
      match[1]!.toLowerCase().replace(/[`'",.()]/g, "").replace(/ /g, "-")
    ))
    const links = [...runbook.matchAll(/\]\(#([^)]+)\)/g)].map((match) => match[1]!)
    expect(links.length).toBeGreaterThan(0)
    for (const link of links) expect(anchors, link).toContain(link)
  })

  it("pastes commands that exist in the dev shell the flake gives", () => {
    const flake = readFileSync(`${root}flake.nix`, "utf8")
    for (const tool of ["opentofu", "oci-cli", "nixos-anywhere", "nixos-rebuild", "jq", "curl", "openssl", "websocat", "certbot", "nodejs_24", "postgresql_17"]) {
      expect(flake, tool).toContain(`pkgs.${tool}`)
    }
  })

  it("no deployment file names a package registry's host", () => {
    const files = ["flake.nix", "docs/deploy.md", "scripts/ensure-node.sh", ...filesUnder("nix"), ...filesUnder("infra"), ...filesUnder("scripts/deploy")]
    for (const file of files) {
      const text = readFileSync(`${root}${file}`, "utf8")
      expect(text, file).not.toMatch(/registry\.(npmjs|yarnpkg|terraform|opentofu)|npmjs\.(org|com)|registry\.npmmirror/i)
    }
  })
})
