"""The synchronous render pipeline, run in the app's thread pool. Cheapest first: a stored tile's
own bytes (passthrough), then stored JPEG tiles cut and re-encoded without libvips (recode), then
the libvips pipeline: read (the right level, never more pixels than needed) -> resize ->
processing -> quality -> mirror/rotate -> encode. A request with overlays (`TileRequest.overlays`: a
watermark, text, redactions; imaging/overlay.py) always takes the libvips pipeline: its redactions are
painted on the pixels as read and again after processing, its watermark and text laid over the final
output; a request without keeps the cheap paths."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pyvips

from .. import metrics
from ..cache.memory import ByteLRU
from ..errors import ImageTooLarge
from ..levels import source_box, within_limits
from ..models import OutputFormat, Quality, Rendered, Samples, TileRequest
from ..settings import Settings
from ..sources import vfs
from ..sources.base import SourceImage
from ..sources.passthrough import Located, edge_tile_of, scaled_box, stored_tile_of, unscaled_box
from ..sources.pyramid import check_page, vips_error
from . import cancel, jpeg, overlay, turbojpeg
from .channels import (
    composite_histogram,
    composite_meta,
    composite_read,
    keeps_depth,
    render_composite,
    wants_composite,
)
from .encode import encode
from .process import Histogram, histogram, needs_histogram, orient, process

# Stored edge tiles up to this many pixels are cropped on the event loop when read there (`edge_crop`); larger ones
# in the pool: a crop reads the whole tile's coefficients (~1 ms for 256 x 256 at Q90 here).
NOW_CROP_PIXELS = 256 * 256
RECODE_TILES = 4  # stored tiles one recoded response may be cut from (a DeepZoom overlap tile spans 4)
# Per-image histograms (contrast stretch, binary threshold, equalisation), by file, mtime, size and
# stack page: 256 counts each, so a few thousand images fit in a few MB.
HISTOGRAM_BYTES = 2048
# The decode (with the processing) and the encode are timed apart when the encoder takes the pixels from memory
# anyway (small JPEG outputs, JPEG 2000: encode's `marks`). Other libvips savers decode and encode in one lazy
# pass; with `split_timing`, outputs up to this many pixels are then made in memory first, at the cost of a
# second pass. Larger outputs always stay streamed, in bounded memory.
TIMED_PIXELS = 4 << 20
ONE_PASS = 'desc="decode, process and encode in one libvips pass"'


def read_pixels(image: SourceImage, req: TileRequest, level: int, box: tuple[int, int, int, int], kernel: str
                ) -> Any:
    """`box` of `level` (`levels.source_box` of `req`), its redactions painted, resized to the asked size."""
    img = image.read(level, box, req.page, layers=req.layers)
    if req.overlays:
        img = overlay.redact_source(img, image.meta, level, box, req.overlays.redactions)
    return img if req.size is None else resize_exact(img, req.size, kernel)


def resize_exact(img: Any, size: tuple[int, int], kernel: str) -> Any:
    w, h = size
    if (img.width, img.height) == (w, h):
        return img
    out = img.resize(w / img.width, vscale=h / img.height, kernel=kernel)
    if (out.width, out.height) != (w, h):
        out = out.embed(0, 0, w, h, extend="copy")
    return out


def default_quality(fmt: OutputFormat, settings: Settings) -> int | None:
    return {
        OutputFormat.JPEG: settings.jpeg_quality, OutputFormat.PNG: settings.png_compression,
        OutputFormat.WEBP: settings.webp_quality, OutputFormat.AVIF: settings.avif_quality,
        OutputFormat.JP2: settings.jpeg_quality,
    }.get(fmt)


def passthrough(image: SourceImage, req: TileRequest, settings: Settings, now: bool = False
                ) -> tuple[Rendered, Located | None] | None:
    """The stored tile's own bytes when the request is exactly a stored JPEG/WebP tile at its stored
    quality (a JPEG tile gets its ICC profile spliced in when profiles are kept), and where they are when they
    can be read again as they are (a local file, no profile spliced in); an edge tile's crop of them (`edge_crop`);
    else None. `now`: read without waiting,
    or `vfs.WouldBlock` (`SourceImage.stored_tile`)."""
    meta = image.meta
    if not settings.passthrough:
        return None
    tile = stored_tile_of(meta, req)
    if tile is None:
        return edge_crop(image, req, settings, now)
    stored = image.stored_tile(*tile, req.fmt, req.page, now)
    if stored is None:
        return None
    body, at = stored.data, stored.at
    if settings.keep_icc and stored.icc:
        if req.fmt is not OutputFormat.JPEG:
            return None  # a WebP profile needs an extended (VP8X) container: let libvips write it
        body, at = jpeg.with_icc(body, stored.icc), None
    lv = meta.levels[tile[0]]
    return Rendered(body, req.fmt.media_type, lv.tile_width, lv.tile_height, source="passthrough"), at


def edge_crop(image: SourceImage, req: TileRequest, settings: Settings, now: bool = False
              ) -> tuple[Rendered, None] | None:
    """A stored JPEG edge tile's part inside its level, cropped from the stored tile losslessly (TurboJPEG:
    imaging/turbojpeg.py), at the stored quality as a whole tile is; None when the request is not one, TurboJPEG
    is missing, or it refuses the stream (the tile is then cut from decoded pixels: `recode`). Stored tiles
    larger than `jpeg.DIRECT_PIXELS` are left to libvips: their coefficients would be read whole. `now` (on the
    event loop): only stored tiles up to `NOW_CROP_PIXELS` are cropped here (about 1 ms for a 256-px Q90 tile),
    larger ones raise `vfs.WouldBlock` and are cropped in the pool."""
    edge = edge_tile_of(image.meta, req)
    lib = turbojpeg.library() if edge is not None else None
    if edge is None or lib is None:
        return None
    level, col, row, width, height = edge
    stored = image.stored_tile(level, col, row, req.fmt, req.page, now)
    if stored is None:
        return None
    try:
        full = lib.size(stored.data)
        if full[0] * full[1] > jpeg.DIRECT_PIXELS:
            return None
        if now and full[0] * full[1] > NOW_CROP_PIXELS:
            raise vfs.WouldBlock
        body = lib.crop(stored.data, width, height, full)  # CropError for a stored tile smaller than the crop
    except turbojpeg.CropError:
        return None
    if settings.keep_icc and stored.icc:
        body = jpeg.with_icc(body, stored.icc)
    return Rendered(body, req.fmt.media_type, width, height, source="crop"), None


def recode(image: SourceImage, req: TileRequest, settings: Settings, now: bool = False) -> Rendered | None:
    """A JPEG read of a JPEG-tiled level cut from decoded stored tiles and encoded with libjpeg-turbo,
    bypassing libvips: unscaled reads (edge tiles, another quality, DeepZoom overlaps), and reads shrunk
    by exactly 2, 4 or 8 (`scaled_box`: a viewer's tiles between stored levels, such as the 1/2 level
    of a slide whose levels are 1/4 apart), decoded at that scale by libjpeg-turbo's scaled IDCT. None
    when the request or the file does not allow it. `now` (on the event loop): only a cut from one stored tile
    of up to `NOW_CROP_PIXELS`, read without waiting (about 0.7 ms for a 256-px tile, as an edge crop), else
    `vfs.WouldBlock`: the pool recodes it."""
    meta = image.meta
    if req.fmt is not OutputFormat.JPEG or meta.compression != "jpeg":
        return None
    start = time.perf_counter()
    found = unscaled_box(meta, req)
    if found is not None:
        cut = _cut_stored(image, *found, req.page, now=now)
    elif now:
        raise vfs.WouldBlock
    else:
        scaled = scaled_box(meta, req)
        cut = _cut_stored(image, scaled[0], scaled[1], req.page, scaled[2]) if scaled is not None else None
    if cut is None:
        return None
    pixels, icc = cut
    decoded = time.perf_counter()
    q = req.encoder_quality if req.encoder_quality is not None else settings.jpeg_quality
    body = jpeg.encode(pixels, q, icc if settings.keep_icc else None)
    done = time.perf_counter()
    decode, encode = decoded - start, done - decoded
    metrics.rendered("recode", _format_name(meta.loader), req.fmt.suffix, done - start, decode=decode, encode=encode)
    return Rendered(body, req.fmt.media_type, pixels.shape[1], pixels.shape[0], source="recode",
                    timing=f"recode, decode;dur={decode * 1e3:.2f}, encode;dur={encode * 1e3:.2f}")


def _cut_stored(image: SourceImage, level: int, box: tuple[int, int, int, int], page: int, scale: int = 1,
                now: bool = False) -> tuple[Any, bytes | None] | None:
    """(pixels, ICC profile) of `box` at `level`, decoded from the stored JPEG tiles it spans (at most
    `RECODE_TILES`, or 4 times as many when decoded at 1/`scale`, `scale` dividing the box and the tile
    size); None when they are more, or not all stored as JPEG, or not decodable here."""
    x, y, w, h = box
    meta = image.meta
    lv = meta.levels[level]
    tw, th = lv.tile_width, lv.tile_height
    cols, rows = range(x // tw, (x + w - 1) // tw + 1), range(y // th, (y + h - 1) // th + 1)
    limit = RECODE_TILES if scale == 1 else 4 * RECODE_TILES
    if (len(cols) * len(rows) > limit or meta.bands not in (1, 3) or w * h > jpeg.DIRECT_PIXELS * scale * scale
            or tw % scale or th % scale):
        return None
    if now and (len(cols) * len(rows) > 1 or tw * th > NOW_CROP_PIXELS):
        raise vfs.WouldBlock
    pieces, icc = [], None
    for row in rows:
        for col in cols:
            stored = image.stored_tile(level, col, row, OutputFormat.JPEG, page, now)
            if stored is None:
                return None
            try:
                px = jpeg.decode(stored.data, meta.bands, scale)
            except ValueError:
                return None  # libvips then decodes it, or reports why it cannot
            if px.shape != (th // scale, tw // scale, meta.bands):
                return None
            x0, y0 = max(x, col * tw), max(y, row * th)
            x1, y1 = min(x + w, (col + 1) * tw), min(y + h, (row + 1) * th)
            part = px[(y0 - row * th) // scale : (y1 - row * th) // scale,
                      (x0 - col * tw) // scale : (x1 - col * tw) // scale]
            pieces.append(((y0 - y) // scale, (x0 - x) // scale, part))
            icc = stored.icc
    if len(pieces) == 1:
        return pieces[0][2], icc  # one stored tile: a view of its pixels, cropped at the level's edge
    out = np.empty((h // scale, w // scale, meta.bands), np.uint8)
    for top, left, part in pieces:
        out[top : top + part.shape[0], left : left + part.shape[1]] = part
    return out, icc


def render(image: SourceImage, req: TileRequest, settings: Settings, derived: ByteLRU[Any, Any]) -> Rendered:
    """`req` answered from `image`; `derived` keeps what is computed once per image (histograms)."""
    check_page(image.meta, req.page)
    try:
        plain = not req.overlays  # overlays need the decoded pixels: never the stored bytes
        stored = stored_now(image, req, settings, False) if plain else None
        if stored is not None:
            return stored[0]
        return (recode(image, req, settings) if plain else None) or _render(image, req, settings, derived)
    except pyvips.Error as exc:
        cancel.check()  # killed on purpose (imaging/cancel.py): not the file's fault
        raise vips_error(exc, image.meta.ident) from exc


def stored_now(image: SourceImage, req: TileRequest, settings: Settings, now: bool = True, recode_now: bool = True
               ) -> tuple[Rendered, Located | None] | None:
    """A stored tile's own bytes for `req` (`passthrough`), with their metrics and timing, and where they are when
    they can be read again as they are (`Located`); None when the request is not one. `now` (the core, on the event
    loop, before it goes to the pool): read without waiting, else `vfs.WouldBlock`; no libvips, no blocking call. A
    request with overlays is never a stored tile. `recode_now`: a single stored tile may also be re-encoded here
    (`recode(now=True)`); False with a shared cache, which answers a re-encode made by another replica first."""
    if req.overlays:
        return None
    start = time.perf_counter()
    check_page(image.meta, req.page)
    found = passthrough(image, req, settings, now)
    if found is None:
        made = recode(image, req, settings, now=True) if now and recode_now else None  # another quality, an edge
        return None if made is None else (made, None)
    stored, at = found
    took = time.perf_counter() - start
    metrics.rendered(stored.source, _format_name(image.meta.loader), req.fmt.suffix, took)
    return Rendered(stored.body, stored.media_type, stored.width, stored.height, source=stored.source,
                    timing=f"{stored.source};dur={took * 1e3:.2f}"), at


def _format_name(loader: str) -> str:
    """A source format's metric label: its reader's name (`tiffload` -> `tiff`, `openslide`, `ome-tiff`)."""
    return loader.removesuffix("load") or "unknown"


def _render(image: SourceImage, req: TileRequest, settings: Settings, derived: ByteLRU[Any, Any]) -> Rendered:
    start = time.perf_counter()
    meta = image.meta
    level, box = source_box(meta, req)
    overlays = req.overlays
    deep = keeps_depth(meta, req) and not overlays  # an overlaid response is 8-bit
    composite = wants_composite(meta, req) and not deep
    unscaled = req.size is None or req.size == box[2:]
    composited = composite_read(image, level, box, req.page, derived) if composite and unscaled else None
    if composited is not None and overlays:
        composited = overlay.redact_source(composited, meta, level, box, overlays.redactions)
    img = composited if composited is not None else read_pixels(image, req, level, box, settings.interpolation)
    cancel.check()
    if deep:
        return _encode(img.copy(interpretation="grey16"), req, settings, False, start, meta.loader, depth=True)
    wanted = needs_histogram(req.processing, req.quality)
    if composite:  # a multi-channel image in its colours (imaging/channels.py)
        if composited is None:
            img = render_composite(image, img, req.page, derived)
        hist = composite_histogram(image, req.page, derived) if wanted else None
        meta = composite_meta(meta, img.bands)
    else:
        hist = image_histogram(image, req.page, derived) if wanted else None
    img = process(img, meta, req.processing, req.quality, hist)
    block = 0
    if overlays:
        img = overlay.redact_output(img, image.meta, level, box, overlays.redactions)
        block = 0 if req.tile is not None else 2 * image.meta.tile_size[0]  # iipsrv: CVT's blocks of 2 tiles
    p = req.processing  # the source profile no longer describes these pixels (iipsrv's View::maxICC)
    recoloured = req.quality in (Quality.GRAY, Quality.BITONAL) or bool(p.colormap or p.twist or p.shade)
    return _encode(img, req, settings, settings.keep_icc and not recoloured, start, image.meta.loader, block=block)


def _encode(img: Any, req: TileRequest, settings: Settings, keep_icc: bool, start: float, loader: str,
            depth: bool = False, block: int = 0) -> Rendered:
    """Mirror, rotate, lay the watermark and text over (`block`: overlay.decorate's) and encode; `depth`: keep
    16-bit samples (PNG and TIFF, deflate for lossy codecs). `start`: when the render began, for its timing;
    `loader`: the source's reader, for the metrics."""
    img = cancel.watch(orient(img, req.mirror, req.rotation, settings.rotation_fill, transparent=req.fmt.has_alpha))
    if req.overlays:  # over the final output, as iipsrv; a blend in numpy computes the pixels here (killable)
        img = cancel.watch(overlay.decorate(img, req, req.overlays, block))
    if req.rotation % 90 and not within_limits((img.width, img.height), settings.max_size, settings.max_area):
        # the protocols fit or refuse rotated sizes (levels.fit_rotated); nothing larger is computed
        raise ImageTooLarge(f"the rotated image would be {img.width}x{img.height}, beyond this server's limits")
    marks: list[float] = []
    if settings.split_timing and img.width * img.height <= TIMED_PIXELS and not direct(img, req.fmt):
        img = img.copy_memory()  # decoded and processed here, so the encode below is timed alone
        marks.append(time.perf_counter())
    q = req.encoder_quality if req.encoder_quality is not None else default_quality(req.fmt, settings)
    codec = req.tiff_compression or settings.tiff_compression
    if depth and codec in ("jpeg", "webp"):
        codec = "deflate"  # 8-bit codecs: the samples are kept losslessly instead
    body = encode(img, req.fmt, q, tiff_compression=codec, keep_icc=keep_icc, background=settings.background,
                  keep_depth=depth, marks=marks)
    done = time.perf_counter()
    if marks:  # the pixels were in memory at marks[0]: decode and encode timed apart
        decode, enc = marks[0] - start, done - marks[0]
        metrics.rendered("decode", _format_name(loader), req.fmt.suffix, done - start, decode=decode, encode=enc)
        timing = f"decode;dur={decode * 1e3:.2f}, encode;dur={enc * 1e3:.2f}"
    else:
        metrics.rendered("decode", _format_name(loader), req.fmt.suffix, done - start)
        timing = f"decode;dur={(done - start) * 1e3:.2f};{ONE_PASS}"
    return Rendered(body, req.fmt.media_type, img.width, img.height, source="decode", timing=timing)


def direct(img: Any, fmt: OutputFormat) -> bool:
    """Whether the encoder takes these pixels from memory itself (encode's `marks`): JPEG 2000, and JPEG up to
    libjpeg-turbo's direct size (a guess before `prepare`, which may drop an alpha band; a wrong guess only
    costs one copy, or leaves the timing in one figure)."""
    return fmt is OutputFormat.JP2 or (fmt is OutputFormat.JPEG and img.width * img.height <= jpeg.DIRECT_PIXELS)


def image_histogram(image: SourceImage, page: int, derived: ByteLRU[Any, Any]) -> Histogram:
    """The image's histogram from its smallest level (as iipsrv 1.3: once per image, not per tile),
    kept in `derived` until the file changes."""
    meta = image.meta
    key = ("histogram", meta.ident, meta.mtime, meta.file_size, page, meta.provisional)
    found: Histogram | None = derived.get(key)
    if found is None:
        smallest = len(meta.levels) - 1
        lv = meta.levels[smallest]
        found = histogram(image.read(smallest, (0, 0, lv.width, lv.height), page), meta)
        derived.put(key, found, HISTOGRAM_BYTES)
    return found


def samples(image: SourceImage, level: int, box: tuple[int, int, int, int], page: int = 0) -> Samples:
    """The source's own sample values in `box` of `level` (of stack page `page`), every band, at full
    depth (IIP PFL and SPECTRA)."""
    check_page(image.meta, page)
    try:
        img = image.read(level, box, page)
        arr = img.numpy()
    except pyvips.Error as exc:
        raise vips_error(exc, image.meta.ident) from exc
    floating = arr.dtype.kind == "f"
    return Samples(img.width, img.height, img.bands, arr.dtype.itemsize * 8, floating,
                   tuple(arr.reshape(-1).tolist()))
