"""Encode a pyvips image into an output format's bytes (synchronous)."""

from __future__ import annotations

import functools
import logging
from typing import Any

import pyvips

from ..errors import UnsupportedFormat
from ..models import OutputFormat
from . import jpeg

log = logging.getLogger("tileserver.imaging.encode")

DEPTH_FORMATS = (OutputFormat.PNG, OutputFormat.TIFF)  # formats that keep 16-bit samples (`keep_depth`)
SAVERS = {
    OutputFormat.JPEG: "jpegsave_buffer", OutputFormat.PNG: "pngsave_buffer",
    OutputFormat.WEBP: "webpsave_buffer", OutputFormat.AVIF: "heifsave_buffer",
    OutputFormat.TIFF: "tiffsave_buffer", OutputFormat.GIF: "gifsave_buffer",
}


@functools.cache
def available_formats() -> tuple[OutputFormat, ...]:
    """Formats the installed libvips can really write (each checked with a tiny round trip)."""
    probe = pyvips.Image.black(8, 8, bands=3).copy(interpretation="srgb").cast("uchar")
    ok = []
    for fmt in OutputFormat:
        try:
            data = _save(probe, fmt, None, "deflate", False)
            pyvips.Image.new_from_buffer(data, "").width  # noqa: B018 - decode check
            ok.append(fmt)
        except pyvips.Error as exc:
            log.info("output format %s unavailable: %s", fmt.suffix, exc)
    return tuple(ok)


def _save(img: Any, fmt: OutputFormat, quality: int | None, tiff_compression: str, keep_icc: bool) -> bytes:
    keep = pyvips.enums.ForeignKeep.ICC if keep_icc else pyvips.enums.ForeignKeep.NONE
    if fmt is OutputFormat.JPEG:
        return _jpeg(img, jpeg.clamp_quality(quality), keep_icc)
    if fmt is OutputFormat.PNG:
        level = 1 if quality is None else min(max(quality, 0), 9)  # zlib level 0-9, as iipsrv
        return bytes(img.pngsave_buffer(compression=level, keep=keep))
    if fmt is OutputFormat.WEBP:
        q = 50 if quality is None else quality
        return bytes(img.webpsave_buffer(Q=max(q, 0), lossless=q < 0, keep=keep))
    if fmt is OutputFormat.AVIF:
        q = 50 if quality is None else quality
        return bytes(img.heifsave_buffer(Q=max(q, 1), lossless=q < 0, compression="av1", effort=2,
                                         keep=keep))
    if fmt is OutputFormat.TIFF:
        opts: dict[str, Any] = {"compression": tiff_compression, "keep": keep}
        if quality is not None and tiff_compression in ("jpeg", "webp"):
            opts["Q"] = quality
        return bytes(img.tiffsave_buffer(**opts))
    return bytes(img.gifsave_buffer(keep=keep))


def _jpeg(img: Any, quality: int, keep_icc: bool) -> bytes:
    """Small images through libjpeg-turbo directly (see jpeg.py), large ones streamed by libvips."""
    if img.width * img.height > jpeg.DIRECT_PIXELS or img.format != "uchar" or img.bands not in (1, 3):
        keep = pyvips.enums.ForeignKeep.ICC if keep_icc else pyvips.enums.ForeignKeep.NONE
        return bytes(img.jpegsave_buffer(Q=quality, keep=keep))
    icc = img.get("icc-profile-data") if keep_icc and "icc-profile-data" in img.get_fields() else None
    pixels = jpeg.from_buffer(img.write_to_memory(), img.width, img.height, img.bands)
    return jpeg.encode(pixels, quality, bytes(icc) if icc else None)


def prepare(img: Any, fmt: OutputFormat, background: tuple[int, int, int], keep_depth: bool = False) -> Any:
    """Make the band layout legal for the format: JPEG has no alpha and 1 or 3 bands; PNG, WebP, AVIF
    and GIF have at most 4 (more are cut to the first 3, as iipsrv 1.3's flatten). Samples become 8-bit,
    but for `keep_depth` 16-bit PNG and TIFF."""
    if img.format != "uchar" and not (keep_depth and img.format == "ushort" and fmt in DEPTH_FORMATS):
        img = img.cast("uchar")
    if img.bands > 4 and fmt in (OutputFormat.PNG, OutputFormat.WEBP, OutputFormat.AVIF, OutputFormat.GIF):
        img = img.extract_band(0, n=3).copy(interpretation="srgb")
    if fmt is OutputFormat.JPEG:
        if img.hasalpha():
            bg = [float(background[0])] if img.bands == 2 else [float(c) for c in background]
            img = img.flatten(background=bg)
        if img.bands > 3:
            img = img.extract_band(0, n=3)
        elif img.bands == 2:
            img = img.extract_band(0)
    return img


def encode(
    img: Any, fmt: OutputFormat, quality: int | None, *, tiff_compression: str = "deflate",
    keep_icc: bool = True, background: tuple[int, int, int] = (255, 255, 255), keep_depth: bool = False,
) -> bytes:
    if fmt not in available_formats():
        raise UnsupportedFormat(f"output format {fmt.suffix} is not available on this server")
    img = prepare(img, fmt, background, keep_depth)
    if not keep_icc and "icc-profile-data" in img.get_fields():
        img = img.copy()
        img.remove("icc-profile-data")
    return _save(img, fmt, quality, tiff_compression, keep_icc)
