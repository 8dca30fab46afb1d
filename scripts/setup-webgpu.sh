#!/usr/bin/env bash
# Makes sure dawn.node (the `webgpu` package) finds a WebGPU adapter. On a machine without a GPU
# that means Mesa's lavapipe; Debian 12's Mesa 22 is too old for Dawn, so Mesa >= 24 comes from
# bookworm-backports, added with the same mirror and keyring as the existing Debian sources.
set -euo pipefail
cd "$(dirname "$0")/.."

if node scripts/probe-adapter.mjs >/dev/null 2>&1; then
  node scripts/probe-adapter.mjs
  exit 0
fi

echo "setup-webgpu: no WebGPU adapter found; installing Mesa lavapipe from bookworm-backports" >&2
SUDO=""
if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi

src=""
for f in /etc/apt/sources.list.d/debian.sources /etc/apt/sources.list; do
  if [ -f "$f" ] && grep -q 'debian' "$f"; then src="$f"; break; fi
done
if ! grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
  uri=$(grep -hoE '^URIs: *\S+' /etc/apt/sources.list.d/*.sources 2>/dev/null | grep -v security | head -n1 | awk '{print $2}')
  key=$(grep -hoE '^Signed-By: *\S+' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -n1 | awk '{print $2}')
  if [ -z "$uri" ]; then
    uri=$(grep -hoE '^deb +(\[[^]]*\] +)?\S+' /etc/apt/sources.list 2>/dev/null | grep -v security | head -n1 | awk '{print $NF}')
  fi
  [ -n "$uri" ] || { echo "setup-webgpu: cannot find the Debian mirror in ${src:-the apt sources}" >&2; exit 1; }
  key=${key:-/usr/share/keyrings/debian-archive-keyring.gpg}
  printf 'Types: deb\nURIs: %s\nSuites: bookworm-backports\nComponents: main\nSigned-By: %s\n' "$uri" "$key" \
    | $SUDO tee /etc/apt/sources.list.d/bookworm-backports.sources >/dev/null
fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq -t bookworm-backports mesa-vulkan-drivers >/dev/null

node scripts/probe-adapter.mjs
