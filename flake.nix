{
  description = "realtime-gateway: a multi-tenant Phoenix Channels WebSocket gateway in front of apps' HTTP APIs";

  inputs = {
    nixpkgs.url = "github:NixOS/nixpkgs/nixos-25.11";
    # Partitions the boot volume when nixos-anywhere installs a node.
    disko = {
      url = "github:nix-community/disko";
      inputs.nixpkgs.follows = "nixpkgs";
    };
  };

  outputs = { self, nixpkgs, disko }:
    let
      inherit (nixpkgs) lib;
      systems = [ "x86_64-linux" "aarch64-linux" ];
      forAllSystems = f: lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});
      inventory = lib.importJSON ./infra/inventory.json;
    in
    {
      # `.override { npmRegistry = "https://…/"; }` fetches the npm packages
      # from a mirror instead of npm's own registry (docs/deploy.md).
      packages = forAllSystems (pkgs: rec {
        realtime-gateway = pkgs.callPackage ./nix/package.nix { };
        default = realtime-gateway;
      });

      overlays.default = final: _prev: {
        realtime-gateway = final.callPackage ./nix/package.nix { };
      };

      nixosModules.default = { pkgs, ... }: {
        imports = [ ./nix/module.nix ];
        services.realtime-gateway.package =
          lib.mkDefault self.packages.${pkgs.stdenv.hostPlatform.system}.default;
      };

      # node-1 … node-4 (node-1 also runs PostgreSQL), from infra/inventory.json.
      nixosConfigurations = import ./nix/hosts.nix {
        inherit nixpkgs disko inventory;
        gatewayModule = self.nixosModules.default;
      };

      checks = forAllSystems (pkgs: {
        package = self.packages.${pkgs.stdenv.hostPlatform.system}.default;
        cluster = import ./nix/vm-test.nix { inherit pkgs; gatewayModule = self.nixosModules.default; };
      });

      devShells = forAllSystems (pkgs: {
        default = pkgs.mkShell {
          packages = [
            pkgs.nodejs_24
            pkgs.postgresql_17
            pkgs.opentofu
            pkgs.oci-cli
            pkgs.nixos-anywhere
            pkgs.nixos-rebuild
            pkgs.certbot
            pkgs.curl
            pkgs.jq
            pkgs.openssl
            pkgs.websocat
          ];
          # scripts/ensure-node.sh uses this Node instead of downloading one
          # (a downloaded Node would not run on NixOS).
          shellHook = ''
            export GATEWAY_NODE_BIN=${lib.getExe pkgs.nodejs_24}
          '';
        };
      });

      formatter = forAllSystems (pkgs: pkgs.nixpkgs-fmt);
    };
}
