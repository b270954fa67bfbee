"""Image stacks (iipsrv 1.3): the reader finds the pages, their names and scales; `SDS=x` (IIP) selects
page x; a tile of page n decodes to page n's pixels on every path (stored tile passed through, stored
tiles recoded, libvips, virtual levels)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from tileserver.errors import TileNotFound
from tileserver.models import OutputFormat, StackItem
from tileserver.protocols.iip.grammar import parse, split_query
from tileserver.sources.pyramid import PyramidReader

from .conftest import RGB_TIF, SUBIFD_TIF, decode, mean_diff
from .stack_images import FLAT_STACK_TIF, STACK_NAMES, STACK_SCALES, STACK_TIF, stack_page

ITEMS = tuple(StackItem(n, s) for n, s in zip(STACK_NAMES, STACK_SCALES, strict=True))
JPEG_NOISE = 6.0  # mean difference after a Q90 JPEG round trip and a reduction filter other than ours
OTHER_PAGE = 15.0  # a wrong page differs by far more than this (about 30 or more)


@pytest.fixture(scope="module")
def reader() -> PyramidReader:
    return PyramidReader(256, 8)


def expected(page: int, width: int, height: int, box: tuple[int, int, int, int]) -> Any:
    """Page `page` of a `width` x `height` stack, shrunk to the level holding `box`, cropped to it."""
    full = stack_page(451 if width > 200 else 200, 331 if width > 200 else 150, page)
    level = full if full.width == width else full.thumbnail_image(width, height=height, size="force")
    return level.crop(*box)


# -- reader ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("ident", "levels"),
    [
        pytest.param(STACK_TIF, [(451, 331, True, -1), (225, 165, True, 0), (112, 82, True, 1)], id="subifd"),
        pytest.param(FLAT_STACK_TIF, [(200, 150, True, -1), (100, 75, False, -1)], id="flat"),
    ],
)
def test_stack_pages_names_and_levels(reader: PyramidReader, image_root: Path, ident: str,
                                      levels: list[tuple[int, int, bool, int]]) -> None:
    meta = reader.info(str(image_root / ident), ident)
    assert meta.stack == ITEMS
    assert [(lv.width, lv.height, lv.stored, lv.subifd) for lv in meta.levels] == levels
    assert {lv.page for lv in meta.levels} == {0}  # pages are chosen per read, not levels
    assert (meta.width, meta.height) == levels[0][:2]


@pytest.mark.parametrize("ident", [RGB_TIF, SUBIFD_TIF])
def test_single_images_are_no_stack(reader: PyramidReader, image_root: Path, ident: str) -> None:
    assert reader.info(str(image_root / ident), ident).stack == ()


@pytest.mark.parametrize("page", [0, 1, 2])
@pytest.mark.parametrize(
    ("ident", "level", "box"),
    [
        pytest.param(STACK_TIF, 0, (128, 128, 128, 128), id="subifd-full"),
        pytest.param(STACK_TIF, 2, (0, 0, 112, 82), id="subifd-smallest"),
        pytest.param(FLAT_STACK_TIF, 0, (72, 22, 128, 128), id="flat-full"),
        pytest.param(FLAT_STACK_TIF, 1, (0, 0, 100, 75), id="flat-virtual"),
    ],
)
def test_read_gives_the_page(reader: PyramidReader, image_root: Path, ident: str, level: int,
                             box: tuple[int, int, int, int], page: int) -> None:
    meta = reader.info(str(image_root / ident), ident)
    lv = meta.levels[level]
    got = reader.read(str(image_root / ident), meta, level, box, page)
    assert mean_diff(got, expected(page, lv.width, lv.height, box)) < JPEG_NOISE
    for other in {0, 1, 2} - {page}:
        assert mean_diff(got, expected(other, lv.width, lv.height, box)) > OTHER_PAGE


@pytest.mark.parametrize("page", [0, 1, 2])
def test_stored_tile_of_the_page(reader: PyramidReader, image_root: Path, page: int) -> None:
    meta = reader.info(str(image_root / STACK_TIF), STACK_TIF)
    tile = reader.stored_tile(str(image_root / STACK_TIF), meta, (1, 0, 0), OutputFormat.JPEG, page)
    assert tile is not None
    assert mean_diff(decode(tile.data), expected(page, 225, 165, (0, 0, 128, 128))) < JPEG_NOISE


@pytest.mark.parametrize(
    ("ident", "page"),
    [pytest.param(STACK_TIF, 3, id="past-the-stack"), pytest.param(STACK_TIF, -1, id="negative"),
     pytest.param(RGB_TIF, 1, id="single-image")],
)
def test_missing_page(reader: PyramidReader, image_root: Path, ident: str, page: int) -> None:
    meta = reader.info(str(image_root / ident), ident)
    with pytest.raises(TileNotFound):
        reader.read(str(image_root / ident), meta, 0, (0, 0, 8, 8), page)


# -- SDS grammar ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("query", "view"),
    [
        pytest.param("FIF=a.tif&JTL=0,0", (0, 90), id="default"),
        pytest.param("FIF=a.tif&SDS=2&JTL=0,0", (2, 0), id="x-alone-sets-y-0"),
        pytest.param("FIF=a.tif&SDS=2,90&JTL=0,0", (2, 90), id="x-and-y"),
        pytest.param("FIF=a.tif&SDS=0,45&JTL=0,0", (0, 45), id="y-only-changes"),
        pytest.param("FIF=a.tif&SDS= 1 , 30 &JTL=0,0", (1, 30), id="spaces"),
    ],
)
def test_sds(query: str, view: tuple[int, int]) -> None:
    assert parse(split_query(query), query).view == view


# -- IIP over HTTP ----------------------------------------------------------------------------------
async def iip(client: httpx.AsyncClient, query: str) -> httpx.Response:
    return await client.get(f"/fcgi-bin/iipsrv.fcgi?{query}")


@pytest.mark.parametrize("page", [0, 1, 2])
@pytest.mark.parametrize(
    ("ident", "jtl", "size", "box"),
    [
        pytest.param(STACK_TIF, "2,0", (451, 331), (0, 0, 128, 128), id="passthrough"),
        pytest.param(STACK_TIF, "2,11", (451, 331), (384, 256, 67, 75), id="recoded-edge"),
        pytest.param(STACK_TIF, "1,1", (225, 165), (128, 0, 97, 128), id="subifd-edge"),
        pytest.param(STACK_TIF, "0,0", (112, 82), (0, 0, 112, 82), id="smallest"),
        pytest.param(FLAT_STACK_TIF, "1,3", (200, 150), (128, 128, 72, 22), id="flat"),
        pytest.param(FLAT_STACK_TIF, "0,0", (100, 75), (0, 0, 100, 75), id="flat-virtual"),
    ],
)
async def test_jtl_of_page(client: httpx.AsyncClient, ident: str, jtl: str, size: tuple[int, int],
                           box: tuple[int, int, int, int], page: int) -> None:
    r = await iip(client, f"FIF={ident}&SDS={page}&JTL={jtl}")
    assert r.status_code == 200, r.text
    got = decode(r.content)
    assert mean_diff(got, expected(page, *size, box)) < JPEG_NOISE
    for other in {0, 1, 2} - {page}:
        assert mean_diff(got, expected(other, *size, box)) > OTHER_PAGE


@pytest.mark.parametrize("page", [0, 1, 2])
async def test_cvt_of_page(client: httpx.AsyncClient, page: int) -> None:
    r = await iip(client, f"FIF={STACK_TIF}&SDS={page},90&RGN=0.5,0.5,0.5,0.5&CVT=png")
    assert r.status_code == 200
    got = decode(r.content)
    assert (got.width, got.height) == (225, 165)
    assert mean_diff(got, stack_page(451, 331, page).crop(226, 166, 225, 165)) < JPEG_NOISE


async def test_til_pages_differ(client: httpx.AsyncClient) -> None:
    bodies = [(await iip(client, f"FIF={STACK_TIF}&SDS={p}&TIL=2,0-1")).content for p in (0, 1)]
    assert bodies[0] != bodies[1]


@pytest.mark.parametrize(
    "query",
    [pytest.param(f"FIF={STACK_TIF}&SDS=3&JTL=0,0", id="past-the-stack"),
     pytest.param(f"FIF={STACK_TIF}&SDS=3&CVT=jpeg", id="cvt-past-the-stack"),
     pytest.param(f"FIF={RGB_TIF}&SDS=1&JTL=0,0", id="single-image")],
)
async def test_missing_view_is_404(client: httpx.AsyncClient, query: str) -> None:
    assert (await iip(client, query)).status_code == 404
