#!/usr/bin/env bash
# Slide benchmark: tileserver vs large_image on a large synthetic Aperio SVS, and tileserver's slide
# pass-through vs its pyramid-TIFF pass-through, cold, on loopback (bench/slide_bench.py says how).
# Usage: bash bench/slide_serve.sh [--urls 2000] [--repeats 3] [--size 40000x30000]
# First run: writes /tmp/tilebench/slides/big.svs and big.tif (bench/slide_setup.py, a few minutes) and
# a venv for large_image in /tmp/tilebench/li-venv (large-image, large-image-source-openslide, uvicorn).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$HERE")
PY=$REPO/.venv/bin/python
WORK=${TILEBENCH_DIR:-/tmp/tilebench}
[ -x "$PY" ] || { echo "no $PY: run 'make' first" >&2; exit 1; }
command -v wrk >/dev/null || { echo "wrk missing: apt-get install wrk" >&2; exit 1; }
size=40000x30000
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --size) size=$2; shift 2;;
    *) args+=("$1"); shift;;
  esac
done
mkdir -p "$WORK"
"$PY" "$HERE/slide_setup.py" "$WORK/slides" --size "$size"
venv=$WORK/li-venv
if [ ! -x "$venv/bin/uvicorn" ] || ! "$venv/bin/python" -c "import large_image_source_openslide" 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q large-image large-image-source-openslide uvicorn starlette
fi
cd "$REPO"
exec "$PY" "$HERE/slide_bench.py" --dir "$WORK/slides" --venv "$venv" "${args[@]}"
