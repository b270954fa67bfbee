#!/usr/bin/env bash
# Benchmark entry point (`make bench`): tileserver vs iipsrv side by side on loopback.
# Usage: bash bench/run.sh [--duration 10] [--repeats 2] [--only SCENARIO[,..]] [--no-iipsrv] [--soak MIN]
# Everything else is in bench/bench.py (run with --help) and bench/README.md.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$HERE")
PY=$REPO/.venv/bin/python
[ -x "$PY" ] || { echo "no $PY: run 'make' (or make bench) first" >&2; exit 1; }
[ -x "$REPO/.venv/bin/tileserver" ] || { echo "tileserver is not installed in $REPO/.venv" >&2; exit 1; }
cd "$REPO"
# exec: signals (Ctrl-C, SIGTERM) go straight to the driver, whose finally blocks stop every server it started
exec "$PY" "$HERE/bench.py" "$@"
