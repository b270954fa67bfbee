"""Through a real `tileserver serve` process on a loopback port (uvicorn, worker processes)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from .conftest import RGB_1000, decode
from .live import live_tileserver


@pytest.fixture(scope="module")
def server(image_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with live_tileserver(image_root, tmp_path_factory.mktemp("server") / "server.log") as base:
        yield base


@pytest.mark.server
def test_serve_answers_iip(server: str) -> None:
    with httpx.Client(base_url=server, timeout=10) as c:
        obj = c.get(f"/fcgi-bin/iipsrv.fcgi?FIF={RGB_1000}&OBJ=IIP,1.0&OBJ=Max-size")
        assert obj.text == "Max-size:1000 700\r\n" and obj.headers["iip"] == "1.3"
        tile = c.get(f"/fcgi-bin/iipsrv.fcgi?FIF={RGB_1000}&JTL=2,3")
        assert tile.headers["content-type"] == "image/jpeg"
        assert (decode(tile.content).width, decode(tile.content).height) == (232, 256)
        thumb = c.get(f"/iip?FIF={RGB_1000}&WID=400&CVT=jpeg")
        assert (decode(thumb.content).width, decode(thumb.content).height) == (400, 280)
        assert c.get("/iip?FIF=../../etc/passwd&OBJ=Max-size").status_code == 404
        health = c.get("/health").json()
        assert health["status"] == "ok" and "jpg" in health["output_formats"]
        index = c.get("/")
        assert index.status_code == 200 and RGB_1000 in index.text


@pytest.mark.server
def test_serve_refuses_a_missing_root(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "tileserver", "serve", str(tmp_path / "nope")],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "not a folder" in out.stderr
