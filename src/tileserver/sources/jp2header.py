"""What a JPEG 2000 file says before any pixel is decoded: the JP2/JPX boxes (ISO 15444-1 Annex I:
colour specification, ICC profile, capture/display resolution, channel definitions, XML and XMP) and
the codestream's main header (Annex A: SIZ image and tile geometry, COD/COC resolution levels, layers
and code-block style, CAP capabilities). Pure Python over a few reads of the file; every malformed
structure is a `HeaderError`.

Example: the issue's 10000x7500 file (`opj_compress -n 7 -t 1024,1024 ...`) reads as
`Codestream(width=10000, height=7500, tile_width=1024, tile_height=1024, resolutions=7, layers=1, ...)`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import BinaryIO

JP2_SIGNATURE = b"\x00\x00\x00\x0cjP  \r\n\x87\n"
J2K_SIGNATURE = b"\xff\x4f\xff\x51"  # SOC then SIZ: a raw codestream (.j2k, .j2c, .jph)
XMP_UUID = bytes.fromhex("be7acfcb97a942e89c71999491e3afac")
MAX_BOX = 4 << 20  # largest box content read (ICC profiles, XML): more is skipped, not read
MAX_MAIN_HEADER = 4 << 20
PROGRESSIONS = ("LRCP", "RLCP", "RPCL", "PCRL", "CPRL")
ENUM_CS = {16: "srgb", 17: "grey", 18: "sycc", 12: "cmyk", 20: "srgb", 0: "grey", 15: "grey"}
HT_CBLK_STYLE = 0x40  # code-block style bit of Part 15 (HTJ2K) code-blocks
CAP_PART15 = 1 << (32 - 15)  # Pcap bit of Part 15 in the CAP marker


class HeaderError(ValueError):
    """The file is not a readable JPEG 2000 file."""


@dataclass(frozen=True)
class Codestream:
    """The main header's geometry (reference-grid coordinates: x0, y0 inclusive, x1, y1 exclusive)."""

    x0: int
    y0: int
    x1: int
    y1: int
    tile_x0: int
    tile_y0: int
    tile_width: int
    tile_height: int
    precision: tuple[int, ...]
    signed: tuple[bool, ...]
    subsampling: tuple[tuple[int, int], ...]
    resolutions: int  # decomposition levels + 1, the smallest over the components
    layers: int
    progression: str
    ht: bool  # HTJ2K (ISO 15444-15) code-blocks: a CAP marker for Part 15, or the code-block style bit
    reversible: bool  # 5/3 wavelet (lossless capable)

    @property
    def width(self) -> int:
        return self.x1 - self.x0

    @property
    def height(self) -> int:
        return self.y1 - self.y0

    @property
    def tiles_across(self) -> int:
        return -(-(self.x1 - self.tile_x0) // self.tile_width)

    @property
    def tiles_down(self) -> int:
        return -(-(self.y1 - self.tile_y0) // self.tile_height)

    @property
    def tiled(self) -> bool:
        return self.tiles_across * self.tiles_down > 1


@dataclass(frozen=True)
class Header:
    raw: bool  # a raw codestream, no JP2 boxes
    codestream: Codestream
    colorspace: str = ""  # from the colour specification box: srgb, grey, sycc, cmyk; "" unknown
    icc: bytes | None = None
    resolution: tuple[float, float] | None = None  # pixels per metre, x and y (capture, else display)
    xml: tuple[bytes, ...] = ()
    xmp: bytes | None = None
    palette: bool = False
    brand: str = ""


def read_header(f: BinaryIO) -> Header:
    """The boxes and the main header of the file open as `f`."""
    head = f.read(12)
    if head[:4] == J2K_SIGNATURE:
        return Header(True, _main_header(f, 0))
    if head != JP2_SIGNATURE:
        raise HeaderError("not a JPEG 2000 file")
    found: dict[str, object] = {}
    xml: list[bytes] = []
    codestream = None
    for kind, start, length in _boxes(f, 12, None):
        if kind == "ftyp":
            found["brand"] = _content(f, start, min(length, 4)).decode("latin-1")
        elif kind in ("jp2h", "jpch"):
            _jp2h(f, start, length, found)
        elif kind == "xml ":
            xml.append(_content(f, start, length))
        elif kind == "uuid" and length > 16 and _content(f, start, 16) == XMP_UUID:
            found["xmp"] = _content(f, start + 16, length - 16)
        elif kind == "jp2c":
            codestream = _main_header(f, start)
            break
    if codestream is None:
        raise HeaderError("no contiguous codestream box (jp2c)")
    icc, xmp = found.get("icc"), found.get("xmp")
    res = found.get("resc") or found.get("resd")
    return Header(False, codestream, str(found.get("colorspace", "")), icc if isinstance(icc, bytes) else None,
                  res if isinstance(res, tuple) else None, tuple(xml), xmp if isinstance(xmp, bytes) else None,
                  bool(found.get("palette")), str(found.get("brand", "")))


def _boxes(f: BinaryIO, start: int, end: int | None) -> list[tuple[str, int, int]]:
    """(type, content offset, content length) of the boxes from `start` to `end` (None: end of file)."""
    out: list[tuple[str, int, int]] = []
    pos = start
    f.seek(0, 2)
    size = f.tell()
    end = size if end is None else min(end, size)
    while pos + 8 <= end and len(out) < 4096:
        f.seek(pos)
        length, kind_raw = struct.unpack(">I4s", _exact(f, 8))
        header = 8
        if length == 1:
            length = struct.unpack(">Q", _exact(f, 8))[0]
            header = 16
        elif length == 0:
            length = end - pos
        if length < header or pos + length > end:
            if any(kind == "jp2c" for kind, _, _ in out):
                break  # damage after the codestream: nothing there is needed
            if kind_raw == b"jp2c" and length >= header:
                length = end - pos  # a truncated last codestream box: its decode fails later, per tile
            else:
                raise HeaderError("box overruns the file")
        out.append((kind_raw.decode("latin-1"), pos + header, length - header))
        pos += length
    return out


def _jp2h(f: BinaryIO, start: int, length: int, found: dict[str, object]) -> None:
    for kind, pos, n in _boxes(f, start, start + length):
        if kind == "colr" and n >= 3 and "colorspace" not in found and "icc" not in found:
            data = _content(f, pos, n)
            if data[0] == 1 and n >= 7:
                found["colorspace"] = ENUM_CS.get(struct.unpack(">I", data[3:7])[0], "")
            elif data[0] in (2, 3):
                found["icc"] = data[3:]
        elif kind == "pclr":
            found["palette"] = True
        elif kind == "res ":
            for sub, spos, sn in _boxes(f, pos, pos + n):
                if sub in ("resc", "resd") and sn >= 10:
                    found[sub] = _grid_resolution(_content(f, spos, 10))


def _grid_resolution(data: bytes) -> tuple[float, float] | None:
    vn, vd, hn, hd, ve, he = struct.unpack(">HHHHbb", data)
    if not (vn and vd and hn and hd):
        return None
    return hn / hd * 10.0**he, vn / vd * 10.0**ve


def _main_header(f: BinaryIO, start: int) -> Codestream:
    f.seek(start)
    if _exact(f, 2) != b"\xff\x4f":
        raise HeaderError("codestream does not start with SOC")
    siz: tuple[int, ...] | None = None
    comps: list[tuple[int, int, int]] = []
    cod: tuple[int, int, int, int, int] | None = None
    coc_levels: list[int] = []
    coc_ht = False
    cap = 0
    read = 2
    while True:
        marker, seg_len = struct.unpack(">HH", _exact(f, 4))
        if marker == 0xFF90 or marker == 0xFF93:  # SOT: the first tile-part; the main header is over
            break
        if seg_len < 2 or read > MAX_MAIN_HEADER:
            raise HeaderError("bad marker segment in the main header")
        body = _exact(f, seg_len - 2)
        read += seg_len + 2
        if marker == 0xFF51:
            siz, comps = _siz(body)
        elif marker == 0xFF52:
            cod = _cod(body)
        elif marker == 0xFF53 and siz is not None:
            levels, style = _coc(body, len(comps))
            coc_levels.append(levels)
            coc_ht = coc_ht or bool(style & HT_CBLK_STYLE)
        elif marker == 0xFF50 and len(body) >= 4:
            cap = struct.unpack(">I", body[:4])[0]
    if siz is None or cod is None:
        raise HeaderError("the main header has no SIZ or COD marker")
    _rsiz, x1, y1, x0, y0, tw, th, tx0, ty0 = siz
    progression, layers, levels, style, transform = cod
    if not (x0 < x1 and y0 < y1 and tw > 0 and th > 0 and tx0 <= x0 and ty0 <= y0 and tx0 + tw > x0
            and ty0 + th > y0 and layers > 0 and levels <= 32):
        raise HeaderError("inconsistent image and tile geometry")
    return Codestream(
        x0, y0, x1, y1, tx0, ty0, tw, th,
        precision=tuple(p for p, _, _ in comps), signed=tuple(bool(s) for _, s, _ in comps),
        subsampling=tuple((d >> 8, d & 0xFF) for _, _, d in comps),
        resolutions=min([levels, *coc_levels]) + 1, layers=layers,
        progression=PROGRESSIONS[progression] if progression < len(PROGRESSIONS) else str(progression),
        ht=bool(cap & CAP_PART15) or bool(style & HT_CBLK_STYLE) or coc_ht,
        reversible=transform == 1,
    )


def _siz(body: bytes) -> tuple[tuple[int, ...], list[tuple[int, int, int]]]:
    if len(body) < 36:
        raise HeaderError("short SIZ marker")
    values = struct.unpack(">HIIIIIIIIH", body[:36])
    n = values[9]
    if n == 0 or len(body) < 36 + 3 * n:
        raise HeaderError("bad SIZ component count")
    comps = []
    for k in range(n):
        ssiz, dx, dy = body[36 + 3 * k: 39 + 3 * k]
        if dx == 0 or dy == 0:
            raise HeaderError("zero component subsampling")
        comps.append(((ssiz & 0x7F) + 1, ssiz >> 7, dx << 8 | dy))
    return values[:9], comps


def _cod(body: bytes) -> tuple[int, int, int, int, int]:
    if len(body) < 10:
        raise HeaderError("short COD marker")
    _scod, progression, layers, _mct, levels, _xcb, _ycb, style, transform = struct.unpack(">BBHBBBBBB", body[:10])
    return progression, layers, levels, style, transform


def _coc(body: bytes, ncomps: int) -> tuple[int, int]:
    off = 1 if ncomps < 257 else 2
    if len(body) < off + 6:
        raise HeaderError("short COC marker")
    levels, style = body[off + 1], body[off + 4]
    return levels, style


def _content(f: BinaryIO, start: int, length: int) -> bytes:
    if length > MAX_BOX:
        return b""
    f.seek(start)
    return _exact(f, length)


def _exact(f: BinaryIO, n: int) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise HeaderError("the file ends inside its header")
    return data
