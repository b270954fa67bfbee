"""The IIIF Image API validator (`iiif-validator-ng` from PyPI) against a real `tileserver serve`
on a loopback port, for Image API 3.0 and 2.x at level 2 with every extra it detects in our
info.json (mirroring, arbitrary rotation, upscaling, Link headers, gif/tif/webp...).

The validator lives in its own venv (`.venv-validator`, Python >= 3.12, made by
`tests/conformance/setup_validator.sh`, which this module runs when the venv is missing) and runs as
a subprocess through `validator_driver.py`, which calls the validator's own `run_tests` and prints
one JSON line per test. Its test image is the PNG the package ships (1000x1000, a 10x10 grid of
coloured squares), written here as a tiled pyramidal TIFF named by the validator's identifier.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import pyvips

from ..live import live_tileserver

pytestmark = pytest.mark.server

REPO = Path(__file__).resolve().parents[2]
VENV_PYTHON = REPO / ".venv-validator" / "bin" / "python"
DRIVER = Path(__file__).with_name("validator_driver.py")
IDENT = "67352ccc-d1b0-11e1-89ae-279075081939"

# Validator tests that are themselves broken, left out by name (and covered by our own tests):
BROKEN = {
    # Both compare a patch of the rotated image that, for many angles, includes the canvas corners,
    # with `vips rotate`'s default *black* fill. The spec leaves the background to the server
    # (3.0 §4.3: "no facility ... to request a particular background colour"); ours is the configured
    # `background` (white) for JPEG, so they fail for ~30% of their (unseeded, random) angles. Run
    # against a black background they pass, except that rot_region_non90 also crashes
    # (`extract_area: bad extract area`) for thin regions turned near 90 degrees.
    # Covered by tests/protocols/iiif/test_pixels.py::test_arbitrary_rotation_pixels.
    "rot_full_non90",
    "rot_region_non90",
}
# Beyond level 2: what our info.json advertises, so the validator must have run these.
EXTRAS = {"format_gif", "format_tif", "format_webp", "rot_mirror", "rot_mirror_180", "http_linkheader_profile",
          "http_linkheader_canonical", "quality_bitonal"}
EXTRAS_V3 = {"size_up"}  # 2.x has no `sizeUpscaling` feature name, so the validator runs size_up for 3.0 only


def validator_python() -> Path:
    if not VENV_PYTHON.exists():
        subprocess.run(["bash", str(REPO / "tests" / "conformance" / "setup_validator.sh")], check=True)
    return VENV_PYTHON


def validation_image(python: Path, root: Path) -> None:
    """The validator's own test image, found through its package, as a 256-px tiled pyramid."""
    code = "import importlib.resources as r; print(r.files('iiif_validator') / 'validation_image.png')"
    png = subprocess.run([str(python), "-c", code], check=True, capture_output=True, text=True).stdout.strip()
    image = pyvips.Image.new_from_file(png)
    assert (image.width, image.height) == (1000, 1000)
    image.tiffsave(str(root / IDENT), tile=True, pyramid=True, tile_width=256, tile_height=256,
                   compression="deflate")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    python = validator_python()
    root = tmp_path_factory.mktemp("validator")
    validation_image(python, root)
    log = tmp_path_factory.mktemp("validator-server") / "server.log"
    with live_tileserver(root, log, workers=1, ready_path=f"/iiif/3/{IDENT}/info.json") as base:
        yield base


def run_validator(base_url: str, v2: bool) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    cmd = [str(validator_python()), str(DRIVER), base_url, *(["--v2"] if v2 else [])]
    for name in sorted(BROKEN):
        cmd += ["--skip", name]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    lines = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    assert lines and "summary" in lines[-1], f"validator did not finish:\n{out.stdout}\n{out.stderr}"
    print(json.dumps(lines[-1]["summary"]))  # the summary line, shown with -s or on failure
    return lines[:-1], lines[-1]["summary"]


@pytest.mark.parametrize(("version", "prefix", "extras"), [
    pytest.param("3.0", "iiif/3", EXTRAS | EXTRAS_V3, id="3.0"),
    pytest.param("2.0", "iiif/2", EXTRAS, id="2.x"),
])
def test_validator(server: str, version: str, prefix: str, extras: set[str]) -> None:
    """Zero failures at level 2, with the extras our info.json advertises."""
    results, summary = run_validator(f"{server}/{prefix}", v2=version != "3.0")
    failures = {r["test"]: r["failures"] for r in results if not r["ok"]}
    assert not failures, json.dumps(failures, indent=1)
    assert summary["failed"] == 0 and summary["version"] == version and summary["level"] == "LEVEL_2"
    ran = {r["test"] for r in results}
    assert extras <= ran, f"extras not run: {sorted(extras - ran)}"
    assert not ran & BROKEN
    assert "id_error_escapedslash" in ran and "http_cors" in ran and "http_baseurl_redirect" in ran
