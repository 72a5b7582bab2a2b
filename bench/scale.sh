#!/usr/bin/env bash
# The node-scale benchmark in one command (Debian 12, as root): 10,000 pods, 250 on this node as real sandbox
# pods, on the cluster file and on the Kubernetes API (the suite's API server, in the benchmark's process).
#   bash bench/scale.sh                    # both sources, 1,000 changes each (about 10 minutes)
#   bash bench/scale.sh --changes 200      # shorter
#   bash bench/scale.sh --sources kube     # one source
# Options: --pods N, --on-node N (at most 250), --changes N, --gap-ms MS (between changes: RSS over minutes,
# not a burst), --sources file,kube, --json FILE, --markdown FILE.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -ne 0 ]; then
  echo "bench: run as root (network namespaces, cgroups, BPF)" >&2
  exit 2
fi
export BENCH_COMMAND="bash bench/scale.sh $*"
bash scripts/setup.sh
exec node dist/bench/scale.js "$@"
