#!/usr/bin/env bash
# JPEG 2000 serving benchmark: tileserver vs iipsrv 1.3 on the issue's 10000x7500 JP2 (bench/README.md,
# "JPEG 2000 serving"). Needs bench/jp2_setup.sh's files (run it first: it makes /tmp/jp2bench/images),
# the project's .venv, wrk, lighttpd, spawn-fcgi; builds iipsrv 1.3 from ../shared/vendor when missing.
#   bash bench/jp2_serve.sh [--duration 10] [--repeats 2] [--levels 4,5,6] [--no-iipsrv] [--help]
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$HERE")
PY=$REPO/.venv/bin/python
[ -x "$PY" ] || { echo "no $PY: run 'make' first" >&2; exit 1; }
[ -f "${JP2BENCH:-/tmp/jp2bench}/images/rgb8.jp2" ] || { echo "run bash bench/jp2_setup.sh first" >&2; exit 1; }
if [ -z "${IIPSRV_BIN:-}" ]; then
  IIPSRV_BIN=$(bash "$REPO/../shared/vendor/build-iipsrv.sh" "$REPO/.cache/iipsrv-1.3" | tail -1)
  export IIPSRV_BIN
fi
export IIPSRV_LABEL=${IIPSRV_LABEL:-iipsrv 1.3}
cd "$REPO"
exec "$PY" "$HERE/jp2_serve.py" "$@"
