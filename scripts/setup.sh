#!/usr/bin/env bash
# Installs what meshlane needs on Debian 12 (run as root) and builds it: apt packages, npm
# dependencies, the BPF objects, the native addon, the TypeScript. Safe to run again: it installs only
# what is missing and rebuilds only what changed (make / node-gyp / tsc).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
  echo "setup: run as root (apt-get, and meshlane itself needs CAP_BPF/CAP_NET_ADMIN/CAP_SYS_ADMIN)" >&2
  exit 2
fi

# build: clang/llvm (BPF), libbpf-dev + libelf/zlib (the addon), gcc + libc6-dev (the static CNI plugin),
# binutils (readelf: is it static), bpftool (BTF checks in tests)
# run/test: iproute2 (netns, veth), iptables (the test oracle), util-linux (setpriv, unshare)
bash scripts/apt-ensure.sh setup clang llvm libbpf-dev libelf-dev zlib1g-dev pkg-config make g++ gcc libc6-dev binutils python3 \
  bpftool iproute2 iptables util-linux procps

if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "setup: npm ci"
  npm ci --no-audit --no-fund --loglevel=error
fi

echo "setup: building the CNI plugin (static)"
make -s -C cni all check

echo "setup: building BPF objects"
make -s -C bpf

echo "setup: building the native addon"
# Build against the headers of the node that runs meshlane when they are installed locally
# (no download); node-gyp otherwise fetches them for this node version.
nodedir_args=()
node_prefix=$(dirname "$(dirname "$(command -v node)")")
[ -f "$node_prefix/include/node/node.h" ] && nodedir_args=(--nodedir="$node_prefix")
if [ ! -f native/build/Release/meshlane.node ] || [ -n "$(find native/src native/binding.gyp -newer native/build/Release/meshlane.node 2>/dev/null)" ]; then
  npx --no-install node-gyp rebuild --directory native "${nodedir_args[@]}" --loglevel=error >/dev/null
fi

echo "setup: compiling TypeScript"
npx --no-install tsc -p tsconfig.json
# KubeConfig without client-node's generated API (about 57 MiB of RSS): scripts/bundle-client-node.mjs
node scripts/bundle-client-node.mjs
chmod +x dist/src/cli/main.js
echo "setup: done"
