# NixOS module: services.realtime-gateway.
#
# Every setting that is not a secret is a typed option and becomes one of the
# environment variables in README.md's configuration table. Secrets (app
# secrets, CLUSTER_SECRET, GATEWAY_ADMIN_TOKEN, a DATABASE_URL with a password)
# never pass through an option's value, which would copy them into the
# world-readable Nix store: they come from `environmentFiles` or from
# `credentials` (systemd credentials, read by the start script).
{ config, lib, pkgs, ... }:

let
  inherit (lib) mkEnableOption mkOption mkPackageOption mkIf types;
  cfg = config.services.realtime-gateway;

  # `solo-unicorn` -> `SOLO_UNICORN`, as the gateway reads per-app variables.
  appVariablePrefix = id: lib.toUpper (lib.replaceStrings [ "-" ] [ "_" ] id);

  appSubmodule = types.submodule {
    options = {
      api = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "https://api.chat.example/realtime";
        description = "The app's base URL (`<APP>_API`); endpoints default to it + `/messages-schema`, `/auth/websocket`, `/messages`, `/notify`.";
      };
      schemaEndpoint = mkOption {
        type = types.nullOr types.str;
        default = null;
        description = "Full URL of the app's schema endpoint (`<APP>_SCHEMA_ENDPOINT`), overriding the one derived from `api`.";
      };
      authEndpoint = mkOption {
        type = types.nullOr types.str;
        default = null;
        description = "Full URL of the app's auth endpoint (`<APP>_AUTH_ENDPOINT`).";
      };
      messageEndpoint = mkOption {
        type = types.nullOr types.str;
        default = null;
        description = "Full URL of the app's message endpoint (`<APP>_MESSAGE_ENDPOINT`).";
      };
      notifyEndpoint = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "none";
        description = "Full URL of the app's notify endpoint (`<APP>_NOTIFY_ENDPOINT`), or `none` to turn notifications off.";
      };
      allowedOrigins = mkOption {
        type = types.listOf types.str;
        default = [ ];
        example = [ "https://chat.example" ];
        description = "Browser `Origin`s allowed for this app (`<APP>_ALLOWED_ORIGINS`); empty means the global list, or any.";
      };
    };
  };

  appEnvironment = id: app:
    let prefix = appVariablePrefix id;
    in lib.filterAttrs (_: value: value != null) {
      "${prefix}_API" = app.api;
      "${prefix}_SCHEMA_ENDPOINT" = app.schemaEndpoint;
      "${prefix}_AUTH_ENDPOINT" = app.authEndpoint;
      "${prefix}_MESSAGE_ENDPOINT" = app.messageEndpoint;
      "${prefix}_NOTIFY_ENDPOINT" = app.notifyEndpoint;
      "${prefix}_ALLOWED_ORIGINS" = if app.allowedOrigins == [ ] then null else lib.concatStringsSep "," app.allowedOrigins;
    };

  environment = lib.filterAttrs (_: value: value != null) ({
    NODE_NAME = cfg.nodeName;
    HOST = cfg.host;
    PORT = toString cfg.port;
    GATEWAY_APPS = if cfg.apps == { } then null else lib.concatStringsSep "," (lib.attrNames cfg.apps);
    ALLOWED_ORIGINS = if cfg.allowedOrigins == [ ] then null else lib.concatStringsSep "," cfg.allowedOrigins;
    TRUST_PROXY = lib.boolToString cfg.trustProxy;
    MAX_CONNECTIONS = toString cfg.maxConnections;
    DRAIN_WINDOW_MS = toString cfg.drainWindowMs;
    LOG_LEVEL = cfg.logLevel;
    LOG_FORMAT = "json";
    DATABASE_URL = cfg.cluster.databaseUrl;
    CLUSTER_HOST = cfg.cluster.host;
    CLUSTER_PORT = toString cfg.cluster.port;
  } // lib.concatMapAttrs appEnvironment cfg.apps // cfg.environment);

  # The TLS files reach the dynamic user as systemd credentials (readable by
  # this unit only), named after the variable that carries their path.
  tlsCredentials = lib.filterAttrs (_: file: file != null) {
    CLUSTER_TLS_CERT = cfg.cluster.tls.certFile;
    CLUSTER_TLS_KEY = cfg.cluster.tls.keyFile;
    CLUSTER_TLS_CA = cfg.cluster.tls.caFile;
  };

  # Each secret credential becomes the variable of its name, holding the
  # file's content; each TLS credential, the variable holding the file's path.
  startScript = pkgs.writeShellScript "realtime-gateway-start" ''
    set -euo pipefail
    ${lib.concatMapStrings (name: ''
      ${name}="$(< "$CREDENTIALS_DIRECTORY/${name}")"
      export ${name}
    '') (lib.attrNames cfg.credentials)}
    ${lib.concatMapStrings (name: ''
      export ${name}="$CREDENTIALS_DIRECTORY/${name}"
    '') (lib.attrNames tlsCredentials)}
    exec ${lib.getExe cfg.package}
  '';

  secretPaths = cfg.environmentFiles ++ lib.attrValues cfg.credentials ++ lib.attrValues tlsCredentials;
in
{
  options.services.realtime-gateway = {
    enable = mkEnableOption "realtime-gateway, the multi-tenant Phoenix Channels WebSocket gateway";

    package = mkPackageOption pkgs "realtime-gateway" { };

    nodeName = mkOption {
      type = types.str;
      default = config.networking.hostName;
      defaultText = lib.literalExpression "config.networking.hostName";
      description = "This node's name in logs, metrics and the cluster (`NODE_NAME`); unique in the cluster.";
    };

    host = mkOption {
      type = types.str;
      default = "0.0.0.0";
      description = "Address of the HTTP and WebSocket listener (`HOST`).";
    };

    port = mkOption {
      type = types.port;
      default = 4000;
      description = "Port of the HTTP and WebSocket listener (`PORT`), the one the load balancer reaches.";
    };

    openFirewall = mkOption {
      type = types.bool;
      default = false;
      description = "Open `port` (HTTP and WebSocket) in the firewall. The cluster port is opened by `cluster.allowedSubnets` only.";
    };

    apps = mkOption {
      type = types.attrsOf appSubmodule;
      default = { };
      example = lib.literalExpression ''{ chat.api = "https://api.chat.example/realtime"; }'';
      description = ''
        The apps served, by id (`[a-z0-9_-]{1,64}`; `GATEWAY_APPS` and the per-app variables).
        Each app's secret is `<APP>_SECRET` in `environmentFiles` or `credentials`.
        With no app at all the gateway serves its bundled demo app.
      '';
    };

    allowedOrigins = mkOption {
      type = types.listOf types.str;
      default = [ ];
      description = "Browser `Origin`s allowed for every app without its own list (`ALLOWED_ORIGINS`); empty means any.";
    };

    trustProxy = mkOption {
      type = types.bool;
      default = false;
      description = "Take the client's address from the last `X-Forwarded-For` entry (`TRUST_PROXY`): set it behind a load balancer that appends one.";
    };

    maxConnections = mkOption {
      type = types.ints.positive;
      default = 15000;
      description = "Connections per node before `over_capacity` (`MAX_CONNECTIONS`).";
    };

    drainWindowMs = mkOption {
      type = types.ints.positive;
      default = 10000;
      description = "On stop, open connections are closed (1012) spread over this window (`DRAIN_WINDOW_MS`); the unit's stop timeout is this plus 30 s.";
    };

    logLevel = mkOption {
      type = types.enum [ "trace" "debug" "info" "warning" "error" ];
      default = "info";
      description = "Log level (`LOG_LEVEL`); logs are JSON lines in the journal.";
    };

    cluster.databaseUrl = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "postgres://gateway@10.0.1.11:5432/gateway";
      description = ''
        PostgreSQL for the cluster (`DATABASE_URL`); null runs a single node in memory.
        A URL that holds a password is a secret: put `DATABASE_URL=…` in
        `environmentFiles` instead (a value from there wins over this option).
        Clustering also needs `CLUSTER_SECRET` in `environmentFiles` or `credentials`.
      '';
    };

    cluster.host = mkOption {
      type = types.str;
      default = cfg.nodeName;
      defaultText = lib.literalExpression "config.services.realtime-gateway.nodeName";
      example = "10.0.1.11";
      description = "Address the other nodes reach this node's cluster port at (`CLUSTER_HOST`).";
    };

    cluster.port = mkOption {
      type = types.port;
      default = 34431;
      description = "Port of the links between nodes (`CLUSTER_PORT`).";
    };

    cluster.allowedSubnets = mkOption {
      type = types.listOf types.str;
      default = [ ];
      example = [ "10.0.1.0/24" ];
      description = "IPv4 subnets whose hosts may reach `cluster.port` through the firewall: the other nodes' subnet, nothing wider.";
    };

    cluster.tls.certFile = mkOption {
      type = types.nullOr types.str;
      default = null;
      description = "PEM certificate of this node for TLS between nodes (`CLUSTER_TLS_CERT`), handed over as a systemd credential.";
    };

    cluster.tls.keyFile = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "/run/keys/cluster-tls.key";
      description = "PEM private key of `cluster.tls.certFile` (`CLUSTER_TLS_KEY`): a path outside the Nix store, read by systemd as a credential.";
    };

    cluster.tls.caFile = mkOption {
      type = types.nullOr types.str;
      default = null;
      description = "PEM CA that the other nodes' certificates must chain to (`CLUSTER_TLS_CA`).";
    };

    environment = mkOption {
      type = types.attrsOf types.str;
      default = { };
      example = { OTEL_EXPORTER_OTLP_ENDPOINT = "http://127.0.0.1:4318"; IDLE_TIMEOUT_MS = "60000"; };
      description = "Further non-secret variables from README.md's configuration table (limits, `OTEL_*`); they win over the options above.";
    };

    environmentFiles = mkOption {
      type = types.listOf types.str;
      default = [ ];
      example = [ "/run/keys/realtime-gateway.env" ];
      description = ''
        Files of `NAME=value` lines for secrets (`<APP>_SECRET`, `CLUSTER_SECRET`,
        `GATEWAY_ADMIN_TOKEN`, a `DATABASE_URL` with its password), read by systemd
        as root; keep them outside the Nix store, mode 0400.
      '';
    };

    credentials = mkOption {
      type = types.attrsOf types.str;
      default = { };
      example = { CLUSTER_SECRET = "/run/keys/cluster-secret"; CHAT_SECRET = "/run/keys/chat-secret"; };
      description = ''
        Secrets as systemd credentials: variable name -> file holding only its value
        (`LoadCredential=`); the gateway gets the file's content in that variable.
      '';
    };
  };

  config = mkIf cfg.enable {
    assertions = [
      {
        assertion = lib.all (id: builtins.match "[a-z0-9_-]{1,64}" id != null) (lib.attrNames cfg.apps);
        message = "services.realtime-gateway.apps: app ids are 1 to 64 of a-z, 0-9, _ and -";
      }
      {
        assertion = lib.all (name: builtins.match "[A-Z_][A-Z0-9_]*" name != null) (lib.attrNames cfg.credentials);
        message = "services.realtime-gateway.credentials: names are environment variable names (A-Z, 0-9, _)";
      }
      {
        assertion = lib.all (path: lib.hasPrefix "/" path && !lib.hasPrefix builtins.storeDir path) secretPaths;
        message = "services.realtime-gateway: environmentFiles, credentials and cluster.tls files are absolute paths outside the Nix store (the store is world-readable)";
      }
      {
        assertion = (cfg.cluster.tls.certFile == null) == (cfg.cluster.tls.keyFile == null);
        message = "services.realtime-gateway.cluster.tls: certFile and keyFile go together";
      }
    ];

    systemd.services.realtime-gateway = {
      description = "realtime-gateway (Phoenix Channels WebSocket gateway)";
      wantedBy = [ "multi-user.target" ];
      wants = [ "network-online.target" ];
      after = [ "network-online.target" ];
      inherit environment;

      # Restart=always with no start limit: the gateway ends itself with a
      # non-zero code when its supervised work keeps failing, and the service
      # manager is what brings it back. Exit 78 is a bad configuration, which
      # restarting cannot fix: the unit stays failed with the reason in its log.
      startLimitIntervalSec = 0;
      serviceConfig = {
        ExecStart = startScript;
        Restart = "always";
        RestartSec = 2;
        RestartPreventExitStatus = 78;
        KillSignal = "SIGTERM";
        # The drain closes connections over drainWindowMs, then waits for the
        # closing handshakes and hands shards over: give it that and 30 s more.
        TimeoutStopSec = cfg.drainWindowMs / 1000 + 30;
        EnvironmentFile = cfg.environmentFiles;
        LoadCredential =
          lib.mapAttrsToList (name: file: "${name}:${file}") cfg.credentials
          ++ lib.mapAttrsToList (name: file: "${name}:${file}") tlsCredentials;
        LimitNOFILE = 1048576;

        DynamicUser = true;
        UMask = "0077";
        ProtectSystem = "strict";
        ProtectHome = true;
        PrivateTmp = true;
        PrivateDevices = true;
        PrivateUsers = true;
        ProtectHostname = true;
        ProtectClock = true;
        ProtectKernelTunables = true;
        ProtectKernelModules = true;
        ProtectKernelLogs = true;
        ProtectControlGroups = true;
        ProtectProc = "invisible";
        NoNewPrivileges = true;
        CapabilityBoundingSet = "";
        AmbientCapabilities = "";
        RestrictAddressFamilies = [ "AF_INET" "AF_INET6" "AF_UNIX" ];
        RestrictNamespaces = true;
        RestrictRealtime = true;
        RestrictSUIDSGID = true;
        LockPersonality = true;
        RemoveIPC = true;
        SystemCallArchitectures = "native";
        SystemCallFilter = [ "@system-service" "~@privileged" ];
        # A refused system call fails with EPERM instead of killing the process:
        # libuv probes io_uring and falls back when it is refused.
        SystemCallErrorNumber = "EPERM";
        # V8 compiles JavaScript to machine code at run time (W^X pages).
        MemoryDenyWriteExecute = false;
      };
    };

    networking.firewall.allowedTCPPorts = lib.optional cfg.openFirewall cfg.port;
    networking.firewall.extraInputRules = mkIf (config.networking.nftables.enable && cfg.cluster.allowedSubnets != [ ]) ''
      ip saddr { ${lib.concatStringsSep ", " cfg.cluster.allowedSubnets} } tcp dport ${toString cfg.cluster.port} accept
    '';
    networking.firewall.extraCommands = mkIf (!config.networking.nftables.enable && cfg.cluster.allowedSubnets != [ ]) (
      lib.concatMapStrings (subnet: ''
        iptables -A nixos-fw -p tcp -s ${subnet} --dport ${toString cfg.cluster.port} -j nixos-fw-accept
      '') cfg.cluster.allowedSubnets
    );
  };
}
