#!/usr/bin/env bash
# The benchmark in one command (Debian 12, as root):
#   bash bench/run.sh            # full run, ~6 minutes
#   bash bench/run.sh --quick    # ~1 minute, one round, one concurrency level
#   bash bench/run.sh --commit REV [options]   # measure meshlane as of commit REV (a clean export built
#                                              # in /tmp), not the working tree; the bench itself is this tree's
#   bash bench/run.sh [--commit REV] --base-commit BASE [options]
#                                              # also build BASE the same way and run it as the mode
#                                              # meshlane-base (add it to --modes): a change and its base side by side
# Installs haproxy and wrk if missing, builds meshlane (scripts/setup.sh), then runs dist/bench/bench.js
# with the arguments given (see `bash bench/run.sh --help`).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
  echo "bench: run as root (network namespaces, cgroups, iptables, BPF)" >&2
  exit 2
fi

bash scripts/apt-ensure.sh bench haproxy wrk

export BENCH_COMMAND="bash bench/run.sh $*"
bash scripts/setup.sh

# A clean export of a commit, built in /tmp (once per commit); prints its directory.
build_export() {
  local rev dir node_prefix
  rev=$(git rev-parse --verify "$1^{commit}")
  dir="/tmp/meshlane-bench-build-${rev:0:12}"
  if [ ! -f "$dir/.built" ]; then
    echo "bench: building meshlane $rev in $dir" >&2
    rm -rf "$dir" && mkdir -p "$dir"
    git archive "$rev" | tar -x -C "$dir"
    ln -s "$PWD/node_modules" "$dir/node_modules"
    make -s -C "$dir/bpf" >&2
    nodedir_args=()
    node_prefix=$(dirname "$(dirname "$(command -v node)")")
    [ -f "$node_prefix/include/node/node.h" ] && nodedir_args=(--nodedir="$node_prefix")
    (cd "$dir" && npx --no-install node-gyp rebuild --directory native "${nodedir_args[@]}" --loglevel=error >/dev/null)
    (cd "$dir" && npx --no-install tsc -p tsconfig.json) >&2 || echo "bench: tsc reported type errors in $rev (output emitted anyway)" >&2
    if [ -f "$dir/scripts/bundle-client-node.mjs" ]; then (cd "$dir" && node scripts/bundle-client-node.mjs) >&2; fi
    echo "$rev" > "$dir/REVISION"
    touch "$dir/.built"
  fi
  echo "$dir"
}

if [ "${1:-}" = "--commit" ]; then
  dir=$(build_export "${2:?--commit needs a revision}")
  shift 2
  set -- --meshlane "$dir" "$@"
fi
args=()
while [ $# -gt 0 ]; do
  if [ "$1" = "--base-commit" ]; then
    args+=(--base "$(build_export "${2:?--base-commit needs a revision}")")
    shift 2
  else
    args+=("$1")
    shift
  fi
done
set -- "${args[@]}"
# HAProxy sizes its fd table from maxconn; wrk opens one fd per connection.
ulimit -n 65536 2>/dev/null || true
exec node dist/bench/bench.js "$@"
