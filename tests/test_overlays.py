"""Overlays through the app and every protocol (imaging/overlay.py, core `overlaid`): redactions black (or
their colour) at every level through IIIF, IIP (JTL, CVT), DeepZoom and Zoomify with no pixel of the
rectangle's original colour anywhere, even at its borders; the configured watermark (iipsrv `WATERMARK*`)
blended at its opacity in every protocol's tiles, deterministic, through the caches and replay; responses
without overlays untouched (a stored JPEG tile still passed through, byte for byte); an unreadable watermark
refused at startup.

The redaction image is grey (R = G = 128, blue a gradient) except its two rectangles, pure red and magenta:
any output pixel with R - G well above 0 carries some of their original colour."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import pyvips
from starlette.applications import Starlette

from tileserver.app import create_app
from tileserver.imaging.overlay import WatermarkError
from tileserver.levels import dz_max_level, dz_shift, grid, scaled_size, zoomify_tiers
from tileserver.models import Box, Overlays, Redaction, Tile, TileRequest
from tileserver.settings import Settings

from .conftest import decode, pattern, served_app

W, H = 1003, 701
REDACTIONS = (Redaction(201, 200, 123, 77), Redaction(950, 650, 53, 51, colour=(255, 255, 255)))
SOURCE = ((255, 0, 0), (255, 0, 255))  # the rectangles' colours in the file
TILED = {"tile": True, "pyramid": True, "tile_width": 256, "tile_height": 256, "compression": "deflate"}


def redaction_image(path: Path) -> None:
    x = pyvips.Image.xyz(W, H)[0]
    img = (pyvips.Image.black(W, H) + 128).cast("uchar").bandjoin(
        [(pyvips.Image.black(W, H) + 128).cast("uchar"), (x * (255.0 / W)).cast("uchar")])
    for r, colour in zip(REDACTIONS, SOURCE, strict=True):
        img = img.insert((pyvips.Image.black(r.width, r.height, bands=3) + list(colour)).cast("uchar"), r.x, r.y)
    img.copy(interpretation="srgb").tiffsave(str(path), **TILED)


def flat_image(path: Path, w: int = 611, h: int = 403) -> None:
    pyvips.Image.black(w, h).new_from_image([90, 90, 90]).copy(interpretation="srgb").tiffsave(str(path), **TILED)


def mark_image(path: Path) -> None:
    """40 x 30, red, alpha 128."""
    pyvips.Image.black(40, 30).new_from_image([250, 10, 10, 128]).copy(interpretation="srgb").pngsave(str(path))


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("overlays")
    redaction_image(folder / "r.tif")
    flat_image(folder / "f.tif")
    mark_image(folder.parent / "mark.png")  # the operator's file, outside the image root
    pattern(1003, 701).tiffsave(str(folder / "a.tif"), **{**TILED, "compression": "jpeg", "Q": 90})
    return folder


@pytest.fixture(scope="module")
def mark(root: Path) -> str:
    return str(root.parent / "mark.png")


async def client_of(app: Starlette) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")


@pytest.fixture(scope="module")
async def pair(root: Path) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient, Starlette]]:
    """(plain client, redacted client, redacted app): the same root, the second with the redactions laid on every
    request the way an access tier's are (the core's `overlays`)."""
    async with served_app(Settings(root=root)) as plain, served_app(Settings(root=root)) as redacted:
        redacted.state.service.overlays = Overlays(redactions=REDACTIONS)
        async with await client_of(plain) as a, await client_of(redacted) as b:
            yield a, b, redacted


def arr(img: Any) -> Any:
    px = img.numpy().astype(int)
    return px if px.ndim == 3 else px[:, :, None]


def check_redacted(plain_body: bytes, body: bytes, lossy: bool) -> None:
    """No original rectangle colour in `body`; where the plain answer shows a rectangle, `body` shows its
    redaction colour; elsewhere `body` is the plain answer."""
    p, r = arr(decode(plain_body)), arr(decode(body))
    assert p.shape == r.shape
    tol = 40 if lossy else 6
    leak = r[:, :, 0] - r[:, :, 1]
    assert leak.max() < tol, f"original colour left: R-G up to {leak.max()}"
    red = p[:, :, 0] - p[:, :, 1] > (100 if lossy else 60)
    if lossy:  # the plain answer's own JPEG chroma (4:2:0) bleeds a pixel past the rectangle
        red &= ~near(~red, 1)
    r = r[:, :, :3]  # colour, without a rotation's alpha
    rect1 = red & (p[:, :, 2] < 90)
    rect2 = red & (p[:, :, 2] > 170)
    assert (r[rect1] <= tol + 8).all(), "rectangle 1 not black"
    assert (r[rect2] >= 255 - tol - 8).all(), "rectangle 2 not white"
    clean = ~near(np.abs(p[:, :, 0] - p[:, :, 1]) >= 3, 2)  # 2 px from any trace of a rectangle (the margin)
    if clean.sum() > 50:
        assert np.abs(r[clean] - p[:, :, :3][clean]).mean() < (4 if lossy else 2)


def near(mask: Any, d: int) -> Any:
    """`mask` grown by `d` pixels (a square neighbourhood)."""
    out = mask.copy()
    h, w = mask.shape
    for dy in range(-d, d + 1):
        for dx in range(-d, d + 1):
            out[max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] |= \
                mask[max(-dy, 0):h + min(-dy, 0), max(-dx, 0):w + min(-dx, 0)]
    return out


async def both(pair: tuple[httpx.AsyncClient, httpx.AsyncClient, Starlette], url: str) -> tuple[bytes, bytes]:
    a, b, _ = pair
    ra, rb = await a.get(url), await b.get(url)
    assert ra.status_code == rb.status_code == 200, (url, ra.status_code, rb.status_code, rb.text[:200])
    assert rb.headers["etag"] != ra.headers["etag"]
    return ra.content, rb.content


IIIF = [
    "full/max/0/default.png", "full/!200,200/0/default.png", "full/97,/0/default.png", "full/!200,200/0/default.jpg",
    "pct:10,10,50,50/max/0/default.png", "pct:10,10,50,50/150,/0/default.png", "0,0,512,512/256,/0/default.png",
    "256,256,256,256/256,/0/default.png", "768,512,235,189/235,/0/default.png", "0,0,1003,701/13,/0/default.png",
    "full/!200,200/33/default.png", "full/!200,200/!0/default.png",
]


@pytest.mark.parametrize("path", IIIF)
async def test_iiif_redacted(pair: Any, path: str) -> None:
    plain, body = await both(pair, f"/iiif/3/r.tif/{path}")
    check_redacted(plain, body, path.endswith(".jpg"))


async def test_iiif_rotation_carries_the_redaction(pair: Any) -> None:
    _, b, _ = pair
    up = arr(decode((await b.get("/iiif/3/r.tif/full/!200,200/0/default.png")).content))
    turned = arr(decode((await b.get("/iiif/3/r.tif/full/!200,200/90/default.png")).content))
    assert (turned == np.rot90(up, k=-1)).all()


async def test_iip_jtl_every_tile_of_every_resolution(pair: Any) -> None:
    meta = await pair[2].state.service.info("r.tif")
    count = len(meta.levels)
    for res in range(count):
        lv = meta.levels[count - 1 - res]
        for n in range(lv.columns() * lv.rows()):
            check_redacted(*await both(pair, f"/iip?FIF=r.tif&JTL={res},{n}"), lossy=True)


@pytest.mark.parametrize("query", ["WID=200&CVT=jpeg", "WID=1003&CVT=png", "RGN=0.15,0.2,0.4,0.5&WID=301&CVT=png",
                                   "RGN=0.9,0.9,0.1,0.1&HEI=77&CVT=png", "HEI=9&CVT=png"])
async def test_iip_cvt(pair: Any, query: str) -> None:
    check_redacted(*await both(pair, f"/iip?FIF=r.tif&{query}"), lossy=query.endswith("jpeg"))


async def test_deepzoom_every_tile_of_every_level(pair: Any) -> None:
    dzi = ET.fromstring((await pair[1].get("/deepzoom/r.tif.dzi")).content)
    tile, overlap = int(dzi.attrib["TileSize"]), int(dzi.attrib["Overlap"])
    assert overlap == 0
    for level in range(dz_max_level(W, H) + 1):
        cols, rows = grid(scaled_size(W, H, dz_shift(W, H, level)), tile)
        for row in range(rows):
            for col in range(cols):
                check_redacted(*await both(pair, f"/deepzoom/r.tif_files/{level}/{col}_{row}.jpg"), lossy=True)


async def test_zoomify_every_tile_of_every_tier(pair: Any) -> None:
    for tier, size in enumerate(zoomify_tiers(W, H)):
        cols, rows = grid(size, 256)
        for row in range(rows):
            for col in range(cols):
                check_redacted(*await both(pair, f"/zoomify/r.tif/TileGroup0/{tier}-{col}-{row}.jpg"), lossy=True)


# -- the configured watermark -----------------------------------------------------------------------------
ALPHA = 128 / 255 * 0.6
MARKED = {"over": [round(90 * (1 - ALPHA) + c * ALPHA) for c in (250, 10, 10)],  # alpha compositing
          "add": [min(255, round(90 + c * ALPHA)) for c in (250, 10, 10)]}  # iipsrv's sum, the default


def marked_pixels(body: bytes) -> Any:
    """Where a flat (90, 90, 90) answer was changed."""
    return (np.abs(arr(decode(body)) - 90) > 20).any(axis=2)


@pytest.fixture(scope="module")
async def marked(root: Path, mark: str) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(root=root, watermark=mark, watermark_opacity=0.6)
    async with served_app(settings) as app, await client_of(app) as c:
        yield c


@pytest.fixture(scope="module", params=["add", "over"])
async def blended(request: pytest.FixtureRequest, root: Path, mark: str
                  ) -> AsyncIterator[tuple[str, httpx.AsyncClient]]:
    settings = Settings(root=root, watermark=mark, watermark_opacity=0.6, watermark_blend=request.param)
    async with served_app(settings) as app, await client_of(app) as c:
        yield request.param, c


@pytest.mark.parametrize("url", ["/iiif/3/f.tif/0,0,256,256/256,/0/default.png",
                                 "/iiif/3/f.tif/512,256,99,147/99,/0/default.png",
                                 "/iiif/2/f.tif/full/full/0/default.png"])
async def test_watermark_blended_in_iiif(blended: tuple[str, httpx.AsyncClient], url: str) -> None:
    blend, client = blended
    r = await client.get(url)
    assert r.status_code == 200
    px = arr(decode(r.content))
    where = marked_pixels(r.content)
    w, h = px.shape[1], px.shape[0]
    blocks = 1 if w <= 512 and h <= 512 else 2  # iipsrv: one per block of twice the tile size
    assert where.sum() == blocks * min(40, w) * min(30, h)
    assert (np.abs(px[where] - MARKED[blend]) <= 1).all()


async def test_watermark_in_every_protocol(marked: httpx.AsyncClient) -> None:
    for url in ["/iip?FIF=f.tif&JTL=2,0", "/iip?FIF=f.tif&JTL=2,3", "/deepzoom/f.tif_files/10/1_1.jpg",
                "/zoomify/f.tif/TileGroup0/2-2-1.jpg", "/iip?FIF=f.tif&WID=300&CVT=jpeg"]:
        r = await marked.get(url)
        assert r.status_code == 200, url
        n = int(marked_pixels(r.content).sum())
        assert 1200 * 0.7 < n < 1200 * 1.3, (url, n)  # one JPEG-blurred 40 x 30 mark


async def test_cvt_export_gets_one_per_block(marked: httpx.AsyncClient) -> None:
    r = await marked.get("/iip?FIF=f.tif&WID=611&CVT=png")
    assert int(marked_pixels(r.content).sum()) == 2 * 1200  # 611 x 403: blocks of 512, 2 x 1


async def test_watermark_same_bytes_every_time(root: Path, mark: str, marked: httpx.AsyncClient) -> None:
    """A fresh server renders the same bytes: the places are drawn from the request, not the clock."""
    urls = ["/iiif/3/f.tif/0,256,256,147/256,/0/default.png", "/iip?FIF=f.tif&JTL=2,4"]
    first = [(await marked.get(u)).content for u in urls]
    settings = Settings(root=root, watermark=mark, watermark_opacity=0.6)
    async with served_app(settings) as app, await client_of(app) as c:
        again = [(await c.get(u)).content for u in urls]
    assert first == again
    replayed = await marked.get(urls[0])  # answered by replay: the watermarked tile from the cache
    assert replayed.headers.get("server-timing") == "replay" and replayed.content == first[0]


async def test_probability_zero_gives_none(root: Path, mark: str) -> None:
    settings = Settings(root=root, watermark=mark, watermark_probability=0.0)
    async with served_app(settings) as app, await client_of(app) as c:
        for url in ["/iiif/3/f.tif/0,0,256,256/256,/0/default.png", "/iip?FIF=f.tif&WID=611&CVT=png"]:
            assert not marked_pixels((await c.get(url)).content).any()


async def test_unrestricted_tiles_still_pass_through(root: Path, mark: str) -> None:
    """No overlays: the stored JPEG tile byte for byte (`passthrough`); with the watermark: decoded and marked."""
    url = "/iiif/3/a.tif/256,0,256,256/256,/0/default.jpg"
    async with served_app(Settings(root=root)) as app, await client_of(app) as c:
        r = await c.get(url)
        image = await app.state.service._image(await app.state.service._entry("a.tif"))
        stored = image.stored_tile(0, 1, 0, TileRequest("a.tif", tile=Tile(0, 1, 0)).fmt, 0)
    assert r.headers["server-timing"].startswith("passthrough;") and r.content == stored.data
    async with served_app(Settings(root=root, watermark=mark)) as app, await client_of(app) as c:
        w = await c.get(url)
    assert w.headers["server-timing"].startswith("decode;") and w.content != r.content
    assert w.headers["etag"] != r.headers["etag"]


async def test_overlay_never_where_it_does_not_belong(root: Path, mark: str, marked: httpx.AsyncClient) -> None:
    """Documents are untouched; an access tier's own (here empty) overlays replace the configured watermark."""
    async with served_app(Settings(root=root)) as app, await client_of(app) as plain:
        for url in ["/iiif/3/f.tif/info.json", "/deepzoom/f.tif.dzi", "/iip?FIF=f.tif&OBJ=IIP,1.0&OBJ=Max-size"]:
            assert (await plain.get(url)).content == (await marked.get(url)).content
        clean = (await plain.get("/iiif/3/f.tif/0,0,256,256/256,/0/default.png")).content
    async with served_app(Settings(root=root, watermark=mark)) as app:
        service = app.state.service
        req = TileRequest("f.tif", region=Box(0, 0, 256, 256), size=(256, 256))
        assert service.overlaid(req).overlays == service.overlays
        own = await service.render(replace(req, overlays=Overlays()))
        assert not marked_pixels(own.body).any() and arr(decode(own.body)).shape == arr(decode(clean)).shape
        assert marked_pixels((await service.render(req)).body).any()


def test_unreadable_watermark_refused_at_startup(root: Path) -> None:
    with pytest.raises(WatermarkError, match=r"nope\.png: cannot be read"):
        create_app(Settings(root=root, watermark=str(root / "nope.png")))
    with pytest.raises(WatermarkError, match="cannot be read as an image"):
        create_app(Settings(root=root, watermark=__file__))  # a Python file: no image


def test_iipsrv_watermark_variables(root: Path, mark: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATERMARK", mark)
    monkeypatch.setenv("WATERMARK_PROBABILITY", "0.5")
    monkeypatch.setenv("WATERMARK_OPACITY", "1.7")  # iipsrv's atof, clamped here
    s = Settings(root=root)
    assert (s.watermark, s.watermark_probability, s.watermark_opacity) == (mark, 0.5, 1.0)
    monkeypatch.setenv("TILESERVER_WATERMARK_OPACITY", "0.3")
    assert Settings(root=root).watermark_opacity == 0.3
    monkeypatch.setenv("WATERMARK", "")
    assert Settings(root=root).watermark is None
