#!/usr/bin/env bash
# Create .venv-validator (repo root) with iiif-validator-ng, the IIIF Image API validator.
# Idempotent: does nothing when the venv already imports the validator.
# Its own venv because: iiif-validator-ng 0.1.0 uses Python 3.12 syntax (it declares >=3.9), and it shares
# its import name (iiif_validator) with the older iiif-validator, so the two must never share a venv.
# It reads images with pyvips (from PyPI, with its own libvips binary); no system packages needed.
set -euo pipefail
cd "$(dirname "$0")/../.."
VENV=.venv-validator
PKG="iiif-validator-ng"
ok_python() {  # a Python that really runs (pyenv shims exist for versions not selected) and is >= 3.12
    "$1" -c 'import sys; sys.exit(sys.version_info < (3, 12))' >/dev/null 2>&1
}
find_python() {
    local cands=("${VALIDATOR_PYTHON:-}")
    if command -v pyenv >/dev/null 2>&1; then
        cands+=("$(pyenv root)/versions/3.12.1/bin/python" "$(pyenv root)/versions/3.13.0/bin/python")
    fi
    cands+=(python3.12 python3.13 python3)
    for c in "${cands[@]}"; do
        if [ -n "$c" ] && ok_python "$c"; then echo "$c"; return; fi
    done
    echo "setup_validator.sh: need Python >= 3.12 (set VALIDATOR_PYTHON)" >&2
    exit 1
}
if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "import iiif_validator.validate" >/dev/null 2>&1; then
    exit 0
fi
PY="$(find_python)"
"$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q "$PKG"
"$VENV/bin/python" -c "import iiif_validator.validate" >/dev/null
echo "setup_validator.sh: $PKG installed in $VENV"
