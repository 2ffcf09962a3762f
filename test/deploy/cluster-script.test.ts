/**
 * scripts/deploy/cluster.sh, the runbook's rollout tool, run for real from a
 * copy of the repository's layout. The cloud around it is stand-ins on PATH:
 * `tofu` (the infrastructure's outputs), `ssh` (each node's readiness and its
 * systemctl), `oci` (the load balancer's view of each backend) and
 * `nixos-rebuild`; each records what it was asked, in order, in one log.
 */
import { execFile } from "node:child_process"
import { chmodSync, cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { afterEach, beforeEach, describe, expect, it } from "vitest"

const root = new URL("../..", import.meta.url).pathname
const nodes = ["node-1", "node-2", "node-3", "node-4"]
const publicIp = (node: string) => `192.0.2.${nodes.indexOf(node) + 1}`
const privateIp = (node: string) => `10.0.1.${nodes.indexOf(node) + 11}`

let checkout: string
let bin: string
let state: string

const executable = (path: string, body: string): void => {
  writeFileSync(path, `#!/usr/bin/env bash\n${body}\n`)
  chmodSync(path, 0o755)
}

/** What node `node` answers on /health/ready (200 unless set). */
const setReadiness = (node: string, status: string) => writeFileSync(`${state}/${publicIp(node)}.ready`, status)
/** What the load balancer says of `node` (OK unless set). */
const setBackendHealth = (node: string, status: string) => writeFileSync(`${state}/${privateIp(node)}.lb`, status)

const standIns = (): void => {
  const outputs = {
    node_public_ips: { value: Object.fromEntries(nodes.map((node) => [node, publicIp(node)])) },
    node_private_ips: { value: Object.fromEntries(nodes.map((node) => [node, privateIp(node)])) },
    load_balancer_id: { value: "ocid1.loadbalancer.oc1..test" }
  }
  writeFileSync(`${state}/outputs.json`, JSON.stringify(outputs))
  executable(`${bin}/tofu`, `cat "${state}/outputs.json"`)
  executable(`${bin}/ssh`, `
    while [ "$#" -gt 0 ]; do case "$1" in -o) shift 2 ;; -*) shift ;; *) break ;; esac; done
    ip="\${1#root@}"; shift
    command="$*"
    echo "ssh $ip $command" >> "${state}/log"
    case "$command" in
      *health/ready*) cat "${state}/$ip.ready" 2>/dev/null || printf 200 ;;
      install*secrets.env) cat > "${state}/$ip.secrets" ;;
    esac`)
  executable(`${bin}/oci`, `
    while [ "$#" -gt 0 ]; do [ "$1" = --backend-name ] && backend="$2"; shift; done
    ip="\${backend%:*}"
    cat "${state}/$ip.lb" 2>/dev/null || echo OK`)
  executable(`${bin}/nixos-rebuild`, `echo "nixos-rebuild $*" >> "${state}/log"`)
  executable(`${bin}/sleep`, "exit 0")
}

const run = (args: ReadonlyArray<string>, env: Record<string, string> = {}) =>
  new Promise<{ status: number; stderr: string }>((resolve) => {
    execFile("bash", [`${checkout}/scripts/deploy/cluster.sh`, ...args], {
      env: { PATH: `${bin}:/usr/bin:/bin`, HOME: checkout, ...env },
      timeout: 20_000
    }, (error, _stdout, stderr) => resolve({ status: error === null ? 0 : Number(error.code), stderr }))
  })

const log = (): Array<string> => readFileSync(`${state}/log`, { encoding: "utf8", flag: "a+" }).trim().split("\n").filter(Boolean)
const restarts = () => log().filter((line) => line.includes("systemctl restart")).map((line) => line.split(" ")[1])

beforeEach(() => {
  checkout = mkdtempSync(`${tmpdir()}/cluster-script-`)
  bin = `${checkout}/stand-ins`
  state = `${checkout}/state`
  mkdirSync(bin)
  mkdirSync(state)
  mkdirSync(`${checkout}/infra`)
  cpSync(`${root}scripts/deploy/cluster.sh`, `${checkout}/scripts/deploy/cluster.sh`)
  cpSync(`${root}infra/inventory.json`, `${checkout}/infra/inventory.json`)
  standIns()
})
afterEach(() => {
  rmSync(checkout, { recursive: true, force: true })
})

describe("scripts/deploy/cluster.sh", () => {
  it("restart: one node at a time, the next only once the previous is ready and healthy behind the load balancer", async () => {
    const result = await run(["restart"])
    expect(result.status).toBe(0)
    expect(restarts()).toEqual(nodes.map(publicIp))
    const lines = log()
    for (const node of nodes.slice(0, -1)) {
      const restarted = lines.indexOf(`ssh ${publicIp(node)} systemctl restart realtime-gateway.service`)
      const checked = lines.findIndex((line, index) => index > restarted && line.startsWith(`ssh ${publicIp(node)} curl`))
      const next = lines.findIndex((line) => line.includes("systemctl restart") && line.includes(publicIp(nodes[nodes.indexOf(node) + 1]!)))
      expect(restarted).toBeGreaterThanOrEqual(0)
      expect(checked).toBeGreaterThan(restarted)
      expect(next).toBeGreaterThan(checked)
    }
  })

  it("a node that does not come back stops the rollout, with the nodes after it untouched", async () => {
    setReadiness("node-2", "503")
    const result = await run(["restart"], { READY_TIMEOUT_S: "1" })
    expect(result.status).toBe(1)
    expect(result.stderr).toContain("node-2 is not ready")
    expect(restarts()).toEqual([publicIp("node-1"), publicIp("node-2")])
  })

  it("a node ready but not healthy for the load balancer stops the rollout too", async () => {
    const result = await run(["deploy", "node-1", "node-3"], { READY_TIMEOUT_S: "1" })
    expect(result.status).toBe(0)
    setBackendHealth("node-3", "CRITICAL")
    const stopped = await run(["deploy", "node-3", "node-4"], { READY_TIMEOUT_S: "1" })
    expect(stopped.status).toBe(1)
    expect(stopped.stderr).toContain("node-3 is ready but the load balancer does not see it healthy")
    expect(log().filter((line) => line.startsWith("nixos-rebuild")).map((line) => /#(node-\d)/.exec(line)?.[1]))
      .toEqual(["node-1", "node-3", "node-3"])
  })

  it("refuses to start a rollout on a cluster with an unhealthy node, unless the nodes are named", async () => {
    setBackendHealth("node-3", "CRITICAL")
    const refused = await run(["deploy"])
    expect(refused.status).toBe(1)
    expect(refused.stderr).toContain("node-3 is not healthy behind the load balancer")
    expect(log().filter((line) => line.startsWith("nixos-rebuild"))).toEqual([])
    const named = await run(["deploy", "node-1"])
    expect(named.status).toBe(0)
    expect(log().filter((line) => line.startsWith("nixos-rebuild"))).toEqual([expect.stringContaining(".#node-1 ")])
  })

  it("deploy builds each node's configuration on that node, then makes sure its gateway runs", async () => {
    expect((await run(["deploy"])).status).toBe(0)
    const lines = log()
    for (const node of nodes) {
      const rebuilt = lines.indexOf(`nixos-rebuild switch --flake .#${node} --target-host root@${publicIp(node)} --build-host root@${publicIp(node)}`)
      expect(rebuilt, node).toBeGreaterThanOrEqual(0)
      expect(lines[rebuilt + 1]).toBe(`ssh ${publicIp(node)} systemctl start realtime-gateway.service`)
    }
  })

  it("restart-all stops every node before starting any, for a new cluster secret", async () => {
    expect((await run(["restart-all"])).status).toBe(0)
    const lines = log()
    const lastStop = Math.max(...nodes.map((node) => lines.indexOf(`ssh ${publicIp(node)} while systemctl is-active -q realtime-gateway.service; do sleep 1; done`)))
    const firstStart = Math.min(...nodes.map((node) => lines.indexOf(`ssh ${publicIp(node)} systemctl start realtime-gateway.service`)))
    expect(lastStop).toBeGreaterThanOrEqual(0)
    expect(firstStart).toBeGreaterThan(lastStop)
  })

  it("secrets copies the file to every node, and refuses one without the cluster's secrets", async () => {
    writeFileSync(`${checkout}/incomplete.env`, "GATEWAY_ADMIN_TOKEN=x\n")
    const refused = await run(["secrets", `${checkout}/incomplete.env`])
    expect(refused.status).toBe(2)
    expect(refused.stderr).toContain("has no CLUSTER_SECRET= line")

    const secrets = "DATABASE_URL=postgres://gateway:00ff@10.0.1.11:5432/gateway\nCLUSTER_SECRET=abc\n"
    writeFileSync(`${checkout}/gateway.env`, secrets)
    expect((await run(["secrets", `${checkout}/gateway.env`])).status).toBe(0)
    for (const node of nodes) expect(readFileSync(`${state}/${publicIp(node)}.secrets`, "utf8")).toBe(secrets)
    expect(restarts()).toEqual([])
  })

  it("names the nodes it knows when given one it does not, and prints its usage for no command", async () => {
    const unknown = await run(["restart", "node-9"])
    expect(unknown.status).toBe(2)
    expect(unknown.stderr).toContain("no node named node-9")
    expect(unknown.stderr).toContain("node-1 node-2 node-3 node-4")
    const usage = await run([])
    expect(usage.status).toBe(2)
    expect(usage.stderr).toContain("cluster.sh deploy [NODE...]")
  })
})
