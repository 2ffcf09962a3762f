// The admin dashboard: polls the admin API every 2 s with the token kept in
// this tab's sessionStorage, and draws what it gets. No library, nothing
// fetched from anywhere but this gateway.
"use strict"

const TOKEN_KEY = "realtime-gateway.admin-token"
const POLL_MS = 2000
const WINDOW_MS = 15 * 60_000
/** Rates are taken over at least this much of a node's samples, to read calmly. */
const RATE_SPAN_MS = 8000
const ERROR_SPAN_MS = 5 * 60_000
const CALL_KINDS = ["auth", "message", "schema", "notify"]
const BREAKER = ["closed", "open", "half-open"]

const $ = (id) => document.getElementById(id)
const svgNS = "http://www.w3.org/2000/svg"

let token = sessionStorage.getItem(TOKEN_KEY)
let timer
/** node → its samples, oldest first: {t, connections, channels, lag, rss, apps: {app: figures}} */
const samples = new Map()
let nodes = []
let apps = []
let polling = false

// ---------------------------------------------------------------------------
// Formatting
// ---------------------------------------------------------------------------

const count = (n) => (n === undefined || n === null || Number.isNaN(n) ? "–" : Math.round(n).toLocaleString("en-US"))
const rate = (n) => (n === undefined || Number.isNaN(n) ? "–" : n < 10 ? n.toFixed(1) : Math.round(n).toLocaleString("en-US"))
const ms = (n) => (n === undefined ? "–" : n < 10 ? `${n.toFixed(1)} ms` : `${Math.round(n)} ms`)
const mib = (bytes) => `${(bytes / 1048576).toFixed(0)} MiB`
const duration = (seconds) => {
  const d = Math.floor(seconds / 86400), h = Math.floor((seconds % 86400) / 3600), m = Math.floor((seconds % 3600) / 60)
  if (d > 0) return `${d}d ${h}h`
  if (h > 0) return `${h}h ${m}m`
  if (m > 0) return `${m}m`
  return `${Math.floor(seconds)}s`
}
const ago = (iso) => (iso === null ? "never" : `${duration(Math.max(0, (Date.now() - Date.parse(iso)) / 1000))} ago`)

const el = (tag, attrs = {}, ...children) => {
  const node = document.createElement(tag)
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value)
    else node.setAttribute(key, value)
  }
  for (const child of children) node.append(child)
  return node
}

// ---------------------------------------------------------------------------
// The admin API
// ---------------------------------------------------------------------------

class Unauthorized extends Error {}

const call = async (method, path, body) => {
  const response = await fetch(path, {
    method,
    headers: { authorization: `Bearer ${token}`, ...(body === undefined ? {} : { "content-type": "application/json" }) },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    cache: "no-store"
  })
  if (response.status === 401) throw new Unauthorized()
  const answer = await response.json().catch(() => ({}))
  return { status: response.status, body: answer }
}

// ---------------------------------------------------------------------------
// Samples: every node's history, then one sample per poll
// ---------------------------------------------------------------------------

const record = (node, sample) => {
  let list = samples.get(node)
  if (list === undefined) samples.set(node, list = [])
  if (list.length > 0 && list[list.length - 1].t >= sample.t) return
  list.push(sample)
  const oldest = sample.t - WINDOW_MS
  while (list.length > 0 && list[0].t < oldest) list.shift()
}

const fromStatus = (status, t) => ({
  t,
  connections: status.connections,
  channels: status.channels,
  lag: status.event_loop_lag_ms,
  rss: status.memory.rss_bytes,
  apps: status.apps
})

const fromHistory = (sample) => ({
  t: sample.at,
  connections: sample.connections,
  channels: sample.channels,
  lag: sample.event_loop_lag_ms,
  rss: sample.rss_bytes,
  apps: sample.apps
})

/** The sample at least `span` older than the last one (or the oldest). */
const before = (list, span) => {
  const last = list[list.length - 1]
  for (let i = list.length - 2; i >= 0; i--) if (last.t - list[i].t >= span) return list[i]
  return list.length > 1 ? list[0] : undefined
}

const figure = (sample, app, name) => sample?.apps?.[app]?.[name] ?? 0

/** Increase of a cumulative figure per second between two samples; a restart (a drop) counts as none. */
const perSecond = (from, to, app, name) => {
  if (from === undefined || to.t <= from.t) return 0
  return Math.max(0, figure(to, app, name) - figure(from, app, name)) / ((to.t - from.t) / 1000)
}

const appNames = (sample) => Object.keys(sample?.apps ?? {})

/** Cluster-wide rate of a figure of one app (or of every app when `app` is undefined). */
const clusterRate = (name, app) => {
  let total = 0
  for (const list of samples.values()) {
    if (list.length < 2) continue
    const last = list[list.length - 1], from = before(list, RATE_SPAN_MS)
    for (const id of app === undefined ? appNames(last) : [app]) total += perSecond(from, last, id, name)
  }
  return total
}

/** Increase over the last five minutes, cluster-wide. */
const clusterIncrease = (name, app) => {
  let total = 0
  for (const list of samples.values()) {
    if (list.length < 2) continue
    const last = list[list.length - 1], from = before(list, ERROR_SPAN_MS)
    total += Math.max(0, figure(last, app, name) - figure(from, app, name))
  }
  return total
}

/** The worst (largest) latest value of a figure over nodes. */
const worst = (app, name) => {
  let value
  for (const list of samples.values()) {
    const latest = list[list.length - 1]?.apps?.[app]?.[name]
    if (latest !== undefined && (value === undefined || latest > value)) value = latest
  }
  return value
}

// ---------------------------------------------------------------------------
// Charts, drawn by hand in SVG
// ---------------------------------------------------------------------------

const BUCKET_MS = 5000

/** The cluster's figures per 5-second bucket over the window: connections summed (carried forward), rates summed, worst lag and latency. */
const chartSeries = () => {
  const buckets = new Map()
  const at = (t) => {
    const key = Math.floor(t / BUCKET_MS) * BUCKET_MS
    let bucket = buckets.get(key)
    if (bucket === undefined) buckets.set(key, bucket = { t: key, connections: new Map(), pushes: 0, deliveries: 0, lag: 0, latency: undefined })
    return bucket
  }
  for (const [node, list] of samples) {
    for (let i = 0; i < list.length; i++) {
      const sample = list[i], previous = list[i - 1]
      const bucket = at(sample.t)
      bucket.connections.set(node, sample.connections)
      bucket.lag = Math.max(bucket.lag, sample.lag)
      for (const app of appNames(sample)) {
        if (previous !== undefined) {
          bucket.pushes += perSecond(previous, sample, app, "pushes")
          bucket.deliveries += perSecond(previous, sample, app, "deliveries")
        }
        const p99 = sample.apps[app].message_p99_ms
        if (p99 !== undefined) bucket.latency = Math.max(bucket.latency ?? 0, p99)
      }
    }
  }
  const ordered = [...buckets.values()].sort((a, b) => a.t - b.t)
  const carried = new Map()
  return ordered.map((bucket) => {
    for (const [node, value] of bucket.connections) carried.set(node, value)
    let connections = 0
    for (const value of carried.values()) connections += value
    return { t: bucket.t, connections, pushes: bucket.pushes, deliveries: bucket.deliveries, lag: bucket.lag, latency: bucket.latency }
  })
}

const niceMax = (value) => {
  if (value <= 0) return 1
  const power = 10 ** Math.floor(Math.log10(value))
  for (const step of [1, 2, 4, 5, 10]) if (value <= step * power) return step * power
  return 10 * power
}

/** Axis labels: short, one decimal only where the scale needs it. */
const tick = (value) => {
  if (value >= 1e6) return `${(value / 1e6).toFixed(value % 1e6 === 0 ? 0 : 1)}M`
  if (value >= 1e3) return `${(value / 1e3).toFixed(value % 1e3 === 0 ? 0 : 1)}k`
  return Number.isInteger(value) ? String(value) : value.toFixed(1)
}

const svgEl = (tag, attrs) => {
  const node = document.createElementNS(svgNS, tag)
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value))
  return node
}

const draw = (svg, series) => {
  const width = Math.max(200, svg.clientWidth), height = Math.max(100, svg.clientHeight)
  const left = 44, right = 8, top = 8, bottom = 18
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`)
  svg.replaceChildren()
  const now = Date.now(), start = now - WINDOW_MS
  const all = series.flatMap((s) => s.points.filter((p) => p.v !== undefined && p.t >= start))
  const max = niceMax(Math.max(0, ...all.map((p) => p.v)))
  if (all.length === 0) {
    const empty = svgEl("text", { class: "empty", x: (left + width) / 2, y: height / 2, "text-anchor": "middle" })
    empty.textContent = "no data in the last 15 minutes"
    svg.append(empty)
    return
  }
  const x = (t) => left + ((t - start) / WINDOW_MS) * (width - left - right)
  const y = (v) => top + (1 - v / max) * (height - top - bottom)
  for (const fraction of [0, 0.5, 1]) {
    const value = max * fraction
    svg.append(svgEl("line", { class: "gridline", x1: left, x2: width - right, y1: y(value), y2: y(value) }))
    const label = svgEl("text", { class: "axis", x: left - 6, y: y(value) + 3, "text-anchor": "end" })
    label.textContent = tick(value)
    svg.append(label)
  }
  for (const [minutes, anchor] of [[15, "start"], [10, "middle"], [5, "middle"], [0, "end"]]) {
    const label = svgEl("text", { class: "axis", x: x(now - minutes * 60_000), y: height - 4, "text-anchor": anchor })
    label.textContent = minutes === 0 ? "now" : `−${minutes}m`
    svg.append(label)
  }
  series.forEach((s, index) => {
    const points = s.points.filter((p) => p.v !== undefined && p.t >= start)
    if (points.length === 0) return
    const line = points.map((p, i) => `${i === 0 ? "M" : "L"}${x(p.t).toFixed(1)},${y(p.v).toFixed(1)}`).join("")
    if (index === 0 && s.area) {
      const area = `${line}L${x(points[points.length - 1].t).toFixed(1)},${y(0)}L${x(points[0].t).toFixed(1)},${y(0)}Z`
      svg.append(svgEl("path", { class: "area1", d: area }))
    }
    svg.append(svgEl("path", { class: index === 0 ? "line1" : "line2", d: line }))
  })
}

const drawCharts = () => {
  const series = chartSeries()
  const pick = (name) => series.map((p) => ({ t: p.t, v: p[name] }))
  draw($("c-connections"), [{ points: pick("connections"), area: true }])
  draw($("c-traffic"), [{ points: pick("deliveries"), area: true }, { points: pick("pushes") }])
  draw($("c-latency"), [{ points: pick("latency"), area: true }])
  draw($("c-lag"), [{ points: pick("lag"), area: true }])
}

// ---------------------------------------------------------------------------
// Figures and tables
// ---------------------------------------------------------------------------

const setFigure = (id, text, level = "", unit = "") => {
  const node = $(id)
  node.replaceChildren(text, ...(unit === "" ? [] : [el("span", { class: "unit" }, unit)]))
  node.className = `value ${level}`
}

const renderFigures = () => {
  const live = nodes.filter((n) => n.connections !== undefined)
  setFigure("f-connections", count(live.reduce((sum, n) => sum + n.connections, 0)))
  setFigure("f-channels", count(live.reduce((sum, n) => sum + n.channels, 0)))
  setFigure("f-pushes", rate(clusterRate("pushes")))
  setFigure("f-deliveries", rate(clusterRate("deliveries")))
  const errors = CALL_KINDS.reduce((sum, kind) => sum + clusterRate(`${kind}_errors`), 0)
  setFigure("f-errors", rate(errors), errors > 0 ? "warn" : "")
  const limited = clusterRate("rate_limited")
  setFigure("f-limited", rate(limited), limited > 0 ? "warn" : "")
  const lag = Math.max(0, ...live.map((n) => n.event_loop_lag_ms))
  setFigure("f-lag", lag < 10 ? lag.toFixed(1) : count(lag), lag > 200 ? "bad" : lag > 50 ? "warn" : "", "ms")

  const ready = nodes.filter((n) => n.state === "ready").length
  const health = $("health")
  health.textContent = `${ready}/${nodes.length} nodes ready`
  health.className = `pill ${nodes.some((n) => n.state === "unreachable") ? "bad" : ready === nodes.length ? "good" : "warn"}`
  $("updated").textContent = `updated ${new Date().toLocaleTimeString()}`
}

const stateCell = (state) => el("td", {}, el("span", { class: `state ${state === "ready" ? "good" : state === "unreachable" ? "bad" : "warn"}` }, state))

const renderNodes = () => {
  const rows = nodes.map((n) =>
    n.connections === undefined
      ? el("tr", {}, el("td", {}, n.node), stateCell(n.state), el("td", { colspan: "9", class: "muted" }, "no answer"))
      : el(
        "tr",
        {},
        el("td", {}, n.node),
        stateCell(n.state),
        el("td", {}, n.version),
        el("td", { class: "num" }, duration(n.uptime_s)),
        el("td", { class: "num" }, count(n.connections)),
        el("td", { class: "num" }, count(n.channels)),
        el("td", { class: "num" }, count(n.shards)),
        el("td", { class: "num" }, count(n.entities)),
        el("td", { class: `num ${n.event_loop_lag_ms > 200 ? "bad" : n.event_loop_lag_ms > 50 ? "warn" : ""}` }, ms(n.event_loop_lag_ms)),
        el("td", { class: "num" }, mib(n.memory.rss_bytes)),
        el("td", { class: "num" }, mib(n.memory.heap_used_bytes))
      )
  )
  $("nodes").tBodies[0].replaceChildren(...rows)
}

const latencyCell = (app, kind) => {
  const p50 = worst(app, `${kind}_p50_ms`), p99 = worst(app, `${kind}_p99_ms`)
  return el("td", { class: "num" }, p50 === undefined ? "–" : `${ms(p50)} / ${ms(p99)}`)
}

const errorsCell = (app) => {
  const failing = CALL_KINDS.map((kind) => [kind, clusterIncrease(`${kind}_errors`, app)]).filter(([, n]) => n > 0)
  return failing.length === 0
    ? el("td", { class: "muted" }, "none")
    : el("td", { class: "bad" }, failing.map(([kind, n]) => `${kind} ${count(n)}`).join(" · "))
}

const breakersCell = (app) => {
  const open = []
  for (const kind of CALL_KINDS) {
    const state = worst(app, `${kind}_breaker`)
    if (state !== undefined && state > 0) open.push(`${kind} ${BREAKER[state] ?? state}`)
  }
  return el("td", {}, el("span", { class: open.length === 0 ? "good" : "bad" }, open.length === 0 ? "closed" : open.join(", ")))
}

const schemaCell = (app) => {
  const info = apps.find((a) => a.id === app)?.schema
  if (info === undefined) return el("td", { class: "muted" }, "–")
  const version = info.version === null ? "none" : `v${info.version}`
  return info.last_error === null
    ? el("td", {}, `${version} `, el("span", { class: "good" }, "ok"), el("span", { class: "muted" }, ` ${ago(info.last_fetch_at)}`))
    : el("td", { title: info.last_error }, `${version} `, el("span", { class: "bad" }, `failed ${ago(info.last_fetch_at)}`))
}

const renderApps = () => {
  const ids = apps.map((a) => a.id)
  const rows = ids.map((app) => {
    const connections = nodes.reduce((sum, n) => sum + (n.apps?.[app]?.connections ?? 0), 0)
    const limited = clusterRate("rate_limited", app)
    return el(
      "tr",
      { "data-app": app },
      el("td", {}, el("strong", {}, app), el("span", { class: "muted small" }, apps.find((a) => a.id === app)?.source === "runtime" ? " runtime" : "")),
      el("td", { class: "num app-connections" }, count(connections)),
      el("td", { class: "num" }, rate(clusterRate("joins", app))),
      el("td", { class: "num" }, rate(clusterRate("pushes", app))),
      el("td", { class: "num" }, rate(clusterRate("broadcasts", app))),
      el("td", { class: "num" }, rate(clusterRate("deliveries", app))),
      latencyCell(app, "message"),
      latencyCell(app, "auth"),
      errorsCell(app),
      breakersCell(app),
      schemaCell(app),
      el("td", { class: `num ${limited > 0 ? "warn" : ""}` }, rate(limited)),
      el(
        "td",
        {},
        el(
          "div",
          { class: "actions" },
          el("button", { class: "small quiet", type: "button", onclick: () => refreshSchema(app) }, "Refresh schema"),
          el("button", { class: "small quiet", type: "button", onclick: () => openAction("disconnect", app) }, "Disconnect…"),
          el("button", { class: "small quiet", type: "button", onclick: () => openAction("broadcast", app) }, "Broadcast…")
        )
      )
    )
  })
  $("apps").tBodies[0].replaceChildren(...rows)
}

const render = () => {
  renderFigures()
  renderNodes()
  renderApps()
  drawCharts()
}

// ---------------------------------------------------------------------------
// Actions
// ---------------------------------------------------------------------------

const toast = (text, bad = false) => {
  const node = $("toast")
  node.textContent = text
  node.className = `toast ${bad ? "bad" : ""}`
  node.hidden = false
  clearTimeout(toast.timer)
  toast.timer = setTimeout(() => (node.hidden = true), 6000)
}

const guarded = async (work) => {
  try {
    await work()
  } catch (error) {
    if (error instanceof Unauthorized) return signOut("The token was refused.")
    toast(`Failed: ${error.message}`, true)
  }
}

const refreshSchema = (app) =>
  guarded(async () => {
    const { body, status } = await call("POST", `/admin/apps/${encodeURIComponent(app)}/schema/refresh`)
    if (status === 200) toast(`${app}: schema version ${body.version} in force`)
    else toast(`${app}: schema refresh failed: ${body.reason}`, true)
    await poll()
  })

const ACTIONS = {
  disconnect: {
    title: (app) => `Disconnect a client of ${app}`,
    fields: [{ name: "client", label: "Client id", value: "" }],
    go: async (app, values) => {
      const { body, status } = await call("DELETE", `/admin/apps/${encodeURIComponent(app)}/clients/${encodeURIComponent(values.client)}`)
      if (status === 200) toast(`${app}: ${body.disconnected} connection(s) of ${values.client} closed`)
      else toast(`${app}: disconnect failed: ${body.reason}`, true)
    }
  },
  broadcast: {
    title: (app) => `Send a test broadcast to ${app}`,
    fields: [
      { name: "topic", label: "Topic", value: "" },
      { name: "event", label: "Event", value: "admin_test" },
      { name: "payload", label: "Payload (JSON)", value: "{\"from\": \"dashboard\"}", multiline: true }
    ],
    go: async (app, values) => {
      let payload
      try {
        payload = JSON.parse(values.payload || "{}")
      } catch {
        return toast("The payload is not valid JSON.", true)
      }
      const { body, status } = await call("POST", `/admin/apps/${encodeURIComponent(app)}/broadcast`, {
        topic: values.topic,
        event: values.event,
        payload
      })
      if (status === 202) toast(`${app}: broadcast to ${values.topic} accepted`)
      else toast(`${app}: broadcast refused: ${body.reason}${body.errors ? ` (${body.errors.map((e) => `${e.path} ${e.message}`).join("; ")})` : ""}`, true)
    }
  }
}

let pending

const openAction = (kind, app) => {
  const action = ACTIONS[kind]
  pending = { action, app }
  $("action-title").textContent = action.title(app)
  $("action-fields").replaceChildren(
    ...action.fields.flatMap((field) => [
      el("label", { for: `field-${field.name}` }, field.label),
      field.multiline
        ? Object.assign(el("textarea", { id: `field-${field.name}`, name: field.name, spellcheck: "false" }), { value: field.value })
        : Object.assign(el("input", { id: `field-${field.name}`, name: field.name, required: "", spellcheck: "false" }), { value: field.value })
    ])
  )
  $("action").showModal()
}

// ---------------------------------------------------------------------------
// Polling, login
// ---------------------------------------------------------------------------

const poll = async (withHistory = false) => {
  const [cluster, appList] = await Promise.all([
    call("GET", `/admin/cluster${withHistory ? "?history=true" : ""}`),
    call("GET", "/admin/apps")
  ])
  const t = Date.parse(cluster.body.at)
  nodes = cluster.body.nodes
  apps = appList.body.apps
  for (const status of nodes) {
    if (status.connections === undefined) continue
    for (const sample of status.history ?? []) record(status.node, fromHistory(sample))
    record(status.node, fromStatus(status, t))
  }
  render()
}

const loop = async () => {
  if (polling) return
  polling = true
  await guarded(() => poll())
  polling = false
  timer = setTimeout(loop, POLL_MS)
}

const start = async () => {
  $("login").hidden = true
  $("dashboard").hidden = false
  samples.clear()
  await guarded(() => poll(true))
  if (token !== null) timer = setTimeout(loop, POLL_MS)
}

const signOut = (message = "") => {
  clearTimeout(timer)
  token = null
  sessionStorage.removeItem(TOKEN_KEY)
  $("dashboard").hidden = true
  $("login").hidden = false
  $("login-error").textContent = message
  $("token").value = ""
  $("token").focus()
}

document.addEventListener("DOMContentLoaded", () => {
  $("login-form").addEventListener("submit", async (event) => {
    event.preventDefault()
    token = $("token").value.trim()
    try {
      await call("GET", "/admin/apps")
    } catch (error) {
      token = null
      $("login-error").textContent = error instanceof Unauthorized ? "That token was refused." : `Cannot reach the gateway: ${error.message}`
      return
    }
    sessionStorage.setItem(TOKEN_KEY, token)
    $("login-error").textContent = ""
    await start()
  })
  $("sign-out").addEventListener("click", () => signOut())
  $("action-form").addEventListener("submit", (event) => {
    if (event.submitter?.value !== "go" || pending === undefined) return
    const values = Object.fromEntries(new FormData(event.target).entries())
    const { action, app } = pending
    void guarded(async () => {
      await action.go(app, values)
      await poll()
    })
  })
  window.addEventListener("resize", () => drawCharts())
  if (token === null) signOut()
  else void start()
})
