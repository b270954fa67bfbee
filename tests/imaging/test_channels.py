"""The channel composite (imaging/channels.py) against a numpy implementation of its formula; data windows
against numpy's percentiles; when a request renders the composite or keeps 16 bits; windows computed once
per image."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import pytest
import pyvips

from tileserver.cache.memory import ByteLRU
from tileserver.imaging.channels import (
    channel_windows,
    colours,
    composite,
    composite_block,
    composite_stream,
    data_windows,
    keeps_depth,
    wants_composite,
)
from tileserver.models import (
    NO_PROCESSING,
    Channel,
    ImageMeta,
    Level,
    OutputFormat,
    Processing,
    Quality,
    Tile,
    TileRequest,
)

from ..ome_images import channel_data, composite_reference, percentile_windows


def as_vips(data: np.ndarray) -> Any:
    return pyvips.Image.new_from_array(np.moveaxis(data, 0, -1).copy() if data.shape[0] > 1 else data[0].copy())


def as_numpy(img: Any) -> np.ndarray:
    arr = np.asarray(img.numpy())
    return arr if arr.ndim == 3 else arr[..., None]


RED, GREEN, BLUE, WHITE = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)


@pytest.mark.parametrize(("channels", "palette", "windows"), [
    pytest.param(1, [WHITE], [(500, 2500)], id="one-grey"),
    pytest.param(1, [(255, 128, 0)], [(0, 65535)], id="one-orange"),
    pytest.param(3, [RED, GREEN, BLUE], [(200, 3000), (400, 6000), (600, 9000)], id="rgb"),
    pytest.param(3, [RED, GREEN, BLUE], [(1000, 1500), (5000, 5001), (0, 100000)], id="clipped-narrow-wide"),
    pytest.param(4, [RED, GREEN, BLUE, WHITE], [(200, 3000), (400, 6000), (600, 9000), (800, 12000)], id="four"),
    pytest.param(5, [(0, 255, 255), (255, 0, 255), (255, 255, 0), (128, 64, 32), WHITE],
                 [(0, 4000), (100, 7000), (1e3, 9e3), (-50, 50), (0.5, 15000.5)], id="five-saturating"),
])
@pytest.mark.parametrize("dtype", [np.uint16, np.uint8, np.float32, np.int16])
@pytest.mark.parametrize("way", [composite_block, composite_stream, composite], ids=["block", "stream", "either"])
def test_composite_is_the_formula(channels: int, palette: list[tuple[int, int, int]],
                                  windows: list[tuple[float, float]], dtype: Any, way: Any) -> None:
    """Both implementations give the formula's pixels: the libvips pipeline for large outputs exactly (double
    precision), the numpy blocks of tiles (single precision) within 1, and exactly for all but a few pixels
    whose sum lies within float32's rounding of a half."""
    data = channel_data(173, 91, channels, seed=channels)
    if dtype == np.uint8:
        data = data >> 6
    data = data.astype(dtype)
    got = way(as_vips(data), tuple(palette), tuple(windows))
    expected = composite_reference(data, palette, windows)
    assert got.format == "uchar"
    assert got.interpretation == ("b-w" if expected.ndim == 2 else "srgb")
    expected = expected[..., None] if expected.ndim == 2 else expected
    if way is composite_stream:
        assert np.array_equal(as_numpy(got), expected)
    else:
        diff = np.abs(as_numpy(got).astype(int) - expected.astype(int))
        assert diff.max() <= 1
        assert np.count_nonzero(diff) <= diff.size // 200


@pytest.mark.parametrize("way", [composite_block, composite_stream], ids=["block", "stream"])
def test_composite_edges(way: Any) -> None:
    """Below the window: black; above: full colour; two full channels add up and clip at 255."""
    data = np.array([[[0, 100, 200, 300]], [[300, 300, 300, 0]]], np.uint16)  # 2 channels, 1 x 4 pixels
    got = as_numpy(way(as_vips(data), ((200, 0, 0), (100, 50, 0)), ((100, 200), (0, 300))))
    assert got[0].tolist() == [[100, 50, 0], [100, 50, 0], [255, 50, 0], [200, 0, 0]]


def test_large_composites_stream() -> None:
    """Above BLOCK_PIXELS the composite is a lazy libvips pipeline (bounded memory), with the same pixels."""
    data = channel_data(1100, 960, 2, seed=4)
    img = composite(as_vips(data), (RED, GREEN), ((300.0, 2500.0), (500.0, 5000.0)))
    assert np.array_equal(as_numpy(img), composite_reference(data, [RED, GREEN], [(300, 2500), (500, 5000)]))


def test_data_windows_are_percentiles() -> None:
    data = channel_data(251, 176, 4, seed=3)
    data[2] = 777  # a flat channel: a window one value wide
    got = data_windows(as_vips(data))
    assert np.allclose(got, percentile_windows(data), rtol=1e-12)
    assert got[2] == (777.0, 778.0)
    assert all(high - low < 20000 for low, high in got)  # the saturated pixels are left out


def meta(channels: tuple[Channel, ...], bits: int = 16, bands: int | None = None) -> ImageMeta:
    n = len(channels) if bands is None else bands
    return ImageMeta("x", 100, 80, (Level(100, 80, 256, 256),), n, bits, "uint", "multiband", False, False, 1.0, 2,
                     (0.0,) * n, (65535.0,) * n, channels=channels)


def request(fmt: OutputFormat = OutputFormat.PNG, quality: Quality = Quality.DEFAULT,
            processing: Processing = NO_PROCESSING) -> TileRequest:
    return TileRequest("x", fmt=fmt, tile=Tile(0, 0, 0), quality=quality, processing=processing)


@pytest.mark.parametrize(("image", "req", "composite_", "depth"), [
    pytest.param(meta((Channel(),) * 4), request(), True, False, id="four-png"),
    pytest.param(meta((Channel(),)), request(), True, True, id="one-png-16"),
    pytest.param(meta((Channel(),)), request(OutputFormat.TIFF, Quality.GRAY), True, True, id="one-gray-tif-16"),
    pytest.param(meta((Channel(),)), request(OutputFormat.JPEG), True, False, id="one-jpeg-8"),
    pytest.param(meta((Channel(),)), request(OutputFormat.WEBP), True, False, id="one-webp-8"),
    pytest.param(meta((Channel(),)), request(quality=Quality.COLOR), True, False, id="one-color-8"),
    pytest.param(meta((Channel(),)), request(quality=Quality.BITONAL), True, False, id="one-bitonal-8"),
    pytest.param(meta((Channel("", (255, 0, 0)),)), request(), True, False, id="one-coloured"),
    pytest.param(meta((Channel("", None, (1.0, 9.0)),)), request(), True, False, id="one-windowed"),
    pytest.param(meta((Channel(),), bits=8), request(), True, False, id="one-8-bit"),
    pytest.param(meta((Channel(),)), request(processing=Processing(equalize=True)), True, False, id="equalise"),
    pytest.param(meta((Channel(),) * 4), request(processing=Processing(minmax=((-1, 0.0, 1.0),))), False, False,
                 id="minmax-raw"),
    pytest.param(meta((Channel(),) * 4), request(processing=Processing(twist=((1, 0, 0, 0),))), False, False,
                 id="ctw-raw"),
    pytest.param(meta((Channel(),) * 4), request(processing=Processing(gamma=2.0)), False, False, id="gamma-raw"),
    pytest.param(meta((Channel(),) * 4), request(processing=Processing(stretch=True)), False, False, id="stretch-raw"),
    pytest.param(meta((), bands=3), request(), False, False, id="no-channels"),
])
def test_which_rendering(image: ImageMeta, req: TileRequest, composite_: bool, depth: bool) -> None:
    assert wants_composite(image, req) is composite_
    assert keeps_depth(image, req) is depth


def test_colours_default_by_position() -> None:
    assert colours((Channel(), Channel("", (1, 2, 3)), Channel())) == ((255, 0, 0), (1, 2, 3), (0, 0, 255))
    assert colours((Channel(),)) == ((255, 255, 255),)


class Counting:
    """A SourceImage that counts its reads."""

    def __init__(self, data: np.ndarray, channels: tuple[Channel, ...]) -> None:
        self.data = data
        self.reads = 0
        h, w = data.shape[1:]
        self.meta = replace(meta(channels), width=w, height=h, levels=(Level(w, h, 256, 256),))

    def read(self, level: int, box: tuple[int, int, int, int], page: int = 0) -> Any:
        self.reads += 1
        x, y, w, h = box
        return as_vips(self.data[:, y:y + h, x:x + w].copy())


def test_windows_from_metadata_or_data_once_per_image() -> None:
    data = channel_data(251, 176, 3, seed=9)
    image = Counting(data, (Channel("", None, (1.0, 2.0)), Channel(), Channel()))
    derived: ByteLRU[Any, Any] = ByteLRU(1 << 20)
    first = channel_windows(image, 0, derived)  # type: ignore[arg-type]
    again = channel_windows(image, 0, derived)  # type: ignore[arg-type]
    assert first == again and image.reads == 1
    assert first[0] == (1.0, 2.0)
    assert np.allclose(first[1:], percentile_windows(data)[1:], rtol=1e-12)
    known = Counting(data, (Channel("", None, (1.0, 2.0)),) * 3)
    assert channel_windows(known, 0, derived) == ((1.0, 2.0),) * 3 and known.reads == 0  # type: ignore[arg-type]
