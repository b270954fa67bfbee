"""Zero-transcode tiles: stored JPEG/WebP TIFF tiles are sent as they are, decode to exactly the pixels
libtiff decodes, and anything that is not exactly a stored tile falls back to decode + encode."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import pyvips

from tileserver.core import TileService
from tileserver.models import Box, OutputFormat, Quality, Tile, TileRequest
from tileserver.passthrough import stored_tile_of
from tileserver.settings import Settings

from .conftest import RGB_TIF, decode, max_diff, pattern


@pytest.fixture(scope="module")
def root(image_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("passthrough")
    shutil.copy(image_root / RGB_TIF, root / "rgb.tif")
    opts = {"tile": True, "pyramid": True, "tile_width": 256, "tile_height": 256}
    pattern(700, 600, seed=8).tiffsave(str(root / "webp.tif"), compression="webp", Q=80, **opts)
    pattern(600, 520, bands=1, seed=9).tiffsave(str(root / "grey.tif"), compression="jpeg", Q=85, **opts)
    pattern(600, 520, seed=10).tiffsave(str(root / "ycbcr.tif"), compression="jpeg", Q=70, **opts)
    pattern(600, 520).colourspace("lab").icc_export(output_profile="srgb").tiffsave(
        str(root / "icc.tif"), compression="jpeg", Q=85, **opts)
    return root


def service(root: Path, **overrides: object) -> TileService:
    svc = TileService(Settings(root=root, tile_cache_mb=0, **overrides))  # type: ignore[arg-type]
    svc.start()
    return svc


def stored_pixels(root: Path, name: str, page: int, box: tuple[int, int, int, int]) -> pyvips.Image:
    return pyvips.Image.tiffload(str(root / name), page=page).crop(*box)


@pytest.mark.parametrize(
    ("name", "level", "col", "row"),
    [("rgb.tif", 0, 0, 0), ("rgb.tif", 0, 2, 1), ("rgb.tif", 1, 0, 0), ("grey.tif", 0, 1, 1),
     ("ycbcr.tif", 0, 1, 0)],
)
async def test_stored_jpeg_tile_passes_through(root: Path, name: str, level: int, col: int, row: int) -> None:
    svc = service(root)
    out = await svc.render(TileRequest(ident=name, tile=Tile(level, col, row)))
    expected = stored_pixels(root, name, level, (col * 256, row * 256, 256, 256))
    assert max_diff(decode(out.body), expected) == 0  # a Q75 re-encode could not be exact
    reencoded = await service(root, passthrough=False).render(TileRequest(ident=name, tile=Tile(level, col, row)))
    assert max_diff(decode(reencoded.body), expected) > 0


async def test_aligned_region_request_passes_through(root: Path) -> None:
    """What IIIF, DeepZoom and Zoomify viewers ask for: a tile's full-resolution box at its size."""
    svc = service(root)
    out = await svc.render(TileRequest(ident="rgb.tif", region=Box(0, 0, 512, 512), size=(256, 256)))
    tile = await svc.render(TileRequest(ident="rgb.tif", tile=Tile(1, 0, 0)))
    assert out.body == tile.body
    assert max_diff(decode(out.body), stored_pixels(root, "rgb.tif", 1, (0, 0, 256, 256))) == 0


async def test_webp_tiles_pass_through_as_webp(root: Path) -> None:
    svc = service(root)
    out = await svc.render(TileRequest(ident="webp.tif", tile=Tile(0, 1, 1), fmt=OutputFormat.WEBP))
    assert out.body[:4] == b"RIFF" and out.media_type == "image/webp"
    assert max_diff(decode(out.body), stored_pixels(root, "webp.tif", 0, (256, 256, 256, 256))) == 0
    jpeg = await svc.render(TileRequest(ident="webp.tif", tile=Tile(0, 1, 1)))
    assert jpeg.body[:2] == b"\xff\xd8"  # a WebP tile asked for as JPEG is re-encoded


@pytest.mark.parametrize(
    "req",
    [
        pytest.param(TileRequest(ident="rgb.tif", tile=Tile(0, 3, 2)), id="edge-tile"),
        pytest.param(TileRequest(ident="rgb.tif", tile=Tile(0, 0, 0), encoder_quality=75), id="qlt"),
        pytest.param(TileRequest(ident="rgb.tif", tile=Tile(0, 0, 0), quality=Quality.GRAY), id="gray"),
        pytest.param(TileRequest(ident="rgb.tif", tile=Tile(0, 0, 0), rotation=90), id="rotated"),
        pytest.param(TileRequest(ident="rgb.tif", tile=Tile(0, 0, 0), fmt=OutputFormat.PNG), id="png"),
        pytest.param(TileRequest(ident="rgb.tif", region=Box(0, 0, 256, 256), size=(128, 128)), id="resized"),
        pytest.param(TileRequest(ident="rgb.tif", region=Box(1, 0, 256, 256), size=(256, 256)), id="unaligned"),
        pytest.param(TileRequest(ident="rgb.tif", tile=Tile(2, 0, 0)), id="small-level-edge"),
    ],
)
async def test_not_a_stored_tile(root: Path, req: TileRequest) -> None:
    svc = service(root)
    meta = await svc.info("rgb.tif")
    assert stored_tile_of(meta, req) is None
    out = await svc.render(req)
    assert decode(out.body).width == out.width


async def test_icc_images_are_reencoded_to_keep_their_profile(root: Path) -> None:
    out = await service(root).render(TileRequest(ident="icc.tif", tile=Tile(0, 0, 0)))
    assert "icc-profile-data" in decode(out.body).get_fields()
    plain = await service(root, keep_icc=False).render(TileRequest(ident="icc.tif", tile=Tile(0, 0, 0)))
    assert max_diff(decode(plain.body), stored_pixels(root, "icc.tif", 0, (0, 0, 256, 256))) == 0
