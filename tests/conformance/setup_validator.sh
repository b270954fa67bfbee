#!/usr/bin/env bash
# Create .venv-validator (repo root) with iiif-validator-ng, the IIIF Image API validator.
# Idempotent: does nothing when the venv already imports the validator.
# Its own venv because: iiif-validator-ng 0.1.0 uses Python 3.12 syntax (it declares >=3.9), and it shares
# its import name (iiif_validator) with the older iiif-validator, so the two must never share a venv.
# The validator reads images with pyvips; pyvips-binary brings libvips, so no system package is needed.
set -euo pipefail
cd "$(dirname "$0")/../.."
VENV=.venv-validator
PKGS=(iiif-validator-ng pyvips-binary)  # pyvips-binary: its own libvips, so no system libvips is needed
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
CHECK="import iiif_validator.validate, pyvips; assert pyvips.API_mode"
if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "$CHECK" >/dev/null 2>&1; then
    exit 0
fi
PY="$(find_python)"
"$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q "${PKGS[@]}"
"$VENV/bin/python" -c "$CHECK"
echo "setup_validator.sh: ${PKGS[*]} installed in $VENV"
