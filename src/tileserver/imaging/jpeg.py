"""JPEG through libjpeg-turbo (simplejpeg) for tile-sized jobs, beside libvips.

Every libvips pipeline pays a fixed set-up cost that dominates tile-sized work. Measured on the
project machine for one 256-px tile of big.tif (CPU time per call, bench/README.md): libvips decodes
a stored JPEG tile in 0.92 ms and encodes it at Q75 in 0.75 ms; libjpeg-turbo here takes 0.52 ms
and 0.17 ms. From about 1024 x 768 on the two are equally fast, and libvips streams where this
module needs the whole frame in memory, so only small outputs (`DIRECT_PIXELS`) are encoded here.

Decoding is bit-exact with libtiff's decoding of the same stored tile (tested). The encoder follows
libvips' chroma rule (4:2:0 below Q90, 4:4:4 from Q90) and embeds ICC profiles as APP2 segments.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import simplejpeg

DIRECT_PIXELS = 1024 * 512  # outputs up to this many pixels are encoded here, larger ones by libvips
ICC_MARKER = b"ICC_PROFILE\0"
ICC_CHUNK = 65535 - 2 - len(ICC_MARKER) - 2  # payload of one APP2 segment


def clamp_quality(q: int | None) -> int:
    """An asked-for JPEG quality as libjpeg takes it: None is 75 (libvips' default; callers pass the
    configured default), values below 1 are 1 (libjpeg's own rule, so iipsrv's too), above 100 are 100."""
    return 75 if q is None else min(max(int(q), 1), 100)


def decode(data: bytes, bands: int, scale: int = 1) -> Any:
    """A complete JPEG stream -> uint8 array of shape (height, width, bands), bands 1 or 3, decoded at
    1/`scale` (1, 2, 4 or 8: libjpeg-turbo's scaled IDCT, each output pixel from a `scale`-pixel square).
    Raises ValueError for a stream libjpeg-turbo cannot decode cleanly."""
    colorspace = "GRAY" if bands == 1 else "RGB"
    if scale == 1:
        return simplejpeg.decode_jpeg(data, colorspace=colorspace)
    height, width = simplejpeg.decode_jpeg_header(data)[:2]  # the smallest scale still this large
    return simplejpeg.decode_jpeg(data, colorspace=colorspace, min_height=-(-height // scale),
                                  min_width=-(-width // scale))


def encode(pixels: Any, quality: int, icc: bytes | None = None) -> bytes:
    """A C-contiguous uint8 array (height, width, 1 or 3) -> JFIF bytes at `quality` (1-100)."""
    q = clamp_quality(quality)
    pixels = np.ascontiguousarray(pixels)
    if pixels.shape[2] == 1:
        data = simplejpeg.encode_jpeg(pixels, q, colorspace="GRAY", colorsubsampling="Gray")
    else:
        data = simplejpeg.encode_jpeg(pixels, q, colorspace="RGB", colorsubsampling="444" if q >= 90 else "420")
    return with_icc(bytes(data), icc) if icc else bytes(data)


def from_buffer(data: bytes, width: int, height: int, bands: int) -> Any:
    """Packed 8-bit pixels (libvips' write_to_memory) as the array `encode` takes, without a copy."""
    return np.frombuffer(data, np.uint8).reshape(height, width, bands)


def with_icc(jfif: bytes, icc: bytes) -> bytes:
    """`jfif` with `icc` inserted as APP2 ICC_PROFILE segments after SOI and any APP0 (JFIF) segment,
    split into numbered chunks as the ICC specification (annex B.4) requires."""
    if not jfif.startswith(b"\xff\xd8"):
        raise ValueError("not a JPEG stream")
    at = 2
    if jfif[2:4] == b"\xff\xe0":
        at = 4 + int.from_bytes(jfif[4:6], "big")
    chunks = [icc[i : i + ICC_CHUNK] for i in range(0, len(icc), ICC_CHUNK)]
    if not 0 < len(chunks) < 256:
        return jfif
    segments = b"".join(
        b"\xff\xe2" + (2 + len(ICC_MARKER) + 2 + len(c)).to_bytes(2, "big") + ICC_MARKER + bytes((n, len(chunks))) + c
        for n, c in enumerate(chunks, 1)
    )
    return jfif[:at] + segments + jfif[at:]
