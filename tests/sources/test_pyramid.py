"""The synchronous reader: metadata per source kind, levels, and region reads."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import pyvips

from tileserver.errors import SourceError
from tileserver.models import OutputFormat
from tileserver.sources.pyramid import PyramidReader, configure_vips

from ..conftest import ALPHA_PNG, GREY16_TIF, PLAIN_JPG, RGB_TIF, STRIPED_TIF, SUBIFD_TIF, max_diff


@pytest.fixture(scope="module")
def reader() -> PyramidReader:
    return PyramidReader(256, 8)


def sizes(reader: PyramidReader, root: Path, ident: str) -> list[tuple[int, int, bool]]:
    meta = reader.info(str(root / ident), ident)
    return [(lv.width, lv.height, lv.stored) for lv in meta.levels]


def test_tiled_pyramid_pages(reader: PyramidReader, image_root: Path) -> None:
    meta = reader.info(str(image_root / RGB_TIF), RGB_TIF)
    assert [(lv.width, lv.height, lv.page, lv.factor) for lv in meta.levels] == [
        (1003, 701, 0, 1.0), (501, 350, 1, 2.0), (250, 175, 2, 4.0)]
    assert (meta.bands, meta.bits, meta.colorspace, meta.compression) == (3, 8, "srgb", "jpeg")
    assert meta.tile_size == (256, 256)
    assert meta.max_values == (255.0,) * 3


def test_subifd_pyramid(reader: PyramidReader, image_root: Path) -> None:
    meta = reader.info(str(image_root / SUBIFD_TIF), SUBIFD_TIF)
    assert [(lv.width, lv.subifd) for lv in meta.levels] == [(700, -1), (350, 0), (175, 1)]


def test_grey16(reader: PyramidReader, image_root: Path) -> None:
    meta = reader.info(str(image_root / GREY16_TIF), GREY16_TIF)
    assert (meta.bands, meta.bits, meta.colorspace, meta.max_values) == (1, 16, "grey", (65535.0,))


@pytest.mark.parametrize(
    ("ident", "expected"),
    [
        pytest.param(STRIPED_TIF, [(900, 517, True), (450, 258, False), (225, 129, False)], id="striped"),
        pytest.param(PLAIN_JPG, [(640, 481, True), (320, 240, False), (160, 120, False)], id="jpeg"),
        pytest.param(ALPHA_PNG, [(300, 200, True), (150, 100, False)], id="png"),
    ],
)
def test_virtual_levels(reader: PyramidReader, image_root: Path, ident: str,
                        expected: list[tuple[int, int, bool]]) -> None:
    assert sizes(reader, image_root, ident) == expected


def test_alpha_detected(reader: PyramidReader, image_root: Path) -> None:
    meta = reader.info(str(image_root / ALPHA_PNG), ALPHA_PNG)
    assert meta.has_alpha and meta.bands == 4


def test_read_region_at_level(reader: PyramidReader, image_root: Path) -> None:
    path = str(image_root / RGB_TIF)
    meta = reader.info(path, RGB_TIF)
    got = reader.read(path, meta, 1, (100, 50, 30, 20))
    expected = pyvips.Image.tiffload(path, page=1).crop(100, 50, 30, 20)
    assert max_diff(got, expected) == 0


def test_virtual_level_is_a_shrink(reader: PyramidReader, image_root: Path) -> None:
    path = str(image_root / PLAIN_JPG)
    meta = reader.info(path, PLAIN_JPG)
    level = reader.level_image(path, meta, 2)
    assert (level.width, level.height) == (160, 120)  # halvings rounded down, as iipsrv
    full = pyvips.Image.new_from_file(path)
    assert abs(level.avg() - full.avg()) < 1.0


def test_undecodable_file_is_a_source_error(reader: PyramidReader, image_root: Path) -> None:
    with pytest.raises(SourceError) as exc:
        reader.info(str(image_root / "not-an-image.tif"), "not-an-image.tif")
    assert str(image_root) not in exc.value.message


def test_whole_level_reads_keep_the_decoded_level(image_root: Path) -> None:
    reader = PyramidReader(256, 8, decoded_cache_bytes=64 << 20)
    path = str(image_root / RGB_TIF)
    meta = reader.info(path, RGB_TIF)
    reader.read(path, meta, 0, (0, 0, 100, 100))  # a small crop: read from the file, nothing kept
    assert len(reader._decoded) == 0
    first = reader.read(path, meta, 1, (0, 0, 501, 350))
    assert len(reader._decoded) == 1
    again = reader.read(path, meta, 1, (10, 10, 20, 20))
    assert max_diff(again, first.crop(10, 10, 20, 20)) == 0
    tiny = PyramidReader(256, 8, decoded_cache_bytes=1000)
    tiny.read(path, tiny.info(path, RGB_TIF), 1, (0, 0, 501, 350))
    assert len(tiny._decoded) == 0  # over budget: not kept


@pytest.mark.parametrize(("fmt", "bands", "interpretation"), [
    pytest.param("ushort", 1, "grey16", id="grey16"), pytest.param("ushort", 3, "rgb16", id="rgb16"),
    pytest.param("ushort", 5, "multiband", id="5-band-16"), pytest.param("float", 1, "b-w", id="float"),
    pytest.param("uchar", 5, "multiband", id="5-band-8"),
])
def test_virtual_levels_keep_samples_and_bands(reader: PyramidReader, tmp_path: Path, fmt: str, bands: int,
                                               interpretation: str) -> None:
    """Levels made below the stored ones keep the source's sample format and bands (libvips'
    thumbnail_image would make 8-bit sRGB of them, which a 16-bit image's metadata does not describe)."""
    xyz = pyvips.Image.xyz(600, 410)
    planes = [(xyz[0] * (50 + 10 * b) + xyz[1] * 7).cast(fmt) if fmt != "uchar" else (xyz[0] * 0.4).cast(fmt)
              for b in range(bands)]
    img = planes[0].bandjoin(planes[1:]) if bands > 1 else planes[0]
    img.copy(interpretation=interpretation).tiffsave(str(tmp_path / "x.tif"))  # striped: every level below is virtual
    meta = reader.info(str(tmp_path / "x.tif"), "x.tif")
    assert [(lv.width, lv.stored) for lv in meta.levels] == [(600, True), (300, False), (150, False)]
    got = reader.read(str(tmp_path / "x.tif"), meta, 1, (0, 0, 300, 205))
    assert (got.format, got.bands, got.width, got.height) == (fmt, bands, 300, 205)
    expected = img.resize(0.5)
    assert max_diff(got.crop(2, 2, 290, 200), expected.crop(2, 2, 290, 200)) <= 1


def flat_tiff(path: Path, colour: tuple[int, int, int]) -> None:
    img = (pyvips.Image.black(300, 200, bands=3) + list(colour)).cast("uchar").copy(interpretation="srgb")
    img.tiffsave(str(path), tile=True, pyramid=True, tile_width=128, tile_height=128, compression="jpeg", Q=90)


@pytest.mark.parametrize("how", ["read", "stored_tile"])
def test_a_file_replaced_with_its_mtime_kept_is_read_anew(tmp_path: Path, how: str) -> None:
    """Open handles and parsed directories are keyed by the file's version (mtime, size, an object's ETag),
    not by its mtime alone: S3's Last-Modified has whole seconds, so an object replaced within the second
    it was written keeps its mtime."""
    configure_vips()  # as the server runs: no libvips operation cache, which would keep the old file's image
    reader = PyramidReader(256, 8)
    path, new = tmp_path / "swap.tif", tmp_path / "new.tif"
    flat_tiff(path, (200, 40, 40))
    flat_tiff(new, (40, 40, 200))
    st = path.stat()
    os.utime(new, ns=(st.st_atime_ns, st.st_mtime_ns))

    def red_and_blue() -> tuple[float, float]:
        meta = reader.info(str(path), "swap.tif")
        if how == "read":
            img = reader.read(str(path), meta, 0, (0, 0, 64, 64))
        else:
            stored = reader.stored_tile(str(path), meta, (0, 0, 0), OutputFormat.JPEG)
            assert stored is not None
            img = pyvips.Image.new_from_buffer(stored.data, "")
        return img[0].avg(), img[2].avg()

    red, blue = red_and_blue()
    assert red > 190 and blue < 50
    os.replace(new, path)
    assert path.stat().st_mtime_ns == st.st_mtime_ns and path.stat().st_size != st.st_size
    red, blue = red_and_blue()
    assert red < 50 and blue > 190
