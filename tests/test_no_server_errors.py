"""No request a client can make gets a 5xx: every source kind x processing x output combination of IIP,
and a sample of IIIF parameter combinations, answer 200 or a 4xx; so do bad files (a 415), and what this
server cannot write is a 400."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from tileserver.imaging import encode
from tileserver.imaging.encode import available_tiff_codecs
from tileserver.settings import Settings

from .bad_images import BROKEN_DATA, UNREADABLE, make_bad_images
from .conftest import ALPHA_PNG, GREY16_TIF, PLAIN_JPG, RGB_TIF, STRIPED_TIF, SUBIFD_TIF, served

IDENTS = [RGB_TIF, GREY16_TIF, STRIPED_TIF, PLAIN_JPG, ALPHA_PNG, SUBIFD_TIF]
MODIFIERS = ["", "COL=grey&", "COL=binary&", "INV=1&", "CMP=jet&", "GAM=log&", "CNT=st&", "CNT=eq&", "ROT=33&",
             "ROT=!270&", "MINMAX=-:10,200&", "CTW=[0,0,1;0,1,0;1,0,0]&", "QLT=5&", "RGN=0.9,0.9,0.5,0.5&"]
OUTPUTS = ["WID=77&CVT=jpeg", "HEI=33&CVT=png", "WID=50&CVT=webp", "WID=40&CVT=tiff", "JTL=0,0", "PTL=1,0",
           "TIL=0,0"]


@pytest.mark.parametrize("ident", IDENTS)
async def test_iip_combinations(client: httpx.AsyncClient, ident: str) -> None:
    failures = []
    for mod, out in itertools.product(MODIFIERS, OUTPUTS):
        r = await client.get(f"/iip?FIF={ident}&{mod}{out}")
        if r.status_code >= 500 or r.status_code not in (200, 400, 404):
            failures.append((mod + out, r.status_code, r.text[:60]))
    assert failures == []


@pytest.mark.parametrize("ident", IDENTS)
async def test_iiif_combinations(client: httpx.AsyncClient, ident: str) -> None:
    regions = ["full", "square", "0,0,100,50", "pct:10,10,50,50", "590,400,100,100"]
    sizes = ["max", "50,", ",40", "pct:10", "60,70", "!60,70", "^200,"]
    rotations = ["0", "90", "!45", "359.5"]
    rest = [f"{q}.{f}" for q, f in itertools.product(["default", "color", "gray", "bitonal"],
                                                     ["jpg", "png", "webp", "gif", "tif"])]
    failures = []
    for i, combo in enumerate(itertools.product(regions, sizes, rotations, rest)):
        if i % 25:  # a fixed 1 in 25 of the 2800 combinations per image
            continue
        url = f"/iiif/3/{quote(ident, safe='')}/{'/'.join(combo)}"
        r = await client.get(url)
        if r.status_code >= 500:
            failures.append((url, r.status_code, r.text[:60]))
    assert failures == []


# -- bad files and options this server cannot honour ---------------------------------------------------------
@pytest.fixture(scope="module")
async def bad_client(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[httpx.AsyncClient]:
    root = tmp_path_factory.mktemp("bad-combinations") / "root"
    make_bad_images(root)
    async with served(Settings(root=root, derive_dir=None)) as c:
        yield c


@pytest.mark.parametrize("name", [*UNREADABLE, *BROKEN_DATA])
async def test_bad_files_never_5xx(bad_client: httpx.AsyncClient, name: str) -> None:
    """Every IIP output and a sample of IIIF requests of each bad file: a 415 (or a 400 for a request
    that is itself wrong, or a 200 for metadata answered from a readable header), never a 5xx."""
    failures = []
    for mod, out in itertools.product(MODIFIERS[::3], [*OUTPUTS, "OBJ=IIP,1.0&OBJ=Max-size"]):
        r = await bad_client.get(f"/iip?FIF={name}&{mod}{out}")
        if r.status_code not in (200, 400, 415):
            failures.append((mod + out, r.status_code, r.text[:60]))
    for path in ["info.json", "full/max/0/default.jpg", "0,0,100,100/50,/90/gray.png", "square/max/45/default.webp",
                 "full/pct:10/0/bitonal.tif"]:
        r = await bad_client.get(f"/iiif/3/{quote(name, safe='')}/{path}")
        if r.status_code not in (200, 400, 415):
            failures.append((path, r.status_code, r.text[:60]))
    assert failures == []


ZSTD = "zstd" in available_tiff_codecs()


@pytest.mark.parametrize(("url", "needs"), [
    pytest.param(f"/iip?FIF={RGB_TIF}&WID=100&QLT=zstd:50&CVT=tiff", not ZSTD, id="iip-cvt-zstd"),
    pytest.param(f"/iip?FIF={RGB_TIF}&QLT=zstd:50&TTL=0,0", not ZSTD, id="iip-ttl-zstd"),
    pytest.param(f"/iip?FIF={RGB_TIF}&WID=100&QLT=lzw:1&CVT=tiff", True, id="iip-cvt-lzw-unavailable"),
    pytest.param(f"/iiif/3/{RGB_TIF}/full/^17000,/0/default.webp", True, id="iiif-webp-past-16383"),
    pytest.param(f"/iip?FIF={RGB_TIF}&WID=17000&CVT=webp", True, id="iip-webp-past-16383"),
])
async def test_what_this_server_cannot_write_is_a_400(image_root: Path, monkeypatch: pytest.MonkeyPatch, url: str,
                                                      needs: bool) -> None:
    """A codec its libvips lacks (pyvips-binary's libtiff has no zstd; lzw is taken away here), or an
    output larger than its format holds, is the client's request to change: 400, not a 500 or a 415."""
    if not needs:
        pytest.skip("this libvips writes zstd TIFF")
    real = available_tiff_codecs()
    monkeypatch.setattr(encode, "available_tiff_codecs", lambda: tuple(c for c in real if c != "lzw"))
    async with served(Settings(root=image_root, max_size=None)) as c:
        r = await c.get(url)
    assert r.status_code == 400, r.text
    assert "not available" in r.text or "at most 16383 pixels" in r.text


async def test_a_tiff_codec_setting_this_libvips_lacks_is_a_400(image_root: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(encode, "available_tiff_codecs", lambda: ("none", "deflate"))
    async with served(Settings(root=image_root, tiff_compression="lzw")) as c:
        assert (await c.get(f"/iip?FIF={RGB_TIF}&WID=100&CVT=tiff")).status_code == 400
        assert (await c.get(f"/iiif/3/{RGB_TIF}/full/100,/0/default.tif")).status_code == 400
        assert (await c.get(f"/iip?FIF={RGB_TIF}&WID=100&QLT=deflate:1&CVT=tiff")).status_code == 200
