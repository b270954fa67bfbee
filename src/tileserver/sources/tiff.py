"""A minimal TIFF / BigTIFF directory reader (no pixels): level sizes, tiling, compression, the
descriptive ASCII tags libvips does not expose, and the tile offsets that let stored JPEG tiles be
sent without decoding. Pure Python, synchronous, reads only the directory structures.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import BinaryIO

# tag numbers
IMAGE_WIDTH, IMAGE_LENGTH, BITS, COMPRESSION, PHOTOMETRIC = 256, 257, 258, 259, 262
DOCUMENT_NAME, IMAGE_DESCRIPTION, MAKE, MODEL, SAMPLES = 269, 270, 271, 272, 277
ROWS_PER_STRIP, SOFTWARE, DATETIME, ARTIST = 278, 305, 306, 315
TILE_WIDTH, TILE_LENGTH, TILE_OFFSETS, TILE_BYTECOUNTS = 322, 323, 324, 325
SUBIFDS, JPEG_TABLES, NEW_SUBFILE_TYPE, COPYRIGHT = 330, 347, 254, 33432
SMIN, SMAX, YCBCR_SUBSAMPLING, SAMPLE_FORMAT = 340, 341, 530, 339
X_RESOLUTION, Y_RESOLUTION, PAGE_NAME, RESOLUTION_UNIT, XMP = 282, 283, 285, 296, 700
STONITS = 37439  # physical value of one sample unit (a stack page's scale)
REDUCED_IMAGE, MULTI_PAGE = 1, 2  # NewSubfileType bits

ASCII_TAGS = {
    DOCUMENT_NAME: "title", IMAGE_DESCRIPTION: "description", MAKE: "make", MODEL: "model",
    SOFTWARE: "software", DATETIME: "date", ARTIST: "creator", COPYRIGHT: "rights", PAGE_NAME: "pagename",
}
COMPRESSIONS = {1: "none", 5: "lzw", 7: "jpeg", 8: "deflate", 32946: "deflate", 50000: "zstd", 50001: "webp"}

_TYPES = {1: "B", 2: "s", 3: "H", 4: "I", 5: "II", 6: "b", 7: "B", 8: "h", 9: "i", 10: "ii", 11: "f",
          12: "d", 13: "I", 16: "Q", 17: "q", 18: "Q"}
_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 13: 4, 16: 8, 17: 8, 18: 8}


@dataclass
class Ifd:
    tags: dict[int, tuple[int, int, int]] = field(default_factory=dict)  # tag -> (type, count, offset)
    values: dict[int, tuple[int | float, ...] | bytes] = field(default_factory=dict)

    def num(self, tag: int, default: int = 0) -> int:
        v = self.values.get(tag)
        return int(v[0]) if isinstance(v, tuple) and v else default

    def ints(self, tag: int) -> tuple[int, ...]:
        v = self.values.get(tag)
        return tuple(int(x) for x in v) if isinstance(v, tuple) else ()

    @property
    def size(self) -> tuple[int, int]:
        return self.num(IMAGE_WIDTH), self.num(IMAGE_LENGTH)

    @property
    def tiled(self) -> bool:
        return TILE_WIDTH in self.values

    @property
    def compression(self) -> str:
        return COMPRESSIONS.get(self.num(COMPRESSION, 1), "other")

    @property
    def decode_pixels(self) -> int:
        """The pixels one read of this directory decodes at once: a tile, or a strip (RowsPerStrip rows;
        the whole image when the tag is missing, as the TIFF default says)."""
        w, h = self.size
        if self.tiled:
            return self.num(TILE_WIDTH) * self.num(TILE_LENGTH)
        rows = self.num(ROWS_PER_STRIP, h) or h
        return w * min(rows, h)


MAX_IFDS = 4096


class TiffFile:
    """Parse the IFD chain (and first-level SubIFDs) of an open binary file."""

    MAX_IFDS = MAX_IFDS
    MAX_TABLE = 1 << 20  # tile offsets kept in memory per directory (8 MB at most for BigTIFF)

    def __init__(self, f: BinaryIO, max_ifds: int = MAX_IFDS) -> None:
        """`max_ifds`: read no more top-level directories than this (1 for a probe of the first)."""
        self.f = f
        head = f.read(16)
        if head[:2] == b"II":
            self.e = "<"
        elif head[:2] == b"MM":
            self.e = ">"
        else:
            raise ValueError("not a TIFF file")
        magic = struct.unpack(self.e + "H", head[2:4])[0]
        self.big = magic == 43
        if magic == 42:
            first = struct.unpack(self.e + "I", head[4:8])[0]
        elif self.big:
            first = struct.unpack(self.e + "Q", head[8:16])[0]
        else:
            raise ValueError("not a TIFF file")
        self.pages: list[Ifd] = []
        self.subifds: list[list[Ifd]] = []
        seen: set[int] = set()
        offset = first
        try:
            while offset and offset not in seen and len(self.pages) < min(max_ifds, self.MAX_IFDS):
                seen.add(offset)
                ifd, offset = self._read_ifd(offset)
                self.pages.append(ifd)
                self.subifds.append([self._read_ifd(o)[0] for o in ifd.ints(SUBIFDS)[:64]])
        except struct.error as exc:  # a directory cut short (a truncated file)
            raise ValueError("truncated TIFF directory") from exc

    def _read_ifd(self, offset: int) -> tuple[Ifd, int]:
        f, e = self.f, self.e
        f.seek(offset)
        if self.big:
            (n,) = struct.unpack(e + "Q", f.read(8))
            entry, count_fmt, off_size = 20, "Q", 8
        else:
            (n,) = struct.unpack(e + "H", f.read(2))
            entry, count_fmt, off_size = 12, "I", 4
        n = min(n, 4096)
        raw = f.read(n * entry + off_size)
        ifd = Ifd()
        for i in range(n):
            rec = raw[i * entry : (i + 1) * entry]
            tag, typ = struct.unpack(e + "HH", rec[:4])
            (count,) = struct.unpack(e + count_fmt, rec[4 : 4 + off_size])
            inline = rec[4 + off_size :]
            size = _SIZES.get(typ, 1) * count
            if size <= off_size:
                data_offset = -1
                data = inline[:size]
            else:
                (data_offset,) = struct.unpack(e + count_fmt, inline)
                data = b""
            ifd.tags[tag] = (typ, count, data_offset)
            if tag in (TILE_OFFSETS, TILE_BYTECOUNTS) and data_offset >= 0:
                continue  # large arrays are read on demand (`tile_locations`)
            if data_offset >= 0:
                if size > 1 << 20:
                    continue
                f.seek(data_offset)
                data = f.read(size)
            ifd.values[tag] = self._decode(typ, count, data)
        (nxt,) = struct.unpack(e + count_fmt, raw[n * entry : n * entry + off_size] or b"\0" * off_size)
        return ifd, nxt

    def _decode(self, typ: int, count: int, data: bytes) -> tuple[int | float, ...] | bytes:
        if typ in (2, 7):
            return data
        code = _TYPES.get(typ)
        if code is None:
            return b""
        if code in ("II", "ii"):
            nums = struct.unpack(f"{self.e}{2 * count}{code[0]}", data)
            return tuple(nums[i] / nums[i + 1] if nums[i + 1] else 0.0 for i in range(0, len(nums), 2))
        return struct.unpack(f"{self.e}{count}{code}", data)

    def tile_location(self, pread: Callable[[int, int], bytes | bytearray], ifd: Ifd, index: int
                      ) -> tuple[int, int]:
        """(offset, byte count) of one tile. The offset and byte-count arrays are read with `pread`
        (count, offset: `os.pread` of a file, or `vfs.Reader.pread`) on first use and kept in the
        directory (so it can be shared between threads); arrays of more than `MAX_TABLE` entries are
        read one value at a time instead."""
        out = []
        for tag in (TILE_OFFSETS, TILE_BYTECOUNTS):
            typ, count, data_offset = ifd.tags[tag]
            if not 0 <= index < count:
                raise IndexError(index)
            vals = ifd.values.get(tag)
            if vals is None and count <= self.MAX_TABLE:
                raw = bytes(pread(_SIZES[typ] * count, data_offset))
                vals = ifd.values[tag] = self._decode(typ, count, raw)
            if isinstance(vals, tuple):
                out.append(int(vals[index]))
                continue
            size = _SIZES[typ]
            (value,) = struct.unpack(self.e + _TYPES[typ], pread(size, data_offset + index * size))
            out.append(int(value))
        return out[0], out[1]

    def load_tables(self, pread_many: Callable[[Sequence[tuple[int, int]]], list[bytes]]) -> None:
        """Read every directory's tile offset and byte-count arrays (up to `MAX_TABLE` entries each) at
        once, with `pread_many` ((offset, count) ranges -> their bytes): for an object in a store, where
        one request for all of them beats two per directory on first use."""
        wanted: list[tuple[Ifd, int, int, int]] = []
        for ifd in [*self.pages, *(s for subs in self.subifds for s in subs)]:
            for tag in (TILE_OFFSETS, TILE_BYTECOUNTS):
                if tag in ifd.tags and tag not in ifd.values:
                    typ, count, data_offset = ifd.tags[tag]
                    if data_offset >= 0 and count <= self.MAX_TABLE:
                        wanted.append((ifd, tag, typ, count))
        if not wanted:
            return
        raws = pread_many([(ifd.tags[tag][2], _SIZES[typ] * count) for ifd, tag, typ, count in wanted])
        for (ifd, tag, typ, count), raw in zip(wanted, raws, strict=True):
            if len(raw) == _SIZES[typ] * count:
                ifd.values[tag] = self._decode(typ, count, raw)


def descriptive_tags(ifd: Ifd) -> dict[str, str]:
    """The text metadata iipsrv reads from a TIFF: its ASCII tags, the XMP packet, and StoNits as `scale`."""
    out: dict[str, str] = {}
    xmp = ifd.values.get(XMP)
    if xmp:
        out["xmp"] = (xmp if isinstance(xmp, bytes) else bytes(int(v) & 0xFF for v in xmp)).decode("utf-8", "replace")
    scale = ifd.values.get(STONITS)
    if isinstance(scale, tuple) and scale:
        out["scale"] = f"{float(scale[0]):g}"
    for tag, name in ASCII_TAGS.items():
        v = ifd.values.get(tag)
        if isinstance(v, bytes):
            text = v.split(b"\0", 1)[0].decode("utf-8", "replace").strip()
            if text:
                out[name] = text
    return out


def resolution(ifd: Ifd) -> tuple[float, float, int] | None:
    """XResolution, YResolution and ResolutionUnit (1 none, 2 inch (the default), 3 cm) as stored."""
    x, y = ifd.values.get(X_RESOLUTION), ifd.values.get(Y_RESOLUTION)
    if not (isinstance(x, tuple) and x and isinstance(y, tuple) and y):
        return None
    return float(x[0]), float(y[0]), ifd.num(RESOLUTION_UNIT, 2)
