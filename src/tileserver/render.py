"""The synchronous render pipeline, run in the app's thread pool:
read (the right level, never more pixels than needed) -> resize -> processing -> quality ->
mirror/rotate -> encode."""

from __future__ import annotations

from typing import Any

import pyvips

from .encode import encode
from .levels import choose_level, region_at_level, tile_box
from .models import ImageMeta, OutputFormat, Quality, Rendered, TileRequest
from .passthrough import stored_tile_of
from .process import apply_quality, orient, to_8bit
from .reader import PyramidReader, vips_error
from .settings import Settings


def read_pixels(reader: PyramidReader, path: str, meta: ImageMeta, req: TileRequest, kernel: str) -> Any:
    if req.tile is not None:
        t = req.tile
        box = tile_box(meta.levels[t.level], t.col, t.row)
        return reader.read(path, meta, t.level, box)
    assert req.region is not None and req.size is not None
    index = choose_level(meta, req.region, req.size)
    box = region_at_level(meta.levels[index], req.region)
    return resize_exact(reader.read(path, meta, index, box), req.size, kernel)


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
    }.get(fmt)


def passthrough(reader: PyramidReader, path: str, meta: ImageMeta, req: TileRequest, settings: Settings
                ) -> Rendered | None:
    """The stored tile's own bytes when the request is exactly a stored JPEG/WebP tile (no ICC to
    embed, no processing, default quality); None to render normally."""
    if not settings.passthrough or meta.loader != "tiffload" or (settings.keep_icc and meta.has_icc):
        return None
    tile = stored_tile_of(meta, req)
    if tile is None:
        return None
    data = reader.stored_tile(path, meta, tile, req.fmt)
    if data is None:
        return None
    lv = meta.levels[tile[0]]
    return Rendered(data, req.fmt.media_type, lv.tile_width, lv.tile_height)


def render(reader: PyramidReader, path: str, meta: ImageMeta, req: TileRequest, settings: Settings) -> Rendered:
    try:
        return passthrough(reader, path, meta, req, settings) or _render(reader, path, meta, req, settings)
    except pyvips.Error as exc:
        raise vips_error(exc, meta.ident) from exc


def _render(reader: PyramidReader, path: str, meta: ImageMeta, req: TileRequest, settings: Settings) -> Rendered:
    img = read_pixels(reader, path, meta, req, settings.interpolation)
    img = to_8bit(img, meta, req.processing)
    img = apply_quality(img, req.quality)
    img = orient(img, req.mirror, req.rotation, settings.background, transparent=req.fmt.has_alpha)
    recoloured = req.quality in (Quality.GRAY, Quality.BITONAL) or bool(req.processing.colormap or
                                                                     req.processing.twist)
    q = req.encoder_quality if req.encoder_quality is not None else default_quality(req.fmt, settings)
    body = encode(img, req.fmt, q, tiff_compression=req.tiff_compression or settings.tiff_compression,
                  keep_icc=settings.keep_icc and not recoloured, background=settings.background)
    return Rendered(body, req.fmt.media_type, img.width, img.height)
