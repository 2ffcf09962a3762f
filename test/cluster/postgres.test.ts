/**
 * The throw-away PostgreSQL of the cluster tests (`cluster/postgres.ts`) from
 * a private checkout: run as root, PostgreSQL runs as the `postgres` user,
 * which cannot enter a folder of mode 700 (a clone under /root). The
 * installation is then run from a copy that user can reach, and the server
 * starts whatever the caller's working directory.
 */
import { spawn } from "node:child_process"
import { chmod, mkdir, mkdtemp, rm, writeFile } from "node:fs/promises"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterAll, describe, expect, it } from "vitest"
import { reachableByAnyUser, reachableInstallation, systemUser } from "../../cluster/postgres.ts"

const isRoot = process.getuid?.() === 0
const cleanups: Array<() => Promise<void>> = []
afterAll(async () => {
  for (const cleanup of cleanups) await cleanup()
})

/** A folder of mode 700, as a home directory is. */
const privateFolder = async () => {
  const dir = await mkdtemp(join(tmpdir(), "private-checkout-"))
  await chmod(dir, 0o700)
  cleanups.push(() => rm(dir, { recursive: true, force: true }))
  return dir
}

/** Runs `file` as the postgres user when root (as this user otherwise); answers its output or the spawn error's code. */
const runAsServerUser = async (file: string, cwd: string): Promise<string> => {
  const user = isRoot ? await systemUser() : {}
  return new Promise((resolve) => {
    const child = spawn(file, [], { cwd, ...user })
    let output = ""
    child.stdout.on("data", (chunk: Buffer) => (output += chunk.toString("utf8")))
    child.once("error", (error: NodeJS.ErrnoException) => resolve(error.code ?? error.message))
    child.once("exit", () => resolve(output.trim()))
  })
}

describe("an installation inside a private folder", () => {
  it("is run from a copy every user can reach", async () => {
    const checkout = await privateFolder()
    const installed = join(checkout, "node_modules", "native")
    await mkdir(join(installed, "bin"), { recursive: true })
    await writeFile(join(installed, "bin", "initdb"), "#!/bin/sh\necho initdb ran\n", { mode: 0o755 })
    expect(await reachableByAnyUser(join(installed, "bin"))).toBe(false)
    if (isRoot) expect(await runAsServerUser(join(installed, "bin", "initdb"), tmpdir())).toBe("EACCES")

    const version = `test-${process.pid}-${Date.now()}`
    const runnable = await reachableInstallation(installed, version)
    cleanups.push(() => rm(runnable, { recursive: true, force: true }))
    expect(runnable).not.toBe(installed)
    expect(await reachableByAnyUser(join(runnable, "bin"))).toBe(true)
    // from a working directory that user cannot enter either
    expect(await runAsServerUser(join(runnable, "bin", "initdb"), checkout)).toBe("initdb ran")
    // made once: the next start finds it
    expect(await reachableInstallation(installed, version)).toBe(runnable)
  })

  it("is used in place when every user can reach it", async () => {
    const open = await mkdtemp(join(tmpdir(), "open-checkout-"))
    cleanups.push(() => rm(open, { recursive: true, force: true }))
    await chmod(open, 0o755)
    await mkdir(join(open, "bin"), { mode: 0o755 })
    expect(await reachableInstallation(open, "unused")).toBe(open)
  })
})
