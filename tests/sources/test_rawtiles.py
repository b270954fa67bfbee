"""Tile-sized reads without libvips (sources/rawtiles.py), through OmeImage.read: the same pixels as the
libvips path and as tifffile, for compression none, and deflate and Adobe deflate with predictor none and
horizontal, both byte orders, 8 and 16 bits, edge tiles, 3-5 channels one per directory or interleaved;
the layouts it leaves to libvips (LZW, floating-point predictor) are left to it; a damaged tile falls
back to libvips."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tileserver.errors import SourceError
from tileserver.sources.ome import OmeFormat, OmeImage
from tileserver.sources.pyramid import PyramidReader
from tileserver.sources.rawtiles import TiffTiles, plan
from tileserver.sources.tiff import TiffFile

from ..ome_images import channel_data, levels_of

WIDTH, HEIGHT = 601, 419  # partial edge tiles at every level
BOXES = [(0, 0, 256, 256), (256, 256, 256, 163), (512, 0, 89, 256), (100, 37, 300, 301), (590, 410, 11, 9)]


def write(path: Path, channels: int, interleaved: bool, compression: Any, predictor: int, byteorder: str = "<",
          dtype: Any = np.uint16) -> np.ndarray:
    """An OME-TIFF of `channels` channels (one directory each, or interleaved samples), two levels in
    SubIFDs, tiled 256; returns its full-resolution data (channels, height, width)."""
    import tifffile

    data = channel_data(WIDTH, HEIGHT, channels, seed=channels)
    if dtype == np.uint8:
        data = (data >> 6).astype(np.uint8)
    levels = levels_of(data, 2)
    if interleaved:
        levels = [np.moveaxis(lv, 0, -1).copy() for lv in levels]
    opts: dict[str, Any] = {"tile": (256, 256), "compression": compression, "photometric": "minisblack"}
    if predictor != 1:
        opts["predictor"] = predictor
    if interleaved:
        opts["planarconfig"] = "contig"
    meta = {"axes": "YXS" if interleaved else "CYX"}
    with tifffile.TiffWriter(path, ome=True, byteorder=byteorder) as tif:
        tif.write(levels[0], subifds=1, metadata=meta, **opts)
        tif.write(levels[1], subfiletype=1, metadata=None, **opts)
    return data


def pixels(img: Any) -> np.ndarray:
    arr = np.asarray(img.numpy())
    return arr[None] if arr.ndim == 2 else np.moveaxis(arr, -1, 0)


def libvips_read(image: OmeImage, level: int, box: tuple[int, int, int, int],
                 monkeypatch: pytest.MonkeyPatch) -> np.ndarray:
    with monkeypatch.context() as m:
        m.setattr(TiffTiles, "read", lambda *a: None)
        return pixels(image.read(level, box))


def open_image(path: Path) -> OmeImage:
    return OmeFormat(PyramidReader(256, 8)).open(str(path), path.name)


LAYOUTS = [
    pytest.param(channels, interleaved, compression, predictor, id=f"{channels}{'s' if interleaved else 'ch'}-"
                 f"{compression or 'none'}-p{predictor}")
    for channels, interleaved in ((3, False), (4, False), (5, False), (3, True), (4, True))
    for compression, predictor in ((None, 1), ("zlib", 1), ("zlib", 2), ("deflate", 1), ("deflate", 2))
]


@pytest.mark.parametrize(("channels", "interleaved", "compression", "predictor"), LAYOUTS)
def test_same_pixels_as_libvips_and_tifffile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, channels: int,
                                             interleaved: bool, compression: Any, predictor: int) -> None:
    path = tmp_path / "x.ome.tif"
    data = write(path, channels, interleaved, compression, predictor)
    image = open_image(path)
    assert image.meta.bands == channels
    for level, lv_data in enumerate(levels_of(data, 2)):
        lv = image.meta.levels[level]
        for x, y, w, h in BOXES:
            if x + w > lv.width or y + h > lv.height:
                continue
            assert image.tiles.read(0, lv.subifd, (x, y, w, h)) is not None  # read here, not by libvips
            got = pixels(image.read(level, (x, y, w, h)))
            assert got.dtype == np.uint16
            assert np.array_equal(got, lv_data[:, y : y + h, x : x + w]), (level, x, y)
            assert np.array_equal(got, libvips_read(image, level, (x, y, w, h), monkeypatch)), (level, x, y)


@pytest.mark.parametrize(("byteorder", "dtype", "predictor"), [(">", np.uint16, 2), (">", np.uint16, 1),
                                                              ("<", np.uint8, 2), (">", np.uint8, 1)])
def test_byte_orders_and_8_bits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, byteorder: str, dtype: Any,
                                predictor: int) -> None:
    path = tmp_path / "x.ome.tif"
    data = write(path, 3, False, "zlib", predictor, byteorder, dtype)
    image = open_image(path)
    for box in BOXES:
        x, y, w, h = box
        got = pixels(image.read(0, box))
        assert got.dtype == dtype
        assert np.array_equal(got, data[:, y : y + h, x : x + w])
        assert np.array_equal(got, libvips_read(image, 0, box, monkeypatch))


def test_channel_views_and_band_order(tmp_path: Path) -> None:
    """`;c=` views pick and reorder bands, from per-channel directories and from interleaved samples."""
    from tileserver.sources.base import split_selector

    for interleaved in (False, True):
        path = tmp_path / f"x{interleaved}.ome.tif"
        data = write(path, 4, interleaved, "zlib", 2)
        view = open_image(path).select(split_selector(f"{path.name};c=3,1,4")[1])
        got = pixels(view.read(0, (256, 0, 256, 256)))
        assert np.array_equal(got, data[[2, 0, 3], 0:256, 256:512])


@pytest.mark.parametrize(("compression", "predictor"), [("lzw", 1), ("zlib", 3)])
def test_other_layouts_are_left_to_libvips(tmp_path: Path, compression: str, predictor: int) -> None:
    import tifffile

    path = tmp_path / "x.ome.tif"
    data = channel_data(300, 200, 3, seed=1)
    if predictor == 3:
        data = data.astype(np.float32)
    tifffile.imwrite(path, data, ome=True, tile=(256, 256), compression=compression, predictor=predictor,
                     metadata={"axes": "CYX"}, photometric="minisblack")
    with open(path, "rb") as f:
        tf = TiffFile(f)
    assert plan(tf, tf.pages[0]) is None
    image = open_image(path)
    assert image.tiles.read(0, -1, (0, 0, 256, 200)) is None
    assert np.array_equal(pixels(image.read(0, (10, 20, 250, 170))), data[:, 20:190, 10:260])


def test_damaged_tile_goes_to_libvips(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A tile that does not inflate is not read here: the read is libvips' (what it makes of the damage)."""
    path = tmp_path / "x.ome.tif"
    write(path, 3, False, "zlib", 1)
    with open(path, "rb") as f:
        tf = TiffFile(f)
    fd = os.open(path, os.O_RDONLY)
    try:
        offset, count = tf.tile_location(lambda n, o: os.pread(fd, n, o), tf.pages[1], 0)
    finally:
        os.close(fd)
    raw = bytearray(path.read_bytes())
    raw[offset + 2 : offset + count] = bytes(count - 2)
    path.write_bytes(bytes(raw))
    image = open_image(path)
    assert image.tiles.read(1, -1, (0, 0, 256, 256)) is None
    assert image.tiles.read(0, -1, (0, 0, 256, 256)) is not None
    try:
        got = pixels(image.read(0, (0, 0, 256, 256)))
    except SourceError:
        with pytest.raises(SourceError):
            libvips_read(image, 0, (0, 0, 256, 256), monkeypatch)
    else:
        assert np.array_equal(got, libvips_read(image, 0, (0, 0, 256, 256), monkeypatch))


@pytest.mark.parametrize(("channels", "interleaved", "predictor"), [(3, False, 2), (4, False, 1), (5, False, 2),
                                                                     (3, True, 1), (4, True, 2)])
def test_composite_from_arrays(tmp_path: Path, channels: int, interleaved: bool, predictor: int) -> None:
    """The composite made from `read_array` (render's shortcut) is the one made from the libvips image."""
    from tileserver.cache.memory import ByteLRU
    from tileserver.imaging.channels import composite_read, render_composite

    path = tmp_path / "x.ome.tif"
    write(path, channels, interleaved, "zlib", predictor)
    image = open_image(path)
    derived: ByteLRU[Any, Any] = ByteLRU(1 << 20)
    for box in BOXES:
        got = composite_read(image, 0, box, 0, derived)
        assert got is not None
        expected = render_composite(image, image.read(0, box), 0, derived)
        assert (got.bands, got.interpretation) == (expected.bands, expected.interpretation)
        assert np.array_equal(pixels(got), pixels(expected))
    assert composite_read(image, 2, (0, 0, 75, 52), 0, derived) is None  # a virtual level: libvips
