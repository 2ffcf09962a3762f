#!/usr/bin/env bash
# Runs its arguments with Node.js >= 24 (see ensure-node.sh); the chosen node is
# also first on PATH, so that child processes use it too.
set -euo pipefail
node_bin="$("$(dirname "${BASH_SOURCE[0]}")/ensure-node.sh")"
export PATH="$(dirname "$node_bin"):$PATH"
exec "$node_bin" "$@"
