#!/usr/bin/env bash
# The test command (what CI runs): bash scripts/test.sh [all|unit|kernel]   (default all)
#   unit    npm run test:unit: compiles the TypeScript and runs test/unit/ (pure: no root, no BPF
#           objects, no addon)
#   kernel  sets up (scripts/setup.sh: packages, BPF objects, addon, tsc), builds the test fixtures and
#           runs test/kernel/ (real BPF, network namespaces, cgroups, iptables as the oracle; root)
#   all     set up, then both
# unit and all also run the linters first (npm run lint: eslint with typescript-eslint, prettier --check).
# Every run fails when any test was skipped or left todo (scripts/run-tests.mjs): on these machines
# every feature is present. Kernel runs need root on Debian 12, under the machine's kernel lock.
set -euo pipefail
cd "$(dirname "$0")/.."
which=${1:-all}
case "$which" in
  unit)
    npx --no-install tsc -p tsconfig.json
    node scripts/bundle-client-node.mjs
    npm run -s lint
    exec node scripts/run-tests.mjs unit
    ;;
  kernel | all)
    bash scripts/setup.sh
    if [ "$which" = all ]; then npm run -s lint; fi
    make -s -C test/fixtures
    exec node scripts/run-tests.mjs "$which"
    ;;
  *)
    echo "usage: bash scripts/test.sh [all|unit|kernel]" >&2
    exit 2
    ;;
esac
