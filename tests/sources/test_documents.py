"""Multi-page files: which TIFF directories are pages and which are a page's reductions
(`documents.document_pages`, on directories built here), and each page of a generated document
(tests/document_images.py: three pages of different sizes, stored three ways) as an image of its own,
`<ident>;page=N`, through the reader and through IIIF, IIP, DeepZoom and Zoomify, compared with
tifffile's decode of that page's stored levels. Also a stack's pages and an animated GIF's frames
through the same selector, and a page past the last as a 404 everywhere."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import pyvips

from tileserver.errors import NotFound
from tileserver.models import Page
from tileserver.sources.documents import document_pages, same_shape
from tileserver.sources.pyramid import PyramidReader
from tileserver.sources.tiff import (
    IMAGE_LENGTH,
    IMAGE_WIDTH,
    NEW_SUBFILE_TYPE,
    TILE_LENGTH,
    TILE_OFFSETS,
    TILE_WIDTH,
    Ifd,
    TiffFile,
)

from ..conftest import RGB_TIF, decode
from ..document_images import (
    DOC_BANDS,
    DOC_LABELS,
    DOC_LEVELS,
    DOC_SIZES,
    DOC_STORED_SIZES,
    DOC_TIF,
    DOC_TILES,
    GIF_COLOURS,
    GIF_PAGES,
    stored_level,
)
from ..stack_images import FLAT_STACK_TIF, STACK_TIF

PAGES = (0, 1, 2)
EXACT = 2.0  # largest difference between libvips' and tifffile's decode of one stored JPEG tile
JPEG_NOISE = 6.0  # mean difference after our JPEG re-encode (Q75 default) of a tile (a 4-row edge strip: 5.4)
OTHER_PAGE = 15.0  # another page's pixels differ by far more


# -- which directories are pages ---------------------------------------------------------------------
class Dirs:
    """A parsed TIFF as `document_pages` sees it: top-level directories and their SubIFDs."""

    def __init__(self, pages: list[Ifd], subifds: list[list[Ifd]] | None = None) -> None:
        self.pages = pages
        self.subifds = subifds or [[] for _ in pages]


def ifd(width: int, height: int, kind: int | None = None, tile: int | None = 256) -> Ifd:
    values: dict[int, tuple[int | float, ...] | bytes] = {IMAGE_WIDTH: (width,), IMAGE_LENGTH: (height,)}
    if tile:
        values[TILE_WIDTH] = values[TILE_LENGTH] = (tile,)
    if kind is not None:
        values[NEW_SUBFILE_TYPE] = (kind,)
    return Ifd(values=values)


def structure(tf: Dirs) -> list[list[tuple[int, int, int, int]]]:
    """Per page: (width, height, directory, SubIFD) of each stored level."""
    doc = document_pages(tf, 256)  # type: ignore[arg-type]
    return [[(lv.width, lv.height, lv.page, lv.subifd) for lv in p.levels] for p in doc]


@pytest.mark.parametrize(("tf", "expected"), [
    pytest.param(Dirs([ifd(1003, 701), ifd(501, 350, 1), ifd(250, 175, 1)]),
                 [[(1003, 701, 0, -1), (501, 350, 1, -1), (250, 175, 2, -1)]], id="pyramid-marked"),
    pytest.param(Dirs([ifd(1003, 701), ifd(502, 351), ifd(251, 176)]),
                 [[(1003, 701, 0, -1), (502, 351, 1, -1), (251, 176, 2, -1)]], id="pyramid-unmarked-rounded-up"),
    pytest.param(Dirs([ifd(1003, 701), ifd(640, 500)]),
                 [[(1003, 701, 0, -1)], [(640, 500, 1, -1)]], id="unmarked-smaller-other-shape-is-a-page"),
    pytest.param(Dirs([ifd(1003, 701, 2), ifd(501, 350, 2)]),
                 [[(1003, 701, 0, -1)], [(501, 350, 1, -1)]], id="marked-page-of-the-same-shape"),
    pytest.param(Dirs([ifd(1003, 701), ifd(640, 900), ifd(320, 450, 1), ifd(500, 350, 1)]),
                 [[(1003, 701, 0, -1)], [(640, 900, 1, -1), (320, 450, 2, -1)]],
                 id="reductions-follow-their-page-and-marked-misfits-are-skipped"),
    pytest.param(Dirs([ifd(1003, 701), ifd(240, 168, tile=None), ifd(501, 350), ifd(250, 175),
                       ifd(300, 100, 1, tile=None)]),
                 [[(1003, 701, 0, -1), (501, 350, 2, -1), (250, 175, 3, -1)], [(240, 168, 1, -1)]],
                 id="striped-thumbnail-is-a-page-levels-stay-with-page-0"),
    pytest.param(Dirs([ifd(640, 900), ifd(320, 450)], [[ifd(320, 450, 1), ifd(160, 225, 1)], []]),
                 [[(640, 900, 0, -1), (320, 450, 0, 0), (160, 225, 0, 1)], [(320, 450, 1, -1)]],
                 id="a-subifd-page-takes-no-following-reductions"),
    pytest.param(Dirs([ifd(200, 150, 2), ifd(200, 150, 2), ifd(200, 150, 2)]),
                 [[(200, 150, p, -1)] for p in range(3)], id="same-size-pages"),
    pytest.param(Dirs([ifd(900, 517, tile=None), ifd(450, 258, tile=None)]),
                 [[(900, 517, 0, -1)], [(450, 258, 1, -1)]], id="striped-pages"),
    pytest.param(Dirs([ifd(900, 517, tile=None), ifd(450, 258, 1)]),
                 [[(900, 517, 0, -1)]], id="a-striped-page-takes-no-reductions"),
])
def test_document_pages(tf: Dirs, expected: list[list[tuple[int, int, int, int]]]) -> None:
    assert structure(tf) == expected


@pytest.mark.parametrize(("full", "size", "same"), [
    ((1003, 701), (501, 350), True), ((1003, 701), (502, 351), True), ((1003, 701), (1, 1), True),
    ((1003, 701), (640, 500), False), ((640, 900), (300, 211), False), ((701, 1003), (350, 501), True),
])
def test_same_shape(full: tuple[int, int], size: tuple[int, int], same: bool) -> None:
    assert same_shape(full, size) is same


def test_generated_document_structure(image_root: Path) -> None:
    with open(image_root / DOC_TIF, "rb") as f:
        doc = document_pages(TiffFile(f), 256)
    assert [tuple((lv.page, lv.subifd) for lv in p.levels) for p in doc] == list(DOC_LEVELS)
    assert [p.label for p in doc] == list(DOC_LABELS)


# -- the reader ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def reader() -> PyramidReader:
    return PyramidReader(256, 8)


def test_the_file_is_its_first_page_listing_all(reader: PyramidReader, image_root: Path) -> None:
    meta = reader.info(str(image_root / DOC_TIF), DOC_TIF)
    assert meta.pages == tuple(Page(w, h, label) for (w, h), label in zip(DOC_SIZES, DOC_LABELS, strict=True))
    assert meta.page_list == meta.pages and meta.stack == ()
    assert (meta.width, meta.height, meta.bands) == (1003, 701, 3)
    assert [(lv.width, lv.height) for lv in meta.levels if lv.stored] == list(DOC_STORED_SIZES[0])


@pytest.mark.parametrize("page", PAGES)
def test_each_page_is_an_image_of_its_own(reader: PyramidReader, image_root: Path, page: int) -> None:
    path = str(image_root / DOC_TIF)
    meta = reader.info(path, f"{DOC_TIF};page={page}", page)
    assert (meta.width, meta.height, meta.bands) == (*DOC_SIZES[page], DOC_BANDS[page])
    assert meta.pages == () and meta.stack == ()
    stored = [lv for lv in meta.levels if lv.stored]
    assert [(lv.width, lv.height) for lv in stored] == list(DOC_STORED_SIZES[page])
    assert [(lv.page, lv.subifd) for lv in stored] == list(DOC_LEVELS[page])
    assert meta.tile_size == (DOC_TILES[page],) * 2
    assert meta.compression == ("jpeg" if page < 2 else "")
    smallest = meta.levels[-1]
    assert max(smallest.width, smallest.height) <= DOC_TILES[page]  # virtual levels go on below the stored
    for index, lv in enumerate(stored):
        got = reader.read(path, meta, index, (0, 0, lv.width, lv.height)).numpy()
        want = stored_level(image_root / DOC_TIF, page, index)
        assert np.abs(got.reshape(want.shape).astype(int) - want).max() <= EXACT


@pytest.mark.parametrize("ident", [DOC_TIF, STACK_TIF, RGB_TIF, GIF_PAGES])
def test_a_page_past_the_last_is_not_found(reader: PyramidReader, image_root: Path, ident: str) -> None:
    with pytest.raises(NotFound):
        reader.info(str(image_root / ident), f"{ident};page=3", 3 if ident != RGB_TIF else 1)


# -- every protocol, every page -----------------------------------------------------------------------
def pixels(body: bytes) -> np.ndarray[Any, Any]:
    img = decode(body)
    a = img.numpy()
    return a if a.ndim == 3 else a[:, :, None]


def compare(got: np.ndarray[Any, Any], page: int, box: tuple[int, int, int, int], image_root: Path,
            bound: float, level: int = 0) -> None:
    """`got` is `box` of stored level `level` of `page` (within `bound` mean difference), and is no
    other page's pixels at the same place."""
    x, y, w, h = box
    want = stored_level(image_root / DOC_TIF, page, level)[y : y + h, x : x + w]
    assert got.shape == want.shape
    assert np.abs(got.astype(float) - want).mean() <= bound
    for other in set(PAGES) - {page}:
        theirs = stored_level(image_root / DOC_TIF, other, 0)[y : y + h, x : x + w]
        if theirs.shape == want.shape:
            assert np.abs(got.astype(float) - theirs).mean() > OTHER_PAGE


def ident_of(page: int) -> str:
    return f"{DOC_TIF};page={page}"


def edge_box(page: int) -> tuple[int, int, int, int]:
    """The bottom-right (partial) tile of full resolution."""
    w, h = DOC_SIZES[page]
    t = DOC_TILES[page]
    x, y = (w - 1) // t * t, (h - 1) // t * t
    return x, y, w - x, h - y


@pytest.mark.parametrize("page", PAGES)
@pytest.mark.parametrize("which", ["first", "edge"])
async def test_iiif_region_of_a_page(client: httpx.AsyncClient, image_root: Path, page: int, which: str) -> None:
    t = DOC_TILES[page]
    x, y, w, h = (0, 0, t, t) if which == "first" else edge_box(page)
    encoded = ident_of(page).replace(";", "%3B").replace("=", "%3D")
    r = await client.get(f"/iiif/3/{encoded}/{x},{y},{w},{h}/max/0/default.png")
    assert r.status_code == 200, r.text
    compare(pixels(r.content), page, (x, y, w, h), image_root, EXACT)


@pytest.mark.parametrize("page", PAGES)
async def test_iiif_info_of_each_page(client: httpx.AsyncClient, page: int) -> None:
    for ident in (ident_of(page), ident_of(page).replace(";", "%3B").replace("=", "%3D")):
        info = (await client.get(f"/iiif/3/{ident}/info.json")).json()
        assert info["id"] == f"http://testserver/iiif/3/{DOC_TIF}%3Bpage%3D{page}"
        assert (info["width"], info["height"]) == DOC_SIZES[page]
        assert info["tiles"][0]["width"] == DOC_TILES[page]
        assert {(s["width"], s["height"]) for s in info["sizes"]} >= set(DOC_STORED_SIZES[page])
        v2 = (await client.get(f"/iiif/2/{ident}/info.json")).json()
        assert (v2["width"], v2["height"]) == DOC_SIZES[page]


@pytest.mark.parametrize("page", PAGES)
async def test_iip_tiles_of_a_page(client: httpx.AsyncClient, image_root: Path, page: int) -> None:
    """JTL of the first full-resolution tile (passed through for the JPEG pages: exactly the stored
    bytes) and of the last, partial one; resolution numbers count this page's own levels."""
    iip = f"/fcgi-bin/iipsrv.fcgi?FIF={ident_of(page)}"
    obj = (await client.get(f"{iip}&OBJ=Max-size&OBJ=Resolution-number")).text
    w, h = DOC_SIZES[page]
    levels = int(obj.split("Resolution-number:")[1].split()[0])
    assert f"Max-size:{w} {h}" in obj
    t = DOC_TILES[page]
    last = math.ceil(w / t) * math.ceil(h / t) - 1
    first = await client.get(f"{iip}&JTL={levels - 1},0")
    compare(pixels(first.content), page, (0, 0, t, t), image_root, EXACT if page < 2 else JPEG_NOISE)
    if page < 2:
        assert first.content == stored_bytes(image_root, page, 0)
    edge = await client.get(f"{iip}&JTL={levels - 1},{last}")
    compare(pixels(edge.content), page, edge_box(page), image_root, JPEG_NOISE)


def stored_bytes(image_root: Path, page: int, index: int) -> bytes:
    """Tile `index` of page `page`'s full resolution as stored, its JPEGTables spliced in (as tifffile
    finds the offsets)."""
    import tifffile

    with tifffile.TiffFile(image_root / DOC_TIF) as tif:
        top = tif.pages[DOC_LEVELS[page][0][0]]
        tif.filehandle.seek(top.dataoffsets[index])
        data = tif.filehandle.read(top.databytecounts[index])
        tables = top.jpegtables
    assert TILE_OFFSETS and data[:2] == b"\xff\xd8"
    return tables[:-2] + data[2:] if tables else data


@pytest.mark.parametrize("page", PAGES)
async def test_deepzoom_tiles_of_a_page(client: httpx.AsyncClient, image_root: Path, page: int) -> None:
    dzi = ET.fromstring((await client.get(f"/deepzoom/{ident_of(page)}.dzi")).content)
    size = dzi.find("{http://schemas.microsoft.com/deepzoom/2008}Size")
    assert size is not None and (int(size.get("Width", 0)), int(size.get("Height", 0))) == DOC_SIZES[page]
    tile, overlap = int(dzi.get("TileSize", 0)), int(dzi.get("Overlap", 0))
    top = math.ceil(math.log2(max(DOC_SIZES[page])))
    w, h = DOC_SIZES[page]
    col, row = (w - 1) // tile, (h - 1) // tile
    r = await client.get(f"/deepzoom/{ident_of(page)}_files/{top}/{col}_{row}.png")
    assert r.status_code == 200
    x, y = col * tile - (overlap if col else 0), row * tile - (overlap if row else 0)
    compare(pixels(r.content), page, (x, y, w - x, h - y), image_root, EXACT)
    # one level down: the page's first stored reduction (its own, not page 0's)
    r = await client.get(f"/deepzoom/{ident_of(page)}_files/{top - 1}/0_0.png")
    if len(DOC_LEVELS[page]) > 1:
        lw, lh = DOC_STORED_SIZES[page][1]
        compare(pixels(r.content), page, (0, 0, min(lw, tile + overlap), min(lh, tile + overlap)), image_root,
                EXACT, level=1)


@pytest.mark.parametrize("page", PAGES)
async def test_zoomify_tiles_of_a_page(client: httpx.AsyncClient, image_root: Path, page: int) -> None:
    base = f"/zoomify/{ident_of(page)}"
    props = ET.fromstring((await client.get(f"{base}/ImageProperties.xml")).content)
    w, h = DOC_SIZES[page]
    assert (int(props.get("WIDTH", 0)), int(props.get("HEIGHT", 0))) == (w, h)
    tile = int(props.get("TILESIZE", 0))
    tiers, tw, th = 1, w, h
    while tw > tile or th > tile:
        tw, th, tiers = -(-tw // 2), -(-th // 2), tiers + 1
    r = await client.get(f"{base}/TileGroup0/{tiers - 1}-0-0.jpg")
    assert r.status_code == 200
    compare(pixels(r.content), page, (0, 0, min(w, tile), min(h, tile)), image_root,
            EXACT if page < 2 and tile == DOC_TILES[page] else JPEG_NOISE)


@pytest.mark.parametrize("url", [
    pytest.param(f"/iiif/3/{DOC_TIF}%3Bpage%3D3/info.json", id="iiif-info"),
    pytest.param(f"/iiif/3/{DOC_TIF};page=3/full/max/0/default.jpg", id="iiif-image"),
    pytest.param(f"/fcgi-bin/iipsrv.fcgi?FIF={DOC_TIF};page=3&JTL=0,0", id="iip"),
    pytest.param(f"/deepzoom/{DOC_TIF};page=3.dzi", id="deepzoom"),
    pytest.param(f"/zoomify/{DOC_TIF};page=3/ImageProperties.xml", id="zoomify"),
    pytest.param(f"/iiif/manifests/{DOC_TIF}%3Bpage%3D3.json", id="manifest"),
    pytest.param(f"/iiif/3/{STACK_TIF};page=3/info.json", id="stack"),
    pytest.param(f"/iiif/3/{RGB_TIF};page=1/info.json", id="single-image"),
    pytest.param(f"/iiif/3/{GIF_PAGES};page=3/info.json", id="gif"),
])
async def test_a_page_past_the_last_is_a_404(client: httpx.AsyncClient, url: str) -> None:
    r = await client.get(url)
    assert r.status_code == 404
    assert "/tmp" not in r.text and str(Path.cwd()) not in r.text


async def test_page_0_of_a_single_image_is_the_image(client: httpx.AsyncClient) -> None:
    a = await client.get(f"/iiif/3/{RGB_TIF}/0,0,256,256/max/0/default.png")
    b = await client.get(f"/iiif/3/{RGB_TIF};page=0/0,0,256,256/max/0/default.png")
    assert b.status_code == 200 and a.content == b.content


async def test_the_bare_document_is_page_0(client: httpx.AsyncClient) -> None:
    for tail in ("full/200,/0/default.png", "1000,600,3,101/max/0/default.png"):
        a = await client.get(f"/iiif/3/{DOC_TIF}/{tail}")
        b = await client.get(f"/iiif/3/{DOC_TIF};page=0/{tail}")
        assert a.status_code == 200 and a.content == b.content


async def test_a_page_spelled_otherwise_keeps_its_identifier(client: httpx.AsyncClient) -> None:
    info = (await client.get(f"/iiif/3/{DOC_TIF};page=01/info.json")).json()
    assert info["id"].endswith("%3Bpage%3D01") and (info["width"], info["height"]) == DOC_SIZES[1]


# -- stacks and other multi-page formats --------------------------------------------------------------
@pytest.mark.parametrize("page", PAGES)
@pytest.mark.parametrize(("ident", "jtl"), [pytest.param(STACK_TIF, "2,0", id="subifd-passthrough"),
                                            pytest.param(STACK_TIF, "1,1", id="subifd-edge"),
                                            pytest.param(FLAT_STACK_TIF, "1,3", id="flat-edge"),
                                            pytest.param(FLAT_STACK_TIF, "0,0", id="flat-virtual")])
async def test_a_stack_page_by_selector_is_sds(client: httpx.AsyncClient, ident: str, jtl: str, page: int) -> None:
    """`stack.tif;page=N` is the stack's page N alone: the same tiles as `SDS=N`, and a stack no more."""
    iip = "/fcgi-bin/iipsrv.fcgi?FIF="
    by_sds = await client.get(f"{iip}{ident}&SDS={page}&JTL={jtl}")
    by_page = await client.get(f"{iip}{ident};page={page}&JTL={jtl}")
    assert by_page.status_code == 200
    assert np.array_equal(pixels(by_page.content), pixels(by_sds.content))
    other = await client.get(f"{iip}{ident}&SDS={(page + 1) % 3}&JTL={jtl}")
    assert np.abs(pixels(by_page.content).astype(float) - pixels(other.content)).mean() > OTHER_PAGE
    assert (await client.get(f"{iip}{ident};page={page}&SDS=1&JTL={jtl}")).status_code == 404


@pytest.mark.parametrize("page", PAGES)
async def test_a_stack_page_through_iiif(client: httpx.AsyncClient, page: int) -> None:
    a = await client.get(f"/iiif/3/{STACK_TIF};page={page}/full/225,/0/default.png")
    info = (await client.get(f"/iiif/3/{STACK_TIF};page={page}/info.json")).json()
    assert (info["width"], info["height"]) == (451, 331)
    sds = (await client.get(f"/fcgi-bin/iipsrv.fcgi?FIF={STACK_TIF}&SDS={page}&WID=225&CVT=png")).content
    assert np.abs(pixels(a.content).astype(float) - pixels(sds)).mean() < 1.0


@pytest.mark.parametrize("page", PAGES)
async def test_gif_frames_are_pages(client: httpx.AsyncClient, reader: PyramidReader, image_root: Path,
                                    page: int) -> None:
    meta = reader.info(str(image_root / GIF_PAGES), GIF_PAGES)
    assert meta.pages == (Page(97, 61),) * 3
    r = await client.get(f"/iiif/3/{GIF_PAGES};page={page}/full/max/0/default.png")
    img = decode(r.content)
    assert (img.width, img.height) == (97, 61)
    assert tuple(round(v) for v in img[:3].getpoint(48, 30)) == GIF_COLOURS[page]
    shrunk = decode((await client.get(f"/iiif/3/{GIF_PAGES};page={page}/full/40,/0/default.png")).content)
    assert tuple(round(v) for v in shrunk[:3].getpoint(20, 10)) == GIF_COLOURS[page]


@pytest.mark.parametrize(("suffix", "options"), [pytest.param("webp", {"lossless": True}, id="webp"),
                                                 pytest.param("avif", {"lossless": True}, id="heif")])
def test_pages_of_webp_and_heif(tmp_path: Path, reader: PyramidReader, suffix: str, options: dict[str, Any]) -> None:
    """Pages of an animated WebP and of a HEIF image collection, each with its own virtual level
    (libvips' shrink-on-load reads only the first page, so it must not make the others' levels)."""
    frames = [pyvips.Image.black(301, 203, bands=3).new_from_image(list(c)).cast("uchar") for c in GIF_COLOURS]
    anim = pyvips.Image.arrayjoin(frames, across=1).copy(interpretation="srgb")
    anim.set_type(pyvips.GValue.gint_type, "page-height", 203)
    path = str(tmp_path / f"a.{suffix}")
    anim.write_to_file(path, **options)
    meta = reader.info(path, "a")
    assert meta.pages == (Page(301, 203),) * 3
    for page, colour in enumerate(GIF_COLOURS):
        one = reader.info(path, f"a;page={page}", page)
        assert [(lv.width, lv.height) for lv in one.levels] == [(301, 203), (150, 101)]
        for level in (0, 1):
            px = reader.read(path, one, level, (0, 0, 100, 100))
            assert tuple(round(v) for v in px[:3].getpoint(50, 50)) == colour
