"""Encode a pyvips image into an output format's bytes (synchronous). JPEG 2000 is written by
OpenJPEG through Pillow (in memory; the project's libvips has no JPEG 2000 saver)."""

from __future__ import annotations

import functools
import io
import logging
import time
from typing import Any

import numpy as np
import pyvips

from ..errors import UnsupportedFormat
from ..models import OutputFormat
from ..sources.jp2header import JP2_SIGNATURE
from . import jpeg

log = logging.getLogger("tileserver.imaging.encode")

DEPTH_FORMATS = (OutputFormat.PNG, OutputFormat.TIFF)  # formats that keep 16-bit samples (`keep_depth`)
TIFF_CODECS = ("none", "lzw", "deflate", "jpeg", "webp", "zstd")
MAX_SIDE = {OutputFormat.WEBP: 16383, OutputFormat.JPEG: 65500, OutputFormat.GIF: 65535}
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
            data = _save(probe, fmt, None, "deflate", False, None)
            if fmt is OutputFormat.JP2:
                if not data.startswith(JP2_SIGNATURE):
                    raise ValueError("not a JP2 file")
            else:
                pyvips.Image.new_from_buffer(data, "").width  # noqa: B018 - decode check
            ok.append(fmt)
        except (pyvips.Error, OSError, ValueError, ImportError) as exc:
            log.info("output format %s unavailable: %s", fmt.suffix, exc)
    return tuple(ok)


@functools.cache
def available_tiff_codecs() -> tuple[str, ...]:
    """TIFF compressions the installed libvips (its libtiff) can really write: `pyvips-binary` has no
    zstd, and asking for it fails only when the file is written."""
    probe = pyvips.Image.black(8, 8, bands=3).copy(interpretation="srgb").cast("uchar")
    ok = []
    for codec in TIFF_CODECS:
        try:
            pyvips.Image.new_from_buffer(bytes(probe.tiffsave_buffer(compression=codec)), "").avg()
            ok.append(codec)
        except pyvips.Error as exc:
            log.info("TIFF codec %s unavailable: %s", codec, getattr(exc, "detail", exc))
    return tuple(ok)


def check_writable(fmt: OutputFormat, size: tuple[int, int], tiff_compression: str) -> None:
    """UnsupportedFormat (400) for what this server cannot write: a format or TIFF codec its libvips
    lacks, or an image larger than the format holds (WebP 16383 pixels a side, JPEG 65500, GIF 65535)."""
    if fmt not in available_formats():
        raise UnsupportedFormat(f"output format {fmt.suffix} is not available on this server")
    if fmt is OutputFormat.TIFF and tiff_compression not in available_tiff_codecs():
        raise UnsupportedFormat(f"TIFF compression {tiff_compression} is not available on this server "
                                f"(available: {', '.join(available_tiff_codecs())})")
    side = MAX_SIDE.get(fmt)
    if side is not None and max(size) > side:
        raise UnsupportedFormat(f"{fmt.suffix} output is at most {side} pixels a side")


def _save(img: Any, fmt: OutputFormat, quality: int | None, tiff_compression: str, keep_icc: bool,
          marks: list[float] | None) -> bytes:
    keep = pyvips.enums.ForeignKeep.ICC if keep_icc else pyvips.enums.ForeignKeep.NONE
    if fmt is OutputFormat.JPEG:
        return _jpeg(img, jpeg.clamp_quality(quality), keep_icc, marks)
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
    if fmt is OutputFormat.JP2:
        return _jp2(img, quality, marks)
    return bytes(img.gifsave_buffer(keep=keep))


def _jp2(img: Any, quality: int | None, marks: list[float] | None = None) -> bytes:
    """A JP2 file: irreversible 9/7 at (100 - Q) / 2.5 + 2 : 1 (Q 75: 12:1, the digital-library norm of
    10-20:1), lossless 5/3 at Q 100; up to 6 resolutions, as many as the size allows. No ICC profile
    (Pillow's JPEG 2000 writer has none)."""
    from PIL import Image

    pixels = np.ndarray(buffer=img.write_to_memory(), dtype=np.uint8, shape=(img.height, img.width, img.bands))
    _mark(marks)
    mode = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}[img.bands]
    im = Image.fromarray(pixels[:, :, 0] if img.bands == 1 else pixels, mode)
    q = 75 if quality is None else min(max(quality, 1), 100)
    opts: dict[str, Any] = {"num_resolutions": max(1, min(6, min(img.width, img.height).bit_length())),
                            "mct": 1 if img.bands >= 3 else 0}
    if q < 100:
        opts.update(irreversible=True, quality_mode="rates", quality_layers=[(100 - q) / 2.5 + 2])
    buf = io.BytesIO()
    im.save(buf, "JPEG2000", **opts)
    return buf.getvalue()


def _mark(marks: list[float] | None) -> None:
    """Note when the pixels are in memory, before the encoder proper runs (see `encode`)."""
    if marks is not None:
        marks.append(time.perf_counter())


def _jpeg(img: Any, quality: int, keep_icc: bool, marks: list[float] | None = None) -> bytes:
    """Small images through libjpeg-turbo directly (see jpeg.py), large ones streamed by libvips."""
    if img.width * img.height > jpeg.DIRECT_PIXELS or img.format != "uchar" or img.bands not in (1, 3):
        keep = pyvips.enums.ForeignKeep.ICC if keep_icc else pyvips.enums.ForeignKeep.NONE
        return bytes(img.jpegsave_buffer(Q=quality, keep=keep))
    icc = img.get("icc-profile-data") if keep_icc and "icc-profile-data" in img.get_fields() else None
    pixels = jpeg.from_buffer(img.write_to_memory(), img.width, img.height, img.bands)
    _mark(marks)
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
        if img.bands > 4:  # multi-band: the first three (libvips would take band 4 of 5 for an alpha)
            img = img.extract_band(0, n=3)
        if img.hasalpha():
            bg = [float(background[0])] if img.bands == 2 else [float(c) for c in background]
            img = img.flatten(background=bg)
        if img.bands > 3:
            img = img.extract_band(0, n=3)
        elif img.bands == 2:
            img = img.extract_band(0)
    elif fmt is OutputFormat.JP2 and img.bands > 4:
        img = img.extract_band(0, n=3)
    return img


def encode(
    img: Any, fmt: OutputFormat, quality: int | None, *, tiff_compression: str = "deflate",
    keep_icc: bool = True, background: tuple[int, int, int] = (255, 255, 255), keep_depth: bool = False,
    marks: list[float] | None = None,
) -> bytes:
    """`img` as a `fmt` file. `marks`: when the encoder takes the pixels from memory (small JPEG outputs, JPEG 2000),
    the time they were there is appended, so that a caller times the decode (libvips' pass) and the encode apart
    at no cost; libvips' own savers decode and encode in one pass, and append nothing."""
    check_writable(fmt, (img.width, img.height), tiff_compression)
    img = prepare(img, fmt, background, keep_depth)
    if not keep_icc and "icc-profile-data" in img.get_fields():
        img = img.copy()
        img.remove("icc-profile-data")
    return _save(img, fmt, quality, tiff_compression, keep_icc, marks)
