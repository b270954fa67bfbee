"""OpenSlide, reached through openslide-python's `lowlevel` module (the C API, one function each) and,
for pixels, the C library's own `openslide_read_region` / `openslide_read_associated_image` called
into a numpy buffer: no PIL image, no un-premultiplying pass, one copy from OpenSlide's ARGB to RGB.

OpenSlide hands out premultiplied ARGB (one native-endian uint32 per pixel). Areas outside the scanned
tissue (or outside the level) are transparent; `flatten` composites them onto the slide's background
colour (`openslide.background-color`, white when absent), as OpenSlide's own viewers do, giving RGB.

An OpenSlide handle is thread-safe, but its errors are sticky: after one failed read every later
call on it fails too. Every error becomes `SlideError` here; `slide.py` turns it into a 415 and opens
a fresh handle for the reads that follow, so one corrupt tile does not break the whole slide.
"""

from __future__ import annotations

import ctypes
import sys
from typing import Any

import numpy as np
import openslide  # type: ignore[import-untyped,unused-ignore]
from openslide import lowlevel

LITTLE = sys.byteorder == "little"


class SlideError(Exception):
    """Anything OpenSlide reported (the message is OpenSlide's, for the log only)."""


def _library() -> Any:
    import openslide_bin  # type: ignore[import-untyped,unused-ignore]

    lib = openslide_bin.libopenslide1  # the library openslide-python loads; functions taken by index
    read = lib["openslide_read_region"]  # are our own objects (attribute access shares lowlevel's)
    read.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_uint32), ctypes.c_int64, ctypes.c_int64,
                     ctypes.c_int32, ctypes.c_int64, ctypes.c_int64]
    read.restype = None
    assoc = lib["openslide_read_associated_image"]
    assoc.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.POINTER(ctypes.c_uint32)]
    assoc.restype = None
    return read, assoc


_READ_REGION, _READ_ASSOCIATED = _library()


def version() -> str:
    return str(lowlevel.get_version())


def detect(path: str) -> str | None:
    """OpenSlide's vendor name for the file ("aperio", "dicom", "generic-tiff", ...), None if it reads
    no such file (OpenSlide's own probe: it opens the file, reads its header, checks names it needs)."""
    try:
        vendor = openslide.OpenSlide.detect_format(path)
    except (openslide.OpenSlideError, OSError, ValueError):
        return None
    return str(vendor) if vendor else None


def open_slide(path: str) -> Any:
    try:
        return lowlevel.open(path)
    except (openslide.OpenSlideError, OSError, ValueError) as exc:
        raise SlideError(str(exc)) from exc


def new_cache(nbytes: int) -> Any:
    """A tile cache of `nbytes` that every slide handle of this process shares (OpenSlide >= 4.0)."""
    return lowlevel.cache_create(max(nbytes, 0))


def use_cache(handle: Any, cache: Any) -> None:
    lowlevel.set_cache(handle, cache)


def properties(handle: Any) -> dict[str, str]:
    try:
        return {name: str(lowlevel.get_property_value(handle, name)) for name in lowlevel.get_property_names(handle)}
    except openslide.OpenSlideError as exc:
        raise SlideError(str(exc)) from exc


def levels(handle: Any) -> list[tuple[int, int, float]]:
    """(width, height, downsample) of each stored level, full resolution first."""
    try:
        out = []
        for i in range(lowlevel.get_level_count(handle)):
            w, h = lowlevel.get_level_dimensions(handle, i)
            out.append((int(w), int(h), float(lowlevel.get_level_downsample(handle, i))))
        return out
    except openslide.OpenSlideError as exc:
        raise SlideError(str(exc)) from exc


def associated(handle: Any) -> dict[str, tuple[int, int]]:
    """Associated images (label, macro, thumbnail, ...) and their sizes."""
    try:
        out = {}
        for name in lowlevel.get_associated_image_names(handle):
            w, h = lowlevel.get_associated_image_dimensions(handle, name)
            out[str(name)] = (int(w), int(h))
        return out
    except openslide.OpenSlideError as exc:
        raise SlideError(str(exc)) from exc


def icc_profile(handle: Any, name: str | None = None) -> bytes | None:
    try:
        if name is None:
            data = lowlevel.read_icc_profile(handle)
        else:
            data = lowlevel.read_associated_image_icc_profile(handle, name)
    except (openslide.OpenSlideError, AttributeError):
        return None
    return bytes(data) if data else None


def background(props: dict[str, str]) -> tuple[int, int, int]:
    """`openslide.background-color` (hex RRGGBB) as RGB; white when absent or malformed."""
    text = props.get("openslide.background-color", "")
    try:
        value = int(text, 16) if len(text) == 6 else 0xFFFFFF
    except ValueError:
        value = 0xFFFFFF
    return (value >> 16) & 255, (value >> 8) & 255, value & 255


def _check(handle: Any) -> None:
    err = lowlevel.get_error(handle)
    if err is not None:
        raise SlideError(str(err))


def read_argb(handle: Any, x0: int, y0: int, level: int, w: int, h: int) -> Any:
    """OpenSlide's premultiplied ARGB pixels of a `w` x `h` box of `level` whose top-left corner is at
    (`x0`, `y0`) in level-0 coordinates, as a (h, w) uint32 array."""
    buf = np.empty((h, w), np.uint32)
    _READ_REGION(handle, buf.ctypes.data_as(ctypes.POINTER(ctypes.c_uint32)), x0, y0, level, w, h)
    _check(handle)
    return buf


def read_associated_argb(handle: Any, name: str, size: tuple[int, int]) -> Any:
    w, h = size
    buf = np.empty((h, w), np.uint32)
    _READ_ASSOCIATED(handle, name.encode(), buf.ctypes.data_as(ctypes.POINTER(ctypes.c_uint32)))
    _check(handle)
    return buf


def flatten(argb: Any, bg: tuple[int, int, int], out: Any = None) -> Any:
    """Premultiplied ARGB (h, w) uint32 -> RGB (h, w, 3) uint8 over `bg`: c + (255 - a) * bg / 255,
    rounded; opaque pixels keep their value exactly. Written into `out` when given. One band at a time
    (a copy through a reversed-band view is six times slower)."""
    px = argb.view(np.uint8).reshape(*argb.shape, 4)
    order = (2, 1, 0) if LITTLE else (1, 2, 3)  # B G R A in memory on little-endian, A R G B on big
    if out is None:
        out = np.empty((*argb.shape, 3), np.uint8)
    for band, src in enumerate(order):
        out[..., band] = px[..., src]
    if argb.size and int(argb.min()) < 0xFF000000:  # not all opaque: alpha is the top byte
        clear = 255 - px[..., 3 if LITTLE else 0].astype(np.uint16)
        for band, value in enumerate(bg):
            if value:
                add = (clear * value + 127) // 255
                out[..., band] = np.minimum(out[..., band] + add, 255).astype(np.uint8)
    return out
