/**
 * `GET /metrics` (CONTRACT §8): the page parses as Prometheus text under a
 * strict reading of the format, its counters move with real traffic
 * (connections, joins, pushes, refusals, app-call latency, rate limits), and
 * no label ever carries a topic, a client id, a connection id or an event
 * name a client made up.
 */
import { readFileSync } from "node:fs"
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest"
import { catalogue } from "../../src/observability/Metrics.ts"
import { rawSocket, startFakeApp, startTestGateway, upgradeRejection } from "../../src/testing/index.ts"
import type { FakeApp, RawSocket, TestGateway } from "../../src/testing/index.ts"

// ---------------------------------------------------------------------------
// A strict reader of the Prometheus text format (version 0.0.4)
// ---------------------------------------------------------------------------

interface Sample {
  readonly name: string
  readonly labels: Readonly<Record<string, string>>
  readonly value: number
}

interface Family {
  readonly type: "counter" | "gauge" | "histogram" | "summary" | "untyped"
  help: string | undefined
  readonly samples: Array<Sample>
}

const METRIC_NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/

const parseValue = (text: string, line: string): number => {
  if (text === "+Inf") return Infinity
  if (text === "-Inf") return -Infinity
  if (text === "NaN") return NaN
  if (!/^-?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/.test(text)) throw new Error(`bad value in: ${line}`)
  return Number(text)
}

/** Label pairs `a="x",b="y"`, with the format's escapes (\\, \", \n). */
const parseLabels = (text: string, line: string): Record<string, string> => {
  const labels: Record<string, string> = {}
  let i = 0
  while (i < text.length) {
    const eq = text.indexOf("=", i)
    if (eq < 0) throw new Error(`bad labels in: ${line}`)
    const name = text.slice(i, eq)
    if (!LABEL_NAME.test(name)) throw new Error(`bad label name ${name} in: ${line}`)
    if (name in labels) throw new Error(`label ${name} twice in: ${line}`)
    if (text[eq + 1] !== "\"") throw new Error(`unquoted label value in: ${line}`)
    let value = ""
    let j = eq + 2
    for (;; j++) {
      if (j >= text.length) throw new Error(`unterminated label value in: ${line}`)
      const c = text[j]
      if (c === "\\") {
        const next = text[++j]
        if (next === "n") value += "\n"
        else if (next === "\\" || next === "\"") value += next
        else throw new Error(`bad escape in: ${line}`)
      } else if (c === "\"") break
      else if (c === "\n") throw new Error(`raw newline in: ${line}`)
      else value += c
    }
    labels[name] = value
    i = j + 1
    if (i < text.length) {
      if (text[i] !== ",") throw new Error(`expected , in: ${line}`)
      i++
    }
  }
  return labels
}

/** The sample's family: histogram samples belong to their base name. */
const familyOf = (name: string, families: Map<string, Family>): Family | undefined => {
  const direct = families.get(name)
  if (direct !== undefined) return direct
  const base = name.replace(/_(bucket|sum|count)$/, "")
  const family = families.get(base)
  return family?.type === "histogram" || family?.type === "summary" ? family : undefined
}

const parsePrometheus = (text: string): Map<string, Family> => {
  if (!text.endsWith("\n")) throw new Error("the page must end with a newline")
  const families = new Map<string, Family>()
  const seen = new Set<string>()
  for (const line of text.slice(0, -1).split("\n")) {
    if (line.startsWith("# ")) {
      const [, keyword, name, ...rest] = line.split(" ")
      if (keyword !== "HELP" && keyword !== "TYPE") continue
      if (name === undefined || !METRIC_NAME.test(name)) throw new Error(`bad metric name in: ${line}`)
      if (keyword === "TYPE") {
        const type = rest.join(" ")
        if (!["counter", "gauge", "histogram", "summary", "untyped"].includes(type)) throw new Error(`bad type: ${line}`)
        if (families.has(name)) throw new Error(`second TYPE for ${name}`)
        families.set(name, { type: type as Family["type"], help: undefined, samples: [] })
      } else {
        const family = families.get(name)
        if (family === undefined) throw new Error(`HELP before TYPE for ${name} (the gateway writes TYPE first only when there is no HELP)`)
        family.help = rest.join(" ")
      }
      continue
    }
    if (line === "") throw new Error("empty line")
    const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line)
    if (match === null) throw new Error(`bad sample line: ${line}`)
    const [, name, labelText, valueText] = match
    const labels = labelText === undefined ? {} : parseLabels(labelText, line)
    const family = familyOf(name!, families)
    if (family === undefined) throw new Error(`sample without a TYPE: ${line}`)
    const key = `${name}${JSON.stringify(Object.entries(labels).sort())}`
    if (seen.has(key)) throw new Error(`duplicate series: ${line}`)
    seen.add(key)
    family.samples.push({ name: name!, labels, value: parseValue(valueText!, line) })
  }
  return families
}

// HELP precedes TYPE in effect's output; accept that order too.
const parsePage = (text: string): Map<string, Family> => {
  const reordered = text.split("\n")
  for (let i = 0; i + 1 < reordered.length; i++) {
    if (reordered[i]!.startsWith("# HELP ") && reordered[i + 1]!.startsWith("# TYPE ")) {
      const help = reordered[i]!
      reordered[i] = reordered[i + 1]!
      reordered[i + 1] = help
      i++
    }
  }
  return parsePrometheus(reordered.join("\n"))
}

/** Histogram rules: buckets ascending by `le`, cumulative, ending in +Inf equal to `_count`, with a `_sum`. */
const checkHistogram = (name: string, family: Family) => {
  const series = new Map<string, Array<Sample>>()
  for (const sample of family.samples) {
    const { le: _le, ...rest } = sample.labels
    const key = JSON.stringify(Object.entries(rest).sort())
    series.set(key, [...(series.get(key) ?? []), sample])
  }
  for (const samples of series.values()) {
    const buckets = samples.filter((sample) => sample.name === `${name}_bucket`)
    const count = samples.find((sample) => sample.name === `${name}_count`)
    expect(samples.find((sample) => sample.name === `${name}_sum`), `${name}_sum`).toBeDefined()
    expect(count, `${name}_count`).toBeDefined()
    const bounds = buckets.map((bucket) => parseValue(bucket.labels.le!, bucket.labels.le!))
    expect(bounds.at(-1)).toBe(Infinity)
    for (let i = 1; i < buckets.length; i++) {
      expect(bounds[i]).toBeGreaterThan(bounds[i - 1]!)
      expect(buckets[i]!.value).toBeGreaterThanOrEqual(buckets[i - 1]!.value)
    }
    expect(buckets.at(-1)!.value).toBe(count!.value)
  }
}

// ---------------------------------------------------------------------------
// The gateway under traffic
// ---------------------------------------------------------------------------

const schema = {
  version: "1",
  channels: [{ pattern: "room:{room_id}" }],
  events: [
    { name: "echo", allowedChannels: ["room:*"] },
    { name: "typing", allowedChannels: ["room:*"] }
  ],
  rateLimits: { byEvent: { typing: { windowMs: 60_000, maxRequests: 1 } } }
}

const TOPIC = "room:metrics-topic-7f3a"
const CLIENT_ID = "client-id-metrics-9c1d"
const MADE_UP_EVENT = "made-up-event-0e5b"

const SECRET = "metrics-app-secret-5d2e9a7c4b1f8e3d6a0c"

let app: FakeApp
let gateway: TestGateway

beforeAll(async () => {
  app = await startFakeApp({
    secret: SECRET,
    auth: { "token-m": { client_id: CLIENT_ID, client_type: "web" } },
    messageHandler: (body) => ({ action: "reply", data: body.payload })
  })
  app.setSchemaRaw(JSON.stringify(schema))
  gateway = await startTestGateway({
    apps: [
      { id: "chat", fakeApp: app, secret: SECRET },
      { id: "limited", fakeApp: app, secret: SECRET, rateLimits: { connectionsPerIpPerMinute: 1 } }
    ]
  })
})
afterAll(async () => {
  await gateway.close()
  await app.close()
})

const open: Array<RawSocket> = []
afterEach(async () => {
  await Promise.all(open.splice(0).map((socket) => socket.close()))
})

const scrape = async () => {
  const response = await fetch(`${gateway.url}/metrics`)
  expect(response.status).toBe(200)
  expect(response.headers.get("content-type")).toBe("text/plain; version=0.0.4; charset=utf-8")
  const text = await response.text()
  return { text, families: parsePage(text) }
}

/** The value of one series (0 when it does not exist yet). */
const valueOf = (families: Map<string, Family>, name: string, labels: Record<string, string>): number => {
  const family = familyOf(name, families)
  const sample = family?.samples.find((candidate) =>
    candidate.name === name && Object.entries(labels).every(([key, value]) => candidate.labels[key] === value) &&
    Object.keys(candidate.labels).length === Object.keys(labels).length
  )
  return sample?.value ?? 0
}

const connect = async (token = "token-m", appId = "chat") => {
  const socket = await rawSocket(`${gateway.socketUrl}/websocket?app=${appId}&token=${token}&vsn=2.0.0`)
  open.push(socket)
  return socket
}

describe("GET /metrics", () => {
  it("every metric of the catalogue is in the README's table", () => {
    const readme = readFileSync(new URL("../../README.md", import.meta.url), "utf8")
    for (const metric of Object.values(catalogue)) expect(readme).toMatch(new RegExp(`^\\|.*\`${metric.id}\``, "m"))
  })

  it("is strict Prometheus text: typed families, gateway_ counters end in _total, histograms well-formed", async () => {
    const { families } = await scrape()
    for (const [name, family] of families) {
      if (name.startsWith("gateway_")) {
        expect(family.help, `${name} has help text`).toBeDefined()
        if (family.type === "counter") expect(name).toMatch(/_total$/)
        if (family.type === "histogram") expect(name).toMatch(/_seconds$/)
      }
      if (family.type === "histogram") checkHistogram(name, family)
      expect(family.type, `${name} is no summary`).not.toBe("summary")
    }
    for (const name of [
      "gateway_process_cpu_seconds_total",
      "gateway_process_resident_memory_bytes",
      "gateway_process_heap_used_bytes",
      "gateway_process_open_fds",
      "gateway_event_loop_lag_seconds",
      "gateway_event_loop_utilization_ratio",
      "gateway_connections",
      "effect_cluster_shards",
      "effect_cluster_entities"
    ]) {
      expect(families.has(name), name).toBe(true)
    }
  })

  it("counts connections, joins, pushes, app calls and refusals as they happen", async () => {
    const before = (await scrape()).families

    const socket = await connect()
    socket.send(["1", "1", TOPIC, "phx_join", {}])
    expect(await socket.nextJson()).toMatchObject(["1", "1", TOPIC, "phx_reply", { status: "ok" }])
    socket.send(["2", "2", "lobby-without-pattern", "phx_join", {}])
    expect(await socket.nextJson()).toMatchObject(["2", "2", "lobby-without-pattern", "phx_reply", { status: "error" }])
    socket.send(["1", "3", TOPIC, "echo", { n: 1 }])
    expect(await socket.nextJson()).toMatchObject(["1", "3", TOPIC, "phx_reply", { status: "ok" }])
    socket.send(["1", "4", TOPIC, MADE_UP_EVENT, {}])
    expect(await socket.nextJson()).toMatchObject(["1", "4", TOPIC, "phx_reply", { status: "error" }])
    socket.send(["1", "5", TOPIC, "typing", {}])
    expect(await socket.nextJson()).toMatchObject(["1", "5", TOPIC, "phx_reply", { status: "ok" }])
    socket.send(["1", "6", TOPIC, "typing", {}])
    expect(await socket.nextJson()).toMatchObject(["1", "6", TOPIC, "phx_reply", { response: { reason: "rate_limited" } }])

    expect((await upgradeRejection(`${gateway.socketUrl}/websocket?app=chat&token=wrong-token&vsn=2.0.0`)).status).toBe(401)
    expect((await upgradeRejection(`${gateway.socketUrl}/websocket?app=nope&token=t&vsn=2.0.0`)).status).toBe(404)
    await connect("token-m", "limited")
    expect((await upgradeRejection(`${gateway.socketUrl}/websocket?app=limited&token=token-m&vsn=2.0.0`)).status).toBe(429)

    const { text, families: after } = await scrape()
    const moved = (name: string, labels: Record<string, string>) =>
      valueOf(after, name, labels) - valueOf(before, name, labels)

    expect(moved("gateway_connection_opens_total", { app: "chat" })).toBe(1)
    expect(valueOf(after, "gateway_connections", { app: "chat" })).toBe(1)
    expect(moved("gateway_joins_total", { app: "chat", result: "ok" })).toBe(1)
    expect(moved("gateway_joins_total", { app: "chat", result: "invalid_channel_pattern" })).toBe(1)
    expect(moved("gateway_messages_in_total", { app: "chat", event: "echo" })).toBe(1)
    expect(moved("gateway_messages_in_total", { app: "chat", event: "typing" })).toBe(2)
    expect(moved("gateway_messages_in_total", { app: "chat", event: "_not_in_schema" })).toBe(1)
    expect(moved("gateway_push_refusals_total", { app: "chat", reason: "invalid_event_for_channel" })).toBe(1)
    expect(moved("gateway_push_refusals_total", { app: "chat", reason: "rate_limited" })).toBe(1)
    expect(moved("gateway_rate_limited_total", { app: "chat", limit: "push" })).toBe(1)
    expect(moved("gateway_rate_limited_total", { app: "limited", limit: "connections_per_ip" })).toBe(1)
    expect(moved("gateway_connection_refusals_total", { reason: "unauthorized" })).toBe(1)
    expect(moved("gateway_connection_refusals_total", { reason: "unknown_app" })).toBe(1)
    expect(moved("gateway_connection_refusals_total", { reason: "rate_limited" })).toBe(1)
    expect(moved("gateway_auth_failures_total", { app: "chat", reason: "unauthorized" })).toBe(1)
    // two pushes reached the app (echo and the first typing), each timed
    expect(moved("gateway_app_call_duration_seconds_count", { app: "chat", call: "message", outcome: "ok" })).toBe(2)
    expect(valueOf(after, "gateway_app_call_duration_seconds_sum", { app: "chat", call: "message", outcome: "ok" }))
      .toBeGreaterThan(0)
    // the connection's auth call was answered 200, the wrong token's 401
    expect(moved("gateway_app_call_duration_seconds_count", { app: "chat", call: "auth", outcome: "ok" })).toBe(1)
    expect(moved("gateway_app_call_duration_seconds_count", { app: "chat", call: "auth", outcome: "rejected" })).toBe(1)
    expect(valueOf(after, "gateway_app_call_breaker_state", { app: "chat", call: "message" })).toBe(0)

    // bounded labels: nothing a client chose shows up
    for (const secret of [TOPIC, "metrics-topic", CLIENT_ID, MADE_UP_EVENT, "lobby-without-pattern", "nope", "wrong-token"]) {
      expect(text).not.toContain(secret)
    }

    await socket.close()
    const closed = (await scrape()).families
    expect(valueOf(closed, "gateway_connections", { app: "chat" })).toBe(0)
    expect(valueOf(closed, "gateway_connection_closes_total", { app: "chat", closed_by: "client" }))
      .toBeGreaterThanOrEqual(1)
  })

  it("counts broadcasts and their deliveries by app and schema event", async () => {
    const subscriber = await connect()
    subscriber.send(["1", "1", TOPIC, "phx_join", {}])
    await subscriber.nextJson()
    const before = (await scrape()).families
    const response = await fetch(`${gateway.url}/api/apps/chat/broadcast`, {
      method: "POST",
      headers: { "content-type": "application/json", authorization: `Bearer ${SECRET}` },
      body: JSON.stringify({ topic: TOPIC, event: "echo", payload: { n: 1 } })
    })
    expect(response.status).toBe(202)
    expect(await subscriber.nextJson()).toMatchObject([null, null, TOPIC, "echo", { n: 1 }])
    const after = (await scrape()).families
    const moved = (name: string, labels: Record<string, string>) =>
      valueOf(after, name, labels) - valueOf(before, name, labels)
    expect(moved("gateway_broadcasts_total", { app: "chat", source: "server_api" })).toBe(1)
    expect(moved("gateway_deliveries_total", { app: "chat" })).toBe(1)
    expect(moved("gateway_messages_out_total", { app: "chat", event: "echo" })).toBe(1)
  })
})
