"""PFL and SPECTRA over image sequences, side by side with iipsrv 1.3 (fixture `iipsrv13`, same
`image_root`): as 1.3 loops over its horizontal views with the session's vertical angle, a sequence
gives one entry per horizontal angle, named by the angle, each read from its own file XXX_YYY with
YYY from SDS (90 without it, 0 for `SDS=x` alone).

`spectral/grey` is a one-band, losslessly stored sequence with every horizontal angle at vertical 90
and 45: there 1.3's PFL and SPECTRA bugs (a profile's length growing by the band count per view, a
SPECTRA index into the interleaved tile) do not show, so the replies are compared byte for byte. On
the RGB `seq` only what 1.3 gets right is compared. A member missing at the vertical angle asked: our
404; 1.3's PFL 404s too, its SPECTRA is a 200 that breaks off into its 404 text."""

from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import pyvips
from starlette.applications import Starlette

from tileserver.app import create_app
from tileserver.errors import TileNotFound
from tileserver.protocols.iip import samples
from tileserver.settings import Settings

from .conftest import pattern
from .sequence_images import HORIZONTAL, SEQ, SEQ_SIZE, member_name, write_view

GREY = "spectral/grey"
GREY_VIEWS = tuple((x, y) for y in (90, 45) for x in HORIZONTAL)


def write_grey_view(path: Path, number: int) -> None:
    pattern(*SEQ_SIZE, bands=1, seed=70 + number).tiffsave(str(path), compression="deflate", tile=True, pyramid=True,
                                                           tile_width=128, tile_height=128)


@pytest.fixture(scope="module")
def grey(image_root: Path) -> str:
    folder = image_root / "spectral"
    folder.mkdir(exist_ok=True)
    for number, (x, y) in enumerate(GREY_VIEWS):
        write_grey_view(folder / member_name("grey", x, y), number)
    return GREY


async def ours(client: httpx.AsyncClient, query: str) -> httpx.Response:
    return await client.get(f"/fcgi-bin/iipsrv.fcgi?{query}")


def points(body: bytes) -> list[tuple[str, float]]:
    return [(p.findtext("wavelength") or "", float(p.findtext("reflectance") or "nan"))
            for p in ET.fromstring(body).iter("point")]


def file_row(path: Path, x: int, y: int, width: int) -> list[int]:
    """The samples of `width` pixels from x,y of a file's full resolution, interleaved, as PFL lists them."""
    img = pyvips.Image.new_from_file(str(path))
    values: list[int] = np.ndarray(buffer=img.crop(x, y, width, 1).write_to_memory(), dtype=np.uint8,
                                   shape=(width * img.bands,)).tolist()
    return values


# -- byte for byte on the one-band sequence ------------------------------------------------------------------
@pytest.mark.parametrize(
    "query",
    [pytest.param("PFL=2:10,10-14,10", id="row"), pytest.param("PFL=1:7,3-7,40", id="column"),
     pytest.param("PFL=0:74,49", id="point-last-smallest"), pytest.param("SDS=0,45&PFL=2:10,10-14,10", id="sds-45"),
     pytest.param("SDS=20,45&PFL=2:200,150-204,150", id="sds-x-ignored"),
     pytest.param("SDS=0,90&PFL=2:0,202-301,202", id="sds-90-last-row")],
)
async def test_grey_sequence_pfl_is_byte_identical(iipsrv13: httpx.Client, client: httpx.AsyncClient, grey: str,
                                                   query: str) -> None:
    mine, theirs = await ours(client, f"FIF={grey}&{query}"), iipsrv13.get(f"?FIF={grey}&{query}")
    assert (mine.status_code, theirs.status_code) == (200, 200)
    assert mine.headers["content-type"] == theirs.headers["content-type"] == "application/json"
    assert list(json.loads(mine.content)["profile"]) == ["0", "10", "20"]
    assert mine.content == theirs.content


@pytest.mark.parametrize(
    "query",
    [pytest.param("SPECTRA=2,0,10,10", id="interior"), pytest.param("SPECTRA=2,4,100,30", id="tile-4"),
     pytest.param("SPECTRA=0,0,70,0", id="smallest-top-row"), pytest.param("SDS=0,45&SPECTRA=2,0,10,10", id="sds-45"),
     pytest.param("SDS=10,45&SPECTRA=1,0,3,100", id="sds-45-res-1")],
)
async def test_grey_sequence_spectra_is_byte_identical(iipsrv13: httpx.Client, client: httpx.AsyncClient, grey: str,
                                                       query: str) -> None:
    mine, theirs = await ours(client, f"FIF={grey}&{query}"), iipsrv13.get(f"?FIF={grey}&{query}")
    assert (mine.status_code, theirs.status_code) == (200, 200)
    assert mine.headers["content-type"] == theirs.headers["content-type"] == "application/xml"
    assert [n for n, _ in points(mine.content)] == ["0", "10", "20"]
    assert mine.content == theirs.content


# -- the RGB sequence: what 1.3 gets right -------------------------------------------------------------------
@pytest.mark.parametrize("sds", ["", "SDS=0,90&", "SDS=20,90&"])
async def test_rgb_sequence_pfl_matches(iipsrv13: httpx.Client, client: httpx.AsyncClient, sds: str) -> None:
    """1.3's lists from the second view on run on past the line (its length bug, as for stacks): only
    the line's own values are compared."""
    query = f"FIF={SEQ}&{sds}PFL=2:3,4-6,4"
    mine = json.loads((await ours(client, query)).content)["profile"]
    theirs = json.loads(iipsrv13.get(f"?{query}").content)["profile"]
    assert list(mine) == list(theirs) == ["0", "10", "20"]
    assert [len(mine[n]) for n in mine] == [9, 9, 9]
    assert [mine[n] == theirs[n][:9] for n in mine] == [True] * 3
    assert len(theirs["20"]) > 9  # the 1.3 bug we do not copy


@pytest.mark.parametrize("query", ["SPECTRA=2,0,0,0", "SPECTRA=2,5,0,0", "SPECTRA=0,0,0,0"])
async def test_rgb_sequence_spectra_matches(iipsrv13: httpx.Client, client: httpx.AsyncClient, query: str) -> None:
    """A point per view and band (`10:0`..`10:2`); 1.3 gives one point per view, band 0 at 0,0 (where
    its index into the interleaved tile is the pixel's)."""
    mine = points((await ours(client, f"FIF={SEQ}&{query}")).content)
    theirs = points(iipsrv13.get(f"?FIF={SEQ}&{query}").content)
    assert [n for n, _ in mine] == [f"{x}:{b}" for x in HORIZONTAL for b in range(3)]
    assert theirs == [(n.removesuffix(":0"), v) for n, v in mine if n.endswith(":0")]


# -- a member missing at the vertical angle asked --------------------------------------------------------------
@pytest.mark.parametrize("sds", ["SDS=0,45", "SDS=10,0", "SDS=5"])
async def test_missing_member(iipsrv13: httpx.Client, client: httpx.AsyncClient, sds: str) -> None:
    """`seq` has 0,45 and 10,45 but no 20,45, only 0,0 at vertical 0 (`SDS=5` is 5,0)."""
    pfl, spectra = f"FIF={SEQ}&{sds}&PFL=2:3,4", f"FIF={SEQ}&{sds}&SPECTRA=2,0,3,4"
    assert (await ours(client, pfl)).status_code == iipsrv13.get(f"?{pfl}").status_code == 404
    assert (await ours(client, spectra)).status_code == 404
    theirs = iipsrv13.get(f"?{spectra}")
    assert theirs.status_code == 200 and b"Status: 404 Not Found" in theirs.content


async def test_views_of_a_sequence(app: Starlette, client: httpx.AsyncClient, grey: str) -> None:
    """Pure: one view per horizontal angle at the vertical angle given, named by the angle; a negative
    angle (the grammar already refuses one with a 400) names no file."""
    meta = await app.state.service.info(grey)
    assert samples.views(meta, 45) == [samples.View(f"{grey}_pyr_{x:03d}_045.tif", 0, str(x), 1.0)
                                       for x in HORIZONTAL]
    assert [v.ident for v in samples.views(meta)] == [f"{grey}_pyr_{x:03d}_090.tif" for x in HORIZONTAL]
    with pytest.raises(TileNotFound):
        samples.views(meta, -45)
    assert (await ours(client, f"FIF={SEQ}&SDS=0,-45&PFL=2:3,4")).status_code == 400


# -- each view is its own file (no iipsrv needed) --------------------------------------------------------------
async def test_each_entry_reads_its_own_member(client: httpx.AsyncClient, image_root: Path, grey: str) -> None:
    """Every list is the row of its own file at the vertical angle asked, and no two are alike: a server
    reading the first file (or vertical 90) for every view fails."""
    for vertical in (90, 45):
        query = f"FIF={grey}&SDS=0,{vertical}&PFL=2:20,30-60,30"
        profile = json.loads((await ours(client, query)).content)["profile"]
        for x in HORIZONTAL:
            assert profile[str(x)] == file_row(image_root / "spectral" / member_name("grey", x, vertical), 20, 30, 40)
        assert len({tuple(v) for v in profile.values()}) == 3
    rgb = json.loads((await ours(client, f"FIF={SEQ}&PFL=2:100,50-110,50")).content)["profile"]
    for x in HORIZONTAL:
        assert rgb[str(x)] == file_row(image_root / member_name(SEQ, x, 90), 100, 50, 10)
    assert len({tuple(v) for v in rgb.values()}) == 3


async def test_spectra_points_are_each_members_pixel(client: httpx.AsyncClient, image_root: Path, grey: str) -> None:
    found = points((await ours(client, f"FIF={grey}&SDS=0,45&SPECTRA=2,4,100,30")).content)  # tile 4 of 3x2: 128,128
    expected = [file_row(image_root / "spectral" / member_name("grey", x, 45), 228, 158, 1)[0] for x in HORIZONTAL]
    assert [round(v * 255) for _, v in found] == expected
    assert len(set(expected)) == 3


async def test_etags_differ_per_vertical_angle(client: httpx.AsyncClient, grey: str) -> None:
    replies = [await ours(client, f"FIF={grey}&{sds}PFL=2:10,10-14,10") for sds in ("", "SDS=0,45&", "SDS=10,90&")]
    assert replies[0].content == replies[2].content != replies[1].content
    assert replies[0].headers["etag"] == replies[2].headers["etag"] != replies[1].headers["etag"]


# -- a sequence whose files change, whose views differ in size ---------------------------------------------------
@pytest.fixture
async def changing(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    """`c`: view 0,90 is 301 x 203, view 10,90 is 140 x 90; files checked on every request."""
    write_view(tmp_path / member_name("c", 0, 90), *SEQ_SIZE, 0)
    write_view(tmp_path / member_name("c", 10, 90), 140, 90, 1)
    application = create_app(Settings(root=tmp_path, stat_interval=0))
    async with application.router.lifespan_context(application), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=application), base_url="http://testserver") as c:
        yield c


async def test_a_changed_later_member_changes_the_reply(changing: httpx.AsyncClient, tmp_path: Path) -> None:
    """The validators cover every file read, not just the sequence's first view."""
    query = "FIF=c&PFL=1:5,5-8,5"  # resolution 1: 150x101 of view 0, 140x90 (full size) of view 10
    before = await ours(changing, query)
    path = tmp_path / member_name("c", 10, 90)
    write_view(path, 140, 90, 4)
    stat = path.stat()
    os.utime(path, (stat.st_atime, stat.st_mtime + 5))
    after = await ours(changing, query)
    assert (before.status_code, after.status_code) == (200, 200)
    assert json.loads(before.content)["profile"]["0"] == json.loads(after.content)["profile"]["0"]
    assert json.loads(before.content)["profile"]["10"] != json.loads(after.content)["profile"]["10"]
    assert after.headers["etag"] != before.headers["etag"]
    assert after.headers["last-modified"] != before.headers["last-modified"]
    stale = {"If-None-Match": before.headers["etag"]}
    assert (await changing.get(f"/fcgi-bin/iipsrv.fcgi?{query}", headers=stale)).status_code == 200


async def test_each_member_is_placed_by_its_own_size(changing: httpx.AsyncClient) -> None:
    """Resolution 1 is 150 wide in view 0 but 140 in view 10: a line past 140 leaves view 10 (404)."""
    assert (await ours(changing, "FIF=c&PFL=1:0,5-140,5")).status_code == 200
    assert (await ours(changing, "FIF=c&PFL=1:0,5-145,5")).status_code == 404


def test_helpers(tmp_path: Path) -> None:
    path = tmp_path / "g.tif"
    write_grey_view(path, 0)
    img: Any = pyvips.Image.new_from_file(str(path))
    assert (img.width, img.height, img.bands, img.format) == (*SEQ_SIZE, 1, "uchar")
    assert file_row(path, 0, 0, 3) == [int(img(x, 0)[0]) for x in range(3)]
