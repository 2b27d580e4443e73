#!/usr/bin/env bash
# Installs everything BootTorrent's demo and tests need on a Debian machine
# (run as root): the Debian packages in scripts/debian-packages.txt, then the
# npm dependencies (npm ci also compiles the TypeScript to dist/).
set -euo pipefail
cd "$(dirname "$0")/.."

mapfile -t packages < <(sed -e 's/#.*//' -e '/^\s*$/d' scripts/debian-packages.txt)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup: missing Debian packages: ${missing[*]}; run this script as root to install them" >&2
    exit 1
  fi
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Node.js: a maintained LTS, 22 or newer. Where the machine has none or an
# older one (Debian 12's own is 18), install the Node 24 that phase 1 pins
# (scripts/install-node.sh: from the npm registry, SHA-512 checked) under
# /usr/local, which comes before /usr/bin on root's PATH.
node_major() { node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0; }
if [ "$(node_major)" -lt 22 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup: Node.js 22 or newer is required (found: $(node --version 2>/dev/null || echo none)); run this script as root to install one" >&2
    exit 1
  fi
  if ! command -v npm >/dev/null; then
    echo "setup: installing Debian's npm to download Node.js with"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends npm >/dev/null
  fi
  bash scripts/install-node.sh --system
  hash -r
  if [ "$(node_major)" -lt 22 ]; then
    echo "setup: installed Node.js in /usr/local/bin, but 'node' on PATH is still $(command -v node) ($(node --version)); put /usr/local/bin before it in PATH" >&2
    exit 1
  fi
fi
echo "setup: Node.js $(node --version) ($(command -v node)), npm $(npm --version)"
npm ci --no-audit --no-fund --loglevel=error
