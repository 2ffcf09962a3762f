# The production machines, made from infra/inventory.json (which Terraform
# reads too): one NixOS configuration per gateway node, the node named by
# `postgres.node` also running PostgreSQL.
#
# Installed with nixos-anywhere (docs/deploy.md): disko partitions the boot
# volume, so an instance started from any Linux image becomes the node.
{ nixpkgs, disko, gatewayModule, inventory }:

let
  inherit (nixpkgs) lib;

  # Where each node finds its secrets; written by the operator (docs/deploy.md).
  secretsFile = "/etc/realtime-gateway/secrets.env";

  postgresNode = lib.findFirst (node: node.name == inventory.postgres.node)
    (throw "infra/inventory.json: postgres.node ${inventory.postgres.node} is not one of the nodes")
    inventory.nodes;

  ociNode = { modulesPath, ... }: {
    imports = [ "${modulesPath}/profiles/qemu-guest.nix" ];

    # An OCI boot volume is a paravirtualized SCSI disk; instances boot by UEFI.
    disko.devices.disk.boot = {
      type = "disk";
      device = "/dev/sda";
      content = {
        type = "gpt";
        partitions = {
          ESP = {
            size = "512M";
            type = "EF00";
            content = { type = "filesystem"; format = "vfat"; mountpoint = "/boot"; mountOptions = [ "umask=0077" ]; };
          };
          root = {
            size = "100%";
            content = { type = "filesystem"; format = "ext4"; mountpoint = "/"; };
          };
        };
      };
    };
    boot.loader.grub = { enable = true; efiSupport = true; efiInstallAsRemovable = true; device = "nodev"; };
    boot.initrd.availableKernelModules = [ "virtio_pci" "virtio_scsi" "sd_mod" "nvme" ];
    boot.kernelParams = [ "console=ttyAMA0" "console=tty0" ];

    networking.useDHCP = true;
    networking.nftables.enable = true;
    networking.firewall.enable = true;
    services.openssh = {
      enable = true;
      settings = { PasswordAuthentication = false; KbdInteractiveAuthentication = false; PermitRootLogin = "prohibit-password"; };
    };
    users.users.root.openssh.authorizedKeys.keys = inventory.sshAuthorizedKeys;
    nix.settings.experimental-features = [ "nix-command" "flakes" ];
    services.journald.extraConfig = "SystemMaxUse=2G";
    system.stateVersion = "25.11";
  };

  gatewayNode = node: { pkgs, ... }: {
    networking.hostName = node.name;
    services.realtime-gateway = {
      enable = true;
      # A mirror of the npm registry, when the inventory names one (docs/deploy.md).
      package = lib.mkIf ((inventory.npmRegistry or null) != null)
        (pkgs.callPackage ./package.nix { inherit (inventory) npmRegistry; });
      nodeName = node.name;
      port = inventory.httpPort;
      # Reachable by the load balancer; the network security group admits only it.
      openFirewall = true;
      trustProxy = true;
      apps = inventory.apps;
      cluster.host = node.privateIp;
      cluster.port = inventory.clusterPort;
      cluster.allowedSubnets = [ inventory.subnet ];
      # DATABASE_URL (with the database password), CLUSTER_SECRET,
      # GATEWAY_ADMIN_TOKEN and every <APP>_SECRET.
      environmentFiles = [ secretsFile ];
    };
  };

  postgresHost = { config, pkgs, ... }: {
    services.postgresql = {
      enable = true;
      package = pkgs.postgresql_17;
      enableTCPIP = true;
      settings = {
        listen_addresses = lib.mkForce "127.0.0.1,${postgresNode.privateIp}";
        port = inventory.postgres.port;
        password_encryption = "scram-sha-256";
      };
      ensureDatabases = [ inventory.postgres.database ];
      ensureUsers = [{ name = inventory.postgres.user; ensureDBOwnership = true; }];
      authentication = ''
        host ${inventory.postgres.database} ${inventory.postgres.user} 127.0.0.1/32 scram-sha-256
        host ${inventory.postgres.database} ${inventory.postgres.user} ${inventory.subnet} scram-sha-256
      '';
    };
    # Runner registrations and shard locks rebuild themselves; apps registered
    # through the admin API do not: a nightly dump keeps them.
    services.postgresqlBackup = { enable = true; databases = [ inventory.postgres.database ]; };
    networking.firewall.extraInputRules = ''
      ip saddr ${inventory.subnet} tcp dport ${toString inventory.postgres.port} accept
    '';
    # The gateway role's password is the one in DATABASE_URL of the secrets
    # file (hex, so that it needs no URL encoding): set at every boot, so that
    # changing it there and restarting changes it here too.
    systemd.services.realtime-gateway-database-password = {
      description = "Set the realtime-gateway PostgreSQL role's password from ${secretsFile}";
      wantedBy = [ "multi-user.target" ];
      requires = [ "postgresql.service" ];
      after = [ "postgresql.service" "postgresql-setup.service" ];
      before = [ "realtime-gateway.service" ];
      path = [ config.services.postgresql.package ];
      serviceConfig = {
        Type = "oneshot";
        RemainAfterExit = true;
        User = "postgres";
        EnvironmentFile = secretsFile;
      };
      script = ''
        credentials="''${DATABASE_URL#*://}"
        credentials="''${credentials%%@*}"
        case "$credentials" in
          *:*) password="''${credentials#*:}" ;;
          *) echo "DATABASE_URL in ${secretsFile} has no password" >&2; exit 1 ;;
        esac
        psql -v ON_ERROR_STOP=1 -v password="$password" -p ${toString inventory.postgres.port} <<'SQL'
        ALTER ROLE "${inventory.postgres.user}" PASSWORD :'password';
        SQL
      '';
    };
    systemd.services.realtime-gateway = {
      after = [ "postgresql.service" "realtime-gateway-database-password.service" ];
      wants = [ "postgresql.service" "realtime-gateway-database-password.service" ];
    };
  };

  nodeSystem = node: lib.nixosSystem {
    system = "aarch64-linux";
    modules = [
      disko.nixosModules.disko
      gatewayModule
      ociNode
      (gatewayNode node)
    ] ++ lib.optional (node.name == postgresNode.name) postgresHost;
  };
in
lib.listToAttrs (map (node: lib.nameValuePair node.name (nodeSystem node)) inventory.nodes)
