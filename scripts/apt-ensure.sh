#!/usr/bin/env bash
# Installs the given Debian packages that are not installed yet (apt-get update first, only then).
# Usage: bash scripts/apt-ensure.sh WHO PKG...   (WHO prefixes the progress line)
set -euo pipefail
who=$1
shift
missing=()
for p in "$@"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "$who: installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
