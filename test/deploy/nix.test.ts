/**
 * The Nix side of the deployment, checked with `nix-instantiate` alone (no
 * nixpkgs, no build): every .nix file parses; the NixOS module, evaluated with a
 * stand-in for nixpkgs' lib (test/deploy/module-eval.nix), declares the options
 * the README documents and turns them into the gateway's variables, systemd
 * hardening and firewall rules; the lock file gives the package what it
 * fetches by.
 */
import { execFileSync } from "node:child_process"
import { readdirSync, readFileSync } from "node:fs"
import { describe, expect, it } from "vitest"

const root = new URL("../..", import.meta.url).pathname
const nixFiles = [
  "flake.nix",
  ...readdirSync(`${root}nix`).filter((file) => file.endsWith(".nix")).map((file) => `nix/${file}`),
  "test/deploy/module-eval.nix"
]

const nixInstantiate = (args: ReadonlyArray<string>): string =>
  execFileSync("nix-instantiate", args, { cwd: root, encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] })

/** Evaluates test/deploy/module-eval.nix: nix/module.nix with a stand-in for nixpkgs' lib. */
const evaluateModule = (attribute: "options" | "config", settings = "{ }", nftables = true): unknown =>
  JSON.parse(nixInstantiate([
    "--eval", "--strict", "--json", "test/deploy/module-eval.nix", "-A", attribute,
    "--arg", "settings", settings, "--arg", "nftables", String(nftables)
  ]))

const moduleOptionPaths = (): ReadonlyArray<string> => evaluateModule("options") as Array<string>

interface ModuleConfig {
  readonly failedAssertions: ReadonlyArray<string>
  readonly service: {
    readonly environment: Record<string, string>
    readonly serviceConfig: Record<string, unknown> & { readonly ExecStart: { readonly text: string } }
  }
  readonly firewall: { readonly allowedTCPPorts: ReadonlyArray<number>; readonly extraInputRules: string | null; readonly extraCommands: string | null }
}
const moduleConfig = (settings: string, nftables = true): ModuleConfig => evaluateModule("config", settings, nftables) as ModuleConfig

const readmeModuleOptions = (): ReadonlyArray<string> => {
  const readme = readFileSync(`${root}README.md`, "utf8")
  const section = /\n## Deploying\n([\s\S]*?)\n## /.exec(readme)?.[1] ?? ""
  const tableRows = section.split("\n").filter((line) => line.startsWith("| `services.realtime-gateway."))
  const firstCells = tableRows.map((row) => row.split(" | ")[0]!)
  return [...new Set(firstCells.flatMap((cell) => [...cell.matchAll(/`(services\.realtime-gateway\.[^`]+)`/g)].map((match) => match[1]!)))]
}

describe("Nix files", () => {
  it.each(nixFiles)("%s parses", (file) => {
    expect(() => nixInstantiate(["--parse", file])).not.toThrow()
  })

  it("a syntax error is reported, so that the check above can fail", () => {
    expect(() => nixInstantiate(["--parse", "-E", "{ services.realtime-gateway = { enable = ; }; }"])).toThrow(/syntax error/)
  })

  it("the NixOS module's options are exactly the ones the README's table documents", () => {
    const declared = moduleOptionPaths()
    expect(declared).toContain("services.realtime-gateway.enable")
    expect(declared).toContain("services.realtime-gateway.apps.<id>.api")
    expect(declared).toContain("services.realtime-gateway.cluster.tls.keyFile")
    expect([...readmeModuleOptions()].sort()).toEqual([...declared].sort())
  })

  it("no option takes a secret's value: secrets come from files", () => {
    expect(moduleOptionPaths().filter((path) => /secret|token|password/i.test(path))).toEqual([])
  })

  it("turns the options into the gateway's variables, and secrets into credentials read at start", () => {
    const { failedAssertions, service } = moduleConfig(`{
      enable = true;
      apps.solo-unicorn.api = "https://api.solo.example";
      apps.chat = { authEndpoint = "https://chat.example/auth"; allowedOrigins = [ "https://a.example" "https://b.example" ]; };
      cluster.databaseUrl = "postgres://gateway@db:5432/gateway";
      cluster.host = "10.0.1.11";
      cluster.tls = { certFile = "/run/keys/node.pem"; keyFile = "/run/keys/node.key"; };
      credentials.CLUSTER_SECRET = "/run/keys/cluster-secret";
      environmentFiles = [ "/etc/realtime-gateway/secrets.env" ];
      environment.OTEL_EXPORTER_OTLP_ENDPOINT = "http://127.0.0.1:4318";
    }`)
    expect(failedAssertions).toEqual([])
    expect(service.environment).toEqual({
      NODE_NAME: "node-a",
      HOST: "0.0.0.0",
      PORT: "4000",
      GATEWAY_APPS: "chat,solo-unicorn",
      SOLO_UNICORN_API: "https://api.solo.example",
      CHAT_AUTH_ENDPOINT: "https://chat.example/auth",
      CHAT_ALLOWED_ORIGINS: "https://a.example,https://b.example",
      TRUST_PROXY: "false",
      MAX_CONNECTIONS: "15000",
      DRAIN_WINDOW_MS: "10000",
      LOG_LEVEL: "info",
      LOG_FORMAT: "json",
      DATABASE_URL: "postgres://gateway@db:5432/gateway",
      CLUSTER_HOST: "10.0.1.11",
      CLUSTER_PORT: "34431",
      OTEL_EXPORTER_OTLP_ENDPOINT: "http://127.0.0.1:4318"
    })
    expect(service.serviceConfig.EnvironmentFile).toEqual(["/etc/realtime-gateway/secrets.env"])
    expect(service.serviceConfig.LoadCredential).toEqual([
      "CLUSTER_SECRET:/run/keys/cluster-secret",
      "CLUSTER_TLS_CERT:/run/keys/node.pem",
      "CLUSTER_TLS_KEY:/run/keys/node.key"
    ])
    const start = service.serviceConfig.ExecStart.text
    expect(start).toContain(`CLUSTER_SECRET="$(< "$CREDENTIALS_DIRECTORY/CLUSTER_SECRET")"`)
    expect(start).toContain(`export CLUSTER_TLS_KEY="$CREDENTIALS_DIRECTORY/CLUSTER_TLS_KEY"`)
    expect(start).toMatch(/exec \S+\/bin\/realtime-gateway\n/)
  })

  it("hardens the service as nixpkgs' daemons are, restarts it always except on a bad configuration, and outlasts the drain", () => {
    const { service } = moduleConfig(`{ enable = true; drainWindowMs = 20000; }`)
    expect(service.serviceConfig).toMatchObject({
      DynamicUser: true,
      ProtectSystem: "strict",
      ProtectHome: true,
      PrivateTmp: true,
      PrivateDevices: true,
      NoNewPrivileges: true,
      CapabilityBoundingSet: "",
      AmbientCapabilities: "",
      SystemCallFilter: ["@system-service", "~@privileged"],
      RestrictAddressFamilies: ["AF_INET", "AF_INET6", "AF_UNIX"],
      MemoryDenyWriteExecute: false,
      Restart: "always",
      RestartPreventExitStatus: 78,
      TimeoutStopSec: 50
    })
    expect(service.serviceConfig.LimitNOFILE).toBeGreaterThanOrEqual(1_000_000)
    expect(service.environment.DRAIN_WINDOW_MS).toBe("20000")
    expect(service.environment.GATEWAY_APPS).toBeUndefined()
  })

  it("opens the HTTP port only with openFirewall, and the cluster port only to the cluster's subnets", () => {
    expect(moduleConfig(`{ enable = true; }`).firewall).toEqual({ allowedTCPPorts: [], extraInputRules: null, extraCommands: null })
    const nftables = moduleConfig(`{ enable = true; openFirewall = true; port = 8080; cluster.allowedSubnets = [ "10.0.1.0/24" "10.0.2.0/24" ]; }`)
    expect(nftables.firewall.allowedTCPPorts).toEqual([8080])
    expect(nftables.firewall.extraInputRules).toBe("ip saddr { 10.0.1.0/24, 10.0.2.0/24 } tcp dport 34431 accept\n")
    expect(nftables.firewall.extraCommands).toBeNull()
    const iptables = moduleConfig(`{ enable = true; cluster.port = 4500; cluster.allowedSubnets = [ "10.0.1.0/24" ]; }`, false)
    expect(iptables.firewall.extraInputRules).toBeNull()
    expect(iptables.firewall.extraCommands).toBe("iptables -A nixos-fw -p tcp -s 10.0.1.0/24 --dport 4500 -j nixos-fw-accept\n")
  })

  it("refuses secrets in the Nix store, bad app ids and credential names, and a certificate without its key", () => {
    expect(moduleConfig(`{ enable = true; environmentFiles = [ "/nix/store/abc-secrets.env" ]; }`).failedAssertions)
      .toEqual([expect.stringContaining("outside the Nix store")])
    expect(moduleConfig(`{ enable = true; apps."Bad App".api = "https://x.example"; }`).failedAssertions)
      .toEqual([expect.stringContaining("app ids are 1 to 64")])
    expect(moduleConfig(`{ enable = true; credentials.cluster-secret = "/run/keys/s"; }`).failedAssertions)
      .toEqual([expect.stringContaining("environment variable names")])
    expect(moduleConfig(`{ enable = true; cluster.tls.certFile = "/run/keys/node.pem"; }`).failedAssertions)
      .toEqual([expect.stringContaining("certFile and keyFile go together")])
  })

  it("every production package in package-lock.json has the integrity the Nix package fetches by", () => {
    const lock = JSON.parse(readFileSync(`${root}package-lock.json`, "utf8")) as {
      packages: Record<string, { version?: string; integrity?: string; dev?: boolean; link?: boolean }>
    }
    const production = Object.entries(lock.packages).filter(([path, entry]) => path !== "" && entry.dev !== true && entry.link !== true)
    expect(production.length).toBeGreaterThan(0)
    for (const [path, entry] of production) {
      expect(entry.version, path).toMatch(/^\d+\.\d+\.\d+/)
      expect(entry.integrity, path).toMatch(/^sha512-[A-Za-z0-9+/]+=*$/)
    }
  })

  it("the inventory the nodes are made from is valid JSON that Nix reads the same way", () => {
    const inventory = JSON.parse(readFileSync(`${root}infra/inventory.json`, "utf8")) as { nodes: Array<{ name: string }> }
    const names = JSON.parse(nixInstantiate(["--eval", "--strict", "--json", "-E",
      "map (node: node.name) (builtins.fromJSON (builtins.readFile ./infra/inventory.json)).nodes"])) as Array<string>
    expect(names).toEqual(inventory.nodes.map((node) => node.name))
  })
})
