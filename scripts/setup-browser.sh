#!/usr/bin/env bash
# Installs Debian's Chromium (/usr/bin/chromium) for `npm run test:browser`, which drives
# examples/browser through playwright-core (no browser download of Playwright's own: this machine's
# network reaches only the package registries). Chromium's WebGPU runs headless on SwiftShader.
# Measured here: 4 min 34 s on a loaded 2-core machine (113 MB of archives, 115 packages).
set -euo pipefail

if [ -x /usr/bin/chromium ]; then
  /usr/bin/chromium --version 2>/dev/null || true
  exit 0
fi
SUDO=""
if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
echo "setup-browser: installing Debian's chromium" >&2
export DEBIAN_FRONTEND=noninteractive
if ! $SUDO apt-get install -y -qq --no-install-recommends chromium >/dev/null; then
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends chromium >/dev/null
fi
/usr/bin/chromium --version
