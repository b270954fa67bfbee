"""The rendering of multi-channel images (`ImageMeta.channels`: OME-TIFF, `;c=` views): the additive
composite of the channels in their colours, and a single channel at its own depth.

Composite, per output pixel and colour band k (red, green, blue):
    out_k = floor(min(255, sum_c clip((x_c - low_c) / (high_c - low_c), 0, 1) * colour_c,k + 0.5))
with x_c the sample of channel c, (low_c, high_c) its window and colour_c its RGB colour (0-255), in
double precision for large outputs and in single precision for tiles (where a pixel may differ by 1).
A channel without a colour gets the default sequence by its number (`sources/channels.py`: red, green,
blue, cyan, magenta, yellow, grey; one channel alone is grey, and then the output has one band). A
channel without a window gets one from the data: the 0.1 and 99.9 percentiles of its samples in the
image's smallest level, computed once per image and kept in the core's `derived` cache.

When does an image render this way? When it has channels and the request asks for no processing of
the raw samples: IIP's MINMAX, CTW, CNT (a factor, or st), GAM, INV, CMP, CNV and SHD work on the
source's bands as iipsrv 1.3 does (`process.float_processing`), so those requests skip the composite.
Greyscale and binary output and histogram equalisation (CNT=eq) are applied to the composite. A single
channel without a colour and a window (`x.ome.tif;c=2`) asked for as PNG or TIFF (default or gray
quality, no processing) keeps its 16 bits.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import pyvips

from ..cache.memory import ByteLRU
from ..models import Channel, ImageMeta, Quality, TileRequest
from ..sources.base import SourceImage
from ..sources.channels import GREY, RGB, default_colour
from ..sources.pyramid import NUMPY_TYPES
from .encode import DEPTH_FORMATS
from .process import Histogram, float_processing, histogram

PERCENTILES = (0.1, 99.9)
WINDOW_BYTES = 64  # per channel, in the derived cache
BLOCK_PIXELS = 1 << 20  # composites of at most this many pixels are computed as arrays (`composite_block`)


def wants_composite(meta: ImageMeta, req: TileRequest) -> bool:
    """Whether `req` renders the channel composite of `meta` (see the module docstring)."""
    return bool(meta.channels) and not float_processing(req.processing)


def keeps_depth(meta: ImageMeta, req: TileRequest) -> bool:
    """A single 16-bit channel without a colour or window, as PNG or TIFF, unprocessed: its own samples."""
    return (len(meta.channels) == 1 and meta.bands == 1 and meta.channels[0].color is None
            and meta.channels[0].window is None and meta.bits == 16 and meta.sample_format == "uint"
            and req.fmt in DEPTH_FORMATS and req.quality in (Quality.DEFAULT, Quality.GRAY)
            and req.processing.is_identity)


def colours(channels: tuple[Channel, ...]) -> tuple[RGB, ...]:
    return tuple(ch.color or default_colour(i, len(channels)) for i, ch in enumerate(channels))


def composite(img: Any, colours: tuple[RGB, ...], windows: tuple[tuple[float, float], ...]) -> Any:
    """The additive composite of `img`'s bands (one per colour and window) as 8-bit sRGB, or one grey
    band when there is one grey channel: a tile-sized image in one block (`composite_block`), a larger
    one streamed through libvips (`composite_stream`); the same arithmetic, in double precision."""
    if img.width * img.height <= BLOCK_PIXELS:
        return composite_block(img, colours, windows)
    return composite_stream(img, colours, windows)


def _grey(colours: tuple[RGB, ...]) -> bool:
    return len(colours) == 1 and colours[0] == GREY


def composite_block(img: Any, colours: tuple[RGB, ...], windows: tuple[tuple[float, float], ...]) -> Any:
    """The composite computed in memory with numpy, channel by channel (a whole-array operation each, no
    loop over pixels): for a 256-px tile of 4 channels about a quarter of the libvips pipeline's cost,
    whose colour matrix (recomb) alone takes longer than this whole function."""
    w, h, n = img.width, img.height, img.bands
    data = pyvips.Region.new(img).fetch(0, 0, w, h)
    samples = np.frombuffer(data, NUMPY_TYPES[img.format]).reshape(h, w, n)
    return composite_planes([samples[..., c] for c in range(n)], colours, windows)


_local = threading.local()


def _scratch(bands: int, h: int, w: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """This thread's work arrays for a composite of that size (the last size used is kept: 1.3 MB for a
    256-px tile of three bands), so that tile after tile reuses memory already mapped."""
    found: tuple[tuple[int, int, int], tuple[np.ndarray, np.ndarray, np.ndarray]] | None = getattr(
        _local, "scratch", None)
    if found is not None and found[0] == (bands, h, w):
        return found[1]
    arrays = np.empty((bands, h, w), np.float32), np.empty((h, w), np.float32), np.empty((h, w), np.float32)
    _local.scratch = ((bands, h, w), arrays)
    return arrays


def composite_planes(planes: Sequence[np.ndarray], colours: tuple[RGB, ...],
                     windows: tuple[tuple[float, float], ...]) -> Any:
    """`composite_block` of channels given as (height, width) arrays, one per channel.

    In single precision, half the memory traffic of double (a 4-channel 256-px tile: 0.45 ms instead of
    0.9): each channel is mapped straight to 0-255 (`x * 255 / (high - low) - low * 255 / (high - low)`,
    clipped), then scaled by colour / 255, which a full colour (255) skips. A pixel may then differ
    by 1 from the double-precision formula, where its sum lies within float32's rounding of a half."""
    h, w = planes[0].shape
    grey = _grey(colours)
    out, v, term = _scratch(1 if grey else 3, h, w)
    out.fill(0.5)  # the rounding half first: one pass fewer
    for c, (low, high) in enumerate(windows):
        scale = 255.0 / (high - low)
        np.multiply(planes[c], np.float32(scale), out=v, dtype=np.float32)
        np.add(v, np.float32(-low * scale), out=v)
        np.clip(v, 0.0, 255.0, out=v)
        last = 0
        for k, weight in enumerate((255,) if grey else colours[c]):
            if weight == 255:
                out[k] += v
            elif weight:  # a zero weight adds exactly nothing
                if weight != last:  # the same weight gives the same term
                    np.multiply(v, np.float32(weight / 255.0), out=term)
                    last = weight
                out[k] += term
    np.minimum(out, 255.0, out=out)  # every term is at least 0
    pixels = np.empty((h, w, out.shape[0]), np.uint8)
    for k in range(out.shape[0]):  # truncating casts, straight into the interleaved bands
        np.copyto(pixels[..., k], out[k], casting="unsafe")
    block = pyvips.Image.new_from_memory(pixels.data, w, h, pixels.shape[2], "uchar")
    return block.copy(interpretation="b-w" if grey else "srgb")


def composite_stream(img: Any, colours: tuple[RGB, ...], windows: tuple[tuple[float, float], ...]) -> Any:
    """The composite as a lazy libvips pipeline (for outputs too large to hold as arrays): one linear
    map, one clip, one colour matrix, in double precision."""
    lows = [w[0] for w in windows]
    scales = [1.0 / (w[1] - w[0]) for w in windows]
    x = img.cast("double").linear(scales, [-lo * s for lo, s in zip(lows, scales, strict=True)])
    x = x.clamp(min=0.0, max=1.0)
    if _grey(colours):
        out = x.linear(255.0, 0.5)
    else:
        matrix = [[float(c[k]) for c in colours] for k in range(3)]
        out = x.recomb(pyvips.Image.new_from_array(matrix)).linear(1.0, 0.5)
    # cast truncates and clips to 0..255
    return out.cast("uchar").copy(interpretation="b-w" if _grey(colours) else "srgb")


def data_windows(img: Any) -> tuple[tuple[float, float], ...]:
    """Each band's (0.1 %, 99.9 %) percentiles (`PERCENTILES`) of `img`, a small level; a flat band gets a
    window one sample value wide above its value."""
    arr = np.asarray(img.numpy(), dtype=np.float64).reshape(img.height * img.width, img.bands)
    out = []
    for b in range(img.bands):
        low, high = (float(v) for v in np.percentile(arr[:, b], PERCENTILES))
        out.append((low, high) if high > low else (low, low + 1.0))
    return tuple(out)


def channel_windows(image: SourceImage, page: int, derived: ByteLRU[Any, Any]) -> tuple[tuple[float, float], ...]:
    """Every channel's window: its own when the metadata (or the `c=` spec) gives one, else from the data
    of the smallest level of `page`, computed once per image and kept in `derived`."""
    meta = image.meta
    own = tuple(ch.window for ch in meta.channels)
    if all(w is not None for w in own):
        return tuple(w for w in own if w is not None)
    key = ("windows", meta.ident, meta.mtime, meta.file_size, page)
    found: tuple[tuple[float, float], ...] | None = derived.get(key)
    if found is None:
        smallest = len(meta.levels) - 1
        lv = meta.levels[smallest]
        found = data_windows(image.read(smallest, (0, 0, lv.width, lv.height), page))
        derived.put(key, found, WINDOW_BYTES * meta.bands)
    return tuple(w if w is not None else d for w, d in zip(own, found, strict=True))


def render_composite(image: SourceImage, img: Any, page: int, derived: ByteLRU[Any, Any]) -> Any:
    """`img` (pixels of `image`, any box and size) as its channel composite."""
    return composite(img, colours(image.meta.channels), channel_windows(image, page, derived))


def composite_read(image: SourceImage, level: int, box: tuple[int, int, int, int], page: int,
                   derived: ByteLRU[Any, Any]) -> Any:
    """The composite of `box` of `level` (unscaled) from the source's own arrays, when it gives them
    (`read_array`: OME-TIFF tiles decoded without libvips), else None."""
    read_array = getattr(image, "read_array", None)
    planes = read_array(level, box, page) if read_array is not None else None
    if planes is None:
        return None
    return composite_planes(planes, colours(image.meta.channels), channel_windows(image, page, derived))


def composite_meta(meta: ImageMeta, bands: int) -> ImageMeta:
    """What the composite's pixels are, for the processing that follows it: 8-bit grey or sRGB."""
    return replace(meta, bands=bands, bits=8, sample_format="uint", colorspace="grey" if bands == 1 else "srgb",
                   has_alpha=False, has_icc=False, min_values=(0.0,) * bands, max_values=(255.0,) * bands,
                   channels=())


def composite_histogram(image: SourceImage, page: int, derived: ByteLRU[Any, Any]) -> Histogram:
    """The histogram of the composite of the smallest level (for binary output and equalisation of a
    composite), kept in `derived` as `render.image_histogram` keeps the raw one."""
    meta = image.meta
    key = ("composite-histogram", meta.ident, meta.mtime, meta.file_size, page)
    found: Histogram | None = derived.get(key)
    if found is None:
        smallest = len(meta.levels) - 1
        lv = meta.levels[smallest]
        thumb = render_composite(image, image.read(smallest, (0, 0, lv.width, lv.height), page), page, derived)
        found = histogram(thumb, composite_meta(meta, thumb.bands))
        derived.put(key, found, 2048)
    return found
