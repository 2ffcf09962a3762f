/**
 * The gateway configuration: what the process listens on, which apps it fronts
 * and how each app is reached, plus cluster, logging, tracing and resource
 * limits.
 *
 * Settings come from an optional JSON file (`GATEWAY_CONFIG=path`) and from
 * environment variables; for any setting present in both, the environment wins.
 * Loading is a pure function of (environment, file reader, hostname) so that it
 * can be tested without touching the process, and it collects every problem
 * instead of stopping at the first one: an operator fixing a deployment should
 * see the whole list in one start attempt. The `GatewayConfig` service exposes
 * the result to the rest of the gateway; `makeGatewayConfig`/`makeAppConfig`
 * build configs directly for tests.
 *
 * Secrets (app secrets, the admin token, the database URL) are wrapped in
 * `Redacted` as soon as they are read, and no problem message quotes them.
 */
import { defaultPaths } from "../contract/Endpoints.ts"
import { readFileSync } from "node:fs"
import { hostname as osHostname } from "node:os"
import { Context, Effect, Layer, Redacted, Result, Schema, SchemaIssue, SchemaTransformation } from "effect"
import { formatJsonPath } from "../protocol/json.ts"
import { ConfigError, type ConfigProblem } from "./errors.ts"

export {
  CONFIG_ERROR_EXIT_CODE,
  ConfigError,
  ConfigProblem,
  formatConfigProblem,
  reportConfigErrorAndExit
} from "./errors.ts"

// -----------------------------------------------------------------------------
// Resolved configuration
// -----------------------------------------------------------------------------

const LOG_LEVELS = ["trace", "debug", "info", "warn", "error"] as const
export type LogLevel = typeof LOG_LEVELS[number]

const LOG_FORMATS = ["json", "pretty"] as const
export type LogFormat = typeof LOG_FORMATS[number]

/** Upstream call timeouts of one app, in milliseconds. */
export interface AppTimeouts {
  readonly authMs: number
  readonly messageMs: number
  readonly schemaMs: number
}

/** Admission limits of one app. */
export interface AppRateLimits {
  /** New WebSocket connections accepted per client IP per minute. */
  readonly connectionsPerIpPerMinute: number
  /** Auth calls to the app in flight at once. */
  readonly maxConcurrentAuth: number
}

/** One app (tenant) behind the gateway. */
export interface AppConfig {
  readonly id: string
  readonly schemaEndpoint: string
  readonly authEndpoint: string
  readonly messageEndpoint: string
  /** `undefined` when the app turned lifecycle notifications off (`"none"`). */
  readonly notifyEndpoint: string | undefined
  /** Signs outbound calls and authenticates the app's calls to the server API. */
  readonly secret: Redacted.Redacted<string> | undefined
  /**
   * Browser origins allowed to connect, as serialized origins
   * (`scheme://host[:port]`, lowercase, default port omitted) so they compare
   * equal to `Origin` headers. Already resolved: the app's own list, else the
   * global list, else `undefined` = any origin.
   */
  readonly allowedOrigins: ReadonlyArray<string> | undefined
  readonly timeouts: AppTimeouts
  readonly rateLimits: AppRateLimits
}

/** Process-wide resource limits. */
export interface GatewayLimits {
  readonly maxConnections: number
  readonly maxChannelsPerConnection: number
  readonly maxFrameBytes: number
  readonly maxOutboxBytes: number
  readonly idleTimeoutMs: number
  /** On SIGTERM, connections are closed (1012) spread over this window. */
  readonly drainWindowMs: number
  /** Joins and leaves per connection: refilled per second, and the burst a connection may spend at once. */
  readonly joinsPerSecond: number
  readonly joinBurst: number
  /**
   * Leaves and re-joins per connection: refilled per second, and the burst;
   * past it a join is refused, so that a join/leave flood cannot become a
   * presence-diff or notification flood.
   */
  readonly channelChurnPerSecond: number
  readonly channelChurnBurst: number
  /** Frames of any kind per connection: refilled per second, and the burst; past it the connection is closed (1008). */
  readonly framesPerSecond: number
  readonly frameBurst: number
  /** Bytes of one connection's pushes waiting for the app. */
  readonly maxPushBytesInFlight: number
  /** Pushes of all of one app's connections on this node waiting for the app, by count and by bytes. */
  readonly maxAppPushesInFlight: number
  readonly maxAppPushBytesInFlight: number
  /** How long a new TCP connection may take to send its first request head. */
  readonly requestHeadTimeoutMs: number
  /** TCP connections still sending their first request head at once; more are dropped. */
  readonly maxPendingRequestHeads: number
  /** Restarts of supervised background work tolerated within `supervisorPeriodMs`; one more restarts the node. */
  readonly supervisorMaxRestarts: number
  readonly supervisorPeriodMs: number
  /** The longest any call to a cluster entity waits for its answer. */
  readonly entityCallTimeoutMs: number
  /** Cluster entities resident on this node at most (effect/cluster's `maxResidentEntities`). */
  readonly maxEntities: number
  /** Topics on which one app's clients connected to this node have presences, at most. */
  readonly maxPresenceTopicsPerApp: number
  /** A Topic or Client entity that gets no message for this long is released. */
  readonly entityIdleMs: number
}

/** How this node reaches and admits the other nodes (used only with `databaseUrl`). */
export interface ClusterConfig {
  /** Address other nodes use to reach this node; it listens there too. */
  readonly host: string
  readonly port: number
  /** Authenticates every connection between nodes; required with `databaseUrl`. */
  readonly secret: Redacted.Redacted<string> | undefined
  /** PEM files for TLS between nodes; `undefined` = plain TCP. */
  readonly tls: ClusterTls | undefined
  /** Whether the retired `CLUSTER_NODES` list was given (logged once as ignored). */
  readonly staticNodeListIgnored: boolean
}

export interface ClusterTls {
  readonly certFile: string
  readonly keyFile: string
  /** Peers' certificates must chain to it; `undefined` = the system's CAs. */
  readonly caFile: string | undefined
}

export interface GatewayConfigShape {
  /** HTTP + WebSocket listener; port 0 lets the OS pick one. */
  readonly port: number
  readonly host: string
  /** This node's name in logs, metrics and the cluster. */
  readonly nodeName: string
  /** Configured apps; empty in demo mode. */
  readonly apps: ReadonlyArray<AppConfig>
  /** Set when no app is configured: the caller starts the bundled demo app on this port. */
  readonly demo: { readonly port: number } | undefined
  /** Global browser origin list (see `AppConfig.allowedOrigins`); `undefined` = any. */
  readonly allowedOrigins: ReadonlyArray<string> | undefined
  /**
   * Whether a load balancer in front sets `X-Forwarded-For`: the client's
   * address is then the last entry it appended (per-IP limits, `remote_ip`).
   */
  readonly trustProxy: boolean
  /** Bearer token of the admin API; `undefined` = admin API off. */
  readonly adminToken: Redacted.Redacted<string> | undefined
  /** PostgreSQL for cluster storage; `undefined` = single node, in memory. */
  readonly databaseUrl: Redacted.Redacted<string> | undefined
  readonly cluster: ClusterConfig
  readonly log: { readonly level: LogLevel; readonly format: LogFormat }
  /** OTLP/HTTP traces endpoint; `undefined` = tracing off. */
  readonly otlpEndpoint: string | undefined
  /** Whether metrics are counted and served at `/metrics` (on unless turned off). */
  readonly metrics: boolean
  readonly limits: GatewayLimits
}

const DEFAULT_PORT = 4000
const DEFAULT_HOST = "0.0.0.0"
const DEFAULT_CLUSTER_PORT = 34431

export const DEFAULT_TIMEOUTS: AppTimeouts = { authMs: 5000, messageMs: 8000, schemaMs: 5000 }

export const DEFAULT_RATE_LIMITS: AppRateLimits = { connectionsPerIpPerMinute: 120, maxConcurrentAuth: 64 }

export const DEFAULT_LIMITS: GatewayLimits = {
  maxConnections: 15000,
  maxChannelsPerConnection: 100,
  maxFrameBytes: 1048576,
  maxOutboxBytes: 4194304,
  idleTimeoutMs: 60000,
  drainWindowMs: 10000,
  joinsPerSecond: 20,
  joinBurst: 50,
  channelChurnPerSecond: 1,
  channelChurnBurst: 10,
  framesPerSecond: 1_000,
  frameBurst: 2_000,
  maxPushBytesInFlight: 16 * 1024 * 1024,
  maxAppPushesInFlight: 10_000,
  maxAppPushBytesInFlight: 256 * 1024 * 1024,
  requestHeadTimeoutMs: 10_000,
  maxPendingRequestHeads: 1_000,
  supervisorMaxRestarts: 10,
  supervisorPeriodMs: 60000,
  entityCallTimeoutMs: 5000,
  maxEntities: 10000,
  maxPresenceTopicsPerApp: 1000,
  entityIdleMs: 120000
}

/** Paths appended to an app's base URL (`api`) when an endpoint is not set explicitly. */
const ENDPOINT_PATHS = {
  schemaEndpoint: defaultPaths.schema,
  authEndpoint: defaultPaths.auth,
  messageEndpoint: defaultPaths.message,
  notifyEndpoint: defaultPaths.notify
} as const

type EndpointKey = keyof typeof ENDPOINT_PATHS

const ENDPOINTS: ReadonlyArray<{ readonly key: EndpointKey; readonly envSuffix: string; readonly optional: boolean }> = [
  { key: "schemaEndpoint", envSuffix: "SCHEMA_ENDPOINT", optional: false },
  { key: "authEndpoint", envSuffix: "AUTH_ENDPOINT", optional: false },
  { key: "messageEndpoint", envSuffix: "MESSAGE_ENDPOINT", optional: false },
  // without a base URL and without this one, notifications are simply off
  { key: "notifyEndpoint", envSuffix: "NOTIFY_ENDPOINT", optional: true }
]

const REQUIRED_ENDPOINTS = ENDPOINTS.filter((endpoint) => !endpoint.optional)

/** The environment variable prefix of an app: `solo-unicorn` → `SOLO_UNICORN`. */
export const appEnvPrefix = (appId: string): string => appId.toUpperCase().replaceAll("-", "_")

/**
 * `api` + `path`, keeping any path prefix of `api` (`https://x/v1/` →
 * `https://x/v1/messages`).
 */
const endpointUrl = (api: string, path: string): string => {
  const url = new URL(api)
  url.pathname = url.pathname.replace(/\/+$/, "") + path
  return url.href
}

// -----------------------------------------------------------------------------
// Value schemas (shared by the file and the environment)
// -----------------------------------------------------------------------------

const quote = (value: string): string => JSON.stringify(value)

// Only for messages: a URL that fails validation may still carry credentials.
export const withoutCredentials = (url: string): string => url.replace(/\/\/[^/@]*@/, "//***@")

const APP_ID_PATTERN = /^[a-z0-9_-]{1,64}$/

const AppId = Schema.String.check(
  Schema.makeFilter((id: string) =>
    APP_ID_PATTERN.test(id) ||
    `invalid app id ${quote(id)} (expected 1 to 64 lowercase letters, digits, "-" or "_")`
  )
)

const isHttpProtocol = (url: URL): boolean => url.protocol === "http:" || url.protocol === "https:"

/** The notify endpoint's value that turns lifecycle notifications off for an app. */
const NOTIFY_OFF = "none"

const HttpUrl = Schema.String.check(Schema.makeFilter((value: string) => {
  if (!URL.canParse(value)) return `invalid URL ${quote(withoutCredentials(value))}`
  if (!isHttpProtocol(new URL(value))) {
    return `invalid URL ${quote(withoutCredentials(value))} (only http:// and https:// are supported)`
  }
  return undefined
}))

const Origin = Schema.String.check(Schema.makeFilter((value: string) => {
  const problem = `invalid origin ${quote(withoutCredentials(value))} (expected http(s)://host[:port])`
  if (!URL.canParse(value)) return problem
  const url = new URL(value)
  return (isHttpProtocol(url) && url.username === "" && url.password === "" && url.pathname === "/" &&
    url.search === "" && url.hash === "") || problem
})).pipe(
  // Browsers send the serialized origin (lowercase host, no default port).
  Schema.decodeTo(
    Schema.String,
    SchemaTransformation.transform({ decode: (value: string) => new URL(value).origin, encode: (value) => value })
  )
)

const OriginList = Schema.Array(Origin).check(
  Schema.makeFilter((origins: ReadonlyArray<string>) =>
    origins.length > 0 || "lists no origin (leave it unset to allow any origin)"
  )
)

const integer = (minimum: number, maximum: number, expected: string) =>
  Schema.Number.check(
    Schema.makeFilter((n: number) =>
      (Number.isInteger(n) && n >= minimum && n <= maximum) || `expected ${expected}, got ${n}`
    )
  )

const ListenPort = integer(0, 65535, "a port number from 0 to 65535")
const Port = integer(1, 65535, "a port number from 1 to 65535")
const Count = integer(1, Number.MAX_SAFE_INTEGER, "a positive integer")
// Durations feed timers, and Node timers overflow above 2^31-1 ms.
const Millis = integer(1, 2_147_483_647, "a duration in milliseconds from 1 to 2147483647")
// Nodes re-send what entities hold every 30 s: an entity idle for less than two of those could lose it between them.
const EntityIdleMillis = integer(60_000, 2_147_483_647, "a duration in milliseconds from 60000 to 2147483647")

const name = (what: string) =>
  Schema.String.check(
    Schema.makeFilter((value: string) =>
      /^\S{1,255}$/.test(value) || `invalid ${what} ${quote(value)} (expected 1 to 255 characters, no whitespace)`
    )
  )

const HostName = name("host")
const NodeName = name("node name")

const oneOf = <const Values extends ReadonlyArray<string>>(values: Values, what: string) =>
  Schema.String.check(
    Schema.makeFilter((value: string) =>
      values.includes(value) || `unknown ${what} ${quote(value)} (expected one of ${values.join(", ")})`
    )
  ).pipe(Schema.decodeTo(Schema.Literals(values), SchemaTransformation.passthroughSupertype()))

const LogLevelValue = oneOf(LOG_LEVELS, "log level")
const LogFormatValue = oneOf(LOG_FORMATS, "log format")

// Secret messages never include the value.
const Secret = Schema.RedactedFromValue(
  Schema.String.check(Schema.makeFilter((value: string) => value.length > 0 || "must not be empty"))
)

/** An HMAC key shorter than this is guessable offline from one signed call (bytes, not characters). */
const MIN_SECRET_BYTES = 32

/** A shared secret that keys an HMAC: at least `MIN_SECRET_BYTES`; the value is never shown. */
const HmacSecret = Schema.RedactedFromValue(
  Schema.String.check(Schema.makeFilter((value: string) => {
    const bytes = Buffer.byteLength(value)
    return value.length === 0 ? "must not be empty"
      : bytes >= MIN_SECRET_BYTES || `too short: ${bytes} bytes, at least ${MIN_SECRET_BYTES} needed (e.g. openssl rand -hex 32)`
  }))
)

const FilePath = Schema.NonEmptyString

const DatabaseUrl = Schema.RedactedFromValue(Schema.String.check(Schema.makeFilter((value: string) => {
  if (!URL.canParse(value)) {
    return "invalid URL, expected postgres://user:password@host:port/database (value not shown: it may hold a password)"
  }
  const protocol = new URL(value).protocol
  return protocol === "postgres:" || protocol === "postgresql:" ||
    `unsupported scheme ${quote(protocol)} (expected postgres:// or postgresql://)`
})))

// -----------------------------------------------------------------------------
// The config file
// -----------------------------------------------------------------------------

const FileTimeouts = Schema.Struct({
  authMs: Schema.optionalKey(Millis),
  messageMs: Schema.optionalKey(Millis),
  schemaMs: Schema.optionalKey(Millis)
})

const FileRateLimits = Schema.Struct({
  connectionsPerIpPerMinute: Schema.optionalKey(Count),
  maxConcurrentAuth: Schema.optionalKey(Count)
})

/** A notify endpoint, or "none": the app wants no notifications. */
const NotifyEndpoint = Schema.Union([Schema.Literal(NOTIFY_OFF), HttpUrl])

const FileApp = Schema.Struct({
  id: AppId,
  api: Schema.optionalKey(HttpUrl),
  schemaEndpoint: Schema.optionalKey(HttpUrl),
  authEndpoint: Schema.optionalKey(HttpUrl),
  messageEndpoint: Schema.optionalKey(HttpUrl),
  notifyEndpoint: Schema.optionalKey(NotifyEndpoint),
  secret: Schema.optionalKey(HmacSecret),
  allowedOrigins: Schema.optionalKey(OriginList),
  rateLimits: Schema.optionalKey(FileRateLimits),
  timeouts: Schema.optionalKey(FileTimeouts)
})

const FileLimits = Schema.Struct({
  maxConnections: Schema.optionalKey(Count),
  maxChannelsPerConnection: Schema.optionalKey(Count),
  maxFrameBytes: Schema.optionalKey(Count),
  maxOutboxBytes: Schema.optionalKey(Count),
  idleTimeoutMs: Schema.optionalKey(Millis),
  drainWindowMs: Schema.optionalKey(Millis),
  joinsPerSecond: Schema.optionalKey(Count),
  joinBurst: Schema.optionalKey(Count),
  channelChurnPerSecond: Schema.optionalKey(Count),
  channelChurnBurst: Schema.optionalKey(Count),
  framesPerSecond: Schema.optionalKey(Count),
  frameBurst: Schema.optionalKey(Count),
  maxPushBytesInFlight: Schema.optionalKey(Count),
  maxAppPushesInFlight: Schema.optionalKey(Count),
  maxAppPushBytesInFlight: Schema.optionalKey(Count),
  requestHeadTimeoutMs: Schema.optionalKey(Millis),
  maxPendingRequestHeads: Schema.optionalKey(Count),
  supervisorMaxRestarts: Schema.optionalKey(Count),
  supervisorPeriodMs: Schema.optionalKey(Millis),
  entityCallTimeoutMs: Schema.optionalKey(Millis),
  maxEntities: Schema.optionalKey(Count),
  maxPresenceTopicsPerApp: Schema.optionalKey(Count),
  entityIdleMs: Schema.optionalKey(EntityIdleMillis)
})

/** The JSON config file named by `GATEWAY_CONFIG`. Unknown keys are rejected. */
export const GatewayConfigFile = Schema.Struct({
  port: Schema.optionalKey(ListenPort),
  host: Schema.optionalKey(HostName),
  nodeName: Schema.optionalKey(NodeName),
  allowedOrigins: Schema.optionalKey(OriginList),
  trustProxy: Schema.optionalKey(Schema.Boolean),
  adminToken: Schema.optionalKey(Secret),
  databaseUrl: Schema.optionalKey(DatabaseUrl),
  clusterHost: Schema.optionalKey(HostName),
  clusterPort: Schema.optionalKey(Port),
  /** Retired: nodes find each other in PostgreSQL; accepted and ignored so that old files still load. */
  clusterNodes: Schema.optionalKey(Schema.Array(NodeName)),
  clusterSecret: Schema.optionalKey(HmacSecret),
  clusterTlsCert: Schema.optionalKey(FilePath),
  clusterTlsKey: Schema.optionalKey(FilePath),
  clusterTlsCa: Schema.optionalKey(FilePath),
  logLevel: Schema.optionalKey(LogLevelValue),
  logFormat: Schema.optionalKey(LogFormatValue),
  otlpEndpoint: Schema.optionalKey(HttpUrl),
  metrics: Schema.optionalKey(Schema.Boolean),
  limits: Schema.optionalKey(FileLimits),
  apps: Schema.optionalKey(Schema.Array(FileApp))
})
/** The JSON shape of the config file. */
export type GatewayConfigFile = typeof GatewayConfigFile.Encoded

type FileConfig = typeof GatewayConfigFile.Type
type FileAppConfig = typeof FileApp.Type

// What the cross-setting checks need to know about the file even when it does
// not fully decode: which apps it declares and which of their keys are present.
const PresentKey = Schema.optionalKey(Schema.Unknown)
const FileView = Schema.Struct({ apps: Schema.optionalKey(Schema.Array(Schema.Unknown)) })
const FileAppView = Schema.Struct({
  id: PresentKey,
  api: PresentKey,
  schemaEndpoint: PresentKey,
  authEndpoint: PresentKey,
  messageEndpoint: PresentKey,
  notifyEndpoint: PresentKey
})
type FileAppView = typeof FileAppView.Type

// -----------------------------------------------------------------------------
// Environment values
// -----------------------------------------------------------------------------

const splitList = (value: string): ReadonlyArray<string> =>
  value.split(",").map((item) => item.trim()).filter((item) => item !== "")

const Digits = Schema.String.check(
  Schema.makeFilter((value: string) => /^[0-9]+$/.test(value) || `expected a whole number, got ${quote(value)}`)
)

const integerFromEnv = (target: typeof Count) => Digits.pipe(Schema.decodeTo(target, SchemaTransformation.numberFromString))

const OriginListFromEnv = Schema.String.pipe(
  Schema.decodeTo(
    OriginList,
    SchemaTransformation.transform({ decode: splitList, encode: (origins) => origins.join(",") })
  )
)

const BooleanFromEnv = Schema.Literals(["true", "false", "1", "0"]).pipe(
  Schema.decodeTo(
    Schema.Boolean,
    SchemaTransformation.transform({ decode: (value) => value === "true" || value === "1", encode: (value) => String(value) as "true" | "false" })
  )
)

const lowerCased = <S extends Schema.Codec<unknown, string>>(schema: S) =>
  Schema.String.pipe(Schema.decodeTo(schema, SchemaTransformation.toLowerCase()))

// -----------------------------------------------------------------------------
// Loading
// -----------------------------------------------------------------------------

const PARSE_OPTIONS = { errors: "all", onExcessProperty: "error" } as const

const lowerFirst = (text: string): string => text.charAt(0).toLowerCase() + text.slice(1)

const formatIssues = SchemaIssue.makeFormatterStandardSchemaV1({
  leafHook: (issue) => {
    switch (issue._tag) {
      case "UnexpectedKey":
        return "unknown key"
      case "MissingKey":
        return "missing"
      default:
        return lowerFirst(SchemaIssue.defaultLeafHook(issue))
    }
  }
})

const issueProblems = (
  issue: SchemaIssue.Issue,
  keyOf: (path: string) => string,
  messageOf: (message: string) => string = (message) => message
): Array<ConfigProblem> =>
  formatIssues(issue).issues.map((item) => {
    const path = formatJsonPath(item.path ?? [])
    return { key: keyOf(path), message: messageOf(item.message) }
  })

const FILE_VARIABLE = "GATEWAY_CONFIG"
const fileKey = (path: string): string => path === "" ? FILE_VARIABLE : `${FILE_VARIABLE} ${path}`

type Environment = Readonly<Record<string, string | undefined>>

const makeEnvReader = (env: Environment, problems: Array<ConfigProblem>) => {
  // Empty values count as unset: `PORT=` in a compose file means "default".
  const raw = (name: string): string | undefined => {
    const value = env[name]?.trim()
    return value === undefined || value === "" ? undefined : value
  }
  const read = <T>(name: string, schema: Schema.Codec<T, string>): T | undefined => {
    const value = raw(name)
    if (value === undefined) return undefined
    const result = Schema.decodeUnknownResult(schema)(value, PARSE_OPTIONS)
    if (Result.isSuccess(result)) return result.success
    // Messages of list items quote the item, so the item index adds nothing.
    problems.push(...issueProblems(result.failure.issue, () => name))
    return undefined
  }
  return { raw, isSet: (name: string) => raw(name) !== undefined, read }
}

interface LoadedFile {
  /** `GATEWAY_CONFIG` is set but the file cannot be read or is not JSON. */
  readonly unusable: boolean
  /** The decoded file, when it decoded without problems. */
  readonly config: FileConfig | undefined
  /** Every entry of `apps`, decoded or not. */
  readonly apps: ReadonlyArray<unknown>
}

const NO_FILE: LoadedFile = { unusable: false, config: undefined, apps: [] }
const UNUSABLE_FILE: LoadedFile = { ...NO_FILE, unusable: true }

const loadFile = (
  path: string | undefined,
  readFile: (path: string) => string,
  problems: Array<ConfigProblem>
): LoadedFile => {
  if (path === undefined) return NO_FILE
  let text: string
  try {
    text = readFile(path)
  } catch (cause) {
    problems.push({ key: FILE_VARIABLE, message: `cannot read ${quote(path)}: ${errorMessage(cause)}` })
    return UNUSABLE_FILE
  }
  let json: unknown
  try {
    json = JSON.parse(text)
  } catch (cause) {
    problems.push({ key: FILE_VARIABLE, message: `invalid JSON in ${quote(path)}: ${jsonErrorMessage(cause)}` })
    return UNUSABLE_FILE
  }
  const decoded = Schema.decodeUnknownResult(GatewayConfigFile)(json, PARSE_OPTIONS)
  if (Result.isFailure(decoded)) problems.push(...issueProblems(decoded.failure.issue, fileKey))
  const view = Schema.decodeUnknownResult(FileView)(json)
  return {
    unusable: false,
    config: Result.isSuccess(decoded) ? decoded.success : undefined,
    apps: Result.isSuccess(view) ? view.success.apps ?? [] : []
  }
}

const errorMessage = (cause: unknown): string => cause instanceof Error ? cause.message : String(cause)

// V8 quotes the start of the input in some JSON errors ('Unexpected token ...,
// "{"secret": ..." is not valid JSON'); the file may hold secrets, so keep
// only the part that says what and where.
const jsonErrorMessage = (cause: unknown): string =>
  errorMessage(cause).replace(/, ".*" is not valid JSON$/s, "")

/** An app found in the file or in `GATEWAY_APPS`, before its settings are merged. */
interface DeclaredApp {
  readonly id: string
  /** Index in the file's `apps`; `undefined` for apps configured by environment alone. */
  readonly fileIndex: number | undefined
  readonly fileView: FileAppView | undefined
  readonly fileConfig: FileAppConfig | undefined
}

const isAppId = Schema.is(AppId)

const declaredApps = (
  file: LoadedFile,
  envAppIds: ReadonlyArray<string>,
  problems: Array<ConfigProblem>
): ReadonlyArray<DeclaredApp> => {
  const apps: Array<DeclaredApp> = []
  const byPrefix = new Map<string, DeclaredApp>()
  const declare = (app: DeclaredApp, key: string) => {
    const prefix = appEnvPrefix(app.id)
    const other = byPrefix.get(prefix)
    if (other === undefined) {
      byPrefix.set(prefix, app)
      apps.push(app)
    } else if (other.id === app.id) {
      // GATEWAY_APPS naming an app that the file also declares: one app.
      if (app.fileIndex !== undefined) {
        problems.push({ key, message: `duplicate app id ${quote(app.id)} (already used by apps[${other.fileIndex}])` })
      }
    } else {
      problems.push({
        key,
        message: `app ids ${quote(other.id)} and ${quote(app.id)} would share the environment variables ${prefix}_*`
      })
    }
  }
  file.apps.forEach((entry, index) => {
    const view = Schema.decodeUnknownResult(FileAppView)(entry)
    // Entries without a valid id are already reported by the file decoding.
    if (Result.isFailure(view) || !isAppId(view.success.id)) return
    declare({
      id: view.success.id,
      fileIndex: index,
      fileView: view.success,
      fileConfig: file.config?.apps?.[index]
    }, fileKey(`apps[${index}].id`))
  })
  for (const id of envAppIds) {
    declare({ id, fileIndex: undefined, fileView: undefined, fileConfig: undefined }, "GATEWAY_APPS")
  }
  return apps
}

/**
 * Reads the configuration from `env` and, when `GATEWAY_CONFIG` names one, the
 * JSON file read with `readFile` (which throws when it cannot read). `hostname`
 * is the default node name. Fails with every problem found.
 *
 * The file is read when the effect runs.
 */
export const loadGatewayConfig = (
  env: Environment,
  readFile: (path: string) => string,
  hostname: string
): Effect.Effect<GatewayConfigShape, ConfigError> =>
  Effect.suspend(() => Effect.fromResult(loadGatewayConfigResult(env, readFile, hostname)))

/** {@link loadGatewayConfig}, run synchronously. */
export const loadGatewayConfigResult = (
  env: Environment,
  readFile: (path: string) => string,
  hostname: string
): Result.Result<GatewayConfigShape, ConfigError> => {
  const problems: Array<ConfigProblem> = []
  const envReader = makeEnvReader(env, problems)
  const { read, isSet } = envReader

  const file = loadFile(envReader.raw(FILE_VARIABLE), readFile, problems)
  const fileConfig = file.config

  // Ids listed in GATEWAY_APPS; invalid ones are reported and left out.
  const envAppIds: Array<string> = []
  let envAppEntries = 0
  const appList = envReader.raw("GATEWAY_APPS")
  if (appList !== undefined) {
    for (const id of splitList(appList)) {
      envAppEntries++
      const decoded = Schema.decodeUnknownResult(AppId)(id)
      if (Result.isSuccess(decoded)) envAppIds.push(decoded.success)
      else problems.push(...issueProblems(decoded.failure.issue, () => "GATEWAY_APPS"))
    }
  }

  const port = read("PORT", integerFromEnv(ListenPort)) ?? fileConfig?.port ?? DEFAULT_PORT
  const host = read("HOST", HostName) ?? fileConfig?.host ?? DEFAULT_HOST
  let nodeName = read("NODE_NAME", NodeName) ?? fileConfig?.nodeName
  if (nodeName === undefined && !isSet("NODE_NAME") && fileConfig?.nodeName === undefined) {
    const fromHostname = Schema.decodeUnknownResult(NodeName)(hostname)
    if (Result.isSuccess(fromHostname)) {
      nodeName = fromHostname.success
    } else {
      problems.push(...issueProblems(
        fromHostname.failure.issue,
        () => "NODE_NAME",
        (message) => `not set, and the hostname cannot be used: ${message}`
      ))
    }
  }
  const globalOrigins = read("ALLOWED_ORIGINS", OriginListFromEnv) ?? fileConfig?.allowedOrigins
  const trustProxy = read("TRUST_PROXY", lowerCased(BooleanFromEnv)) ?? fileConfig?.trustProxy ?? false
  const adminToken = read("GATEWAY_ADMIN_TOKEN", Secret) ?? fileConfig?.adminToken
  const databaseUrl = read("DATABASE_URL", DatabaseUrl) ?? fileConfig?.databaseUrl
  const clusterHost = read("CLUSTER_HOST", HostName) ?? fileConfig?.clusterHost
  const clusterPort = read("CLUSTER_PORT", integerFromEnv(Port)) ?? fileConfig?.clusterPort ?? DEFAULT_CLUSTER_PORT
  const staticNodeListIgnored = isSet("CLUSTER_NODES") || fileConfig?.clusterNodes !== undefined
  const clusterSecret = read("CLUSTER_SECRET", HmacSecret) ?? fileConfig?.clusterSecret
  if (databaseUrl !== undefined && clusterSecret === undefined && !isSet("CLUSTER_SECRET")) {
    problems.push({
      key: "CLUSTER_SECRET",
      message: `required with DATABASE_URL: at least ${MIN_SECRET_BYTES} bytes, the same on every node (openssl rand -hex 32)`
    })
  }
  const tlsCert = read("CLUSTER_TLS_CERT", FilePath) ?? fileConfig?.clusterTlsCert
  const tlsKey = read("CLUSTER_TLS_KEY", FilePath) ?? fileConfig?.clusterTlsKey
  const tlsCa = read("CLUSTER_TLS_CA", FilePath) ?? fileConfig?.clusterTlsCa
  if ((tlsCert === undefined) !== (tlsKey === undefined)) {
    problems.push({
      key: tlsCert === undefined ? "CLUSTER_TLS_CERT" : "CLUSTER_TLS_KEY",
      message: "CLUSTER_TLS_CERT and CLUSTER_TLS_KEY go together (a PEM certificate and its key)"
    })
  }
  if (tlsCa !== undefined && tlsCert === undefined) {
    problems.push({ key: "CLUSTER_TLS_CA", message: "needs CLUSTER_TLS_CERT and CLUSTER_TLS_KEY" })
  }
  const logLevel = read("LOG_LEVEL", lowerCased(LogLevelValue)) ?? fileConfig?.logLevel ?? "info"
  const logFormat = read("LOG_FORMAT", lowerCased(LogFormatValue)) ?? fileConfig?.logFormat ?? "json"
  const otlpEndpoint = read("OTEL_EXPORTER_OTLP_ENDPOINT", HttpUrl) ?? fileConfig?.otlpEndpoint
  const metrics = read("METRICS", lowerCased(BooleanFromEnv)) ?? fileConfig?.metrics ?? true
  const fileLimits = fileConfig?.limits
  /** A limit from its variable, else the file's `limits`, else its default. */
  const limit = (variable: string, key: keyof GatewayLimits, schema: typeof Count) =>
    read(variable, integerFromEnv(schema)) ?? fileLimits?.[key] ?? DEFAULT_LIMITS[key]
  const limits: GatewayLimits = {
    maxConnections: limit("MAX_CONNECTIONS", "maxConnections", Count),
    maxChannelsPerConnection: limit("MAX_CHANNELS_PER_CONNECTION", "maxChannelsPerConnection", Count),
    maxFrameBytes: limit("MAX_FRAME_BYTES", "maxFrameBytes", Count),
    maxOutboxBytes: limit("MAX_OUTBOX_BYTES", "maxOutboxBytes", Count),
    idleTimeoutMs: limit("IDLE_TIMEOUT_MS", "idleTimeoutMs", Millis),
    drainWindowMs: limit("DRAIN_WINDOW_MS", "drainWindowMs", Millis),
    joinsPerSecond: limit("JOINS_PER_SECOND", "joinsPerSecond", Count),
    joinBurst: limit("JOIN_BURST", "joinBurst", Count),
    channelChurnPerSecond: limit("CHANNEL_CHURN_PER_SECOND", "channelChurnPerSecond", Count),
    channelChurnBurst: limit("CHANNEL_CHURN_BURST", "channelChurnBurst", Count),
    framesPerSecond: limit("FRAMES_PER_SECOND", "framesPerSecond", Count),
    frameBurst: limit("FRAME_BURST", "frameBurst", Count),
    maxPushBytesInFlight: limit("MAX_PUSH_BYTES_IN_FLIGHT", "maxPushBytesInFlight", Count),
    maxAppPushesInFlight: limit("MAX_APP_PUSHES_IN_FLIGHT", "maxAppPushesInFlight", Count),
    maxAppPushBytesInFlight: limit("MAX_APP_PUSH_BYTES_IN_FLIGHT", "maxAppPushBytesInFlight", Count),
    requestHeadTimeoutMs: limit("REQUEST_HEAD_TIMEOUT_MS", "requestHeadTimeoutMs", Millis),
    maxPendingRequestHeads: limit("MAX_PENDING_REQUEST_HEADS", "maxPendingRequestHeads", Count),
    supervisorMaxRestarts: limit("SUPERVISOR_MAX_RESTARTS", "supervisorMaxRestarts", Count),
    supervisorPeriodMs: limit("SUPERVISOR_PERIOD_MS", "supervisorPeriodMs", Millis),
    entityCallTimeoutMs: limit("ENTITY_CALL_TIMEOUT_MS", "entityCallTimeoutMs", Millis),
    maxEntities: limit("MAX_ENTITIES", "maxEntities", Count),
    maxPresenceTopicsPerApp: limit("MAX_PRESENCE_TOPICS_PER_APP", "maxPresenceTopicsPerApp", Count),
    entityIdleMs: limit("ENTITY_IDLE_MS", "entityIdleMs", EntityIdleMillis)
  }
  if (limits.maxPresenceTopicsPerApp > limits.maxEntities) {
    problems.push({
      key: isSet("MAX_PRESENCE_TOPICS_PER_APP") ? "MAX_PRESENCE_TOPICS_PER_APP" : "GATEWAY_CONFIG limits.maxPresenceTopicsPerApp",
      message: `must not exceed MAX_ENTITIES (${limits.maxEntities}), got ${limits.maxPresenceTopicsPerApp}`
    })
  }

  const apps: Array<AppConfig> = []
  for (const declared of declaredApps(file, envAppIds, problems)) {
    const app = resolveApp(declared, envReader, globalOrigins, problems)
    if (app !== undefined) apps.push(app)
  }

  let demo: { readonly port: number } | undefined
  // An unusable file may well declare apps: no demo-mode checks then.
  if (!file.unusable && file.apps.length === 0 && envAppEntries === 0) {
    const explicit = read("DEMO_APP_PORT", integerFromEnv(ListenPort))
    // Port 0 asks the OS for a free port, for the demo app as well.
    const demoPort = explicit ?? (port === 0 ? 0 : port + 1)
    if (explicit === undefined && !isSet("DEMO_APP_PORT") && demoPort > 65535) {
      problems.push({
        key: "DEMO_APP_PORT",
        message: `not set, and its default PORT+1 (${demoPort}) is not a valid port`
      })
    } else if (demoPort !== 0 && demoPort === port) {
      problems.push({ key: "DEMO_APP_PORT", message: `must differ from PORT (${port})` })
    }
    demo = { port: demoPort }
  }

  if (problems.length > 0 || nodeName === undefined) {
    return Result.fail(new ConfigError({ problems }))
  }
  return Result.succeed({
    port,
    host,
    nodeName,
    apps,
    demo,
    allowedOrigins: globalOrigins,
    trustProxy,
    adminToken,
    databaseUrl,
    cluster: {
      host: clusterHost ?? nodeName,
      port: clusterPort,
      secret: clusterSecret,
      tls: tlsCert !== undefined && tlsKey !== undefined ? { certFile: tlsCert, keyFile: tlsKey, caFile: tlsCa } : undefined,
      staticNodeListIgnored
    },
    log: { level: logLevel, format: logFormat },
    otlpEndpoint,
    metrics,
    limits
  })
}

const resolveApp = (
  declared: DeclaredApp,
  envReader: ReturnType<typeof makeEnvReader>,
  globalOrigins: ReadonlyArray<string> | undefined,
  problems: Array<ConfigProblem>
): AppConfig | undefined => {
  const { read, isSet } = envReader
  const { fileConfig, fileIndex, fileView, id } = declared
  const prefix = appEnvPrefix(id)
  const inFile = (path: string) => fileKey(`apps[${fileIndex}].${path}`)

  const api = read(`${prefix}_API`, HttpUrl) ?? fileConfig?.api
  const hasApi = isSet(`${prefix}_API`) || fileView?.api !== undefined
  const endpoints: Partial<Record<EndpointKey, string>> = {}
  const missing: Array<(typeof ENDPOINTS)[number]> = []
  for (const endpoint of ENDPOINTS) {
    const variable = `${prefix}_${endpoint.envSuffix}`
    const explicit = read(variable, endpoint.key === "notifyEndpoint" ? NotifyEndpoint : HttpUrl) ??
      fileConfig?.[endpoint.key]
    if (explicit !== undefined) endpoints[endpoint.key] = explicit
    else if (api !== undefined) endpoints[endpoint.key] = endpointUrl(api, ENDPOINT_PATHS[endpoint.key])
    if (!endpoint.optional && !hasApi && !isSet(variable) && fileView?.[endpoint.key] === undefined) {
      missing.push(endpoint)
    }
  }
  if (missing.length === REQUIRED_ENDPOINTS.length) {
    problems.push(
      fileIndex === undefined
        ? {
          key: `${prefix}_API`,
          message: `missing: app ${quote(id)} is listed in GATEWAY_APPS but has no base URL ` +
            `(set ${prefix}_API, or all of ${REQUIRED_ENDPOINTS.map((e) => `${prefix}_${e.envSuffix}`).join(", ")})`
        }
        : {
          key: inFile("api"),
          message: `missing: app ${quote(id)} has no base URL ` +
            `(set "api" or every endpoint in the file, or ${prefix}_API)`
        }
    )
  } else {
    for (const endpoint of missing) {
      const variable = `${prefix}_${endpoint.envSuffix}`
      problems.push(
        fileIndex === undefined
          ? { key: variable, message: `missing (set it or ${prefix}_API)` }
          : {
            key: inFile(endpoint.key),
            message: `missing (set it or "api" in the file, or ${variable} or ${prefix}_API)`
          }
      )
    }
  }

  const secret = read(`${prefix}_SECRET`, HmacSecret) ?? fileConfig?.secret
  const allowedOrigins = read(`${prefix}_ALLOWED_ORIGINS`, OriginListFromEnv) ?? fileConfig?.allowedOrigins ??
    globalOrigins
  const { authEndpoint, messageEndpoint, notifyEndpoint, schemaEndpoint } = endpoints
  if (schemaEndpoint === undefined || authEndpoint === undefined || messageEndpoint === undefined) return undefined
  return {
    id,
    schemaEndpoint,
    authEndpoint,
    messageEndpoint,
    notifyEndpoint: notifyEndpoint === NOTIFY_OFF ? undefined : notifyEndpoint,
    secret,
    allowedOrigins,
    timeouts: { ...DEFAULT_TIMEOUTS, ...fileConfig?.timeouts },
    rateLimits: { ...DEFAULT_RATE_LIMITS, ...fileConfig?.rateLimits }
  }
}


const APP_ENTRY_KEY = fileKey("apps[0].")

/**
 * One app given as JSON (an entry of the config file's `apps`, or the body of
 * `PUT /admin/apps/:id`), decoded and resolved exactly as the loader does it,
 * without environment variables. Problems name keys relative to the entry
 * (`api`, `rateLimits.maxConcurrentAuth`).
 */
export const decodeAppConfig = (
  input: unknown,
  globalOrigins: ReadonlyArray<string> | undefined
): Result.Result<AppConfig, ConfigError> => {
  const problems: Array<ConfigProblem> = []
  const decoded = Schema.decodeUnknownResult(FileApp)(input, PARSE_OPTIONS)
  if (Result.isFailure(decoded)) {
    problems.push(...issueProblems(decoded.failure.issue, (path) => path === "" ? "app" : path))
    return Result.fail(new ConfigError({ problems }))
  }
  const view = Schema.decodeUnknownResult(FileAppView)(input)
  const app = resolveApp(
    {
      id: decoded.success.id,
      fileIndex: 0,
      fileView: Result.isSuccess(view) ? view.success : undefined,
      fileConfig: decoded.success
    },
    makeEnvReader({}, problems),
    globalOrigins,
    problems
  )
  if (problems.length > 0 || app === undefined) {
    const relative = problems.map((problem) => ({
      key: problem.key.startsWith(APP_ENTRY_KEY) ? problem.key.slice(APP_ENTRY_KEY.length) : problem.key,
      // the loader's hints name the file and environment variables, which do not apply here
      message: problem.message.replace(/ \(set .*\)$/, "")
    }))
    return Result.fail(new ConfigError({ problems: relative }))
  }
  return Result.succeed(app)
}

// -----------------------------------------------------------------------------
// Direct construction (tests, embedding)
// -----------------------------------------------------------------------------

const redact = (value: string | Redacted.Redacted<string> | undefined): Redacted.Redacted<string> | undefined =>
  value === undefined || Redacted.isRedacted(value) ? value : Redacted.make(value)

/** Input of {@link makeAppConfig}. */
export interface AppConfigInit {
  readonly id: string
  /** Base URL the endpoints default from; defaults to `http://127.0.0.1:4001`. */
  readonly api?: string
  readonly schemaEndpoint?: string
  readonly authEndpoint?: string
  readonly messageEndpoint?: string
  readonly notifyEndpoint?: string | undefined
  readonly secret?: string | Redacted.Redacted<string> | undefined
  readonly allowedOrigins?: ReadonlyArray<string> | undefined
  readonly timeouts?: Partial<AppTimeouts>
  readonly rateLimits?: Partial<AppRateLimits>
}

/**
 * Builds an `AppConfig` with every default filled in, endpoints derived from
 * `api` like the loader does. Nothing is validated.
 */
export const makeAppConfig = (init: AppConfigInit): AppConfig => {
  const api = init.api ?? "http://127.0.0.1:4001"
  return {
    id: init.id,
    schemaEndpoint: init.schemaEndpoint ?? endpointUrl(api, ENDPOINT_PATHS.schemaEndpoint),
    authEndpoint: init.authEndpoint ?? endpointUrl(api, ENDPOINT_PATHS.authEndpoint),
    messageEndpoint: init.messageEndpoint ?? endpointUrl(api, ENDPOINT_PATHS.messageEndpoint),
    notifyEndpoint: "notifyEndpoint" in init ? init.notifyEndpoint : endpointUrl(api, ENDPOINT_PATHS.notifyEndpoint),
    secret: redact(init.secret),
    allowedOrigins: init.allowedOrigins,
    timeouts: { ...DEFAULT_TIMEOUTS, ...init.timeouts },
    rateLimits: { ...DEFAULT_RATE_LIMITS, ...init.rateLimits }
  }
}

/** Input of {@link makeGatewayConfig}; a complete `GatewayConfigShape` is accepted too. */
export interface GatewayConfigInit {
  readonly port?: number
  readonly host?: string
  readonly nodeName?: string
  readonly apps?: ReadonlyArray<AppConfig>
  readonly demo?: { readonly port: number } | undefined
  readonly allowedOrigins?: ReadonlyArray<string> | undefined
  readonly trustProxy?: boolean
  readonly adminToken?: string | Redacted.Redacted<string> | undefined
  readonly databaseUrl?: string | Redacted.Redacted<string> | undefined
  readonly cluster?: {
    readonly host?: string
    readonly port?: number
    readonly secret?: string | Redacted.Redacted<string> | undefined
    readonly tls?: ClusterTls | undefined
  }
  readonly log?: { readonly level?: LogLevel; readonly format?: LogFormat }
  readonly otlpEndpoint?: string | undefined
  readonly metrics?: boolean
  readonly limits?: Partial<GatewayLimits>
}

/**
 * Builds a `GatewayConfigShape` with every default filled in: port 4000 on
 * 0.0.0.0, node `local`, no apps, no demo, no admin API, no database, no
 * tracing, `info`/`json` logs, default limits. Nothing is validated.
 */
export const makeGatewayConfig = (init: GatewayConfigInit = {}): GatewayConfigShape => {
  const nodeName = init.nodeName ?? "local"
  return {
    port: init.port ?? DEFAULT_PORT,
    host: init.host ?? DEFAULT_HOST,
    nodeName,
    apps: init.apps ?? [],
    demo: init.demo,
    allowedOrigins: init.allowedOrigins,
    trustProxy: init.trustProxy ?? false,
    adminToken: redact(init.adminToken),
    databaseUrl: redact(init.databaseUrl),
    cluster: {
      host: init.cluster?.host ?? nodeName,
      port: init.cluster?.port ?? DEFAULT_CLUSTER_PORT,
      secret: redact(init.cluster?.secret),
      tls: init.cluster?.tls,
      staticNodeListIgnored: false
    },
    log: { level: init.log?.level ?? "info", format: init.log?.format ?? "json" },
    otlpEndpoint: init.otlpEndpoint,
    metrics: init.metrics ?? true,
    limits: { ...DEFAULT_LIMITS, ...init.limits }
  }
}

// -----------------------------------------------------------------------------
// Service
// -----------------------------------------------------------------------------

const readTextFile = (path: string): string => readFileSync(path, "utf8")

/** The configuration of this process: `process.env` and the file named by `GATEWAY_CONFIG`. */
export const loadFromProcess: Effect.Effect<GatewayConfigShape, ConfigError> = Effect.suspend(() =>
  loadGatewayConfig(process.env, readTextFile, osHostname())
)

export class GatewayConfig extends Context.Service<GatewayConfig, GatewayConfigShape>()(
  "realtime-gateway/config/GatewayConfig"
) {
  /** Loads from the given environment and file reader; fails with every problem found. */
  static layerFrom(
    env: Environment,
    readFile: (path: string) => string,
    hostname: string
  ): Layer.Layer<GatewayConfig, ConfigError> {
    return Layer.effect(GatewayConfig, loadGatewayConfig(env, readFile, hostname))
  }

  /** Loads from `process.env` and the file named by `GATEWAY_CONFIG`, when the layer is built. */
  static readonly layer: Layer.Layer<GatewayConfig, ConfigError> = Layer.effect(GatewayConfig, loadFromProcess)

  /** A config built with {@link makeGatewayConfig} (defaults filled in, not validated). */
  static layerWith(init: GatewayConfigInit = {}): Layer.Layer<GatewayConfig> {
    return Layer.succeed(GatewayConfig, makeGatewayConfig(init))
  }
}
