#!/usr/bin/env bash
# Builds the Debian package of BootTorrent's server:
#
#   bash scripts/build-deb.sh [--out DIR]     (default DIR: ./dist-deb)
#
# DIR receives boottorrent_VERSION_amd64.deb and the npm tarball
# boottorrent-VERSION.tgz (the release artifacts).
#
# Contents: the npm package (`npm pack`: compiled code, the prebuilt agent,
# schemas, docs) with its production dependencies only, under
# /usr/lib/boottorrent/app; the pinned Node.js runtime (scripts/install-node.sh)
# under /usr/lib/boottorrent/node; /usr/bin/boottorrent; the systemd unit and
# /etc/default/boottorrent from packaging/; maintainer scripts from
# packaging/debian/. Needs npm and dpkg-deb; downloads only from the npm
# registry (the runtime, and `yaml` unless npm's cache has it).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
out="$repo/dist-deb"
while [ $# -gt 0 ]; do
  case "$1" in
    --out)
      out="$(realpath -m "${2:?build-deb: --out needs a folder}")"
      shift 2
      ;;
    *)
      echo "usage: build-deb.sh [--out DIR]" >&2
      exit 2
      ;;
  esac
done

version=$(node -p 'require("./package.json").version')
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
root="$work/root"
app="$root/usr/lib/boottorrent/app"

echo "build-deb: npm pack (compiles, bundles the agent)"
npm pack --silent --pack-destination "$work" >/dev/null
mkdir -p "$app"
tar -xzf "$work/boottorrent-$version.tgz" -C "$app" --strip-components=1
cp package-lock.json "$app/"
echo "build-deb: production dependencies"
(cd "$app" && npm ci --omit=dev --ignore-scripts --no-audit --no-fund --loglevel=error)
rm -f "$app/package-lock.json"

bash scripts/install-node.sh --to "$root/usr/lib/boottorrent/node"

install -d "$root/usr/bin"
cat >"$root/usr/bin/boottorrent" <<'EOF'
#!/bin/sh
# BootTorrent on the Node.js runtime this package carries.
exec /usr/lib/boottorrent/node/bin/node /usr/lib/boottorrent/app/bin/boottorrent.js "$@"
EOF
chmod 755 "$root/usr/bin/boottorrent"

install -D -m 0644 packaging/boottorrent.service "$root/lib/systemd/system/boottorrent.service"
install -D -m 0644 packaging/boottorrent.default "$root/etc/default/boottorrent"
doc="$root/usr/share/doc/boottorrent"
install -D -m 0644 packaging/debian/copyright "$doc/copyright"
install -m 0644 README.md docs/*.md "$doc/"

install -d "$root/DEBIAN"
install -m 0755 packaging/debian/postinst packaging/debian/prerm packaging/debian/postrm "$root/DEBIAN/"
echo /etc/default/boottorrent >"$root/DEBIAN/conffiles"
size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
sed -e "s/@VERSION@/$version/" -e "s/@SIZE@/$size/" packaging/debian/control.in >"$root/DEBIAN/control"

# Everything root-owned and world-readable; the service reads, never writes, it.
find "$root" -type d -exec chmod 0755 {} +
mkdir -p "$out"
deb="$out/boottorrent_${version}_amd64.deb"
dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >/dev/null
# The npm tarball the package was made from: `npm install -g` installs it too.
cp "$work/boottorrent-$version.tgz" "$out/"
echo "build-deb: $deb ($(du -h "$deb" | cut -f1), installed $((size / 1024)) MiB)"
echo "build-deb: $out/boottorrent-$version.tgz (npm install -g ./boottorrent-$version.tgz)"
