"""examples/fetch_tiles.py against the in-process app: tiles stitched for a region equal one IIIF
region request, pixel for pixel, at several scale factors and for regions crossing the image edge;
and the script's command line against a real `tileserver serve`."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from .. import test_server
from ..conftest import RGB_1000, SUBIFD_TIF

SCRIPT = Path(__file__).resolve().parents[2] / "examples" / "fetch_tiles.py"


def load() -> Any:
    spec = importlib.util.spec_from_file_location("fetch_tiles", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


fetch_tiles = load()
server = test_server.server  # the live `tileserver serve` fixture


@pytest.mark.parametrize(("ident", "region", "scale", "tiles"), [
    pytest.param(RGB_1000, (300, 200, 400, 300), 1, 4, id="full-res"),
    pytest.param(RGB_1000, (100, 60, 800, 600), 2, 4, id="scale-2"),
    pytest.param(RGB_1000, (600, 400, 400, 300), 4, 1, id="edge-scale-4"),
    pytest.param(SUBIFD_TIF, (512, 256, 188, 274), 1, 2, id="subfolder-edge"),
])
async def test_stitched_tiles_equal_one_region_request(client: httpx.AsyncClient, ident: str,
                                                       region: tuple[int, int, int, int], scale: int,
                                                       tiles: int) -> None:
    result = await fetch_tiles.compare(client, ident, region, scale)
    w, h = region[2], region[3]
    assert result["stitched"] == result["single"] == (-(-w // scale), -(-h // scale))
    assert result["tiles"] == tiles
    assert result["max_difference"] == 0


async def test_unknown_scale_is_refused(client: httpx.AsyncClient) -> None:
    with pytest.raises(SystemExit, match="scale factors"):
        await fetch_tiles.compare(client, RGB_1000, (0, 0, 10, 10), 3)


@pytest.mark.server
def test_command_line(server: str) -> None:
    out = subprocess.run([sys.executable, str(SCRIPT), server, RGB_1000, "--region", "100,60,800,600", "--scale", "2"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "largest pixel difference 0" in out.stdout
