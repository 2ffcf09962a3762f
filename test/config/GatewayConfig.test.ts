import { spawn } from "node:child_process"
import { mkdtempSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { fileURLToPath } from "node:url"
import { inspect } from "node:util"
import { Effect, Exit, Redacted, Result } from "effect"
import { describe, expect, it } from "vitest"
import {
  appEnvPrefix,
  CONFIG_ERROR_EXIT_CODE,
  ConfigError,
  DEFAULT_LIMITS,
  DEFAULT_RATE_LIMITS,
  DEFAULT_TIMEOUTS,
  GatewayConfig,
  loadGatewayConfig,
  loadGatewayConfigResult,
  makeAppConfig,
  makeGatewayConfig
} from "../../src/config/GatewayConfig.ts"
import type { ConfigProblem, GatewayConfigShape } from "../../src/config/GatewayConfig.ts"

type Env = Record<string, string | undefined>

const CONFIG_PATH = "/etc/gateway/config.json"

/** A `readFile` serving the given files, throwing like `fs.readFileSync` otherwise. */
const filesystem = (files: Record<string, string>) => (path: string): string => {
  const content = files[path]
  if (content === undefined) throw new Error(`ENOENT: no such file or directory, open '${path}'`)
  return content
}

const load = (env: Env, file?: unknown) =>
  loadGatewayConfigResult(
    file === undefined ? env : { GATEWAY_CONFIG: CONFIG_PATH, ...env },
    filesystem(file === undefined ? {} : { [CONFIG_PATH]: typeof file === "string" ? file : JSON.stringify(file) }),
    "gw-host-1"
  )

const loadOk = (env: Env, file?: unknown): GatewayConfigShape => {
  const result = load(env, file)
  if (Result.isFailure(result)) throw new Error(`unexpected config error:\n${result.failure.message}`)
  return result.success
}

const problemsOf = (env: Env, file?: unknown): ReadonlyArray<ConfigProblem> => {
  const result = load(env, file)
  if (Result.isSuccess(result)) throw new Error("expected a config error")
  return result.failure.problems
}

const app = (config: GatewayConfigShape, id: string) => {
  const found = config.apps.find((candidate) => candidate.id === id)
  if (found === undefined) throw new Error(`no app ${id}`)
  return found
}

describe("loadGatewayConfigResult", () => {
  it("builds two apps from the environment alone, with every default", () => {
    const config = loadOk({
      GATEWAY_APPS: "solo-unicorn, chat",
      SOLO_UNICORN_API: "https://solo.example.com",
      SOLO_UNICORN_SECRET: "solo-secret-0123456789abcdef0123456789",
      CHAT_API: "http://chat.internal:8080/api"
    })
    expect(config.apps.map((a) => a.id)).toEqual(["solo-unicorn", "chat"])
    expect(app(config, "solo-unicorn")).toMatchObject({
      schemaEndpoint: "https://solo.example.com/messages-schema",
      authEndpoint: "https://solo.example.com/auth/websocket",
      messageEndpoint: "https://solo.example.com/messages",
      notifyEndpoint: "https://solo.example.com/notify",
      allowedOrigins: undefined,
      timeouts: DEFAULT_TIMEOUTS,
      rateLimits: DEFAULT_RATE_LIMITS
    })
    expect(Redacted.value(app(config, "solo-unicorn").secret!)).toBe("solo-secret-0123456789abcdef0123456789")
    expect(app(config, "chat").secret).toBeUndefined()
    expect(app(config, "chat").authEndpoint).toBe("http://chat.internal:8080/api/auth/websocket")
    expect(config).toMatchObject({
      port: 4000,
      host: "0.0.0.0",
      nodeName: "gw-host-1",
      demo: undefined,
      allowedOrigins: undefined,
      adminToken: undefined,
      databaseUrl: undefined,
      cluster: { host: "gw-host-1", port: 34431 },
      log: { level: "info", format: "json" },
      otlpEndpoint: undefined,
      limits: DEFAULT_LIMITS
    })
  })

  it("the defaults are the contract's: 100 channels, 1 MiB frames, 4 MiB outbox, 60 s idle, joins 20/s (burst 50), 16 MiB of pushes in flight; auth 5 s, message 8 s", () => {
    expect(DEFAULT_LIMITS).toMatchObject({
      maxChannelsPerConnection: 100,
      maxFrameBytes: 1024 * 1024,
      maxOutboxBytes: 4 * 1024 * 1024,
      idleTimeoutMs: 60_000,
      joinsPerSecond: 20,
      joinBurst: 50,
      maxPushBytesInFlight: 16 * 1024 * 1024
    })
    expect(DEFAULT_TIMEOUTS).toMatchObject({ authMs: 5_000, messageMs: 8_000 })
  })

  it("builds everything from the file alone", () => {
    const config = loadOk({}, {
      port: 8080,
      host: "127.0.0.1",
      nodeName: "node-a",
      allowedOrigins: ["https://global.example.com"],
      adminToken: "admin-token-1",
      databaseUrl: "postgres://gw:pw@db:5432/gateway",
      clusterHost: "10.0.0.5",
      clusterPort: 4500,
      clusterSecret: "a-cluster-secret-of-at-least-32-bytes",
      clusterTlsCert: "/etc/gateway/node.crt",
      clusterTlsKey: "/etc/gateway/node.key",
      logLevel: "debug",
      logFormat: "pretty",
      otlpEndpoint: "http://otel:4318",
      limits: { maxConnections: 10, maxChannelsPerConnection: 5, maxFrameBytes: 1024, maxOutboxBytes: 2048, idleTimeoutMs: 1000 },
      apps: [
        {
          id: "billing",
          api: "https://billing.example.com/gw/",
          secret: "billing-secret-0123456789abcdef01234567",
          allowedOrigins: ["https://billing.example.com"],
          timeouts: { authMs: 1000, messageMs: 2000 },
          rateLimits: { maxConcurrentAuth: 8 }
        },
        {
          id: "static",
          schemaEndpoint: "https://s.example.com/schema",
          authEndpoint: "https://s.example.com/auth",
          messageEndpoint: "https://s.example.com/msg",
          notifyEndpoint: "https://s.example.com/notify"
        }
      ]
    })
    expect(config).toMatchObject({
      port: 8080,
      host: "127.0.0.1",
      nodeName: "node-a",
      demo: undefined,
      allowedOrigins: ["https://global.example.com"],
      cluster: {
        host: "10.0.0.5",
        port: 4500,
        tls: { certFile: "/etc/gateway/node.crt", keyFile: "/etc/gateway/node.key", caFile: undefined },
        staticNodeListIgnored: false
      },
      log: { level: "debug", format: "pretty" },
      otlpEndpoint: "http://otel:4318",
      limits: { maxConnections: 10, maxChannelsPerConnection: 5, maxFrameBytes: 1024, maxOutboxBytes: 2048, idleTimeoutMs: 1000 }
    })
    expect(Redacted.value(config.adminToken!)).toBe("admin-token-1")
    expect(Redacted.value(config.databaseUrl!)).toBe("postgres://gw:pw@db:5432/gateway")
    expect(app(config, "billing")).toMatchObject({
      schemaEndpoint: "https://billing.example.com/gw/messages-schema",
      authEndpoint: "https://billing.example.com/gw/auth/websocket",
      messageEndpoint: "https://billing.example.com/gw/messages",
      notifyEndpoint: "https://billing.example.com/gw/notify",
      allowedOrigins: ["https://billing.example.com"],
      timeouts: { authMs: 1000, messageMs: 2000, schemaMs: 5000 },
      rateLimits: { connectionsPerIpPerMinute: 120, maxConcurrentAuth: 8 }
    })
    expect(Redacted.value(app(config, "billing").secret!)).toBe("billing-secret-0123456789abcdef01234567")
    expect(app(config, "static")).toMatchObject({
      schemaEndpoint: "https://s.example.com/schema",
      authEndpoint: "https://s.example.com/auth",
      messageEndpoint: "https://s.example.com/msg",
      notifyEndpoint: "https://s.example.com/notify",
      secret: undefined,
      // No list of its own: the global one applies.
      allowedOrigins: ["https://global.example.com"]
    })
  })

  it("lets the environment override the file, keeps file apps and adds env-only apps", () => {
    const file = {
      port: 8080,
      logLevel: "debug",
      nodeName: "from-file",
      adminToken: "file-admin",
      limits: { maxConnections: 10, idleTimeoutMs: 1000 },
      allowedOrigins: ["https://file.example.com"],
      apps: [
        { id: "billing", api: "https://billing.example.com", secret: "file-secret-0123456789abcdef0123456789ab", allowedOrigins: ["https://a.example.com"] },
        { id: "kept", api: "https://kept.example.com" }
      ]
    }
    const config = loadOk({
      PORT: "9090",
      LOG_LEVEL: "WARN",
      NODE_NAME: "from-env",
      GATEWAY_ADMIN_TOKEN: "env-admin",
      MAX_CONNECTIONS: "20",
      ALLOWED_ORIGINS: "https://env.example.com",
      GATEWAY_APPS: "billing,extra",
      BILLING_API: "https://billing-v2.example.com",
      BILLING_SECRET: "env-secret-0123456789abcdef0123456789abc",
      BILLING_ALLOWED_ORIGINS: "https://b.example.com, https://c.example.com",
      EXTRA_API: "https://extra.example.com"
    }, file)
    expect(config.port).toBe(9090)
    expect(config.log.level).toBe("warn")
    expect(config.nodeName).toBe("from-env")
    expect(config.cluster.host).toBe("from-env")
    expect(Redacted.value(config.adminToken!)).toBe("env-admin")
    expect(config.limits).toEqual({ ...DEFAULT_LIMITS, maxConnections: 20, idleTimeoutMs: 1000 })
    expect(config.allowedOrigins).toEqual(["https://env.example.com"])
    expect(config.apps.map((a) => a.id)).toEqual(["billing", "kept", "extra"])
    expect(app(config, "billing").authEndpoint).toBe("https://billing-v2.example.com/auth/websocket")
    expect(Redacted.value(app(config, "billing").secret!)).toBe("env-secret-0123456789abcdef0123456789abc")
    expect(app(config, "billing").allowedOrigins).toEqual(["https://b.example.com", "https://c.example.com"])
    expect(app(config, "kept").authEndpoint).toBe("https://kept.example.com/auth/websocket")
    expect(app(config, "kept").allowedOrigins).toEqual(["https://env.example.com"])
    expect(app(config, "extra").messageEndpoint).toBe("https://extra.example.com/messages")
  })

  it("derives endpoints from <APP>_API, keeping its path and query", () => {
    const config = loadOk({
      GATEWAY_APPS: "a,b,c",
      A_API: "https://a.example.com",
      B_API: "https://b.example.com/v1///",
      C_API: "http://c.example.com:8000/base?tenant=7"
    })
    expect(app(config, "a").schemaEndpoint).toBe("https://a.example.com/messages-schema")
    expect(app(config, "b").messageEndpoint).toBe("https://b.example.com/v1/messages")
    expect(app(config, "c").notifyEndpoint).toBe("http://c.example.com:8000/base/notify?tenant=7")
  })

  it("takes per-endpoint overrides: env endpoint, then file endpoint, then the base URL", () => {
    const config = loadOk({
      GATEWAY_APPS: "env-only",
      ENV_ONLY_SCHEMA_ENDPOINT: "https://e.example.com/schema",
      ENV_ONLY_AUTH_ENDPOINT: "https://e.example.com/auth",
      ENV_ONLY_MESSAGE_ENDPOINT: "https://e.example.com/msg",
      ENV_ONLY_NOTIFY_ENDPOINT: "https://e.example.com/notify",
      MIXED_API: "https://env-base.example.com",
      MIXED_AUTH_ENDPOINT: "https://auth.example.com/ws"
    }, {
      apps: [{ id: "mixed", api: "https://file-base.example.com", messageEndpoint: "https://msg.example.com/in", authEndpoint: "https://ignored.example.com" }]
    })
    expect(app(config, "env-only")).toMatchObject({
      schemaEndpoint: "https://e.example.com/schema",
      authEndpoint: "https://e.example.com/auth",
      messageEndpoint: "https://e.example.com/msg",
      notifyEndpoint: "https://e.example.com/notify"
    })
    expect(app(config, "mixed")).toMatchObject({
      schemaEndpoint: "https://env-base.example.com/messages-schema",
      authEndpoint: "https://auth.example.com/ws",
      messageEndpoint: "https://msg.example.com/in",
      notifyEndpoint: "https://env-base.example.com/notify"
    })
  })

  it("reads app variables under the upper-snake-cased app id", () => {
    expect(appEnvPrefix("solo-unicorn")).toBe("SOLO_UNICORN")
    expect(appEnvPrefix("a_b-c9")).toBe("A_B_C9")
    const config = loadOk({
      GATEWAY_APPS: "solo-unicorn,a_b-c9",
      SOLO_UNICORN_API: "https://solo.example.com",
      A_B_C9_API: "https://abc.example.com"
    })
    expect(app(config, "a_b-c9").authEndpoint).toBe("https://abc.example.com/auth/websocket")
  })

  it("resolves and normalizes allowed origins (app list, else global list, else any)", () => {
    const config = loadOk({
      GATEWAY_APPS: "own,inherits",
      OWN_API: "https://own.example.com",
      OWN_ALLOWED_ORIGINS: "HTTPS://Own.Example.com:443/, http://localhost:3000",
      INHERITS_API: "https://inherits.example.com",
      ALLOWED_ORIGINS: "https://shared.example.com"
    })
    expect(app(config, "own").allowedOrigins).toEqual(["https://own.example.com", "http://localhost:3000"])
    expect(app(config, "inherits").allowedOrigins).toEqual(["https://shared.example.com"])
    expect(loadOk({ GATEWAY_APPS: "x", X_API: "https://x.example.com" }).apps[0]?.allowedOrigins).toBeUndefined()
  })

  it("treats empty environment values as unset", () => {
    const config = loadOk({ PORT: "", LOG_LEVEL: "  ", GATEWAY_APPS: "x", X_API: "https://x.example.com", X_SECRET: "" })
    expect(config.port).toBe(4000)
    expect(config.log.level).toBe("info")
    expect(config.apps[0]?.secret).toBeUndefined()
  })

  describe("demo mode", () => {
    it("is on when no app is configured at all", () => {
      const config = loadOk({})
      expect(config.apps).toEqual([])
      expect(config.demo).toEqual({ port: 4001 })
      expect(loadOk({}, { port: 5000, apps: [] }).demo).toEqual({ port: 5001 })
      expect(loadOk({ PORT: "6000", DEMO_APP_PORT: "7000" }).demo).toEqual({ port: 7000 })
      expect(loadOk({ PORT: "0" }).demo).toEqual({ port: 0 })
    })

    it("is off as soon as an app is configured", () => {
      expect(loadOk({ GATEWAY_APPS: "x", X_API: "https://x.example.com" }).demo).toBeUndefined()
      expect(loadOk({}, { apps: [{ id: "x", api: "https://x.example.com" }] }).demo).toBeUndefined()
      // DEMO_APP_PORT only matters in demo mode.
      expect(loadOk({ GATEWAY_APPS: "x", X_API: "https://x.example.com", DEMO_APP_PORT: "nope" }).demo).toBeUndefined()
    })

    it("reports a demo port that cannot work", () => {
      expect(problemsOf({ PORT: "65535" })).toEqual([
        { key: "DEMO_APP_PORT", message: "not set, and its default PORT+1 (65536) is not a valid port" }
      ])
      expect(problemsOf({ PORT: "5000", DEMO_APP_PORT: "5000" })).toEqual([
        { key: "DEMO_APP_PORT", message: "must differ from PORT (5000)" }
      ])
      expect(problemsOf({ DEMO_APP_PORT: "x" })).toEqual([{ key: "DEMO_APP_PORT", message: "expected a whole number, got \"x\"" }])
    })
  })

  describe("problems", () => {
    it("reports an unreadable file", () => {
      const result = loadGatewayConfigResult({ GATEWAY_CONFIG: "/nowhere.json" }, filesystem({}), "h")
      expect(Result.isFailure(result) && result.failure.problems).toEqual([
        { key: "GATEWAY_CONFIG", message: "cannot read \"/nowhere.json\": ENOENT: no such file or directory, open '/nowhere.json'" }
      ])
    })

    it("reports invalid JSON together with the environment's problems", () => {
      expect(problemsOf({ PORT: "80a" }, "{\"port\": 80,}")).toEqual([
        {
          key: "GATEWAY_CONFIG",
          message: `invalid JSON in "${CONFIG_PATH}": Expected double-quoted property name in JSON at position 12 (line 1 column 13)`
        },
        { key: "PORT", message: "expected a whole number, got \"80a\"" }
      ])
    })

    it("collects every problem of the file and the environment, each under its key", () => {
      const problems = problemsOf({
        GATEWAY_APPS: "env-app,Bad!,dup-id,dup_id",
        ENV_APP_AUTH_ENDPOINT: "https://e.example.com/auth",
        DUP_ID_API: "https://dup.example.com",
        SOLO_UNICORN_API: "htp:/x",
        PORT: "http",
        CLUSTER_PORT: "0",
        HOST: "two words",
        LOG_LEVEL: "verbose",
        LOG_FORMAT: "xml",
        MAX_FRAME_BYTES: "-5",
        IDLE_TIMEOUT_MS: "99999999999",
        ALLOWED_ORIGINS: "https://ok.example.com,https://bad.example.com/path",
        OTEL_EXPORTER_OTLP_ENDPOINT: "localhost:4318",
        DATABASE_URL: "mysql://root:hunter2@db/x"
      }, {
        port: "4000",
        colour: "blue",
        limits: { maxConnections: 0, burst: 1 },
        apps: [
          { id: "solo-unicorn", authEndpoint: "ftp://x", timeouts: { authMs: 1.5 }, rateLimits: { perIp: 3 } },
          { id: "no-endpoints", secret: 42 },
          { id: "partial", api: "https://p.example.com", allowedOrigins: [] },
          { id: "some-endpoints", authEndpoint: "https://s.example.com/auth" },
          { id: "partial" },
          { api: "https://no-id.example.com" },
          "not an object"
        ]
      })
      expect(problems).toEqual([
        { key: "GATEWAY_CONFIG colour", message: "unknown key" },
        { key: "GATEWAY_CONFIG port", message: "expected number" },
        { key: "GATEWAY_CONFIG limits.burst", message: "unknown key" },
        { key: "GATEWAY_CONFIG limits.maxConnections", message: "expected a positive integer, got 0" },
        { key: "GATEWAY_CONFIG apps[0].authEndpoint", message: "invalid URL \"ftp://x\" (only http:// and https:// are supported)" },
        { key: "GATEWAY_CONFIG apps[0].rateLimits.perIp", message: "unknown key" },
        {
          key: "GATEWAY_CONFIG apps[0].timeouts.authMs",
          message: "expected a duration in milliseconds from 1 to 2147483647, got 1.5"
        },
        { key: "GATEWAY_CONFIG apps[1].secret", message: "expected string" },
        { key: "GATEWAY_CONFIG apps[2].allowedOrigins", message: "lists no origin (leave it unset to allow any origin)" },
        { key: "GATEWAY_CONFIG apps[5].id", message: "missing" },
        { key: "GATEWAY_CONFIG apps[6]", message: "expected object" },
        { key: "GATEWAY_APPS", message: "invalid app id \"Bad!\" (expected 1 to 64 lowercase letters, digits, \"-\" or \"_\")" },
        { key: "PORT", message: "expected a whole number, got \"http\"" },
        { key: "HOST", message: "invalid host \"two words\" (expected 1 to 255 characters, no whitespace)" },
        { key: "ALLOWED_ORIGINS", message: "invalid origin \"https://bad.example.com/path\" (expected http(s)://host[:port])" },
        {
          key: "DATABASE_URL",
          message: "unsupported scheme \"mysql:\" (expected postgres:// or postgresql://)"
        },
        { key: "CLUSTER_PORT", message: "expected a port number from 1 to 65535, got 0" },
        { key: "LOG_LEVEL", message: "unknown log level \"verbose\" (expected one of trace, debug, info, warn, error)" },
        { key: "LOG_FORMAT", message: "unknown log format \"xml\" (expected one of json, pretty)" },
        { key: "OTEL_EXPORTER_OTLP_ENDPOINT", message: "invalid URL \"localhost:4318\" (only http:// and https:// are supported)" },
        { key: "MAX_FRAME_BYTES", message: "expected a whole number, got \"-5\"" },
        { key: "IDLE_TIMEOUT_MS", message: "expected a duration in milliseconds from 1 to 2147483647, got 99999999999" },
        { key: "GATEWAY_CONFIG apps[4].id", message: "duplicate app id \"partial\" (already used by apps[2])" },
        { key: "GATEWAY_APPS", message: "app ids \"dup-id\" and \"dup_id\" would share the environment variables DUP_ID_*" },
        { key: "SOLO_UNICORN_API", message: "invalid URL \"htp:/x\" (only http:// and https:// are supported)" },
        {
          key: "GATEWAY_CONFIG apps[1].api",
          message: "missing: app \"no-endpoints\" has no base URL (set \"api\" or every endpoint in the file, or NO_ENDPOINTS_API)"
        },
        {
          key: "GATEWAY_CONFIG apps[3].schemaEndpoint",
          message: "missing (set it or \"api\" in the file, or SOME_ENDPOINTS_SCHEMA_ENDPOINT or SOME_ENDPOINTS_API)"
        },
        {
          key: "GATEWAY_CONFIG apps[3].messageEndpoint",
          message: "missing (set it or \"api\" in the file, or SOME_ENDPOINTS_MESSAGE_ENDPOINT or SOME_ENDPOINTS_API)"
        },
        { key: "ENV_APP_SCHEMA_ENDPOINT", message: "missing (set it or ENV_APP_API)" },
        { key: "ENV_APP_MESSAGE_ENDPOINT", message: "missing (set it or ENV_APP_API)" }
      ])
    })

    it("reports an app of GATEWAY_APPS that has no URL at all in one line", () => {
      expect(problemsOf({ GATEWAY_APPS: "solo-unicorn" })).toEqual([{
        key: "SOLO_UNICORN_API",
        message: "missing: app \"solo-unicorn\" is listed in GATEWAY_APPS but has no base URL (set SOLO_UNICORN_API, " +
          "or all of SOLO_UNICORN_SCHEMA_ENDPOINT, SOLO_UNICORN_AUTH_ENDPOINT, SOLO_UNICORN_MESSAGE_ENDPOINT)"
      }])
    })

    it("reports a file that is not an object", () => {
      expect(problemsOf({}, [1, 2])).toEqual([{ key: "GATEWAY_CONFIG", message: "expected object" }])
    })

    it("renders one line per problem, in the error message too", () => {
      const result = load({ PORT: "x", GATEWAY_APPS: "a", A_API: "nope" })
      if (Result.isSuccess(result)) throw new Error("expected a config error")
      expect(result.failure).toBeInstanceOf(ConfigError)
      expect(result.failure._tag).toBe("ConfigError")
      expect(result.failure.lines()).toEqual([
        "PORT: expected a whole number, got \"x\"",
        "A_API: invalid URL \"nope\""
      ])
      expect(result.failure.message).toBe(
        "invalid configuration (2 problems)\nPORT: expected a whole number, got \"x\"\nA_API: invalid URL \"nope\""
      )
    })
  })

  describe("secrets", () => {
    const SECRETS = ["app-secret-123-0123456789abcdef0123456789", "file-secret-456-0123456789abcdef012345678", "admin-token-789", "db-password-000", "cluster-secret-0123456789-0123456789"]

    const containsNoSecret = (text: string) => {
      for (const secret of SECRETS) expect(text).not.toContain(secret)
    }

    it("are redacted in the loaded config", () => {
      const config = loadOk({
        GATEWAY_APPS: "a",
        A_API: "https://a.example.com",
        A_SECRET: "app-secret-123-0123456789abcdef0123456789",
        GATEWAY_ADMIN_TOKEN: "admin-token-789",
        DATABASE_URL: "postgres://gw:db-password-000@db/gw",
        CLUSTER_SECRET: "cluster-secret-0123456789-0123456789"
      }, { apps: [{ id: "b", api: "https://b.example.com", secret: "file-secret-456-0123456789abcdef012345678" }] })
      containsNoSecret(String(config))
      containsNoSecret(JSON.stringify(config))
      containsNoSecret(inspect(config, { depth: Infinity }))
      containsNoSecret(`${config.apps[0]?.secret} ${config.apps[1]?.secret} ${config.adminToken} ${config.databaseUrl}`)
      expect(Redacted.value(app(config, "a").secret!)).toBe("app-secret-123-0123456789abcdef0123456789")
      expect(Redacted.value(app(config, "b").secret!)).toBe("file-secret-456-0123456789abcdef012345678")
    })

    it("of apps shorter than 32 bytes are refused, from the environment and from the file", () => {
      expect(problemsOf({ GATEWAY_APPS: "a", A_API: "https://a.example.com", A_SECRET: "app-secret-123" }, {
        apps: [{ id: "b", api: "https://b.example.com", secret: "x".repeat(31) }, { id: "c", api: "https://c.example.com", secret: "é".repeat(16) }]
      })).toEqual([
        { key: "GATEWAY_CONFIG apps[0].secret", message: "too short: 31 bytes, at least 32 needed (e.g. openssl rand -hex 32)" },
        { key: "A_SECRET", message: "too short: 14 bytes, at least 32 needed (e.g. openssl rand -hex 32)" }
      ])
    })

    it("never appear in problems", () => {
      const checkError = (error: ConfigError) => {
        containsNoSecret(error.message)
        containsNoSecret(String(error))
        containsNoSecret(JSON.stringify(error))
        containsNoSecret(inspect(error, { depth: Infinity }))
        containsNoSecret(error.lines().join("\n"))
      }
      const failure = (result: Result.Result<GatewayConfigShape, ConfigError>) => {
        if (Result.isSuccess(result)) throw new Error("expected a config error")
        return result.failure
      }
      const invalidValues = failure(load({
        GATEWAY_APPS: "a",
        A_API: "htp://user:app-secret-123-0123456789abcdef0123456789@a.example.com",
        DATABASE_URL: "db-password-000",
        GATEWAY_ADMIN_TOKEN: "admin-token-789"
      }, { adminToken: ["admin-token-789"], apps: [{ id: "b", api: "https://b.example.com", secret: { v: "file-secret-456-0123456789abcdef012345678" } }] }))
      expect(invalidValues.problems.map((problem) => problem.key)).toEqual([
        "GATEWAY_CONFIG adminToken",
        "GATEWAY_CONFIG apps[0].secret",
        "DATABASE_URL",
        "A_API"
      ])
      checkError(invalidValues)
      // V8 quotes the beginning of the text in some JSON syntax errors.
      checkError(failure(load({}, "admin-token-789")))
      checkError(failure(load({}, "{\"adminToken\": admin-token-789}")))
    })
  })
})

describe("loadGatewayConfig", () => {
  it("is an effect that reads the file when run", async () => {
    let reads = 0
    const readFile = (path: string) => {
      reads++
      return filesystem({ [CONFIG_PATH]: JSON.stringify({ apps: [{ id: "x", api: "https://x.example.com" }] }) })(path)
    }
    const effect = loadGatewayConfig({ GATEWAY_CONFIG: CONFIG_PATH }, readFile, "h")
    expect(reads).toBe(0)
    const config = await Effect.runPromise(effect)
    expect(reads).toBe(1)
    expect(config.apps.map((a) => a.id)).toEqual(["x"])

    const lines = await Effect.runPromise(
      loadGatewayConfig({ PORT: "x" }, readFile, "h").pipe(
        Effect.map(() => ["loaded"]),
        Effect.catchTag("ConfigError", (error) => Effect.succeed(error.lines()))
      )
    )
    expect(lines).toEqual(["PORT: expected a whole number, got \"x\""])
  })
})

describe("GatewayConfig service", () => {
  const provided = <E>(layer: import("effect").Layer.Layer<GatewayConfig, E>) =>
    Effect.runPromiseExit(
      Effect.gen(function*() {
        return yield* GatewayConfig
      }).pipe(Effect.provide(layer))
    )

  it("layerFrom loads the configuration or fails with ConfigError", async () => {
    const ok = await provided(GatewayConfig.layerFrom({ GATEWAY_APPS: "x", X_API: "https://x.example.com" }, filesystem({}), "h"))
    expect(Exit.isSuccess(ok) && ok.value.apps.map((a) => a.id)).toEqual(["x"])

    const failed = await Effect.runPromise(
      Effect.gen(function*() {
        return yield* GatewayConfig
      }).pipe(
        Effect.provide(GatewayConfig.layerFrom({ PORT: "x" }, filesystem({}), "h")),
        Effect.map(() => "loaded"),
        Effect.catchTag("ConfigError", (error) => Effect.succeed(error.lines()))
      )
    )
    expect(failed).toEqual(["PORT: expected a whole number, got \"x\""])
  })

  it("layerWith provides a config built with defaults", async () => {
    const exit = await provided(GatewayConfig.layerWith({
      nodeName: "n1",
      apps: [makeAppConfig({ id: "a" })],
      limits: { maxConnections: 3 },
      log: { level: "debug" }
    }))
    if (!Exit.isSuccess(exit)) throw new Error("layerWith failed")
    expect(exit.value).toMatchObject({
      port: 4000,
      nodeName: "n1",
      cluster: { host: "n1", port: 34431 },
      log: { level: "debug", format: "json" },
      limits: { ...DEFAULT_LIMITS, maxConnections: 3 },
      demo: undefined
    })
  })

  it("makeAppConfig and makeGatewayConfig fill every default", () => {
    const appConfig = makeAppConfig({
      id: "a",
      api: "https://a.example.com/v2",
      notifyEndpoint: "https://hooks.example.com/a",
      secret: "s",
      timeouts: { authMs: 10 }
    })
    expect(appConfig).toMatchObject({
      id: "a",
      schemaEndpoint: "https://a.example.com/v2/messages-schema",
      authEndpoint: "https://a.example.com/v2/auth/websocket",
      messageEndpoint: "https://a.example.com/v2/messages",
      notifyEndpoint: "https://hooks.example.com/a",
      allowedOrigins: undefined,
      timeouts: { ...DEFAULT_TIMEOUTS, authMs: 10 },
      rateLimits: DEFAULT_RATE_LIMITS
    })
    expect(Redacted.isRedacted(appConfig.secret) && Redacted.value(appConfig.secret)).toBe("s")
    expect(makeAppConfig({ id: "b" }).authEndpoint).toBe("http://127.0.0.1:4001/auth/websocket")

    const config = makeGatewayConfig({ adminToken: "t", databaseUrl: Redacted.make("postgres://x") })
    expect(config).toMatchObject({
      port: 4000,
      host: "0.0.0.0",
      nodeName: "local",
      apps: [],
      demo: undefined,
      allowedOrigins: undefined,
      cluster: { host: "local", port: 34431 },
      log: { level: "info", format: "json" },
      otlpEndpoint: undefined,
      limits: DEFAULT_LIMITS
    })
    expect(config.adminToken && Redacted.value(config.adminToken)).toBe("t")
    expect(config.databaseUrl && Redacted.value(config.databaseUrl)).toBe("postgres://x")
    // A complete config passes through unchanged.
    expect(makeGatewayConfig(config)).toEqual(config)
  })
})

describe("a process started with a bad configuration", () => {
  const fixture = fileURLToPath(new URL("./fixtures/start-with-config.ts", import.meta.url))

  const run = (mode: "loader" | "layer", env: Env) =>
    new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve, reject) => {
      const child = spawn(process.execPath, ["--no-warnings", fixture, mode], { env, stdio: ["ignore", "pipe", "pipe"] })
      let stdout = ""
      let stderr = ""
      child.stdout.setEncoding("utf8").on("data", (chunk: string) => (stdout += chunk))
      child.stderr.setEncoding("utf8").on("data", (chunk: string) => (stderr += chunk))
      child.on("error", reject)
      child.on("close", (code) => resolve({ code, stdout, stderr }))
    })

  it.each(["loader", "layer"] as const)("exits with 78 and one stderr line per problem (%s)", async (mode) => {
    const dir = mkdtempSync(join(tmpdir(), "gateway-config-"))
    try {
      const path = join(dir, "config.json")
      writeFileSync(path, JSON.stringify({ logLevel: "loud", apps: [{ id: "solo-unicorn", secret: "s3cret-value-0123456789abcdef012345" }] }))
      const { code, stderr, stdout } = await run(mode, {
        GATEWAY_CONFIG: path,
        PORT: "http",
        SOLO_UNICORN_API: "htp:/x",
        GATEWAY_ADMIN_TOKEN: "admin-s3cret"
      })
      expect(code).toBe(CONFIG_ERROR_EXIT_CODE)
      expect(code).toBe(78)
      expect(stdout).toBe("")
      expect(stderr.split("\n")).toEqual([
        "config error: GATEWAY_CONFIG logLevel: unknown log level \"loud\" (expected one of trace, debug, info, warn, error)",
        "config error: PORT: expected a whole number, got \"http\"",
        "config error: SOLO_UNICORN_API: invalid URL \"htp:/x\" (only http:// and https:// are supported)",
        ""
      ])
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
  })

  it("exits with 78 naming the key of an app secret shorter than 32 bytes, never showing it", async () => {
    const { code, stderr, stdout } = await run("layer", {
      GATEWAY_APPS: "a",
      A_API: "https://a.example.com",
      A_SECRET: "short-s3cret-31-bytes-long-xxxx"
    })
    expect({ code, stdout }).toEqual({ code: 78, stdout: "" })
    expect(stderr).toBe(
      "config error: A_SECRET: too short: 31 bytes, at least 32 needed (e.g. openssl rand -hex 32)\n"
    )
  })

  it("starts normally with a good configuration", async () => {
    const { code, stdout, stderr } = await run("layer", { GATEWAY_APPS: "a", A_API: "https://a.example.com", PORT: "4100" })
    expect({ code, stderr }).toEqual({ code: 0, stderr: "" })
    expect(JSON.parse(stdout)).toEqual({ port: 4100, apps: ["a"], demo: null })
  })
})

describe("cluster settings", () => {
  const database = { DATABASE_URL: "postgres://gw:pw@db/gw", NODE_NAME: "node-1" }
  const clusterSecret = "s".repeat(32)

  it("DATABASE_URL needs a CLUSTER_SECRET of at least 32 bytes", () => {
    expect(problemsOf(database)).toEqual([
      expect.objectContaining({ key: "CLUSTER_SECRET", message: expect.stringContaining("required with DATABASE_URL") })
    ])
    expect(problemsOf({ ...database, CLUSTER_SECRET: "s".repeat(31) })).toEqual([
      expect.objectContaining({ key: "CLUSTER_SECRET", message: expect.stringContaining("at least 32 needed") })
    ])
    // bytes, not characters: 16 two-byte characters are enough
    const config = loadOk({ ...database, CLUSTER_SECRET: "é".repeat(16) })
    expect(Redacted.value(config.cluster.secret!)).toBe("é".repeat(16))
    expect(config.cluster).toMatchObject({ host: "node-1", port: 34431, tls: undefined })
  })

  it("CLUSTER_NODES is no longer read: accepted, and marked to be logged as ignored", () => {
    expect(loadOk({ ...database, CLUSTER_SECRET: clusterSecret, CLUSTER_NODES: "node-1,node-2" }).cluster)
      .toMatchObject({ staticNodeListIgnored: true })
    expect(loadOk({ ...database, CLUSTER_SECRET: clusterSecret }).cluster).toMatchObject({ staticNodeListIgnored: false })
  })

  it("TLS between nodes needs a certificate and its key; a CA only with them", () => {
    const withSecret = { ...database, CLUSTER_SECRET: clusterSecret }
    expect(problemsOf({ ...withSecret, CLUSTER_TLS_CERT: "/tls/node.crt" })).toEqual([
      expect.objectContaining({ key: "CLUSTER_TLS_KEY" })
    ])
    expect(problemsOf({ ...withSecret, CLUSTER_TLS_CA: "/tls/ca.crt" })).toEqual([
      expect.objectContaining({ key: "CLUSTER_TLS_CA" })
    ])
    expect(loadOk({ ...withSecret, CLUSTER_TLS_CERT: "/tls/node.crt", CLUSTER_TLS_KEY: "/tls/node.key", CLUSTER_TLS_CA: "/tls/ca.crt" }).cluster.tls)
      .toEqual({ certFile: "/tls/node.crt", keyFile: "/tls/node.key", caFile: "/tls/ca.crt" })
  })
})

describe("supervision and entity limits", () => {
  it("are read from the environment and the file, with their defaults", () => {
    expect(loadOk({ GATEWAY_APPS: "" }).limits).toMatchObject({
      supervisorMaxRestarts: 10,
      supervisorPeriodMs: 60_000,
      entityCallTimeoutMs: 5_000,
      maxEntities: 10_000,
      maxPresenceTopicsPerApp: 1_000,
      entityIdleMs: 120_000
    })
    const env = {
      SUPERVISOR_MAX_RESTARTS: "3",
      SUPERVISOR_PERIOD_MS: "5000",
      ENTITY_CALL_TIMEOUT_MS: "2000",
      MAX_ENTITIES: "20000"
    }
    expect(loadOk(env, { limits: { maxPresenceTopicsPerApp: 500, entityIdleMs: 90_000 } }).limits).toMatchObject({
      supervisorMaxRestarts: 3,
      supervisorPeriodMs: 5_000,
      entityCallTimeoutMs: 2_000,
      maxEntities: 20_000,
      maxPresenceTopicsPerApp: 500,
      entityIdleMs: 90_000
    })
  })

  it("refuse an entity idle time shorter than two re-sends, and more presence topics per app than entities", () => {
    expect(problemsOf({ ENTITY_IDLE_MS: "30000" })).toEqual([
      { key: "ENTITY_IDLE_MS", message: "expected a duration in milliseconds from 60000 to 2147483647, got 30000" }
    ])
    expect(problemsOf({ MAX_ENTITIES: "100", MAX_PRESENCE_TOPICS_PER_APP: "200" })).toEqual([
      { key: "MAX_PRESENCE_TOPICS_PER_APP", message: "must not exceed MAX_ENTITIES (100), got 200" }
    ])
  })
})

describe("lifecycle notifications", () => {
  it("are sent to <APP>_API/notify by default and turned off with \"none\"", () => {
    const on = loadOk({ GATEWAY_APPS: "a", A_API: "https://a.example.com" })
    expect(on.apps[0]?.notifyEndpoint).toBe("https://a.example.com/notify")
    const off = loadOk({ GATEWAY_APPS: "a", A_API: "https://a.example.com", A_NOTIFY_ENDPOINT: "none" })
    expect(off.apps[0]?.notifyEndpoint).toBeUndefined()
    const offInFile = loadOk({}, { apps: [{ id: "b", api: "https://b.example.com", notifyEndpoint: "none" }] })
    expect(offInFile.apps[0]?.notifyEndpoint).toBeUndefined()
  })

  it("are off for an app with schema, auth and message endpoints but no base URL and no notify endpoint", () => {
    const env = {
      GATEWAY_APPS: "seed",
      SEED_SCHEMA_ENDPOINT: "https://seed.example.com/schema",
      SEED_AUTH_ENDPOINT: "https://seed.example.com/auth",
      SEED_MESSAGE_ENDPOINT: "https://seed.example.com/messages"
    }
    expect(loadOk(env).apps[0]).toMatchObject({ messageEndpoint: "https://seed.example.com/messages", notifyEndpoint: undefined })
    const inFile = loadOk({}, {
      apps: [{
        id: "seed",
        schemaEndpoint: "https://seed.example.com/schema",
        authEndpoint: "https://seed.example.com/auth",
        messageEndpoint: "https://seed.example.com/messages"
      }]
    })
    expect(inFile.apps[0]?.notifyEndpoint).toBeUndefined()
  })
})
