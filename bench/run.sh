#!/usr/bin/env bash
# The benchmark in one command (Debian 12, as root):
#   bash bench/run.sh            # full run, ~6 minutes
#   bash bench/run.sh --quick    # ~1 minute, one round, one concurrency level
# Installs haproxy and wrk if missing, builds meshlane (scripts/setup.sh), then runs dist/bench/bench.js
# with the arguments given (see `bash bench/run.sh --help`).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
  echo "bench: run as root (network namespaces, cgroups, iptables, BPF)" >&2
  exit 2
fi

missing=()
for p in haproxy wrk; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "bench: installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

bash scripts/setup.sh
# HAProxy sizes its fd table from maxconn; wrk opens one fd per connection.
ulimit -n 65536 2>/dev/null || true
exec node dist/bench/bench.js "$@"
