"""Whole-slide images (sources/slide.py): pixels against OpenSlide's own `read_region`, pass-through tiles
against OpenSlide's decoding, the same region through every protocol, slide properties in OBJ, info.json
and the manifest, associated images, and bad slides as 415 everywhere.

Slides: synthetic Aperio SVS written here (tests/slide_images.py: odd sizes, partial edge tiles, RGB JPEG
tiles with JPEGTables, a JPEG 2000 variant, one with a corrupt tile) and the real test slides of the
openslide-python source distribution (SVS, DICOM, generic TIFF, two broken files), fetched once into
.cache/ (`real_slides`: outside CI skipped when PyPI cannot be reached, under CI a failure).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import openslide
import pytest

from tileserver.errors import NotFound, SourceError
from tileserver.levels import dz_max_level, halvings
from tileserver.settings import Settings
from tileserver.sources.base import Selector
from tileserver.sources.registry import Registry
from tileserver.sources.slide import SlideFormat, SlideImage, SlideReader
from tileserver.sources.tiff import JPEG_TABLES, TiffFile

from ..conftest import RGB_TIF, decode, served
from ..slide_images import make_svs
from ..test_bad_files import urls

REPO = Path(__file__).resolve().parents[2]
THREE = "aperio-3lvl-2080x1456.svs"  # downsamples exactly 4 and 16: OpenSlide's level pixels are stored pixels
TWO = "aperio-2lvl-1531x1013.svs"  # downsample 4.0059 (odd sizes, as real scans): one virtual level
ONE = "aperio-1lvl-700x450.svs"  # one stored level, virtual levels below
JP2K = "aperio-jp2k-2lvl-1000x700.svs"  # JPEG 2000 tiles (33005): decoded, never passed through
CORRUPT = "aperio-corrupt-tile-1000x700.svs"  # tile (1, 0) of level 0 overwritten with garbage
SYNTHETIC = [THREE, TWO, ONE, JP2K]
REAL = ["small.svs", "boxes_0.dcm"]
REAL_BAD = ["unreadable.svs", "unopenable.tiff"]


def _fetch_real(dest: Path) -> Path:
    """The test slides of openslide-python's source distribution (the installed version), under `dest`."""
    fixtures = dest / f"openslide-python-{openslide.__version__}" / "fixtures"
    if (fixtures / "small.svs").exists():
        return fixtures
    tmp = dest / "download"
    shutil.rmtree(tmp, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-binary", ":all:", "--no-deps",
                    "-d", str(tmp), f"openslide-python=={openslide.__version__}"],
                   check=True, capture_output=True, timeout=300)
    (sdist,) = tmp.glob("openslide*python-*.tar.gz")
    fixtures.mkdir(parents=True, exist_ok=True)
    with tarfile.open(sdist) as tar:
        for member in tar.getmembers():
            parts = Path(member.name).parts
            if member.isfile() and len(parts) == 4 and parts[1:3] == ("tests", "fixtures"):
                extracted = tar.extractfile(member)
                assert extracted is not None
                (fixtures / parts[3]).write_bytes(extracted.read())
    shutil.rmtree(tmp, ignore_errors=True)
    return fixtures


@pytest.fixture(scope="session")
def real_slides() -> Path:
    try:
        return _fetch_real(REPO / ".cache" / "openslide-fixtures")
    except (OSError, subprocess.SubprocessError, ValueError) as exc:
        if os.environ.get("CI"):
            pytest.fail(f"the openslide-python test slides must be fetched in CI: {exc}")
        pytest.skip(f"openslide-python test slides not available: {exc}")


def _corrupt(path: Path) -> None:
    make_svs(path, 1000, 700, levels=2, seed=5)
    with open(path, "rb") as f:
        tf = TiffFile(f)
    fd = os.open(path, os.O_RDWR)
    try:
        offset, count = tf.tile_location(lambda n, o: os.pread(fd, n, o), tf.pages[0], 1)
        os.pwrite(fd, (b"\xff\xd8" + b"\xff\x01\x02" * count)[:count], offset)
    finally:
        os.close(fd)


@pytest.fixture(scope="session")
def slide_root(tmp_path_factory: pytest.TempPathFactory, image_root: Path) -> Path:
    root = tmp_path_factory.mktemp("slides") / "root"
    root.mkdir()
    make_svs(root / THREE, 2080, 1456, levels=3, seed=1)
    make_svs(root / TWO, 1531, 1013, levels=2, seed=2)
    make_svs(root / ONE, 700, 450, levels=1, seed=3)
    make_svs(root / JP2K, 1000, 700, levels=2, seed=4, jp2k=True)
    _corrupt(root / CORRUPT)
    data = (root / THREE).read_bytes()
    (root / "truncated.svs").write_bytes(data[: len(data) // 2])
    shutil.copy(image_root / RGB_TIF, root / RGB_TIF)
    return root


@pytest.fixture(scope="session")
def real_root(slide_root: Path, real_slides: Path) -> Path:
    for name in [*REAL, "boxes_1.dcm", "boxes.tiff", *REAL_BAD]:
        shutil.copy(real_slides / name, slide_root / name)
    return slide_root


@pytest.fixture(scope="session")
async def slide_client(slide_root: Path) -> AsyncIterator[httpx.AsyncClient]:
    async with served(Settings(root=slide_root)) as c:
        yield c


@pytest.fixture
def root_for(request: pytest.FixtureRequest, slide_root: Path) -> Path:
    """The slide root, with the real slides copied in when the test is about one of them."""
    name = request.node.callspec.params.get("name", "")
    return request.getfixturevalue("real_root") if name in [*REAL, *REAL_BAD, "boxes.tiff"] else slide_root


def reference(slide: Any, level: int, box: tuple[int, int, int, int], bg: tuple[int, int, int] = (255, 255, 255)
              ) -> Any:
    """OpenSlide's own read of a box of a level (level pixel x at level-0 point round(x * downsample)),
    composited onto the background: (h, w, 3) uint8."""
    x, y, w, h = box
    d = slide.level_downsamples[level]
    rgba = np.asarray(slide.read_region((round(x * d), round(y * d)), level, (w, h))).astype(np.float64)
    a = rgba[..., 3:] / 255
    return np.rint(rgba[..., :3] * a + np.array(bg) * (1 - a)).astype(np.uint8)


def assert_openslide_pixels(got: Any, slide: Any, level: int, box: tuple[int, int, int, int]) -> None:
    """`got` is OpenSlide's read of `box`: exactly where OpenSlide's pixels are opaque or transparent, within
    1 where they are partly transparent (PIL's un-premultiplied values round before compositing; slides
    with a fractional downsample have such pixels at the level's right and bottom edges)."""
    x, y, w, h = box
    d = slide.level_downsamples[level]
    alpha = np.asarray(slide.read_region((round(x * d), round(y * d)), level, (w, h)))[..., 3]
    diff = np.abs(got.astype(int) - reference(slide, level, box))
    solid = (alpha == 0) | (alpha == 255)
    assert diff[solid].max(initial=0) == 0, (level, box)
    assert diff[~solid].max(initial=0) <= 1, (level, box)


def pixels(img: Any) -> Any:
    return np.asarray(img.numpy(), dtype=np.uint8).reshape(img.height, img.width, img.bands)


def boxes(w: int, h: int, tw: int, th: int) -> list[tuple[int, int, int, int]]:
    """The first tile, the last (partial) tile, an unaligned box across tiles, and the whole of a small level."""
    last = ((w - 1) // tw * tw, (h - 1) // th * th)
    out = [(0, 0, min(tw, w), min(th, h)), (*last, w - last[0], h - last[1])]
    out.append((min(37, w - 1), min(23, h - 1), min(300, w - min(37, w - 1)), min(200, h - min(23, h - 1))))
    return out + ([(0, 0, w, h)] if w * h <= 600_000 else [])


def opened(root: Path, name: str) -> SlideImage:
    return SlideFormat(SlideReader()).open(str(root / name), name)


# -- format detection ---------------------------------------------------------------------------
@pytest.mark.parametrize(("name", "fmt"), [
    pytest.param(THREE, "openslide", id="svs"), pytest.param(JP2K, "openslide", id="svs-jp2k"),
    pytest.param("small.svs", "openslide", id="real-svs"), pytest.param("boxes_0.dcm", "openslide", id="dicom"),
    pytest.param("boxes.tiff", "libvips", id="generic-tiff-stays-with-libvips"),
    pytest.param(RGB_TIF, "libvips", id="vips-pyramid"),
])
def test_the_format_is_chosen_by_content(root_for: Path, name: str, fmt: str) -> None:
    reader = SlideReader()
    slide = SlideFormat(reader)
    with open(root_for / name, "rb") as f:
        head = f.read(512)
    assert ("openslide" if slide.probe(str(root_for / name), head) else "libvips") == fmt
    renamed = root_for / f"renamed-{name}.bin"  # the extension plays no part (DICOM and TIFF are not named)
    shutil.copy(root_for / name, renamed)
    try:
        assert slide.probe(str(renamed), head) == (fmt == "openslide")
    finally:
        renamed.unlink()
    assert Registry([slide]).names() == ("openslide",)


# -- levels and pixels against OpenSlide --------------------------------------------------------
@pytest.mark.parametrize("name", [*SYNTHETIC, *REAL])
def test_levels_are_the_slides_own(root_for: Path, name: str) -> None:
    image = opened(root_for, name)
    slide = openslide.OpenSlide(str(root_for / name))
    stored = [lv for lv in image.meta.levels if lv.stored]
    assert [(lv.width, lv.height) for lv in stored] == list(slide.level_dimensions)
    for i, lv in enumerate(stored):
        tw = int(slide.properties.get(f"openslide.level[{i}].tile-width", 256))
        assert (lv.tile_width, lv.tile_height) == (tw, int(slide.properties.get(f"openslide.level[{i}].tile-height",
                                                                               256)))
    last = stored[-1]
    expected = halvings(last.width, last.height, max(last.tile_width, last.tile_height), floor=True)[1:]
    assert [(lv.width, lv.height) for lv in image.meta.levels[len(stored):]] == expected
    assert not any(lv.stored for lv in image.meta.levels[len(stored):])
    assert image.meta.bands == 3 and image.meta.bits == 8 and image.meta.loader == "openslide"


@pytest.mark.parametrize("name", [*SYNTHETIC, *REAL])
def test_stored_levels_read_as_openslide_reads_them(root_for: Path, name: str) -> None:
    image = opened(root_for, name)
    slide = openslide.OpenSlide(str(root_for / name))
    for level, lv in enumerate(image.meta.levels):
        if not lv.stored:
            continue
        for box in boxes(lv.width, lv.height, lv.tile_width, lv.tile_height):
            got = pixels(image.read(level, box))
            assert got.shape == (box[3], box[2], 3), (level, box)
            assert_openslide_pixels(got, slide, level, box)


@pytest.mark.parametrize("name", [TWO, ONE])
def test_virtual_levels_are_2x2_means_of_the_level_above(slide_root: Path, name: str) -> None:
    image = opened(slide_root, name)
    slide = openslide.OpenSlide(str(slide_root / name))
    levels = image.meta.levels
    first = next(i for i, lv in enumerate(levels) if not lv.stored)
    above = reference(slide, first - 1, (0, 0, levels[first - 1].width, levels[first - 1].height))
    for level in range(first, len(levels)):
        lv = levels[level]
        blocks = above[: 2 * lv.height, : 2 * lv.width].reshape(lv.height, 2, lv.width, 2, 3).astype(np.uint16)
        expected = ((blocks.sum(axis=(1, 3)) + 2) // 4).astype(np.uint8)
        for box in boxes(lv.width, lv.height, lv.tile_width, lv.tile_height):
            x, y, w, h = box
            assert np.array_equal(pixels(image.read(level, box)), expected[y : y + h, x : x + w]), (level, box)
        above = expected


# -- pass-through -------------------------------------------------------------------------------
def stored_stream(path: Path, directory: int, index: int) -> tuple[bytes, bytes]:
    """(JPEGTables, tile bytes) of a stored tile, read with tifffile."""
    import tifffile

    with tifffile.TiffFile(path) as tf:
        page = tf.pages[directory]
        fh = tf.filehandle
        fh.seek(page.dataoffsets[index])
        data = fh.read(page.databytecounts[index])
        assert page.tags[JPEG_TABLES].value == page.jpegtables
        return bytes(page.jpegtables), data


@pytest.mark.parametrize(("name", "level", "col", "row", "directory"), [
    pytest.param(THREE, 0, 0, 0, 0, id="3lvl-level0-first"), pytest.param(THREE, 0, 6, 4, 0, id="3lvl-level0-inner"),
    pytest.param(THREE, 1, 1, 0, 2, id="3lvl-level1"), pytest.param(TWO, 0, 4, 2, 0, id="2lvl-level0"),
])
async def test_stored_jpeg_tiles_pass_through_and_decode_as_openslide_does(
        slide_client: httpx.AsyncClient, slide_root: Path, name: str, level: int, col: int, row: int,
        directory: int) -> None:
    slide = openslide.OpenSlide(str(slide_root / name))
    nres = len((await slide_client.get(f"/iip?FIF={name}&OBJ=Resolutions")).text.split(","))
    cols = -(-slide.level_dimensions[level][0] // 256)
    r = await slide_client.get(f"/iip?FIF={name}&JTL={nres - 1 - level},{row * cols + col}")
    assert r.status_code == 200
    tables, tile = stored_stream(slide_root / name, directory, row * cols + col)
    assert r.content.startswith(b"\xff\xd8\xff\xee\x00\x0eAdobe")  # says "RGB, no colour transform"
    assert r.content.endswith(tile[2:]) and tables[2:-2] in r.content  # the stored bytes, not re-encoded
    expected = reference(slide, level, (col * 256, row * 256, 256, 256))
    assert np.abs(pixels(decode(r.content)).astype(int) - expected).max() <= 1  # libjpeg-turbo both: exact
    naive = decode(tables[:-2] + tile[2:])  # without the marker a decoder takes Aperio's RGB for YCbCr
    assert np.abs(pixels(naive).astype(int) - expected).max() > 40


async def test_jpeg2000_slides_are_decoded_not_passed_through(slide_client: httpx.AsyncClient,
                                                               slide_root: Path) -> None:
    info = (await slide_client.get(f"/iiif/3/{JP2K}/info.json")).json()
    assert info["width"] == 1000
    r = await slide_client.get(f"/iiif/3/{JP2K}/0,0,256,256/256,/0/default.png")
    slide = openslide.OpenSlide(str(slide_root / JP2K))
    assert np.array_equal(pixels(decode(r.content)), reference(slide, 0, (0, 0, 256, 256)))
    jpg = await slide_client.get(f"/iiif/3/{JP2K}/0,0,256,256/256,/0/default.jpg")
    assert jpg.content.startswith(b"\xff\xd8\xff\xe0")  # a JFIF stream encoded here
    assert opened(slide_root, JP2K).meta.compression == ""


# -- the same region through every protocol -----------------------------------------------------
@pytest.mark.parametrize(("name", "shift", "col", "row"), [
    pytest.param(THREE, 0, 0, 0, id="3lvl-pass-through"), pytest.param(THREE, 0, 8, 5, id="3lvl-edge-tile"),
    pytest.param(THREE, 2, 1, 1, id="3lvl-level1-edge"), pytest.param(TWO, 1, 0, 0, id="2lvl-between-levels"),
    pytest.param(ONE, 1, 1, 0, id="1lvl-virtual"), pytest.param(JP2K, 0, 1, 1, id="jp2k"),
])
async def test_the_same_tile_through_every_protocol(slide_client: httpx.AsyncClient, slide_root: Path, name: str,
                                                    shift: int, col: int, row: int) -> None:
    dzi = (await slide_client.get(f"/deepzoom/{name}.dzi")).text
    width = int(dzi.split('Width="')[1].split('"')[0])
    height = int(dzi.split('Height="')[1].split('"')[0])
    tiers = len(halvings(width, height, 256))
    size = 256 << shift
    region = (col * size, row * size, min(size, width - col * size), min(size, height - row * size))
    out = (-(-region[2] // (1 << shift)), -(-region[3] // (1 << shift)))
    got = {
        "iiif": f"/iiif/3/{name}/{','.join(map(str, region))}/{out[0]},{out[1]}/0/default.jpg",
        "deepzoom": f"/deepzoom/{name}_files/{dz_max_level(width, height) - shift}/{col}_{row}.jpg",
        "zoomify": f"/zoomify/{name}/TileGroup0/{tiers - 1 - shift}-{col}-{row}.jpg",
    }
    meta = opened(slide_root, name).meta
    level = next((i for i, lv in enumerate(meta.levels) if lv.factor == 1 << shift), None)
    if level is not None:  # IIP's resolutions are the slide's levels: factors 1, 4, 16, then halvings
        got["iip"] = f"/iip?FIF={name}&JTL={len(meta.levels) - 1 - level},{row * meta.levels[level].columns() + col}"
    images = {}
    for proto, url in got.items():
        r = await slide_client.get(url)
        assert r.status_code == 200, (proto, r.text)
        images[proto] = pixels(decode(r.content))
    first = images.pop("iiif")
    assert first.shape == (out[1], out[0], 3)
    assert ("iip" in images) == (name != TWO)
    for proto, img in images.items():
        assert np.array_equal(img, first), proto


# -- properties ---------------------------------------------------------------------------------
@pytest.mark.parametrize(("name", "vendor", "power", "mpp"), [
    pytest.param(THREE, "aperio", "40", 0.25, id="synthetic-svs"),
    pytest.param("small.svs", "aperio", "20", 0.499, id="real-svs"),
    pytest.param("boxes_0.dcm", "dicom", "20", 0.499, id="real-dicom"),
])
async def test_slide_properties_everywhere(root_for: Path, name: str, vendor: str, power: str, mpp: float) -> None:
    async with served(Settings(root=root_for)) as c:
        obj = await c.get(f"/iip?FIF={name}&OBJ=openslide.vendor&OBJ=openslide.objective-power&OBJ=dpi")
        lines = obj.text.split("\r\n")
        assert lines[:2] == [vendor, power]
        per_metre = float(np.float32(np.float32(1e4 / mpp) * np.float32(100)))  # iipsrv's single precision
        assert lines[2] == f"DPI:{per_metre:f} {per_metre:f}"
        meta = (await c.get(f"/iip?FIF={name}&OBJ=metadata")).json()
        assert meta["openslide.vendor"] == vendor and float(meta["openslide.mpp-x"]) == mpp
        for version in (2, 3):
            info = (await c.get(f"/iiif/{version}/{name}/info.json")).json()
            (physdim,) = info["service"]
            assert physdim["profile"] == "http://iiif.io/api/annex/services/physdim"
            assert physdim["physicalUnits"] == "mm" and physdim["physicalScale"] == pytest.approx(mpp / 1000)
        manifest = (await c.get(f"/iiif/manifests/{name}.json")).json()
        entries = {e["label"].get("en", e["label"].get("none"))[0]: e["value"]["none"][0]
                   for e in manifest["metadata"]}
        assert entries["Slide format"] == vendor and entries["Objective power"] == power
        assert entries["Microns per pixel"] == f"{mpp:g} x {mpp:g}"


async def test_images_without_a_pixel_size_have_no_physdim(slide_client: httpx.AsyncClient) -> None:
    assert "service" not in (await slide_client.get(f"/iiif/3/{RGB_TIF}/info.json")).json()


# -- associated images --------------------------------------------------------------------------
@pytest.mark.parametrize("which", ["label", "macro", "thumbnail"])
async def test_associated_images(slide_client: httpx.AsyncClient, slide_root: Path, which: str) -> None:
    slide = openslide.OpenSlide(str(slide_root / THREE))
    ident = f"{THREE};associated={which}"
    info = (await slide_client.get(f"/iiif/3/{ident}/info.json")).json()
    w, h = slide.associated_images[which].size
    assert (info["width"], info["height"]) == (w, h)
    r = await slide_client.get(f"/iiif/3/{ident}/full/max/0/default.png")
    rgba = np.asarray(slide.associated_images[which])
    assert np.array_equal(pixels(decode(r.content)), rgba[..., :3])
    half = await slide_client.get(f"/iip?FIF={ident}&WID={w // 2}&CVT=png")
    assert decode(half.content).width == w // 2


async def test_associated_images_are_listed(slide_client: httpx.AsyncClient) -> None:
    image_meta = (await slide_client.get(f"/iiif/manifests/{THREE}.json")).json()
    canvases = [(c["label"]["none"][0], c["width"], c["height"]) for c in image_meta["items"]]
    assert canvases == [(THREE, 2080, 1456), ("label", 301, 207), ("macro", 613, 247)]
    body = image_meta["items"][1]["items"][0]["items"][0]["body"]
    assert body["service"][0]["id"].endswith(f"/iiif/3/{THREE}%3Bassociated%3Dlabel")
    assert "%3Bassociated%3Dthumbnail/" in image_meta["thumbnail"][0]["id"]


@pytest.mark.parametrize("ident", [f"{THREE};associated=nothing", f"{RGB_TIF};associated=label",
                                   f"{THREE};associated=label;page=1"])
async def test_unknown_associated_images_are_404(slide_client: httpx.AsyncClient, ident: str) -> None:
    assert (await slide_client.get(f"/iiif/3/{ident}/info.json")).status_code == 404


def test_select(slide_root: Path) -> None:
    image = opened(slide_root, THREE)
    assert image.meta.associated == ("label", "macro", "thumbnail")
    assert image.select(Selector()) is image
    label = image.select(Selector(associated="label"))
    assert label.meta.ident == f"{THREE};associated=label"
    assert [(lv.width, lv.height) for lv in label.meta.levels] == [(301, 207), (150, 103)]
    with pytest.raises(NotFound):
        image.select(Selector(page=1))


# -- bad slides -----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["truncated.svs", *REAL_BAD])
async def test_bad_slides_are_415_everywhere(root_for: Path, name: str) -> None:
    async with served(Settings(root=root_for)) as c:
        for url in [*urls(name), f"/iiif/manifests/{name}.json", f"/iiif/3/{name};associated=label/info.json"]:
            r = await c.get(url)
            assert r.status_code == 415, (url, r.status_code, r.text)
            assert str(root_for) not in r.text
        assert (await c.get(f"/iip?FIF={THREE}&JTL=0,0")).status_code == 200


async def test_a_corrupt_tile_is_415_and_the_slide_still_serves(slide_client: httpx.AsyncClient,
                                                                 slide_root: Path) -> None:
    png = "/iiif/3/{}/{},0,256,256/256,/0/default.png"
    assert (await slide_client.get(png.format(CORRUPT, 256))).status_code == 415
    good = await slide_client.get(png.format(CORRUPT, 512))  # a fresh handle: OpenSlide's errors are sticky
    assert good.status_code == 200
    slide = openslide.OpenSlide(str(slide_root / CORRUPT))
    assert np.array_equal(pixels(decode(good.content)), reference(slide, 0, (512, 0, 256, 256)))
    with pytest.raises(SourceError):
        opened(slide_root, CORRUPT).read(0, (200, 0, 100, 100))


def test_flatten_composites_premultiplied_pixels_onto_the_background() -> None:
    from tileserver.sources.slidelib import flatten

    # premultiplied ARGB: opaque red, transparent, half-transparent green (0x80 premultiplied)
    argb = np.array([[0xFFFF0000, 0x00000000, 0x80008000]], np.uint32)
    out = flatten(argb, (10, 20, 30))
    assert out.tolist() == [[[255, 0, 0], [10, 20, 30], [5, 138, 15]]]


@pytest.mark.parametrize(("x", "y"), [(0, 0), (512, 768), (1024, 512)])
def test_tiles_between_stored_levels_are_decoded_at_half_scale(slide_root: Path, x: int, y: int) -> None:
    """A slide's levels are 1/4 apart: a viewer's 1/2-level tile reads 512 x 512 pixels of level 0. Its
    stored JPEG tiles are decoded at 1/2 by libjpeg-turbo's scaled IDCT (render.recode): within JPEG
    rounding of the 2 x 2 mean of OpenSlide's full-size pixels (a box filter, as pyramid writers use)."""
    from tileserver.imaging import jpeg
    from tileserver.imaging.render import _cut_stored, recode
    from tileserver.models import Box, TileRequest

    image = opened(slide_root, THREE)
    req = TileRequest(ident=THREE, region=Box(x, y, 512, 512), size=(256, 256))
    fast = recode(image, req, Settings(root=slide_root))
    assert fast is not None and (fast.width, fast.height) == (256, 256)
    cut = _cut_stored(image, 0, (x, y, 512, 512), 0, 2)
    assert cut is not None
    slide = openslide.OpenSlide(str(slide_root / THREE))
    full = reference(slide, 0, (x, y, 512, 512)).astype(float)
    box = full.reshape(256, 2, 256, 2, 3).mean(axis=(1, 3))
    assert np.abs(cut[0] - box).max() <= 1  # before encoding: the box mean, within IDCT rounding
    assert fast.body == jpeg.encode(cut[0], 75, cut[1])  # the response is that cut, encoded
    edge = TileRequest(ident=THREE, region=Box(1536, 1024, 544, 432), size=(272, 216))  # the padded edge tiles
    assert recode(image, edge, Settings(root=slide_root)) is None


def test_reads_are_bounded(slide_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A read larger than MAX_READ_PIXELS is refused (403) before any pixel buffer is made; big reads
    below it are painted by OpenSlide in CHUNK-sized pieces (the same pixels as one read)."""
    from tileserver.errors import ImageTooLarge
    from tileserver.sources import slide as slide_module

    image = opened(slide_root, THREE)
    monkeypatch.setattr(slide_module, "MAX_READ_PIXELS", 1000 * 1000)
    with pytest.raises(ImageTooLarge):
        image.read(0, (0, 0, 1001, 1000))
    monkeypatch.setattr(slide_module, "CHUNK", 300)
    whole = openslide.OpenSlide(str(slide_root / THREE))
    assert np.array_equal(pixels(image.read(0, (100, 50, 1000, 1000))), reference(whole, 0, (100, 50, 1000, 1000)))
