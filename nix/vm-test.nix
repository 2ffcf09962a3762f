# NixOS VM test: PostgreSQL, two gateway nodes that find each other through it,
# and a client machine with a client on each node. A broadcast made through
# node2 reaches the client on node1. Runs where Nix and KVM are:
#   nix build .#checks.x86_64-linux.cluster -L
{ pkgs, gatewayModule }:

let
  clusterSecret = "vm-test-cluster-secret-of-at-least-32-bytes";

  # A Phoenix V1 (JSON objects) client on Node's built-in WebSocket, against the
  # bundled demo app that each node serves when no app is configured.
  #   listen URL: joins room:lobby, prints "joined", then the first shout.
  #   shout URL TEXT: joins room:lobby and pushes a shout, which the demo app
  #   broadcasts to the whole room.
  phoenixClient = pkgs.writeText "phoenix-client.mjs" ''
    const [mode, url, text] = process.argv.slice(2)
    const socket = new WebSocket(url + "/socket/websocket?app=demo&token=demo-alice&vsn=1.0.0")
    const send = (event, payload, ref) => socket.send(JSON.stringify({ topic: "room:lobby", event, payload, ref }))
    const timer = setTimeout(() => { console.log("timed out"); process.exit(1) }, 60000)
    socket.onopen = () => send("phx_join", {}, "1")
    socket.onmessage = (message) => {
      const frame = JSON.parse(message.data)
      if (frame.event === "phx_reply" && frame.ref === "1") {
        if (frame.payload.status !== "ok") { console.log("join refused", JSON.stringify(frame.payload)); process.exit(1) }
        console.log("joined")
        if (mode === "shout") send("shout", { body: text }, "2")
      } else if (mode === "shout" && frame.event === "phx_reply" && frame.ref === "2") {
        console.log("shout " + frame.payload.status)
        process.exit(frame.payload.status === "ok" ? 0 : 1)
      } else if (mode === "listen" && frame.event === "shout") {
        console.log("received " + JSON.stringify(frame.payload))
        clearTimeout(timer)
        process.exit(0)
      }
    }
    socket.onerror = () => { console.log("socket error"); process.exit(1) }
  '';

  gatewayNode = name: { pkgs, nodes, ... }: {
    imports = [ gatewayModule ];
    networking.firewall.enable = true;
    environment.etc."realtime-gateway/cluster-secret".text = clusterSecret;
    services.realtime-gateway = {
      enable = true;
      nodeName = name;
      openFirewall = true;
      cluster.databaseUrl = "postgres://gateway@db:5432/gateway";
      cluster.host = name;
      # The two gateway nodes only: the client, on the same network, must not
      # reach the cluster port.
      cluster.allowedSubnets = map (node: "${node.networking.primaryIPAddress}/32") [ nodes.node1 nodes.node2 ];
      credentials.CLUSTER_SECRET = "/etc/realtime-gateway/cluster-secret";
    };
    environment.systemPackages = [ pkgs.curl pkgs.netcat ];
    virtualisation.memorySize = 1024;
  };
in
pkgs.testers.runNixOSTest {
  name = "realtime-gateway-cluster";

  nodes = {
    db = { pkgs, ... }: {
      services.postgresql = {
        enable = true;
        enableTCPIP = true;
        ensureDatabases = [ "gateway" ];
        ensureUsers = [{ name = "gateway"; ensureDBOwnership = true; }];
        authentication = "host gateway gateway 192.168.1.0/24 trust";
      };
      networking.firewall.allowedTCPPorts = [ 5432 ];
    };
    node1 = gatewayNode "node1";
    node2 = gatewayNode "node2";
    client = { pkgs, ... }: {
      environment.systemPackages = [ pkgs.nodejs_24 pkgs.curl pkgs.netcat ];
    };
  };

  testScript = ''
    start_all()
    db.wait_for_unit("postgresql.service")
    for node in [node1, node2]:
        node.wait_for_unit("realtime-gateway.service")
        node.wait_until_succeeds("curl -sf http://127.0.0.1:4000/health/ready", timeout=120)

    # The HTTP port is open to everyone, the cluster port to the other node only.
    client.succeed("curl -sf http://node1:4000/health/live")
    node2.succeed("nc -z -w 5 node1 34431")
    client.fail("nc -z -w 5 node1 34431")

    client.succeed("node ${phoenixClient} listen ws://node1:4000 > /tmp/listener.log 2>&1 &")
    client.wait_until_succeeds("grep -q joined /tmp/listener.log", timeout=60)
    client.succeed("node ${phoenixClient} shout ws://node2:4000 'hello across nodes'")
    client.wait_until_succeeds("grep -q 'received.*hello across nodes' /tmp/listener.log", timeout=30)

    # Stopping a node drains it: readiness turns 503, then the unit stops
    # cleanly within its stop timeout, and the other node keeps serving.
    node2.succeed("systemctl stop realtime-gateway.service")
    node2.fail("systemctl is-failed realtime-gateway.service")
    node1.succeed("curl -sf http://127.0.0.1:4000/health/ready")
  '';
}
