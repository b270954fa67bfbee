"""Image sequences side by side with iipsrv 1.3 (fixture `iipsrv13`, same `image_root`, 1.3's default
FILENAME_PATTERN `_pyr_`): the OBJ replies that describe a sequence byte for byte, every JTL tile of every
view (`SDS=x,y`) in size and pixels, CVT of a view, and the status of a view or a name that does not
exist. Views differ strongly in pixels (tests/sequence_images.py), so a server answering the wrong file
fails. Where 1.3 differs, on purpose: its 404 body names the server's path; ours names the identifier."""

from __future__ import annotations

import httpx
import pytest

from .conftest import decode, mean_diff
from .sequence_images import DUP, SEQ, SEQ_VIEWS

# our stored Q90 tiles (edge tiles cropped from them losslessly) vs 1.3's Q75 re-encodes (of edge tiles too)
JPEG_NOISE = 4.5
OTHER_VIEW = 15.0
TILES = (1, 2, 6)  # resolutions 0..2 of a 301x203 view in 128-pixel tiles


async def ours(client: httpx.AsyncClient, query: str) -> httpx.Response:
    return await client.get(f"/fcgi-bin/iipsrv.fcgi?{query}")


@pytest.mark.parametrize(
    "objs",
    [
        pytest.param("OBJ=Horizontal-views&OBJ=Vertical-views&OBJ=Max-size", id="views"),
        pytest.param("OBJ=IIP,1.0&OBJ=Basic-info&OBJ=Tile-size&OBJ=Resolutions", id="basic"),
        pytest.param("OBJ=Vertical-views", id="vertical"),
        pytest.param("SDS=10,45&OBJ=Max-size&OBJ=Horizontal-views", id="sds-changes-no-object"),
    ],
)
async def test_sequence_objects_match(iipsrv13: httpx.Client, client: httpx.AsyncClient, objs: str) -> None:
    query = f"FIF={SEQ}&{objs}"
    theirs, mine = iipsrv13.get(f"?{query}"), await ours(client, query)
    assert (mine.status_code, mine.headers["content-type"]) == (theirs.status_code, theirs.headers["content-type"])
    assert mine.headers.get("IIP") == theirs.headers.get("IIP")
    assert mine.content == theirs.content


async def test_views_are_the_listed_angles(iipsrv13: httpx.Client) -> None:
    """The fixture is what the parity above needs: 1.3 lists angles 0 10 20 and 0 45 90 (not 10,45)."""
    body = iipsrv13.get(f"?FIF={SEQ}&OBJ=Horizontal-views&OBJ=Vertical-views").content
    assert body == b"Horizontal-views:0 10 20\r\nVertical-views:0 45 90\r\n"


async def test_iiif_of_a_sequence_is_its_first_view(iipsrv13: httpx.Client, client: httpx.AsyncClient) -> None:
    """Only IIP names views; other protocols see the sequence as its first view, 000_090, in 1.3 too."""
    query = f"IIIF={SEQ}/full/max/0/default.jpg"
    theirs, mine = decode(iipsrv13.get(f"?{query}").content), decode((await ours(client, query)).content)
    first = decode(iipsrv13.get(f"?FIF={SEQ}&SDS=0,90&WID=301&CVT=jpeg").content)
    assert (mine.width, mine.height) == (theirs.width, theirs.height) == (301, 203)
    assert mean_diff(mine, theirs) < JPEG_NOISE and mean_diff(theirs, first) < JPEG_NOISE


@pytest.mark.parametrize("view", SEQ_VIEWS, ids=[f"{x}-{y}" for x, y in SEQ_VIEWS])
async def test_every_tile_of_every_view_matches(iipsrv13: httpx.Client, client: httpx.AsyncClient,
                                                view: tuple[int, int]) -> None:
    """Each JTL tile of each resolution of the view, and one past the last: same status, size and bands,
    pixels within JPEG noise of 1.3's and far from 1.3's other views."""
    x, y = view
    worst, nearest_other = 0.0, 255.0
    for res, ntiles in enumerate(TILES):
        for n in range(ntiles + 1):
            query = f"FIF={SEQ}&SDS={x},{y}&JTL={res},{n}"
            theirs, mine = iipsrv13.get(f"?{query}"), await ours(client, query)
            assert mine.status_code == theirs.status_code, query
            if theirs.status_code != 200:
                continue
            a, b = decode(mine.content), decode(theirs.content)
            assert (a.width, a.height, a.bands) == (b.width, b.height, b.bands), query
            worst = max(worst, mean_diff(a, b))
            for ox, oy in set(SEQ_VIEWS) - {view}:
                c = decode(iipsrv13.get(f"?FIF={SEQ}&SDS={ox},{oy}&JTL={res},{n}").content)
                nearest_other = min(nearest_other, mean_diff(a, c))
    assert worst < JPEG_NOISE
    assert nearest_other > OTHER_VIEW


@pytest.mark.parametrize(
    ("sds", "view"),
    [pytest.param("SDS=10,90", (10, 90), id="horizontal"), pytest.param("SDS=0,45", (0, 45), id="vertical"),
     pytest.param("SDS=0", (0, 0), id="x-alone-is-y-0"), pytest.param("", (0, 90), id="no-sds")],
)
async def test_jtl_of_a_view_matches(iipsrv13: httpx.Client, client: httpx.AsyncClient, sds: str,
                                     view: tuple[int, int]) -> None:
    query = f"FIF={SEQ}&{sds}&JTL=2,4" if sds else f"FIF={SEQ}&JTL=2,4"
    theirs, mine = decode(iipsrv13.get(f"?{query}").content), decode((await ours(client, query)).content)
    assert mean_diff(mine, theirs) < JPEG_NOISE
    named = decode(iipsrv13.get(f"?FIF={SEQ}&SDS={view[0]},{view[1]}&JTL=2,4").content)
    assert mean_diff(theirs, named) == 0  # 1.3 itself: the query is that view


@pytest.mark.parametrize("view", [(10, 90), (20, 90), (0, 45)], ids=["10-90", "20-90", "0-45"])
@pytest.mark.parametrize("query", ["WID=200", "RGN=0.25,0.25,0.5,0.5&WID=150", "HEI=203"])
async def test_cvt_of_a_view_matches(iipsrv13: httpx.Client, client: httpx.AsyncClient, view: tuple[int, int],
                                     query: str) -> None:
    full = f"FIF={SEQ}&SDS={view[0]},{view[1]}&{query}&CVT=jpeg"
    theirs, mine = decode(iipsrv13.get(f"?{full}").content), decode((await ours(client, full)).content)
    assert (mine.width, mine.height) == (theirs.width, theirs.height)
    assert mean_diff(mine, theirs) < 6
    first = decode(iipsrv13.get(f"?FIF={SEQ}&{query}&CVT=jpeg").content)
    assert mean_diff(mine, first) > OTHER_VIEW


@pytest.mark.parametrize(
    "query",
    [
        pytest.param(f"FIF={SEQ}&SDS=30,90&JTL=0,0", id="missing-horizontal"),
        pytest.param(f"FIF={SEQ}&SDS=0,30&JTL=0,0", id="missing-vertical"),
        pytest.param(f"FIF={SEQ}&SDS=10&JTL=0,0", id="x-alone-no-y-0-file"),
        pytest.param("FIF=noseq&OBJ=Max-size", id="neither-file-nor-sequence"),
        pytest.param("FIF=noseq&JTL=0,0", id="neither-jtl"),
        pytest.param(f"FIF={DUP}&OBJ=Max-size", id="first-view-in-two-formats"),
    ],
)
async def test_missing_status_matches(iipsrv13: httpx.Client, client: httpx.AsyncClient, image_root: object,
                                      query: str) -> None:
    theirs, mine = iipsrv13.get(f"?{query}"), await ours(client, query)
    assert mine.status_code == theirs.status_code == 404, query
    assert str(image_root) not in mine.text


async def test_cvt_of_a_missing_view_is_a_404(iipsrv13: httpx.Client, client: httpx.AsyncClient,
                                              image_root: object) -> None:
    """1.3 has sent `200 image/jpeg` before it opens the view's file, so its error comes as the body of
    a 200 (a CGI `Status: 404` line and the file's path); we answer the 404 the failure is."""
    query = f"FIF={SEQ}&SDS=20,45&WID=50&CVT=jpeg"
    theirs, mine = iipsrv13.get(f"?{query}"), await ours(client, query)
    assert (theirs.status_code, theirs.headers["content-type"]) == (200, "image/jpeg")
    assert theirs.content.startswith(b"Status: 404 Not Found") and str(image_root).encode() in theirs.content
    assert mine.status_code == 404 and str(image_root) not in mine.text
