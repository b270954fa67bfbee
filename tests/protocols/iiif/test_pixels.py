"""IIIF images by decoded pixels: region, size, rotation, mirroring, quality and format; the tiles
OpenSeadragon asks for; and parity with the IIP `JTL` tile of the same region."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import httpx
import pytest
import pyvips
from starlette.applications import Starlette

from tileserver.app import create_app
from tileserver.models import OutputFormat
from tileserver.settings import Settings

from ...conftest import ALPHA_PNG, GREY16_TIF, PLAIN_JPG, RGB_TIF, STRIPED_TIF, SUBIFD_TIF, decode, max_diff, mean_diff

W, H = 1003, 701


def source(image_root: Path, page: int = 0) -> Any:
    return pyvips.Image.new_from_file(str(image_root / RGB_TIF), page=page)


async def image(client: httpx.AsyncClient, path: str, ident: str = RGB_TIF, version: int = 3) -> Any:
    r = await client.get(f"/iiif/{version}/{ident}/{path}")
    assert r.status_code == 200, r.text
    return decode(r.content)


# -- region and size ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("region", "box"),
    [
        pytest.param("100,50,300,200", (100, 50, 300, 200), id="px"),
        pytest.param("900,600,500,500", (900, 600, 103, 101), id="px-cropped"),
        pytest.param("square", (151, 0, 701, 701), id="square"),
        pytest.param("pct:10,10,20,20", (100, 70, 201, 140), id="pct"),
    ],
)
async def test_region_pixels_at_full_resolution(client: httpx.AsyncClient, image_root: Path, region: str,
                                                box: tuple[int, int, int, int]) -> None:
    got = await image(client, f"{region}/max/0/default.png")
    assert max_diff(got, source(image_root).crop(*box)) == 0


@pytest.mark.parametrize(
    ("size", "version", "dims"),
    [
        pytest.param("max", 3, (W, H), id="max"),
        pytest.param("full", 2, (W, H), id="v2-full"),
        pytest.param("300,", 3, (300, 210), id="w"),
        pytest.param(",100", 3, (143, 100), id="h"),
        pytest.param("pct:25", 3, (251, 175), id="pct"),
        pytest.param("200,200", 3, (200, 200), id="distorted"),
        pytest.param("!200,200", 3, (200, 140), id="confined"),
        pytest.param("^1500,", 3, (1500, 1048), id="upscaled"),
        pytest.param("1500,", 2, (1500, 1048), id="v2-upscaled"),
        pytest.param("1,", 3, (1, 1), id="one-pixel"),
    ],
)
async def test_size_dimensions(client: httpx.AsyncClient, size: str, version: int, dims: tuple[int, int]) -> None:
    got = await image(client, f"full/{size}/0/default.jpg", version=version)
    assert (got.width, got.height) == dims


async def test_resized_pixels_follow_the_source(client: httpx.AsyncClient, image_root: Path) -> None:
    got = await image(client, "full/501,350/0/default.png")
    assert max_diff(got, source(image_root, page=1)) == 0  # exactly the stored 501x350 level


@pytest.mark.parametrize("ident", [STRIPED_TIF, PLAIN_JPG, GREY16_TIF, SUBIFD_TIF.replace("/", "%2F"),
                                   ALPHA_PNG.replace("/", "%2F")])
async def test_every_fixture_serves_a_thumbnail(client: httpx.AsyncClient, ident: str) -> None:
    got = await image(client, "full/!128,128/0/default.png", ident=ident)
    assert max(got.width, got.height) == 128


# -- rotation and mirroring -----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("rotation", "expect"),
    [
        pytest.param("90", lambda im: im.rot90(), id="90"),
        pytest.param("180", lambda im: im.rot180(), id="180"),
        pytest.param("270", lambda im: im.rot270(), id="270"),
        pytest.param("!0", lambda im: im.fliphor(), id="mirror"),
        pytest.param("!90", lambda im: im.fliphor().rot90(), id="mirror-then-rotate"),
        pytest.param("360", lambda im: im, id="full-turn"),
    ],
)
async def test_rotation_pixels(client: httpx.AsyncClient, image_root: Path, rotation: str, expect: Any) -> None:
    got = await image(client, f"100,50,300,200/max/{rotation}/default.png")
    assert max_diff(got, expect(source(image_root).crop(100, 50, 300, 200))) == 0


@pytest.mark.parametrize(("fmt", "bands"), [("png", 4), ("webp", 4), ("jpg", 3)])
async def test_arbitrary_rotation(client: httpx.AsyncClient, fmt: str, bands: int) -> None:
    got = await image(client, f"0,0,300,200/max/30/default.{fmt}")
    rad = math.radians(30)
    assert abs(got.width - (300 * math.cos(rad) + 200 * math.sin(rad))) <= 2
    assert abs(got.height - (200 * math.cos(rad) + 300 * math.sin(rad))) <= 2
    assert got.bands == bands
    corner = got.getpoint(1, 1)
    if bands == 4:
        assert corner[3] == 0  # transparent background
    else:
        assert max(corner) < 15  # the default rotation_fill: black, as libvips' own rotate


# -- quality and format ---------------------------------------------------------------------------
async def test_gray(client: httpx.AsyncClient) -> None:
    got = await image(client, "full/200,/0/gray.png")
    assert got.bands == 1


async def test_bitonal(client: httpx.AsyncClient) -> None:
    got = await image(client, "full/200,/0/bitonal.png")
    assert got.bands == 1
    hist = got.hist_find()
    assert sum(hist.getpoint(i, 0)[0] for i in (0, 255)) == got.width * got.height


async def test_color_of_a_grey_image(client: httpx.AsyncClient) -> None:
    got = await image(client, "full/200,/0/color.png", ident=GREY16_TIF)
    assert got.bands == 3 and got.interpretation == "srgb"


async def test_default_keeps_alpha_in_png(client: httpx.AsyncClient) -> None:
    got = await image(client, "full/max/0/default.png", ident=ALPHA_PNG.replace("/", "%2F"))
    assert got.bands == 4


@pytest.mark.parametrize("fmt", list(OutputFormat), ids=lambda f: f.suffix)
async def test_formats(client: httpx.AsyncClient, app: Starlette, fmt: OutputFormat) -> None:
    formats = await app.state.service.output_formats()
    r = await client.get(f"/iiif/3/{RGB_TIF}/full/64,/0/default.{fmt.suffix}")
    if fmt not in formats:
        assert r.status_code == 400
        return
    assert r.headers["content-type"] == fmt.media_type
    got = decode(r.content)
    assert (got.width, got.height) == (64, 45)
    if fmt is OutputFormat.JP2:  # Pillow decodes it (see conftest.decode): no libvips loader to name
        assert r.content.startswith(b"\x00\x00\x00\x0cjP  \r\n\x87\n") and got.bands == 3
        return
    loader = got.get("vips-loader")
    assert loader.startswith({"jpg": "jpeg", "tif": "tiff", "avif": "heif"}.get(fmt.suffix, fmt.suffix))


# -- tiles: what viewers ask for ------------------------------------------------------------------
def osd_tiles(info: dict[str, Any]) -> list[tuple[str, tuple[int, int]]]:
    """Every tile OpenSeadragon's IIIF tile source requests, as `region/size` with the size it expects
    (IIIF implementation notes: xr = n*tw*s, wr = min(tw*s, width-xr), ws = ceil(wr/s))."""
    width, height = info["width"], info["height"]
    tile = info["tiles"][0]
    tw, th = tile["width"], tile.get("height", tile["width"])
    out = []
    for s in tile["scaleFactors"]:
        for y in range(0, height, th * s):
            for x in range(0, width, tw * s):
                wr, hr = min(tw * s, width - x), min(th * s, height - y)
                region = "full" if (wr, hr) == (width, height) else f"{x},{y},{wr},{hr}"
                out.append((region, (math.ceil(wr / s), math.ceil(hr / s))))
    return out


@pytest.mark.parametrize("ident", [RGB_TIF, STRIPED_TIF, PLAIN_JPG])
@pytest.mark.parametrize("version", [3, 2])
async def test_every_osd_tile_has_the_expected_size(client: httpx.AsyncClient, ident: str, version: int) -> None:
    info = (await client.get(f"/iiif/{version}/{ident}/info.json")).json()
    tiles = osd_tiles(info)
    assert len({s for _, s in tiles}) > 1
    for region, (w, h) in tiles:
        got = await image(client, f"{region}/{w},{h}/0/default.jpg", ident=ident, version=version)
        assert (got.width, got.height) == (w, h), region
        if version == 2:  # 2.1 clients of level-0 servers send `w,`: the height may differ by rounding
            got = await image(client, f"{region}/{w},/0/default.jpg", ident=ident, version=version)
            assert got.width == w and abs(got.height - h) <= 1


def interior_tiles(image_root: Path) -> list[tuple[int, int, int]]:
    """(level, col, row) of every full 256x256 tile of the RGB pyramid."""
    out = []
    for level in range(3):
        lv = source(image_root, page=level)
        out += [(level, c, r) for r in range(lv.height // 256) for c in range(lv.width // 256)]
    return out


@pytest.mark.parametrize("fmt", [("jpg", "JTL"), ("png", "PTL")], ids=["jpg", "png"])
async def test_tile_parity_with_iip(client: httpx.AsyncClient, image_root: Path, fmt: tuple[str, str]) -> None:
    """A IIIF tile request and the IIP tile for the same region decode to identical pixels."""
    suffix, command = fmt
    tiles = interior_tiles(image_root)
    assert len(tiles) >= 6
    for level, col, row in tiles:
        s = 2**level
        iiif = await image(client, f"{col * 256 * s},{row * 256 * s},{256 * s},{256 * s}/256,256/0/default.{suffix}")
        cols = math.ceil(source(image_root, page=level).width / 256)
        r = await client.get(f"/iip?FIF={RGB_TIF}&{command}={2 - level},{row * cols + col}")
        assert max_diff(iiif, decode(r.content)) == 0, (level, col, row)


@pytest.mark.parametrize("angle", [1, 30, 45, 89, 135, 200, 359])
async def test_arbitrary_rotation_pixels(client: httpx.AsyncClient, image_root: Path, angle: int) -> None:
    """What the validator's rot_full_non90/rot_region_non90 check (tests/conformance/test_iiif_validator.py),
    corners included: content is the source region turned clockwise, on a transparent background in PNG
    and on the default rotation_fill (black, what `rotate` fills with by default) in JPEG."""
    crop = source(image_root).crop(100, 50, 300, 200)
    png = await image(client, f"100,50,300,200/max/{angle}/default.png")
    assert max_diff(png, crop.bandjoin(255).rotate(angle, background=[0, 0, 0, 0])) == 0
    jpg = await image(client, f"100,50,300,200/max/{angle}/default.jpg")
    assert mean_diff(jpg, crop.rotate(angle)) < 4  # JPEG noise on the texture


async def test_rotation_fill_and_background_settings(image_root: Path) -> None:
    """`rotation_fill` colours rotated JPEG corners; `background` stays what transparent pixels of an
    RGBA source are flattened onto (white by default, and unchanged by rotation_fill)."""
    app = create_app(Settings(root=image_root, rotation_fill=(255, 0, 0)))
    app.state.service.start()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        red = decode((await c.get(f"/iiif/3/{RGB_TIF}/0,0,300,200/max/30/default.jpg")).content)
        flat = decode((await c.get(f"/iiif/3/{ALPHA_PNG.replace('/', '%2F')}/full/max/0/default.jpg")).content)
    app.state.service.stop()
    assert red.getpoint(1, 1) == pytest.approx([255, 0, 0], abs=12)
    assert min(flat.getpoint(0, 0)) > 240  # alpha 0 at the origin of the RGBA pattern: white behind it
