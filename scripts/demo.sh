#!/usr/bin/env bash
# Sets up (scripts/setup.sh) and runs `meshlane demo`: a sandbox node whose pod's traffic is captured
# into its proxy without a single iptables rule. Run as root on Debian 12.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec node dist/src/cli/main.js demo "$@"
