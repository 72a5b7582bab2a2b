#!/usr/bin/env bash
# Runs every test (unit and kernel: real BPF, real network namespaces, real iptables as the oracle).
# Sets up first (scripts/setup.sh). Run as root on Debian 12.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
make -s -C test/fixtures
exec node scripts/run-tests.mjs all
