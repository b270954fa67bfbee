"""Zero-transcode tiles: when a request maps exactly onto a stored tile of a JPEG- (or WebP-)
compressed tiled TIFF and asks for nothing but that tile in that codec, send the stored bytes.

A stored JPEG tile is an abbreviated JPEG stream whose quantisation and Huffman tables live in the
TIFF's JPEGTables tag; splicing the two (tables without their EOI + tile without its SOI) gives a
complete JFIF stream that decodes to exactly the pixels libtiff decodes. WebP tiles are complete
WebP files already. Edge tiles are stored padded to the full tile size, so only tiles that lie wholly
inside the level pass through; everything else falls back to decode + encode.
"""

from __future__ import annotations

import os
import threading

from .models import ImageMeta, OutputFormat, Quality, TileRequest
from .tiff import (
    BITS,
    COMPRESSION,
    JPEG_TABLES,
    PHOTOMETRIC,
    SAMPLES,
    TILE_OFFSETS,
    Ifd,
    TiffFile,
)

CODECS = {OutputFormat.JPEG: 7, OutputFormat.WEBP: 50001}
PLANAR_CONFIG = 284


def stored_tile_of(meta: ImageMeta, req: TileRequest) -> tuple[int, int, int] | None:
    """(level, col, row) of the stored tile `req` is exactly equal to, or None.

    Pure. A native-tile request qualifies when its tile lies wholly inside the level; a region request
    qualifies when, at a stored level whose factor is an exact power of two, the region is that tile's
    box and the output size is the tile size (what IIIF, DeepZoom and Zoomify viewers ask for)."""
    if (req.rotation or req.mirror or not req.processing.is_identity or req.encoder_quality is not None
            or req.quality not in (Quality.DEFAULT, Quality.COLOR) or req.fmt not in CODECS):
        return None
    if req.quality is Quality.COLOR and meta.bands < 3:
        return None
    if req.tile is not None:
        t = req.tile
        lv = meta.levels[t.level]
        inside = (t.col + 1) * lv.tile_width <= lv.width and (t.row + 1) * lv.tile_height <= lv.height
        return (t.level, t.col, t.row) if lv.stored and inside else None
    assert req.region is not None and req.size is not None
    r = req.region
    for index, lv in enumerate(meta.levels):
        f = lv.factor
        if not lv.stored or f != int(f) or req.size != (lv.tile_width, lv.tile_height):
            continue
        f = int(f)
        tw, th = lv.tile_width * f, lv.tile_height * f
        if r.x % tw or r.y % th or (r.w, r.h) != (tw, th):
            continue
        col, row = r.x // tw, r.y // th
        if (col + 1) * lv.tile_width <= lv.width and (row + 1) * lv.tile_height <= lv.height:
            return index, col, row
    return None


class StoredTiles:
    """Reads stored tile bytes; TIFF directories are parsed once per file version and shared."""

    def __init__(self) -> None:
        self._dirs: dict[tuple[str, float], tuple[TiffFile, list[list[Ifd]]]] = {}
        self._lock = threading.Lock()

    def _directories(self, path: str, meta: ImageMeta) -> tuple[TiffFile, list[list[Ifd]]]:
        key = (path, meta.mtime)
        with self._lock:
            found = self._dirs.get(key)
        if found is not None:
            return found
        with open(path, "rb") as f:
            tf = TiffFile(f)
        pages = [[page, *tf.subifds[i]] for i, page in enumerate(tf.pages)]
        with self._lock:
            if len(self._dirs) > 256:
                self._dirs.clear()
            self._dirs[key] = (tf, pages)
        return tf, pages

    def read(self, path: str, meta: ImageMeta, level: int, col: int, row: int, fmt: OutputFormat) -> bytes | None:
        """The stored tile as a complete image file in `fmt`, or None when it cannot pass through."""
        lv = meta.levels[level]
        tf, pages = self._directories(path, meta)
        chain = pages[lv.page] if lv.page < len(pages) else []
        ifd = chain[lv.subifd + 1] if lv.subifd + 1 < len(chain) else None
        if ifd is None or not _passable(ifd, fmt) or TILE_OFFSETS not in ifd.tags:
            return None
        index = row * lv.columns() + col
        fd = os.open(path, os.O_RDONLY)
        try:
            offset, count = tf.tile_location(fd, ifd, index)
            data = os.pread(fd, count, offset)
        finally:
            os.close(fd)
        if len(data) != count:
            return None
        if fmt is OutputFormat.WEBP:
            return data if data[:4] == b"RIFF" else None
        tables = ifd.values.get(JPEG_TABLES)
        if not data.startswith(b"\xff\xd8"):
            return None
        if isinstance(tables, bytes) and len(tables) > 4:
            return tables[:-2] + data[2:]
        return data


def _passable(ifd: Ifd, fmt: OutputFormat) -> bool:
    bits = set(ifd.ints(BITS)) or {1}
    return (ifd.num(COMPRESSION) == CODECS[fmt] and bits == {8} and ifd.num(SAMPLES, 1) in (1, 3)
            and ifd.num(PLANAR_CONFIG, 1) == 1 and ifd.num(PHOTOMETRIC) in (1, 2, 6))
