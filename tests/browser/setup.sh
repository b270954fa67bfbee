#!/usr/bin/env bash
# Browser-test setup (idempotent): Debian's chromium, Playwright for Python in .venv, and the pinned
# viewer npm packages in .cache/viewer-node/ (ignored), which the tests serve through
# TILESERVER_VIEWER_ASSETS=.cache/viewer-node/node_modules. Run from anywhere; needs root for apt.
set -euo pipefail
cd "$(dirname "$0")/../.."
VENV=${VENV:-.venv}
NODE_DIR=.cache/viewer-node
# pinned: keep in step with VIEWER_PACKAGES in src/tileserver/viewers.py (the CDN defaults and SRI hashes)
PACKAGES=(openseadragon@6.1.1 mirador@4.0.0 leaflet@1.9.4 leaflet-iiif@3.0.0 ol@10.11.0)

ONLY_PACKAGES=0
[ "${1:-}" = "--packages-only" ] && ONLY_PACKAGES=1  # `make demo`: just the viewer packages, if npm is there

if [ $ONLY_PACKAGES = 0 ] && ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core
  else
    echo "browser setup: chromium is missing and cannot be installed here (needs root and apt):" \
         "the browser tests will be skipped (they fail under CI=1)" >&2
    exit 0
  fi
fi
if ! command -v npm >/dev/null 2>&1; then
  echo "browser setup: npm is missing: the browser tests will be skipped (they fail under CI=1)" >&2
  exit 0
fi

if [ $ONLY_PACKAGES = 0 ] && ! "$VENV/bin/python" -c "import playwright" >/dev/null 2>&1; then
  "$VENV/bin/python" -m pip install -q "playwright==1.65.2"
fi

mkdir -p "$NODE_DIR"
want="${PACKAGES[*]}"
if [ ! -f "$NODE_DIR/.installed" ] || [ "$(cat "$NODE_DIR/.installed")" != "$want" ]; then
  [ -f "$NODE_DIR/package.json" ] || echo '{"name": "tileserver-viewer-assets", "private": true}' > "$NODE_DIR/package.json"
  npm install --prefix "$NODE_DIR" --no-audit --no-fund --loglevel=error --save-exact "${PACKAGES[@]}"
  echo "$want" > "$NODE_DIR/.installed"
fi
echo "browser setup: chromium $(chromium --version 2>/dev/null | awk '{print $2}'), viewer packages in $NODE_DIR"
