/**
 * infra/: every .tf file parses as HCL (HashiCorp's own parser, compiled to
 * WebAssembly), the resources stay inside Oracle Cloud's Always Free limits for
 * the nodes in infra/inventory.json, the load balancer checks readiness and
 * keeps idle WebSockets, and each port is open only to whom it is for.
 */
import { parse } from "@cdktf/hcl2json"
import { readdirSync, readFileSync } from "node:fs"
import { beforeAll, describe, expect, it } from "vitest"

const infra = new URL("../../infra/", import.meta.url).pathname

type Block = Record<string, unknown>
/** hcl2json's shape: `resource.<type>.<name>` is a list of blocks, nested blocks are lists too. */
interface Terraform {
  readonly resource: Record<string, Record<string, Array<Block>>>
  readonly locals: Array<Record<string, unknown>>
  readonly variable: Record<string, Array<Block>>
  readonly output: Record<string, Array<Block>>
}

interface Inventory {
  readonly subnet: string
  readonly httpPort: number
  readonly clusterPort: number
  readonly postgres: { readonly node: string; readonly port: number }
  readonly nodes: ReadonlyArray<{ readonly name: string; readonly privateIp: string }>
}

const ALWAYS_FREE = { a1Ocpus: 4, a1MemoryGbs: 24, blockStorageGbs: 200, loadBalancers: 1, loadBalancerMbps: 10 }
const PHOENIX_HEARTBEAT_SECONDS = 30
const GATEWAY_IDLE_TIMEOUT_SECONDS = 60

const parseAll = async (): Promise<Terraform> => {
  const merged = { resource: {}, locals: [], variable: {}, output: {} } as {
    resource: Record<string, Record<string, Array<Block>>>
    locals: Array<Record<string, unknown>>
    variable: Record<string, Array<Block>>
    output: Record<string, Array<Block>>
  }
  for (const file of readdirSync(infra).filter((name) => name.endsWith(".tf"))) {
    const parsed = await parse(file, readFileSync(`${infra}${file}`, "utf8")) as Partial<Terraform>
    for (const [type, byName] of Object.entries(parsed.resource ?? {})) {
      merged.resource[type] = { ...merged.resource[type], ...byName }
    }
    merged.locals.push(...(parsed.locals ?? []))
    Object.assign(merged.variable, parsed.variable)
    Object.assign(merged.output, parsed.output)
  }
  return merged
}

const one = (blocks: unknown): Block => {
  expect(Array.isArray(blocks) && blocks.length === 1, JSON.stringify(blocks)).toBe(true)
  return (blocks as Array<Block>)[0]!
}

/** A literal, or `${local.name}` / `${local.inventory.key}` resolved. */
const valueOf = (terraform: Terraform, inventory: Inventory, value: unknown): unknown => {
  if (typeof value !== "string") return value
  const inventoryKey = /^\$\{local\.inventory\.([\w.]+)\}$/.exec(value)?.[1]
  if (inventoryKey !== undefined) {
    return inventoryKey.split(".").reduce<unknown>((at, key) => (at as Record<string, unknown>)[key], inventory)
  }
  const local = /^\$\{local\.(\w+)\}$/.exec(value)?.[1]
  if (local === undefined) return value
  const block = terraform.locals.find((locals) => local in locals)
  expect(block, `local.${local} is defined`).toBeDefined()
  return block![local]
}

/** How much of the Always Free tier the instances and volumes take for these nodes. */
const alwaysFreeUsage = (terraform: Terraform, inventory: Inventory) => {
  let a1Ocpus = 0
  let a1MemoryGbs = 0
  let blockStorageGbs = 0
  for (const [name, blocks] of Object.entries(terraform.resource.oci_core_instance ?? {})) {
    const instance = one(blocks)
    // one instance per inventory node (for_each = local.nodes), else one
    const count = instance.for_each === "${local.nodes}" ? inventory.nodes.length : 1
    expect(instance.shape, `oci_core_instance.${name}`).toBe("VM.Standard.A1.Flex")
    const shape = one(instance.shape_config)
    const source = one(instance.source_details)
    a1Ocpus += count * Number(valueOf(terraform, inventory, shape.ocpus))
    a1MemoryGbs += count * Number(valueOf(terraform, inventory, shape.memory_in_gbs))
    // OCI's smallest boot volume is 50 GB, and that is what an instance gets without a size.
    blockStorageGbs += count * Number(valueOf(terraform, inventory, source.boot_volume_size_in_gbs ?? 50))
  }
  for (const blocks of Object.values(terraform.resource.oci_core_volume ?? {})) {
    blockStorageGbs += Number(one(blocks).size_in_gbs ?? 1024)
  }
  return { a1Ocpus, a1MemoryGbs, blockStorageGbs }
}

const rulesOf = (terraform: Terraform, group: string) =>
  Object.entries(terraform.resource.oci_core_network_security_group_security_rule ?? {})
    .map(([name, blocks]) => ({ name, rule: one(blocks) }))
    .filter(({ rule }) => rule.network_security_group_id === `\${oci_core_network_security_group.${group}.id}`)

const destinationPort = (terraform: Terraform, inventory: Inventory, rule: Block): unknown => {
  const range = one(one(rule.tcp_options).destination_port_range)
  expect(range.min).toEqual(range.max)
  return valueOf(terraform, inventory, range.min)
}

let terraform: Terraform
let inventory: Inventory

beforeAll(async () => {
  terraform = await parseAll()
  inventory = JSON.parse(readFileSync(`${infra}inventory.json`, "utf8")) as Inventory
})

describe("infra/ (OCI, Always Free)", () => {
  it("every .tf file parses, and a malformed one is refused", async () => {
    expect(Object.keys(terraform.resource)).toContain("oci_core_instance")
    await expect(parse("broken.tf", "resource \"oci_core_vcn\" \"x\" {\n  cidr_blocks = [\n}\n")).rejects.toThrow()
  })

  it("the inventory's nodes have unique names and addresses inside the nodes' subnet", () => {
    const [network, bits] = inventory.subnet.split("/")
    expect(bits).toBe("24")
    const prefix = network!.split(".").slice(0, 3).join(".") + "."
    expect(new Set(inventory.nodes.map((node) => node.name)).size).toBe(inventory.nodes.length)
    for (const node of inventory.nodes) expect(node.privateIp.startsWith(prefix), node.privateIp).toBe(true)
    expect(inventory.nodes.map((node) => node.name)).toContain(inventory.postgres.node)
  })

  it("four nodes of 1 Arm core and 6 GB, all the storage included, fit the Always Free tier", () => {
    expect(inventory.nodes).toHaveLength(4)
    const usage = alwaysFreeUsage(terraform, inventory)
    expect(usage).toEqual({ a1Ocpus: 4, a1MemoryGbs: 24, blockStorageGbs: 200 })
    expect(usage.a1Ocpus).toBeLessThanOrEqual(ALWAYS_FREE.a1Ocpus)
    expect(usage.a1MemoryGbs).toBeLessThanOrEqual(ALWAYS_FREE.a1MemoryGbs)
    expect(usage.blockStorageGbs).toBeLessThanOrEqual(ALWAYS_FREE.blockStorageGbs)
  })

  it("a fifth node is over the limits, and Terraform refuses it unless told to pay", () => {
    const fifth = { ...inventory, nodes: [...inventory.nodes, { name: "node-5", privateIp: "10.0.1.15" }] }
    const usage = alwaysFreeUsage(terraform, fifth)
    expect(usage.a1Ocpus).toBeGreaterThan(ALWAYS_FREE.a1Ocpus)
    expect(usage.blockStorageGbs).toBeGreaterThan(ALWAYS_FREE.blockStorageGbs)
    const lifecycle = one(one(terraform.resource.oci_core_instance!.node).lifecycle)
    const conditions = (lifecycle.precondition as Array<Block>).map((check) => String(check.condition))
    expect(conditions).toContain("${local.within_always_free || var.allow_beyond_always_free}")
    const limits = terraform.locals.find((locals) => "always_free_a1_ocpus" in locals)!
    expect([limits.always_free_a1_ocpus, limits.always_free_a1_memory_gbs, limits.always_free_block_gbs])
      .toEqual([ALWAYS_FREE.a1Ocpus, ALWAYS_FREE.a1MemoryGbs, ALWAYS_FREE.blockStorageGbs])
    expect(one(terraform.variable.allow_beyond_always_free).default).toBe(false)
  })

  it("one flexible load balancer at 10 Mbps", () => {
    const balancers = Object.values(terraform.resource.oci_load_balancer_load_balancer ?? {})
    expect(balancers).toHaveLength(ALWAYS_FREE.loadBalancers)
    const balancer = one(balancers[0])
    expect(balancer.shape).toBe("flexible")
    const bandwidth = one(balancer.shape_details)
    expect([bandwidth.minimum_bandwidth_in_mbps, bandwidth.maximum_bandwidth_in_mbps])
      .toEqual([ALWAYS_FREE.loadBalancerMbps, ALWAYS_FREE.loadBalancerMbps])
  })

  it("the backend set's health check is GET /health/ready on the gateway's port, one backend per node", () => {
    const backendSet = one(Object.values(terraform.resource.oci_load_balancer_backend_set!)[0])
    const check = one(backendSet.health_checker)
    expect(check.protocol).toBe("HTTP")
    expect(check.url_path).toBe("/health/ready")
    expect(check.return_code).toBe(200)
    expect(valueOf(terraform, inventory, check.port)).toBe(inventory.httpPort)
    const backend = one(terraform.resource.oci_load_balancer_backend!.node)
    expect(backend.for_each).toBe("${local.nodes}")
    expect(valueOf(terraform, inventory, backend.port)).toBe(inventory.httpPort)
  })

  it("the listener ends TLS on 443 and keeps idle WebSockets well past the heartbeat and the gateway's own idle timeout", () => {
    const listeners = Object.values(terraform.resource.oci_load_balancer_listener!).map(one)
    expect(listeners).toHaveLength(1)
    const listener = listeners[0]!
    expect(listener.port).toBe(443)
    expect(one(listener.ssl_configuration).certificate_name).toBe("${oci_load_balancer_certificate.gateway.certificate_name}")
    const idle = Number(valueOf(terraform, inventory, one(listener.connection_configuration).idle_timeout_in_seconds))
    expect(idle).toBeGreaterThanOrEqual(4 * PHOENIX_HEARTBEAT_SECONDS)
    expect(idle).toBeGreaterThan(GATEWAY_IDLE_TIMEOUT_SECONDS)
  })

  it("the nodes admit the HTTP port from the load balancer, the cluster port from each other, SSH from the admin CIDR, nothing else", () => {
    const ingress = rulesOf(terraform, "nodes").filter(({ rule }) => rule.direction === "INGRESS")
    const tcp = ingress.filter(({ rule }) => rule.protocol === "6").map(({ rule }) => ({
      port: destinationPort(terraform, inventory, rule),
      from: rule.source
    }))
    expect(tcp).toEqual(expect.arrayContaining([
      { port: inventory.httpPort, from: "${oci_core_network_security_group.load_balancer.id}" },
      { port: inventory.clusterPort, from: "${oci_core_network_security_group.nodes.id}" },
      { port: 22, from: "${var.admin_cidr}" }
    ]))
    expect(tcp).toHaveLength(3)
    // only ICMP "fragmentation needed" from anywhere
    const other = ingress.filter(({ rule }) => rule.protocol !== "6")
    expect(other.map(({ rule }) => [rule.protocol, one(rule.icmp_options)])).toEqual([["1", { type: 3, code: 4 }]])
  })

  it("PostgreSQL is reachable from the nodes only, on the PostgreSQL node only", () => {
    const ingress = rulesOf(terraform, "postgres").filter(({ rule }) => rule.direction === "INGRESS")
    expect(ingress.map(({ rule }) => ({ port: destinationPort(terraform, inventory, rule), from: rule.source }))).toEqual([
      { port: inventory.postgres.port, from: "${oci_core_network_security_group.nodes.id}" }
    ])
    const vnic = one(one(terraform.resource.oci_core_instance!.node).create_vnic_details)
    expect(String(vnic.nsg_ids)).toContain("each.key == local.inventory.postgres.node ? [oci_core_network_security_group.postgres.id]")
  })

  it("clients reach only the load balancer's 443, and the subnets' security list admits nothing inbound", () => {
    const ingress = rulesOf(terraform, "load_balancer").filter(({ rule }) => rule.direction === "INGRESS")
    expect(ingress.map(({ rule }) => [destinationPort(terraform, inventory, rule), rule.source])).toEqual([[443, "0.0.0.0/0"]])
    for (const [name, blocks] of Object.entries(terraform.resource.oci_core_security_list ?? {})) {
      expect(one(blocks).ingress_security_rules, `oci_core_security_list.${name}`).toBeUndefined()
    }
    for (const blocks of Object.values(terraform.resource.oci_core_subnet!)) {
      expect(one(blocks).security_list_ids).toEqual(["${oci_core_security_list.egress_only.id}"])
    }
    expect(one(terraform.variable.admin_cidr).validation).toBeDefined()
  })

  it("outputs the load balancer's address and every node's addresses", () => {
    expect(Object.keys(terraform.output)).toEqual(
      expect.arrayContaining(["load_balancer_ip", "node_public_ips", "node_private_ips", "load_balancer_id"])
    )
  })
})
