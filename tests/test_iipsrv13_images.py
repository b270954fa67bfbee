"""Images side by side with iipsrv 1.3 (built from ../shared/vendor, behind lighttpd on loopback;
fixture `iipsrv13`) on the same generated images: JTL tile sizes and pixels, CVT output sizes for
WID/HEI/RGN combinations, error statuses. OBJ replies are compared in test_iipsrv13_obj.py. These
replace the iipsrv 1.1 comparisons: 1.3 answers everything 1.1 did, in the format clients now expect."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from .conftest import GREY16_TIF, META_TIF, PLAIN_JPG, RGB_1000, RGB_TIF, SUBIFD_TIF, decode, mean_diff


async def ours(client: httpx.AsyncClient, query: str) -> httpx.Response:
    return await client.get(f"/fcgi-bin/iipsrv.fcgi?{query}")


@pytest.mark.parametrize("ident", [RGB_TIF, GREY16_TIF, SUBIFD_TIF, PLAIN_JPG, META_TIF])
async def test_every_tile_matches(iipsrv13: httpx.Client, client: httpx.AsyncClient, ident: str) -> None:
    """Each JTL tile of each resolution (and one past the last): same status, size and bands; pixels
    within JPEG noise (a stored JPEG tile passes through at its own quality, 1.3 re-encodes at Q75)."""
    levels = (await ours(client, f"FIF={ident}&OBJ=Resolutions")).text.split(":")[1].strip().split(",")
    tile = 256
    worst = 0.0
    for res, size in enumerate(levels):
        w, h = (int(v) for v in size.split())
        for n in range(-(-w // tile) * -(-h // tile) + 1):
            theirs = iipsrv13.get(f"?FIF={ident}&JTL={res},{n}")
            mine = await ours(client, f"FIF={ident}&JTL={res},{n}")
            assert mine.status_code == theirs.status_code, (res, n)
            if theirs.status_code == 200:
                a, b = decode(mine.content), decode(theirs.content)
                assert (a.width, a.height, a.bands) == (b.width, b.height, b.bands), (res, n)
                worst = max(worst, mean_diff(a, b))
    assert worst < 4.0


@pytest.mark.parametrize(
    "query",
    ["WID=400", "HEI=300", "WID=400&HEI=400", "WID=1000&HEI=100", "WID=500&RGN=0.25,0.25,0.5,0.5",
     "WID=300&RGN=0.1,0.2,0.3,0.4", "WID=123", "HEI=77", "RGN=0.75,0.75,0.5,0.5&WID=100", "WID=6000",
     "HEI=701", "WID=77&HEI=500", "RGN=0,0,1,1", "RGN=0.5,0.5,0.01,0.01&WID=50",
     "RGN=0.9,0.1,0.1,0.8&HEI=200", "WID=1003", "WID=256&HEI=256&RGN=0.2,0.2,0.6,0.3"],
)
@pytest.mark.parametrize("ident", [RGB_1000, RGB_TIF, GREY16_TIF, PLAIN_JPG])
async def test_cvt_sizes_match(iipsrv13: httpx.Client, client: httpx.AsyncClient, query: str, ident: str) -> None:
    theirs = decode(iipsrv13.get(f"?FIF={ident}&{query}&CVT=jpeg").content)
    mine = decode((await ours(client, f"FIF={ident}&{query}&CVT=jpeg")).content)
    assert (mine.width, mine.height) == (theirs.width, theirs.height)
    assert mean_diff(mine, theirs) < 6


@pytest.mark.parametrize(
    "query",
    [f"FIF={RGB_TIF}&FOO=1", f"FIF={RGB_TIF}", "JTL=5,0", f"FIF={RGB_TIF}&OBJ=nonsense"],
)
async def test_iip_errors_match(iipsrv13: httpx.Client, client: httpx.AsyncClient, query: str) -> None:
    """1.3 sends its IIP errors with status 200 and the Content-Disposition header inside the body (its
    empty status line ends the headers early: a bug); we send the 400 and the header it means. The
    `Error/<len>:` line agrees, except that 1.3 cuts the argument at 31 bytes (another bug)."""
    theirs = iipsrv13.get(f"?{query}")
    mine = await ours(client, query)
    assert (theirs.status_code, mine.status_code) == (200, 400)
    assert mine.headers["content-type"] == theirs.headers["content-type"] == "application/vnd.netfpx"
    assert mine.headers["content-disposition"] == 'inline;filename="IIPisAMadGameClosedToOurUnderstanding.netfpx"'
    their_line = theirs.content.split(b"\r\n\r\n", 1)[1].rstrip(b"\r\n")
    prefix, _, text = their_line.partition(b":")
    assert mine.content.startswith(prefix + b":" + text) and mine.content.endswith(b"\r\n")


@pytest.mark.parametrize("query", [f"FIF={RGB_TIF}&JTL=2,999", "FIF=nonexistent.tif&OBJ=IIP,1.0"])
async def test_missing_things_are_404_without_a_path(iipsrv13: httpx.Client, client: httpx.AsyncClient,
                                                     query: str, image_root: Path) -> None:
    theirs = iipsrv13.get(f"?{query}")
    mine = await ours(client, query)
    assert mine.status_code == theirs.status_code == 404
    assert str(image_root).encode() not in mine.content  # 1.3 names the server path of a missing file


async def test_a_missing_resolution_is_404_not_the_banner(iipsrv13: httpx.Client, client: httpx.AsyncClient) -> None:
    """1.3 answers a resolution past the last with its HTML banner (status 200); we answer 404."""
    theirs = iipsrv13.get(f"?FIF={RGB_TIF}&JTL=99,0")
    assert theirs.status_code == 200 and theirs.headers["content-type"] == "text/html"
    assert (await ours(client, f"FIF={RGB_TIF}&JTL=99,0")).status_code == 404


async def test_cvt_of_a_region_without_a_size_is_the_region_at_full_resolution(
        iipsrv13: httpx.Client, client: httpx.AsyncClient) -> None:
    """1.3 stretches a region asked without WID/HEI to the whole image's size (aspect ratio lost: a bug,
    View::getRequestSize); 1.1 and we send the region's own full-resolution pixels."""
    query = f"FIF={RGB_1000}&RGN=0.333,0.25,0.2,0.6&CVT=jpeg"
    theirs = decode(iipsrv13.get(f"?{query}").content)
    mine = decode((await ours(client, query)).content)
    assert (theirs.width, theirs.height) == (1000, 700)
    assert (mine.width, mine.height) == (200, 420)


@pytest.mark.parametrize("tile", [0, 1, 5, 11])
async def test_rot_180_tiles_are_the_turned_image_s_tiles(iipsrv13: httpx.Client, client: httpx.AsyncClient,
                                                          tile: int) -> None:
    """1.3 answers ROT=180 with tile n of the image turned upside down (its last-but-n tile, rotated)."""
    query = f"FIF={RGB_TIF}&ROT=180&PTL=2,{tile}"
    theirs, mine = decode(iipsrv13.get(f"?{query}").content), decode((await ours(client, query)).content)
    assert (mine.width, mine.height) == (theirs.width, theirs.height)
    assert mean_diff(mine, theirs) == 0
    plain = decode((await ours(client, f"FIF={RGB_TIF}&PTL=2,{11 - tile}")).content)
    assert mean_diff(mine, plain.rot180()) == 0
