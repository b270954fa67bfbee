"""The pixel budget (sources/budget.py) in every protocol. Against one live server (`tileserver serve`,
one process, derivation on as by default): each decompression bomb (tests/bomb_images.py, generated here)
is a 422 for its info documents, OBJ, tiles and exports while the server's resident memory grows by less
than 50 MB, no temporary file or derivative is left, and the server keeps serving. In-process: each of the
three caps, lowered under small real images, refuses them in every protocol and lets the others through."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pyvips

from tileserver.settings import Settings

from .bomb_images import BOMBS, make_bombs
from .conftest import PLAIN_JPG, RGB_TIF, STRIPED_TIF, decode, served
from .live import clean_env, live_process, memory_kb

GROWTH_KB = 50 * 1024


def urls(name: str) -> list[str]:
    return [
        f"/iiif/3/{name}/info.json",
        f"/iiif/2/{name}/info.json",
        f"/iip?FIF={name}&OBJ=IIP,1.0&OBJ=Max-size&OBJ=Resolution-number",
        f"/fcgi-bin/iipsrv.fcgi?FIF={name}&JTL=0,0",
        f"/iip?FIF={name}&WID=200&CVT=jpeg",
        f"/iiif/3/{name}/0,0,256,256/256,/0/default.jpg",
        f"/iiif/3/{name}/full/max/0/default.png",
        f"/deepzoom/{name}.dzi",
        f"/deepzoom/{name}_files/0/0_0.jpg",
        f"/zoomify/{name}/ImageProperties.xml",
        f"/zoomify/{name}/TileGroup0/0-0-0.jpg",
    ]


@pytest.fixture(scope="module")
def bomb_root(tmp_path_factory: pytest.TempPathFactory, image_root: Path) -> Path:
    root = tmp_path_factory.mktemp("bombs") / "root"
    make_bombs(root)
    shutil.copy(image_root / RGB_TIF, root / RGB_TIF)
    shutil.copy(image_root / PLAIN_JPG, root / PLAIN_JPG)
    return root


@pytest.fixture(scope="module")
def live(bomb_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int, Path]]:
    """(base URL, pid of the serving process, its work folder holding `tmp` (TMPDIR) and `derived`)."""
    work = tmp_path_factory.mktemp("bomb-server")
    (work / "tmp").mkdir()
    env = clean_env(TMPDIR=str(work / "tmp"), TILESERVER_DERIVE_DIR=str(work / "derived"))
    with live_process(bomb_root, work / "server.log", workers=1, env=env) as (base, proc):
        with httpx.Client(base_url=base, timeout=60) as c:  # warm every code path on good images first
            for name in (RGB_TIF, PLAIN_JPG, "missing.tif"):
                for url in urls(name):
                    c.get(url)
        yield base, proc.pid, work


@pytest.mark.parametrize("name", list(BOMBS))
def test_a_bomb_is_refused_everywhere_in_bounded_memory(live: tuple[str, int, Path], bomb_root: Path,
                                                        name: str) -> None:
    base, pid, work = live
    rss_before, _ = memory_kb(pid)
    with httpx.Client(base_url=base, timeout=60) as c:
        for url in urls(name):
            r = c.get(url)
            assert r.status_code == 422, (url, r.status_code, r.text[:200])
            assert "megapixels" in r.text and str(bomb_root) not in r.text and str(work) not in r.text, url
            assert r.headers["cache-control"] == "no-cache"
    rss_after, peak = memory_kb(pid)
    assert rss_after - rss_before < GROWTH_KB, (rss_before, rss_after)
    assert peak - rss_before < GROWTH_KB, (rss_before, peak)
    assert list((work / "tmp").iterdir()) == []
    assert not (work / "derived").exists() or not any(p.suffix in (".tif", ".failed")
                                                      for p in (work / "derived").rglob("*"))


def test_the_server_keeps_serving(live: tuple[str, int, Path]) -> None:
    base, _, _ = live
    with httpx.Client(base_url=base, timeout=60) as c:
        for name in BOMBS:
            assert c.get(f"/iip?FIF={name}&JTL=0,0").status_code == 422
        tile = c.get(f"/iiif/3/{RGB_TIF}/256,0,256,256/256,/0/default.png")
        assert tile.status_code == 200
        img = decode(tile.content)
        assert (img.width, img.height, img.bands) == (256, 256, 3)
        assert c.get(f"/iip?FIF={PLAIN_JPG}&WID=100&CVT=png").status_code == 200
        assert c.get("/iip?FIF=missing.tif&JTL=0,0").status_code == 404


# -- each cap in every protocol, in-process ------------------------------------------------------------------
CAPS: list[Any] = [
    # (settings, refused, allowed): PLAIN_JPG 640x481 is decoded whole; RGB_TIF 1003x701 is read in
    # 256-px tiles from 3 stored levels; STRIPED_TIF 900x517 is decoded whole (strips are read in order)
    pytest.param({"max_decode_megapixels": 0.3}, PLAIN_JPG, RGB_TIF, id="decode"),
    pytest.param({"max_decode_megapixels": 0.06}, RGB_TIF, None, id="decode-tiles"),
    pytest.param({"max_untiled_megapixels": 0.4}, STRIPED_TIF, PLAIN_JPG, id="untiled"),
    pytest.param({"max_image_megapixels": 0.7}, RGB_TIF, PLAIN_JPG, id="image"),
]


@pytest.mark.parametrize(("caps", "refused", "allowed"), CAPS)
async def test_each_cap_in_every_protocol(image_root: Path, tmp_path: Path, caps: dict[str, float], refused: str,
                                          allowed: str | None) -> None:
    async with served(Settings(root=image_root, derive_dir=tmp_path / "derived", **caps)) as c:
        setting = next(iter(caps))
        for url in urls(refused):
            r = await c.get(url)
            assert r.status_code == 422, (url, r.status_code, r.text[:200])
            assert setting in r.text, url
        for url in urls(allowed) if allowed else ():
            r = await c.get(url)
            assert r.status_code == 200, (url, r.status_code, r.text[:200])


async def test_a_derived_pyramid_lifts_the_decode_cap_for_what_streams(image_root: Path, tmp_path: Path) -> None:
    """An untiled file past `max_decode_megapixels` is served through its derived pyramid when it can be
    read top to bottom in a few rows (a baseline JPEG); a progressive one, whose decoder holds every
    coefficient, is still refused, and so is the baseline one without derivation."""
    root = tmp_path / "root"
    root.mkdir()
    shutil.copy(image_root / PLAIN_JPG, root / "baseline.jpg")
    pyvips.Image.new_from_file(str(image_root / PLAIN_JPG)).jpegsave(str(root / "progressive.jpg"), interlace=True)
    caps = {"max_decode_megapixels": 0.2, "derive_min_megapixels": 0.1}
    async with served(Settings(root=root, derive_dir=tmp_path / "derived", **caps)) as c:
        r = await c.get("/iiif/3/baseline.jpg/full/320,/0/default.png")
        assert r.status_code == 200, r.text
        assert decode(r.content).width == 320
        r = await c.get("/iiif/3/progressive.jpg/info.json")
        assert r.status_code == 422 and "max_decode_megapixels" in r.text
    async with served(Settings(root=root, derive_dir=None, **caps)) as c:
        assert (await c.get("/iiif/3/baseline.jpg/info.json")).status_code == 422
