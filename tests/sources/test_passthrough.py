"""Zero-transcode tiles: stored JPEG/WebP TIFF tiles are sent as they are and decode to exactly the
pixels libtiff decodes; JPEG edge tiles are cropped from the stored ones losslessly (TurboJPEG); other unscaled
JPEG reads are cut from decoded stored tiles and re-encoded without libvips (recode), and anything else goes
through the libvips pipeline."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import pyvips

from tileserver.core import TileService
from tileserver.imaging import render, turbojpeg
from tileserver.imaging.render import _render, edge_crop, passthrough, recode
from tileserver.models import Box, OutputFormat, Quality, Tile, TileRequest
from tileserver.settings import Settings
from tileserver.sources import passthrough as passthrough_module
from tileserver.sources import pyramid as pyramid_module
from tileserver.sources import vfs
from tileserver.sources.passthrough import edge_tile_of, stored_tile_of
from tileserver.sources.tiff import TiffFile

from ..conftest import RGB_TIF, decode, max_diff, mean_diff, pattern


@pytest.fixture(scope="module")
def root(image_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("passthrough")
    shutil.copy(image_root / RGB_TIF, root / "rgb.tif")
    opts = {"tile": True, "pyramid": True, "tile_width": 256, "tile_height": 256}
    pattern(700, 600, seed=8).tiffsave(str(root / "webp.tif"), compression="webp", Q=80, **opts)
    pattern(600, 520, bands=1, seed=9).tiffsave(str(root / "grey.tif"), compression="jpeg", Q=85, **opts)
    pattern(600, 520, seed=10).tiffsave(str(root / "ycbcr.tif"), compression="jpeg", Q=70, **opts)
    pattern(600, 520, seed=11).tiffsave(str(root / "striped.tif"), compression="jpeg", Q=85)
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


async def test_icc_profile_spliced_into_passed_through_tiles(root: Path) -> None:
    svc = service(root)
    await svc.info("icc.tif")
    req = TileRequest(ident="icc.tif", tile=Tile(0, 0, 0))
    found = passthrough(svc.formats.open(str(root / "icc.tif"), "icc.tif"), req, svc.settings)
    assert found is not None
    out = found[0]
    body = decode(out.body)
    assert body.get("icc-profile-data") == stored_pixels(root, "icc.tif", 0, (0, 0, 1, 1)).get("icc-profile-data")
    assert max_diff(body, stored_pixels(root, "icc.tif", 0, (0, 0, 256, 256))) == 0
    plain = await service(root, keep_icc=False).render(req)
    assert "icc-profile-data" not in decode(plain.body).get_fields()
    assert max_diff(decode(plain.body), stored_pixels(root, "icc.tif", 0, (0, 0, 256, 256))) == 0


# -- recode: unscaled reads of JPEG levels cut from decoded stored tiles, without libvips ------------
RECODED = [
    pytest.param("rgb.tif", TileRequest(ident="rgb.tif", tile=Tile(0, 3, 2)), (768, 512, 235, 189), id="corner-tile"),
    pytest.param("rgb.tif", TileRequest(ident="rgb.tif", tile=Tile(1, 1, 1)), (256, 256, 245, 94), id="level1-edge"),
    pytest.param("rgb.tif", TileRequest(ident="rgb.tif", tile=Tile(0, 1, 1), encoder_quality=60), (256, 256, 256, 256),
                 id="qlt"),
    pytest.param("rgb.tif", TileRequest(ident="rgb.tif", region=Box(254, 254, 258, 258), size=(258, 258)),
                 (254, 254, 258, 258), id="deepzoom-overlap-4-tiles"),
    pytest.param("rgb.tif", TileRequest(ident="rgb.tif", region=Box(512, 512, 491, 189), size=(245, 94)),
                 (256, 256, 245, 94), id="iiif-edge-region-level1"),
    pytest.param("grey.tif", TileRequest(ident="grey.tif", tile=Tile(0, 2, 2)), (512, 512, 88, 8), id="grey-corner"),
    pytest.param("ycbcr.tif", TileRequest(ident="ycbcr.tif", tile=Tile(0, 2, 0), quality=Quality.COLOR),
                 (512, 0, 88, 256), id="ycbcr-edge-color"),
    pytest.param("icc.tif", TileRequest(ident="icc.tif", tile=Tile(0, 2, 1)), (512, 256, 88, 256), id="icc-edge"),
]


@pytest.mark.parametrize(("name", "req", "box"), RECODED)
async def test_recoded_tiles_match_the_libvips_pipeline(root: Path, name: str, req: TileRequest,
                                                        box: tuple[int, int, int, int],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(turbojpeg, "library", lambda: None)  # edge tiles too (else cropped: test_edge_tiles_...)
    svc = service(root)
    meta = await svc.info(name)
    level = req.tile.level if req.tile else 1 if box[2] < req.region.w else 0  # type: ignore[union-attr]
    image = svc.formats.open(str(root / name), name)
    assert image.meta == meta
    out = recode(image, req, svc.settings)
    assert out is not None and (out.width, out.height) == box[2:]
    stored = stored_pixels(root, name, level, box)
    got = decode(out.body)
    assert mean_diff(got, stored) < 4 and max_diff(got, stored) < 80  # one JPEG encode away from the source
    reference = decode(_render(image, req, svc.settings, svc.derived).body)
    assert mean_diff(got, reference) < 1.5  # the same pixels through the same quality, two encoders
    if name == "icc.tif":
        assert "icc-profile-data" in got.get_fields()


# -- edge tiles cropped from the stored tile, losslessly ---------------------------------------------
EDGES = [  # (name, request, level, box in that level, exact: 4:4:4 or grey; else 4:2:0, a few levels at the cut)
    pytest.param("rgb.tif", TileRequest(ident="rgb.tif", tile=Tile(0, 3, 2)), 0, (768, 512, 235, 189), True,
                 id="corner-tile"),
    pytest.param("rgb.tif", TileRequest(ident="rgb.tif", tile=Tile(0, 3, 0)), 0, (768, 0, 235, 256), True,
                 id="right-edge"),
    pytest.param("rgb.tif", TileRequest(ident="rgb.tif", tile=Tile(0, 1, 2)), 0, (256, 512, 256, 189), True,
                 id="bottom-edge"),
    pytest.param("rgb.tif", TileRequest(ident="rgb.tif", tile=Tile(1, 1, 1)), 1, (256, 256, 245, 94), True,
                 id="level1-edge"),
    pytest.param("rgb.tif", TileRequest(ident="rgb.tif", tile=Tile(2, 0, 0)), 2, (0, 0, 250, 175), True,
                 id="level-smaller-than-a-tile"),
    pytest.param("rgb.tif", TileRequest(ident="rgb.tif", region=Box(512, 512, 491, 189), size=(245, 94)), 1,
                 (256, 256, 245, 94), True, id="iiif-edge-region-level1"),
    pytest.param("rgb.tif", TileRequest(ident="rgb.tif", region=Box(512, 512, 512, 512), size=(245, 94)), 1,
                 (256, 256, 245, 94), True, id="iiif-region-past-the-edge"),
    pytest.param("grey.tif", TileRequest(ident="grey.tif", tile=Tile(0, 2, 2)), 0, (512, 512, 88, 8), True,
                 id="grey-corner"),
    pytest.param("ycbcr.tif", TileRequest(ident="ycbcr.tif", tile=Tile(0, 2, 0), quality=Quality.COLOR), 0,
                 (512, 0, 88, 256), False, id="ycbcr-420-edge-color"),
    pytest.param("icc.tif", TileRequest(ident="icc.tif", tile=Tile(0, 2, 1)), 0, (512, 256, 88, 256), False,
                 id="icc-edge"),
]


@pytest.mark.parametrize(("name", "req", "level", "box", "exact"), EDGES)
async def test_edge_tiles_cropped_losslessly(turbojpeg_lib: turbojpeg.Library, root: Path, name: str, req: TileRequest,
                                             level: int, box: tuple[int, int, int, int], exact: bool) -> None:
    svc = service(root)
    meta = await svc.info(name)
    edge = edge_tile_of(meta, req)
    assert edge is not None and edge[3:] == box[2:]
    out = await svc.render(req)
    assert out.source == "crop" and out.timing.startswith("crop;dur=")
    assert (out.width, out.height) == box[2:]
    got, stored = decode(out.body), stored_pixels(root, name, level, box)
    if exact:
        assert max_diff(got, stored) == 0  # the stored quality, not one more encode
    else:
        # the last column's chroma is no longer interpolated with the next one's, which the crop leaves out
        assert mean_diff(got, stored) < 0.5 and max_diff(got, stored) <= 64
        inner = (0, 0, box[2] - 1, box[3] - 1)  # away from the cut, the stored tile's own decoded pixels
        assert max_diff(got.crop(*inner), stored.crop(*inner)) <= 1
    if name == "icc.tif":
        assert got.get("icc-profile-data") == stored_pixels(root, name, 0, (0, 0, 1, 1)).get("icc-profile-data")


@pytest.mark.parametrize(
    "req",
    [
        pytest.param(TileRequest(ident="rgb.tif", tile=Tile(0, 0, 0)), id="whole-tile"),
        pytest.param(TileRequest(ident="rgb.tif", tile=Tile(0, 3, 2), encoder_quality=75), id="qlt"),
        pytest.param(TileRequest(ident="rgb.tif", tile=Tile(0, 3, 2), fmt=OutputFormat.WEBP), id="webp"),
        pytest.param(TileRequest(ident="rgb.tif", tile=Tile(0, 3, 2), fmt=OutputFormat.PNG), id="png"),
        pytest.param(TileRequest(ident="rgb.tif", tile=Tile(0, 3, 2), rotation=90), id="rotated"),
        pytest.param(TileRequest(ident="rgb.tif", tile=Tile(0, 3, 2), quality=Quality.GRAY), id="gray"),
        pytest.param(TileRequest(ident="rgb.tif", region=Box(768, 512, 235, 189), size=(100, 80)), id="resized"),
        pytest.param(TileRequest(ident="rgb.tif", region=Box(770, 512, 233, 189), size=(233, 189)), id="unaligned"),
        pytest.param(TileRequest(ident="rgb.tif", region=Box(768, 512, 200, 189), size=(200, 189)),
                     id="short-of-the-edge"),
    ],
)
async def test_not_an_edge_tile(root: Path, req: TileRequest) -> None:
    svc = service(root)
    assert edge_tile_of(await svc.info("rgb.tif"), req) is None
    out = await svc.render(req)
    assert out.source != "crop" and decode(out.body).width == out.width


async def test_edge_tiles_recoded_without_turbojpeg(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(turbojpeg, "library", lambda: None)
    out = await service(root).render(TileRequest(ident="rgb.tif", tile=Tile(0, 3, 2)))
    assert out.source == "recode" and (out.width, out.height) == (235, 189)


async def test_large_or_damaged_stored_edge_tiles_are_not_cropped(turbojpeg_lib: turbojpeg.Library, root: Path,
                                                                  tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    svc = service(root)
    await svc.info("rgb.tif")
    image = svc.formats.open(str(root / "rgb.tif"), "rgb.tif")
    req = TileRequest(ident="rgb.tif", tile=Tile(0, 3, 2))
    assert edge_crop(image, req, svc.settings, now=True) is not None  # a 256-px tile: cropped on the loop
    monkeypatch.setattr(render, "NOW_CROP_PIXELS", 256 * 255)
    with pytest.raises(vfs.WouldBlock):  # larger: cropped in the pool
        edge_crop(image, req, svc.settings, now=True)
    assert edge_crop(image, req, svc.settings) is not None
    monkeypatch.setattr(render.jpeg, "DIRECT_PIXELS", 256 * 255)  # its coefficients would be read whole
    assert edge_crop(image, req, svc.settings) is None
    monkeypatch.undo()
    shutil.copy(root / "rgb.tif", tmp_path / "damaged.tif")
    path = str(tmp_path / "damaged.tif")
    damage_corner_tile(path)
    damaged = service(tmp_path)
    await damaged.info("damaged.tif")
    req = TileRequest(ident="damaged.tif", tile=Tile(0, 3, 2))
    assert edge_crop(damaged.formats.open(path, "damaged.tif"), req, damaged.settings) is None


async def test_recode_uses_the_asked_quality(root: Path) -> None:
    svc = service(root)
    sizes = [len((await svc.render(TileRequest(ident="rgb.tif", tile=Tile(0, 3, 2), encoder_quality=q))).body)
             for q in (20, 60, 95)]
    assert sizes == sorted(sizes) and sizes[0] < sizes[2] / 2


ON_THE_LOOP = [  # recoded on the event loop: one stored tile of up to 256 x 256, read without waiting
    pytest.param(TileRequest(ident="rgb.tif", tile=Tile(0, 1, 1), encoder_quality=60), True, id="qlt"),
    pytest.param(TileRequest(ident="rgb.tif", tile=Tile(0, 3, 2), encoder_quality=60), True, id="qlt-edge"),
    pytest.param(TileRequest(ident="rgb.tif", region=Box(254, 254, 258, 258), size=(258, 258)), False,
                 id="four-tiles-in-the-pool"),
]


@pytest.mark.parametrize(("req", "now"), ON_THE_LOOP)
async def test_recode_on_the_loop_is_the_pools(root: Path, req: TileRequest, now: bool) -> None:
    svc = service(root)
    await svc.info("rgb.tif")
    image = svc.formats.open(str(root / "rgb.tif"), "rgb.tif")
    pool = recode(image, req, svc.settings)
    assert pool is not None
    if not now:
        with pytest.raises(vfs.WouldBlock):
            recode(image, req, svc.settings, now=True)
        return
    loop = recode(image, req, svc.settings, now=True)
    assert loop is not None and loop.body == pool.body and loop.source == "recode"
    found = render.stored_now(image, req, svc.settings)  # what the core asks on the loop
    assert found is not None and found[0].body == pool.body and found[1] is None  # no place of its own to recall


@pytest.mark.parametrize(
    ("name", "req"),
    [
        pytest.param("rgb.tif", TileRequest(ident="rgb.tif", tile=Tile(0, 0, 0), fmt=OutputFormat.PNG), id="png"),
        pytest.param("rgb.tif", TileRequest(ident="rgb.tif", region=Box(0, 0, 512, 512), size=(300, 300)),
                     id="resized"),
        pytest.param("rgb.tif", TileRequest(ident="rgb.tif", tile=Tile(0, 0, 0), quality=Quality.GRAY), id="gray"),
        pytest.param("rgb.tif", TileRequest(ident="rgb.tif", tile=Tile(0, 0, 0), mirror=True), id="mirrored"),
        pytest.param("rgb.tif", TileRequest(ident="rgb.tif", region=Box(0, 0, 700, 600), size=(700, 600)),
                     id="more-than-4-tiles"),
        pytest.param("striped.tif", TileRequest(ident="striped.tif", tile=Tile(0, 0, 0)), id="striped"),
        pytest.param("webp.tif", TileRequest(ident="webp.tif", tile=Tile(0, 0, 0)), id="webp-stored"),
        pytest.param("grey.tif", TileRequest(ident="grey.tif", tile=Tile(0, 0, 0), quality=Quality.COLOR),
                     id="grey-as-color"),
    ],
)
async def test_not_recoded(root: Path, name: str, req: TileRequest) -> None:
    svc = service(root)
    await svc.info(name)
    assert recode(svc.formats.open(str(root / name), name), req, svc.settings) is None
    out = await svc.render(req)
    assert decode(out.body).width == out.width


def damage_corner_tile(path: str) -> None:
    """Write early end-of-image markers into the entropy-coded data of tile (3, 2) (of 4 columns) of level 0."""
    with open(path, "rb") as f:
        tf = TiffFile(f)
        offset, count = tf.tile_location(lambda n, o: os.pread(f.fileno(), n, o), tf.pages[0], 2 * 4 + 3)
    with open(path, "r+b") as f:
        f.seek(offset + count // 2)
        f.write(b"\xff\xd9" * 64)


async def test_undecodable_stored_tile_is_left_to_libvips(root: Path, tmp_path: Path) -> None:
    """A damaged stored tile makes recode step aside (None) rather than fail; libvips then decodes
    what it can or the core reports a source error."""
    shutil.copy(root / "rgb.tif", tmp_path / "damaged.tif")
    svc = service(tmp_path)
    await svc.info("damaged.tif")
    path = str(tmp_path / "damaged.tif")
    damage_corner_tile(path)
    req = TileRequest(ident="damaged.tif", tile=Tile(0, 3, 2))
    assert recode(svc.formats.open(path, "damaged.tif"), req, svc.settings) is None
    intact = recode(svc.formats.open(str(root / "rgb.tif"), "rgb.tif"), req, svc.settings)
    assert intact is not None


def test_tile_offsets_read_whole_or_one_by_one_agree(root: Path) -> None:
    with open(root / "rgb.tif", "rb") as f, open(root / "rgb.tif", "rb") as g:
        whole, single = TiffFile(f), TiffFile(g)
        single.MAX_TABLE = 0  # a huge table: read one value at a time
        for index in range(12):
            assert whole.tile_location(lambda n, o: os.pread(f.fileno(), n, o), whole.pages[0], index) == \
                single.tile_location(lambda n, o: os.pread(f.fileno(), n, o), single.pages[0], index)
        assert isinstance(whole.pages[0].values.get(324), tuple) and 324 not in single.pages[0].values
        with pytest.raises(IndexError):
            whole.tile_location(lambda n, o: os.pread(f.fileno(), n, o), whole.pages[0], 12)


async def test_rgb_sample_jpeg_tiles_pass_through_marked_rgb(tmp_path: Path) -> None:
    """A pyramid TIFF (read by libvips, not a slide) whose JPEG tiles hold RGB samples (Photometric RGB,
    component ids 0, 1, 2, no marker, as Aperio writes them): the passed tile says RGB (an Adobe marker)
    and decodes to libvips' (libtiff's) pixels; spliced without the marker it would decode as YCbCr."""
    from ..slide_images import make_svs

    make_svs(tmp_path / "rgb-samples.tif", 700, 530, levels=2, aperio=False)
    svc = service(tmp_path)
    meta = await svc.info("rgb-samples.tif")
    image = svc.formats.open(str(tmp_path / "rgb-samples.tif"), "rgb-samples.tif")
    assert meta.loader == "tiffload" and meta.compression == "jpeg"
    req = TileRequest(ident="rgb-samples.tif", tile=Tile(0, 1, 1))
    found = passthrough(image, req, svc.settings)
    assert found is not None
    out = found[0]
    assert out.body.startswith(b"\xff\xd8\xff\xee\x00\x0eAdobe\x00\x64\x00\x00\x00\x00\x00")
    decoded = pyvips.Image.tiffload(str(tmp_path / "rgb-samples.tif")).crop(256, 256, 256, 256)
    assert max_diff(decode(out.body), decoded) == 0
    without = out.body[:2] + out.body[18:]
    assert max_diff(decode(without), decoded) > 40


async def test_a_tiled_tiff_is_parsed_once_for_its_metadata_and_its_stored_tiles(
        root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Opening a JPEG-tiled TIFF parses its directories once; its stored tiles are then read on the event loop
    from that parse, byte for byte as the pool reads them."""
    made: list[str] = []

    class Counted(TiffFile):
        def __init__(self, *args: object, **kwargs: object) -> None:
            made.append("parse")
            super().__init__(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(pyramid_module, "TiffFile", Counted)
    monkeypatch.setattr(passthrough_module, "TiffFile", Counted)
    svc = service(root)
    req = TileRequest(ident="ycbcr.tif", tile=Tile(0, 1, 0))
    await svc.info("ycbcr.tif")
    assert made == ["parse"]
    now = svc.render_now(req)
    assert now is not None and now.source == "passthrough" and made == ["parse"]
    pooled = await service(root).render(req)
    assert pooled.body == now.body
