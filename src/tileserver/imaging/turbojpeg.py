"""Lossless JPEG crops through the system's TurboJPEG library (libjpeg-turbo's `tjTransform`, the engine of
`jpegtran -crop`): a stored edge tile's part inside its level, without decoding or re-encoding its pixels.

A tiled TIFF stores its right and bottom edge tiles padded to the full tile size, so they cannot be sent as
they are (`render.passthrough`). Cropping the JPEG's coefficients keeps the stored quality and costs less than a
decode and an encode (measured in bench/README.md); the crop starts at the tile's origin, which is on every
iMCU boundary, and its right and bottom sides may end anywhere (a partial last iMCU, as in any JPEG whose size
is not a multiple of 8 or 16). Decoded, the crop is the stored tile's decoded pixels there: exactly for 4:4:4 and
grey tiles, within a few levels next to the cut for chroma-subsampled ones (the decoder no longer sees the chroma
samples past it).

Debian's `libturbojpeg0` (libjpeg-turbo 2.1) or any libjpeg-turbo 2.x/3.x: only the 2.x API is bound
(`tjInitTransform`, `tjTransform`, `tjFree`, `tjGetErrorStr2`, `tjDestroy`), which 3.x keeps. Without the library
edge tiles are cut from decoded stored tiles as before (`render.recode`). A TurboJPEG handle is not shared
between threads: each thread has its own. ctypes releases the GIL for the call.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import threading
from typing import Any

log = logging.getLogger("tileserver.imaging.turbojpeg")

TJXOP_NONE = 0
TJXOPT_CROP = 4
# a warning (a damaged stream: libjpeg would fill the rest grey) is an error, as for libjpeg-turbo's decodes here
# (`jpeg.decode`); progressive streams of more than 500 scans are refused (TurboJPEG's guard against slow files)
TJFLAG_STOPONWARNING = 8192
TJFLAG_LIMITSCANS = 32768
NAMES = ("libturbojpeg.so.0", "libturbojpeg.so")


class _Region(ctypes.Structure):
    _fields_ = [("x", ctypes.c_int), ("y", ctypes.c_int), ("w", ctypes.c_int), ("h", ctypes.c_int)]


class _Transform(ctypes.Structure):
    _fields_ = [("r", _Region), ("op", ctypes.c_int), ("options", ctypes.c_int), ("data", ctypes.c_void_p),
                ("customFilter", ctypes.c_void_p)]


class CropError(Exception):
    """TurboJPEG refused the stream or the crop (corrupt data, a region outside the image)."""


class Library:
    def __init__(self, path: str) -> None:
        lib = self.lib = ctypes.CDLL(path)
        self.path = path
        lib.tjInitTransform.restype = ctypes.c_void_p
        lib.tjInitTransform.argtypes = []
        lib.tjTransform.restype = ctypes.c_int
        lib.tjTransform.argtypes = [
            ctypes.c_void_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_int,
            ctypes.POINTER(ctypes.POINTER(ctypes.c_ubyte)), ctypes.POINTER(ctypes.c_ulong),
            ctypes.POINTER(_Transform), ctypes.c_int]
        lib.tjFree.restype = None
        lib.tjFree.argtypes = [ctypes.c_void_p]
        lib.tjGetErrorStr2.restype = ctypes.c_char_p
        lib.tjGetErrorStr2.argtypes = [ctypes.c_void_p]
        lib.tjDecompressHeader3.restype = ctypes.c_int
        int_p = ctypes.POINTER(ctypes.c_int)
        lib.tjDecompressHeader3.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_ulong, int_p, int_p, int_p,
                                            int_p]
        lib.tjDestroy.restype = ctypes.c_int
        lib.tjDestroy.argtypes = [ctypes.c_void_p]
        self._local = threading.local()

    def _handle(self) -> Any:
        found = getattr(self._local, "handle", None)
        if found is None:
            value = self.lib.tjInitTransform()
            if not value:
                raise CropError("tjInitTransform failed")
            found = self._local.handle = _Handle(self.lib, value)
        return found.value

    def size(self, data: bytes) -> tuple[int, int]:
        """(width, height) of the JPEG stream `data` from its header; CropError when it has none."""
        handle = self._handle()
        width, height, subsampling, colorspace = (ctypes.c_int(0) for _ in range(4))
        if self.lib.tjDecompressHeader3(handle, data, len(data), ctypes.byref(width), ctypes.byref(height),
                                        ctypes.byref(subsampling), ctypes.byref(colorspace)) != 0:
            raise CropError((self.lib.tjGetErrorStr2(handle) or b"").decode("utf-8", "replace"))
        if width.value <= 0 or height.value <= 0:
            raise CropError("no frame header")
        return width.value, height.value

    def crop(self, data: bytes, width: int, height: int, full: tuple[int, int] | None = None) -> bytes:
        """The top-left `width` x `height` of the JPEG stream `data`, losslessly; CropError when TurboJPEG
        refuses, or when the region is not inside the image (TurboJPEG would make the image larger). The caller
        bounds the stream's size (`size`: its coefficients are read whole) and may pass it as `full`."""
        full = self.size(data) if full is None else full
        if not (0 < width <= full[0] and 0 < height <= full[1]):
            raise CropError(f"a {width} x {height} crop of a {full[0]} x {full[1]} image")
        handle = self._handle()
        transform = _Transform(_Region(0, 0, width, height), TJXOP_NONE, TJXOPT_CROP, None, None)
        out = ctypes.POINTER(ctypes.c_ubyte)()
        size = ctypes.c_ulong(0)
        rc = self.lib.tjTransform(handle, data, len(data), 1, ctypes.byref(out), ctypes.byref(size),
                                  ctypes.byref(transform), TJFLAG_STOPONWARNING | TJFLAG_LIMITSCANS)
        try:
            if rc != 0:
                raise CropError((self.lib.tjGetErrorStr2(handle) or b"").decode("utf-8", "replace"))
            return ctypes.string_at(out, size.value)
        finally:
            if out:
                self.lib.tjFree(out)


class _Handle:
    """A thread's TurboJPEG handle, destroyed with the thread's local storage."""

    def __init__(self, lib: Any, value: int) -> None:
        self.lib, self.value = lib, value

    def __del__(self) -> None:
        self.lib.tjDestroy(self.value)


@functools.cache
def library() -> Library | None:
    """The system's TurboJPEG library, or None (edge tiles are then decoded and re-encoded)."""
    candidates = [*NAMES, ctypes.util.find_library("turbojpeg")]
    for path in dict.fromkeys(p for p in candidates if p):
        try:
            lib = Library(path)
        except (OSError, AttributeError):
            continue
        log.info("lossless edge-tile crops through %s", path)
        return lib
    return None
