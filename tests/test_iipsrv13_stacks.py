"""Image stacks side by side with iipsrv 1.3 (fixture `iipsrv13`, same `image_root`): every JTL tile
of every page (`SDS=n`) in size and pixels, CVT of a page, the OBJ replies that describe a stack, and
the status of a page past the stack. Pages differ strongly in pixels (tests/stack_images.py), so a
server answering the wrong page fails.

Where 1.3 has a bug we do not copy: a stack whose pages have no reductions (same-size pages, no
SubIFDs) is listed as a stack (Horizontal-views 0..n-1) but 1.3 serves page 0 whatever SDS says
(TPTImage::getTile changes directory for SubIFD pyramids only); we serve the page asked for."""

from __future__ import annotations

import httpx
import pytest

from .conftest import decode, mean_diff
from .stack_images import FLAT_STACK_TIF, STACK_TIF

PAGES = (0, 1, 2)
JPEG_NOISE = 4.0  # our stored Q90 tiles and recodes vs 1.3's Q75 re-encodes
OTHER_PAGE = 15.0


async def ours(client: httpx.AsyncClient, query: str) -> httpx.Response:
    return await client.get(f"/fcgi-bin/iipsrv.fcgi?{query}")


@pytest.mark.parametrize("sds", ["SDS={}", "SDS={},90", "SDS={},0"])
async def test_every_tile_of_every_page_matches(iipsrv13: httpx.Client, client: httpx.AsyncClient, sds: str) -> None:
    """Each JTL tile of each resolution of each page, and one past the last: same status, size,
    bands; pixels within JPEG noise of 1.3's same page and far from its other pages."""
    counts = (1, 4, 12)  # 112x82, 225x165, 451x331 in 128-pixel tiles
    worst, nearest_other = 0.0, 255.0
    for page in PAGES:
        for res, ntiles in enumerate(counts):
            for n in range(ntiles + 1):
                query = f"FIF={STACK_TIF}&{sds.format(page)}&JTL={res},{n}"
                theirs, mine = iipsrv13.get(f"?{query}"), await ours(client, query)
                assert mine.status_code == theirs.status_code, query
                if theirs.status_code != 200:
                    continue
                a, b = decode(mine.content), decode(theirs.content)
                assert (a.width, a.height, a.bands) == (b.width, b.height, b.bands), query
                worst = max(worst, mean_diff(a, b))
                for other in set(PAGES) - {page}:
                    c = decode(iipsrv13.get(f"?FIF={STACK_TIF}&SDS={other}&JTL={res},{n}").content)
                    nearest_other = min(nearest_other, mean_diff(a, c))
    assert worst < JPEG_NOISE
    assert nearest_other > OTHER_PAGE


@pytest.mark.parametrize("page", PAGES)
@pytest.mark.parametrize("query", ["WID=200", "RGN=0.25,0.25,0.5,0.5&WID=150", "HEI=331"])
async def test_cvt_of_a_page_matches(iipsrv13: httpx.Client, client: httpx.AsyncClient, page: int, query: str) -> None:
    full = f"FIF={STACK_TIF}&SDS={page}&{query}&CVT=jpeg"
    theirs, mine = decode(iipsrv13.get(f"?{full}").content), decode((await ours(client, full)).content)
    assert (mine.width, mine.height) == (theirs.width, theirs.height)
    assert mean_diff(mine, theirs) < 6
    other = decode(iipsrv13.get(f"?FIF={STACK_TIF}&SDS={(page + 1) % 3}&{query}&CVT=jpeg").content)
    assert mean_diff(mine, other) > OTHER_PAGE


OBJECTS = {
    "views": "OBJ=Max-size&OBJ=Horizontal-views&OBJ=Vertical-views",
    "stack-json": "OBJ=stack",
    "levels": "OBJ=Tile-size&OBJ=Resolution-number&OBJ=Resolutions",
}


@pytest.mark.parametrize(
    ("ident", "objs"),
    [pytest.param(STACK_TIF, objs, id=f"subifd-{name}") for name, objs in OBJECTS.items()]
    + [pytest.param(FLAT_STACK_TIF, objs, id=f"flat-{name}") for name, objs in OBJECTS.items() if name != "levels"],
)
async def test_stack_objects_match(iipsrv13: httpx.Client, client: httpx.AsyncClient, ident: str, objs: str) -> None:
    theirs, mine = iipsrv13.get(f"?FIF={ident}&{objs}"), await ours(client, f"FIF={ident}&{objs}")
    assert (mine.status_code, mine.headers["content-type"]) == (theirs.status_code, theirs.headers["content-type"])
    assert mine.content == theirs.content


async def test_flat_stack_has_zoom_out_levels(iipsrv13: httpx.Client, client: httpx.AsyncClient) -> None:
    """As for every single-level TIFF (test_iipsrv13_obj.py), we add halved levels until one tile holds
    the image; 1.3 has none."""
    query = f"FIF={FLAT_STACK_TIF}&OBJ=Resolution-number&OBJ=Resolutions"
    assert iipsrv13.get(f"?{query}").content == b"Resolution-number:1\r\nResolutions:200 150\r\n"
    assert (await ours(client, query)).content == b"Resolution-number:2\r\nResolutions:100 75,200 150\r\n"


@pytest.mark.parametrize(
    "query",
    [pytest.param(f"FIF={STACK_TIF}&SDS=3&JTL=0,0", id="jtl-past-the-stack"),
     pytest.param(f"FIF={STACK_TIF}&SDS=7,90&JTL=1,0", id="jtl-far-past-the-stack")],
)
async def test_missing_page_status_matches(iipsrv13: httpx.Client, client: httpx.AsyncClient, query: str) -> None:
    assert (await ours(client, query)).status_code == iipsrv13.get(f"?{query}").status_code == 404


@pytest.mark.parametrize("page", PAGES)
async def test_flat_stack_page_0_matches(iipsrv13: httpx.Client, client: httpx.AsyncClient, page: int) -> None:
    """1.3 answers page 0 for any SDS of a stack without reductions (see the module docstring); our
    page 0 matches it, and our other pages are not page 0."""
    theirs = decode(iipsrv13.get(f"?FIF={FLAT_STACK_TIF}&SDS={page}&JTL=0,0").content)
    mine = decode((await ours(client, f"FIF={FLAT_STACK_TIF}&SDS={page}&JTL=1,0")).content)
    assert (mine.width, mine.height) == (theirs.width, theirs.height) == (128, 128)
    if page == 0:
        assert mean_diff(mine, theirs) < JPEG_NOISE
    else:
        assert mean_diff(mine, theirs) > OTHER_PAGE
