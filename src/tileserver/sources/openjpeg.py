"""A small ctypes binding to libopenjp2 (OpenJPEG 2.x): one codestream tile, or one area, of a JPEG 2000
file decoded at a reduced resolution and a number of quality layers, as a numpy array.

The library is the copy Pillow's wheels bundle (`pillow.libs/libopenjp2-*.so`, OpenJPEG 2.5.4 in
Pillow 13), so JPEG 2000 needs no system package; a Pillow built against a system libopenjp2 (a
distribution's python3-pil) has no bundled copy, and then the system's library is used. Only the
decoder's stable public API is bound (`opj_read_header`, `opj_get_decoded_tile`, `opj_set_decode_area`,
`opj_decode`), with the `opj_image_t`/`opj_image_comp_t` layouts of OpenJPEG 2.x. Every call gets its
own stream and codec, so decodes in the pool's threads run in parallel (ctypes releases the GIL) and
a failed decode leaves nothing behind; OpenJPEG's messages are collected per thread and turned into
`DecodeError`.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import glob
import logging
import os
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

log = logging.getLogger("tileserver.sources.openjpeg")

CODEC_J2K = 0
CODEC_JP2 = 2
CLRSPC = {1: "srgb", 2: "grey", 3: "sycc", 4: "eycc", 5: "cmyk"}
MIN_VERSION = (2, 3, 0)  # opj_set_decoded_resolution_factor and thread support are older; 2.3 is well tested
HT_VERSION = (2, 5, 0)  # the first OpenJPEG that decodes HTJ2K (ISO 15444-15) code-blocks


class DecodeError(Exception):
    """OpenJPEG could not decode (a corrupt or truncated file, or parameters it refuses)."""


class _Comp(ctypes.Structure):
    _fields_ = [("dx", ctypes.c_uint32), ("dy", ctypes.c_uint32), ("w", ctypes.c_uint32), ("h", ctypes.c_uint32),
                ("x0", ctypes.c_uint32), ("y0", ctypes.c_uint32), ("prec", ctypes.c_uint32),
                ("bpp", ctypes.c_uint32), ("sgnd", ctypes.c_uint32), ("resno_decoded", ctypes.c_uint32),
                ("factor", ctypes.c_uint32), ("data", ctypes.POINTER(ctypes.c_int32)), ("alpha", ctypes.c_uint16)]


class _Image(ctypes.Structure):
    _fields_ = [("x0", ctypes.c_uint32), ("y0", ctypes.c_uint32), ("x1", ctypes.c_uint32), ("y1", ctypes.c_uint32),
                ("numcomps", ctypes.c_uint32), ("color_space", ctypes.c_int), ("comps", ctypes.POINTER(_Comp)),
                ("icc_profile_buf", ctypes.POINTER(ctypes.c_ubyte)), ("icc_profile_len", ctypes.c_uint32)]


class _DParams(ctypes.Structure):
    """opj_dparameters_t; the library fills it (opj_set_default_decoder_parameters) and reads
    cp_reduce and cp_layer, its first two members. Padded at the end against a larger build."""

    _fields_ = [("cp_reduce", ctypes.c_uint32), ("cp_layer", ctypes.c_uint32), ("infile", ctypes.c_char * 4096),
                ("outfile", ctypes.c_char * 4096), ("decod_format", ctypes.c_int), ("cod_format", ctypes.c_int),
                ("DA_x0", ctypes.c_uint32), ("DA_x1", ctypes.c_uint32), ("DA_y0", ctypes.c_uint32),
                ("DA_y1", ctypes.c_uint32), ("m_verbose", ctypes.c_int), ("tile_index", ctypes.c_uint32),
                ("nb_tile_to_decode", ctypes.c_uint32), ("jpwl_correct", ctypes.c_int),
                ("jpwl_exp_comps", ctypes.c_int), ("jpwl_max_tiles", ctypes.c_int), ("flags", ctypes.c_uint),
                ("_reserved", ctypes.c_char * 1024)]


_MESSAGES = threading.local()
_CALLBACK = ctypes.CFUNCTYPE(None, ctypes.c_char_p, ctypes.c_void_p)


def _collect(msg: bytes | None, _data: Any) -> None:
    found: list[str] | None = getattr(_MESSAGES, "errors", None)
    if found is not None and len(found) < 8 and msg:
        found.append(msg.decode("utf-8", "replace").strip())


_on_error = _CALLBACK(_collect)  # kept referenced for as long as the library may call it


@dataclass(frozen=True)
class Decoded:
    """Decoded pixels (height, width, components) at the reduction asked for, placed at (`x0`, `y0`) of
    the reduced image's own grid, with what the decoder says about the components."""

    pixels: np.ndarray[Any, Any]
    x0: int
    y0: int
    prec: int
    signed: bool
    alpha: tuple[bool, ...]
    colorspace: str
    subsampled: bool


def bundled_library() -> str | None:
    """Path of the libopenjp2 inside Pillow's wheel, if Pillow is installed from one."""
    try:
        import PIL
    except ImportError:
        return None
    base = os.path.dirname(PIL.__file__)
    for pattern in ("../pillow.libs/libopenjp2*.so*", ".dylibs/libopenjp2*.dylib", "../pillow.libs/openjp2*.dll"):
        found = sorted(glob.glob(os.path.join(base, pattern)))
        if found:
            return os.path.normpath(found[0])
    return None


class Library:
    """The loaded libopenjp2, with the decoder's functions typed."""

    def __init__(self, path: str) -> None:
        self.path = path
        lib = self.lib = ctypes.CDLL(path)
        vp, u32, i32, boolean = ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int32, ctypes.c_int
        image_pp = ctypes.POINTER(ctypes.POINTER(_Image))
        image_p = ctypes.POINTER(_Image)
        sigs: dict[str, tuple[Any, list[Any]]] = {
            "opj_version": (ctypes.c_char_p, []),
            "opj_create_decompress": (vp, [ctypes.c_int]),
            "opj_set_default_decoder_parameters": (None, [ctypes.POINTER(_DParams)]),
            "opj_setup_decoder": (boolean, [vp, ctypes.POINTER(_DParams)]),
            "opj_set_error_handler": (boolean, [vp, _CALLBACK, vp]),
            "opj_set_warning_handler": (boolean, [vp, vp, vp]),
            "opj_set_info_handler": (boolean, [vp, vp, vp]),
            "opj_codec_set_threads": (boolean, [vp, ctypes.c_int]),
            "opj_stream_create_default_file_stream": (vp, [ctypes.c_char_p, boolean]),
            "opj_read_header": (boolean, [vp, vp, image_pp]),
            "opj_set_decode_area": (boolean, [vp, image_p, i32, i32, i32, i32]),
            "opj_decode": (boolean, [vp, vp, image_p]),
            "opj_get_decoded_tile": (boolean, [vp, vp, image_p, u32]),
            "opj_end_decompress": (boolean, [vp, vp]),
            "opj_image_destroy": (None, [image_p]),
            "opj_destroy_codec": (None, [vp]),
            "opj_stream_destroy": (None, [vp]),
            "opj_has_thread_support": (boolean, []),
        }
        for name, (restype, argtypes) in sigs.items():
            fn = getattr(lib, name)
            fn.restype, fn.argtypes = restype, argtypes
        self.version = lib.opj_version().decode()
        self.version_tuple = tuple(int(p) for p in self.version.split(".")[:3] if p.isdigit())
        if self.version_tuple < MIN_VERSION:
            raise OSError(f"OpenJPEG {self.version} is older than {'.'.join(map(str, MIN_VERSION))}")
        self.threads_supported = bool(lib.opj_has_thread_support())

    @property
    def reads_ht(self) -> bool:
        return self.version_tuple >= HT_VERSION

    def decode(self, path: str, codec: int, reduce: int, layers: int, *, tile: int | None = None,
               area: tuple[int, int, int, int] | None = None, threads: int = 1) -> Decoded:
        """Codestream tile `tile`, or the reference-grid `area` (x0, y0, x1, y1: full-resolution
        coordinates), of the file at `path`, at resolution reduction `reduce`, decoding `layers`
        quality layers (0 = all)."""
        lib = self.lib
        _MESSAGES.errors = []
        stream = lib.opj_stream_create_default_file_stream(os.fsencode(path), 1)
        if not stream:
            raise DecodeError("the file could not be opened")
        dec = lib.opj_create_decompress(codec)
        image = ctypes.POINTER(_Image)()
        try:
            lib.opj_set_error_handler(dec, _on_error, None)
            lib.opj_set_warning_handler(dec, None, None)
            lib.opj_set_info_handler(dec, None, None)
            params = _DParams()
            lib.opj_set_default_decoder_parameters(ctypes.byref(params))
            params.cp_reduce, params.cp_layer = reduce, layers
            self._check(lib.opj_setup_decoder(dec, ctypes.byref(params)), "setup")
            if threads > 1 and self.threads_supported:
                lib.opj_codec_set_threads(dec, threads)
            self._check(lib.opj_read_header(stream, dec, ctypes.byref(image)), "header")
            if tile is not None:
                self._check(lib.opj_get_decoded_tile(dec, stream, image, tile), f"tile {tile}")
            else:
                x0, y0, x1, y1 = area if area is not None else (0, 0, 0, 0)
                self._check(lib.opj_set_decode_area(dec, image, x0, y0, x1, y1), "area")
                self._check(lib.opj_decode(dec, stream, image), "decode")
            self._check(lib.opj_end_decompress(dec, stream), "end")
            return _extract(image.contents)
        finally:
            if image:
                lib.opj_image_destroy(image)
            lib.opj_destroy_codec(dec)
            lib.opj_stream_destroy(stream)

    @staticmethod
    def _check(ok: int, step: str) -> None:
        if not ok:
            found: list[str] = getattr(_MESSAGES, "errors", None) or []
            raise DecodeError(f"{step}: {'; '.join(found) or 'failed'}")


def _extract(image: _Image) -> Decoded:
    n = image.numcomps
    if n == 0 or not image.comps:
        raise DecodeError("no components decoded")
    comps = [image.comps[k] for k in range(n)]
    first = comps[0]
    h, w = first.h, first.w
    if h == 0 or w == 0 or any(not c.data for c in comps):
        raise DecodeError("empty decode")
    subsampled = any((c.w, c.h) != (w, h) for c in comps)
    if subsampled:
        raise DecodeError("components of different sizes (subsampled components) are not supported")
    prec = max(c.prec for c in comps)
    signed = bool(first.sgnd)
    if prec > 16 or any(bool(c.sgnd) != signed for c in comps):
        raise DecodeError(f"unsupported samples: {prec} bits, mixed signedness {signed}")
    dtype = (np.int8 if prec <= 8 else np.int16) if signed else (np.uint8 if prec <= 8 else np.uint16)
    out = np.empty((h, w, n), dtype)
    for k, c in enumerate(comps):
        band = np.ctypeslib.as_array(c.data, shape=(h, w))
        if prec < 8 and not signed:  # 1..7-bit samples scaled to the full 8-bit range (bilevel: 0 and 255)
            band = band * 255 // ((1 << c.prec) - 1)
        out[:, :, k] = band
    f = first.factor  # the components' origin stays on the full-resolution grid; data starts at its ceiling
    x0, y0 = (first.x0 + (1 << f) - 1) >> f, (first.y0 + (1 << f) - 1) >> f
    return Decoded(out, x0, y0, max(prec, 8) if not signed else prec, signed,
                   tuple(bool(c.alpha) for c in comps), CLRSPC.get(image.color_space, ""), subsampled)


@functools.cache
def library() -> Library | None:
    """Pillow's bundled libopenjp2, else the system's; None (JPEG 2000 then answers 501) without either."""
    candidates = [p for p in (bundled_library(), ctypes.util.find_library("openjp2")) if p]
    for path in candidates:
        try:
            lib = Library(path)
        except (OSError, AttributeError) as exc:
            log.warning("libopenjp2 at %s not usable: %s", path, exc)
            continue
        log.info("JPEG 2000 through OpenJPEG %s (%s)", lib.version, path)
        return lib
    return None
