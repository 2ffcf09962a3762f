#!/usr/bin/env bash
# Operates the production cluster made by infra/ and flake.nix (docs/deploy.md).
# Run from the repository's root, inside `nix develop`.
#
#   scripts/deploy/cluster.sh install NODE SECRETS_FILE   first install of NixOS on NODE (erases its disk)
#   scripts/deploy/cluster.sh secrets SECRETS_FILE        copy the secrets file to every node (no restart)
#   scripts/deploy/cluster.sh deploy [NODE...]            rolling deploy of this checkout, one node at a time
#   scripts/deploy/cluster.sh restart [NODE...]           rolling restart (new secrets, app settings), one at a time
#   scripts/deploy/cluster.sh restart-all                 stop every node, then start them (a new CLUSTER_SECRET)
#   scripts/deploy/cluster.sh status                      readiness of every node and the load balancer's view
#
# Node names and addresses come from the infrastructure's outputs; TOFU=terraform
# uses Terraform instead of OpenTofu. A rolling step waits until the node is
# ready again and the load balancer sees it healthy before the next node: a node
# that does not come back stops the rollout with the others still serving.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

tofu="${TOFU:-tofu}"
http_port="$(jq -r .httpPort infra/inventory.json)"
secrets_path=/etc/realtime-gateway/secrets.env
ready_timeout_s="${READY_TIMEOUT_S:-300}"
ssh_options=(-o BatchMode=yes -o StrictHostKeyChecking=accept-new -o ConnectTimeout=10)

outputs="$("$tofu" -chdir=infra output -json)"
all_nodes() { jq -r '.nodes[].name' infra/inventory.json; }
public_ip() { jq -r --arg node "$1" '.node_public_ips.value[$node] // empty' <<<"$outputs"; }
private_ip() { jq -r --arg node "$1" '.node_private_ips.value[$node] // empty' <<<"$outputs"; }
load_balancer_id() { jq -r '.load_balancer_id.value' <<<"$outputs"; }
on_node() { local node="$1"; shift; ssh "${ssh_options[@]}" "root@$(public_ip "$node")" "$@"; }
say() { printf '%s %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

require_node() {
  if [ -z "$(public_ip "$1")" ]; then
    echo "cluster.sh: no node named $1 in the infrastructure's outputs (nodes: $(all_nodes | tr '\n' ' '))" >&2
    exit 2
  fi
}

require_secrets_file() {
  if [ ! -f "$1" ]; then
    echo "cluster.sh: secrets file $1 not found (docs/deploy.md, step 4)" >&2
    exit 2
  fi
  local name
  for name in CLUSTER_SECRET DATABASE_URL; do
    if ! grep -q "^$name=" "$1"; then
      echo "cluster.sh: $1 has no $name= line" >&2
      exit 2
    fi
  done
}

readiness() {
  on_node "$1" "curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:$http_port/health/ready; true" || echo "unreachable"
}

backend_health() {
  oci lb backend-health get --load-balancer-id "$(load_balancer_id)" --backend-set-name gateway-nodes \
    --backend-name "$(private_ip "$1"):$http_port" --query 'data.status' --raw-output 2>/dev/null || echo "UNKNOWN"
}

# Ready on the node itself, then healthy for the load balancer (its check runs
# every 5 s and needs two answers in a row).
wait_until_serving() {
  local node="$1" deadline=$((SECONDS + ready_timeout_s))
  until [ "$(readiness "$node")" = "200" ]; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      say "$node is not ready after ${ready_timeout_s}s; stopping here. Its log: ssh root@$(public_ip "$node") journalctl -u realtime-gateway -n 100"
      exit 1
    fi
    sleep 2
  done
  say "$node is ready"
  until [ "$(backend_health "$node")" = "OK" ]; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      say "$node is ready but the load balancer does not see it healthy after ${ready_timeout_s}s; stopping here"
      exit 1
    fi
    sleep 3
  done
  say "$node is healthy behind the load balancer"
}

# A rollout starts only when every node serves: taking one out of a cluster
# that already misses one would leave half the capacity.
require_all_serving() {
  local node
  for node in $(all_nodes); do
    if [ "$(backend_health "$node")" != "OK" ]; then
      echo "cluster.sh: $node is not healthy behind the load balancer; fix it first (or name the nodes to roll explicitly)" >&2
      exit 1
    fi
  done
}

# The nodes a rollout goes through: those named, or all of them once every one
# serves.
nodes_to_roll() {
  if [ "$#" -eq 0 ]; then
    require_all_serving
    all_nodes
    return
  fi
  local node
  for node in "$@"; do require_node "$node"; done
  printf '%s\n' "$@"
}

command="${1:-}"
shift || true
case "$command" in
  install)
    [ "$#" -eq 2 ] || { echo "usage: cluster.sh install NODE SECRETS_FILE" >&2; exit 2; }
    node="$1"
    require_node "$node"
    require_secrets_file "$2"
    extra="$(mktemp -d)"
    trap 'rm -rf "$extra"' EXIT
    install -D -m 0400 "$2" "$extra$secrets_path"
    ip="$(public_ip "$node")"
    say "installing NixOS ($node) on $ip: this erases the instance's disk"
    # Built on the node itself: it is an Arm machine, so no Arm builder is needed here.
    nixos-anywhere --flake ".#$node" --build-on remote --extra-files "$extra" --target-host "ubuntu@$ip"
    ssh-keygen -R "$ip" >/dev/null 2>&1 || true
    wait_until_serving "$node"
    ;;
  secrets)
    [ "$#" -eq 1 ] || { echo "usage: cluster.sh secrets SECRETS_FILE" >&2; exit 2; }
    require_secrets_file "$1"
    for node in $(all_nodes); do
      on_node "$node" "install -D -m 0400 /dev/stdin $secrets_path" <"$1"
      say "$node: $secrets_path updated (takes effect at the next restart)"
    done
    ;;
  deploy)
    nodes="$(nodes_to_roll "$@")"
    for node in $nodes; do
      ip="$(public_ip "$node")"
      say "$node: switching to this checkout's configuration (the gateway drains if it changed)"
      nixos-rebuild switch --flake ".#$node" --target-host "root@$ip" --build-host "root@$ip"
      # switch restarts a running gateway that changed; one stopped by hand stays stopped
      on_node "$node" systemctl start realtime-gateway.service
      wait_until_serving "$node"
    done
    ;;
  restart)
    nodes="$(nodes_to_roll "$@")"
    for node in $nodes; do
      say "$node: restarting (drain, then start)"
      on_node "$node" systemctl restart realtime-gateway.service
      wait_until_serving "$node"
    done
    ;;
  restart-all)
    # Nodes with different cluster secrets must never run side by side: every
    # node stops (draining in parallel) before any starts again.
    say "stopping every node (all clients are closed with 1012 and retry until the nodes are back)"
    for node in $(all_nodes); do on_node "$node" systemctl stop --no-block realtime-gateway.service; done
    for node in $(all_nodes); do
      on_node "$node" "while systemctl is-active -q realtime-gateway.service; do sleep 1; done"
      say "$node stopped"
    done
    for node in $(all_nodes); do on_node "$node" systemctl start realtime-gateway.service; done
    for node in $(all_nodes); do wait_until_serving "$node"; done
    ;;
  status)
    for node in $(all_nodes); do
      printf '%-8s public %-15s private %-12s ready %-11s load balancer %s\n' "$node" "$(public_ip "$node")" \
        "$(private_ip "$node")" "$(readiness "$node")" "$(backend_health "$node")"
    done
    ;;
  *)
    sed -n '2,17p' "${BASH_SOURCE[0]}" >&2
    exit 2
    ;;
esac
