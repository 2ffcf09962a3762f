/**
 * The Nix side of the deployment, checked without building anything (Nix and
 * nixpkgs are not needed beyond `nix-instantiate`): every .nix file parses, the
 * NixOS module's options, as Nix evaluates them, are the ones the README
 * documents, and the lock file gives the package what it fetches by.
 */
import { execFileSync } from "node:child_process"
import { readdirSync, readFileSync } from "node:fs"
import { describe, expect, it } from "vitest"

const root = new URL("../..", import.meta.url).pathname
const nixFiles = ["flake.nix", ...readdirSync(`${root}nix`).filter((file) => file.endsWith(".nix")).map((file) => `nix/${file}`)]

const nixInstantiate = (args: ReadonlyArray<string>): string =>
  execFileSync("nix-instantiate", args, { cwd: root, encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] })

/**
 * Evaluates the module's `options` with a minimal stand-in for nixpkgs' `lib`
 * (mkOption and the types only record what they were given; the module's
 * `config` stays unevaluated) and lists every option's path, an app's
 * options under `apps.<id>`.
 */
const moduleOptionPaths = (): ReadonlyArray<string> => {
  const expression = `
    let
      declare = attrs: attrs // { isOption = true; };
      type = name: { inherit name; };
      types = {
        str = type "str"; bool = type "bool"; port = type "port"; path = type "path";
        ints.positive = type "int";
        enum = _: type "enum";
        nullOr = inner: inner;
        listOf = _: type "list";
        attrsOf = inner: inner // { attrsOf = true; };
        submodule = module: { submoduleOptions = module.options; };
      };
      lib = {
        inherit types;
        mkOption = declare;
        mkEnableOption = description: declare { inherit description; };
        mkPackageOption = _: name: _: declare { inherit name; };
        mkIf = _: value: value;
        literalExpression = text: text;
      };
      module = import ./nix/module.nix { config = { }; inherit lib; pkgs = { }; };
      walk = prefix: attrs: builtins.concatLists (map (name:
        let value = attrs.\${name}; path = prefix + name;
        in if value.isOption or false
          then [ path ] ++ (if (value.type or { }) ? submoduleOptions then walk (path + ".<id>.") value.type.submoduleOptions else [ ])
          else walk (path + ".") value
      ) (builtins.attrNames attrs));
    in walk "services.realtime-gateway." module.options.services.realtime-gateway`
  return JSON.parse(nixInstantiate(["--eval", "--strict", "--json", "-E", expression])) as Array<string>
}

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

  it("the module takes no secret as an option's value: secrets come from files", () => {
    const declared = moduleOptionPaths()
    expect(declared.filter((path) => /secret|token|password/i.test(path))).toEqual([])
    const module = readFileSync(`${root}nix/module.nix`, "utf8")
    for (const setting of ["DynamicUser = true", "ProtectSystem = \"strict\"", "CapabilityBoundingSet = \"\"",
      "SystemCallFilter = [ \"@system-service\"", "RestrictAddressFamilies", "MemoryDenyWriteExecute = false",
      "Restart = \"always\"", "LimitNOFILE", "TimeoutStopSec = cfg.drainWindowMs / 1000 + 30"]) {
      expect(module).toContain(setting)
    }
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
