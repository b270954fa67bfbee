"""Zero-transcode tiles: when a request maps exactly onto a stored tile of a JPEG- (or WebP-)
compressed tiled TIFF and asks for nothing but that tile in that codec, send the stored bytes.

A stored JPEG tile is an abbreviated JPEG stream whose quantisation and Huffman tables live in the
TIFF's JPEGTables tag; splicing the two (tables without their EOI + tile without its SOI) gives a
complete JFIF stream that decodes to exactly the pixels libtiff decodes. A tile of RGB samples
(Photometric RGB, as Aperio writes them: component ids 0, 1, 2 and no marker) would be taken for YCbCr
by every decoder, so such a stream gets an Adobe APP14 marker saying "no colour transform"; one that
already says (an Adobe marker) is left alone, one that says JFIF (which means YCbCr) is decoded instead.
WebP tiles are complete WebP files already. Edge tiles are stored padded to the full tile size, so
only tiles that lie wholly inside the level pass through as they are; a JPEG edge tile's part inside the level is
cropped from the stored one losslessly where TurboJPEG is installed (`edge_tile_of`, imaging/turbojpeg.py). Other
unscaled reads of JPEG levels (another quality, DeepZoom overlaps, edge tiles without TurboJPEG) are cut from
decoded stored tiles (render.recode); everything else goes through libvips.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from ..levels import source_box
from ..models import ImageMeta, OutputFormat, Quality, TileRequest, fast_init
from . import vfs
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
MAX_TILE_BYTES = 16 << 20  # a stored tile larger than this (a 1024x1024 RGB tile is 3 MB raw) is not sent as it is
PLANAR_CONFIG = 284
ICC_PROFILE = 34675


def unscaled_box(meta: ImageMeta, req: TileRequest) -> tuple[int, tuple[int, int, int, int]] | None:
    """(level, box in that level's pixels) when `req` asks for pixels of a stored level exactly as
    stored: no resize, no rotation or mirroring, no processing, colour unchanged; else None.

    Pure: the level and box the libvips pipeline reads (`levels.source_box`), so any shortcut taken
    from it gives the pixels that pipeline gives."""
    if not _plain(meta, req):
        return None
    level, box = source_box(meta, req)
    resized = req.size is not None and req.size != box[2:]
    return (level, box) if meta.levels[level].stored and not resized else None


def _plain(meta: ImageMeta, req: TileRequest) -> bool:
    """No rotation or mirroring, no processing, colour unchanged."""
    return (not req.rotation and not req.mirror and req.processing.is_identity
            and (req.quality is Quality.DEFAULT or (req.quality is Quality.COLOR and meta.bands >= 3)))


SCALES = (2, 4, 8)  # the reductions libjpeg-turbo decodes directly (its scaled IDCT)


def scaled_box(meta: ImageMeta, req: TileRequest) -> tuple[int, tuple[int, int, int, int], int] | None:
    """(level, box, s) when `req` asks for a box of a stored level shrunk by exactly `s` (2, 4 or 8) and
    nothing else: the box starts on multiples of `s`, is `s` times the output size, and does not reach
    into a padded edge tile (whose padding a scaled decode would blend into the last pixels); else
    None. Pure. Such reads can be decoded at that scale (render.recode)."""
    if req.size is None or not _plain(meta, req):
        return None
    level, (x, y, w, h) = source_box(meta, req)
    lv = meta.levels[level]
    if not lv.stored:
        return None
    if (x + w == lv.width and lv.width % lv.tile_width) or (y + h == lv.height and lv.height % lv.tile_height):
        return None
    for s in SCALES:
        if (w, h) == (req.size[0] * s, req.size[1] * s) and not x % s and not y % s:
            return level, (x, y, w, h), s
    return None


def stored_tile_of(meta: ImageMeta, req: TileRequest) -> tuple[int, int, int] | None:
    """(level, col, row) when `req` is exactly one whole stored tile, at its stored quality, in a
    codec that tiles can be stored in; else None. Pure.

    Native tiles qualify when they lie wholly inside their level; region requests when they read one
    such tile unscaled (what IIIF, DeepZoom and Zoomify viewers ask for at tile-aligned positions)."""
    found = _one_tile(meta, req) if req.fmt in CODECS else None
    if found is None or not found[5]:
        return None
    return found[:3]


def edge_tile_of(meta: ImageMeta, req: TileRequest) -> tuple[int, int, int, int, int] | None:
    """(level, col, row, width, height) when `req` is exactly the part inside its level of one stored edge tile
    (a right or bottom one, stored padded to the full tile size), unscaled, at its stored quality, as JPEG; else
    None. Pure. Such a tile can be cropped from the stored one losslessly (`imaging.turbojpeg`)."""
    found = _one_tile(meta, req) if req.fmt is OutputFormat.JPEG else None
    if found is None or found[5]:
        return None
    return found[:5]


def _one_tile(meta: ImageMeta, req: TileRequest) -> tuple[int, int, int, int, int, bool] | None:
    """(level, col, row, width, height, whole) when `req` asks for exactly the part inside its level of one stored
    tile, unscaled and at its stored quality (`whole`: the full tile; else an edge tile's part); else None."""
    if req.encoder_quality is not None:
        return None
    found = unscaled_box(meta, req)
    if found is None:
        return None
    level, (x, y, w, h) = found
    lv = meta.levels[level]
    tw, th = lv.tile_width, lv.tile_height
    if x % tw or y % th or (w, h) != (min(tw, lv.width - x), min(th, lv.height - y)):
        return None
    return level, x // tw, y // th, w, h, (w, h) == (tw, th)


@fast_init
@dataclass(frozen=True)
class Located:
    """Where a stored tile's complete file is, in a local file: `head` + the stored bytes at `offset` (`count`
    of them) without their first `skip` (a JPEG's SOI, when the head brings its own with the tables). Small
    enough to remember in place of the bytes, which the page cache already holds (`read_now`)."""

    path: str
    version: vfs.Version
    offset: int
    count: int
    head: bytes = b""
    skip: int = 0

    def read_now(self) -> bytes:
        """The tile's file again, read without waiting (`vfs.WouldBlock` when it would have to)."""
        data = vfs.NowReader(self.path, self.version).pread(self.count, self.offset)
        return b"".join((self.head, memoryview(data)[self.skip:]))


@fast_init
@dataclass(frozen=True)
class StoredTile:
    """One stored tile as a complete image file, with its level's ICC profile (if the TIFF has one), and where
    it is when it can be read again as it is (a local file)."""

    data: bytes
    icc: bytes | None = None
    at: Located | None = None


_Kinds = dict[tuple[int, int, OutputFormat], tuple[bool, bool]]  # (page, directory in its chain, format) -> kind


class StoredTiles:
    """Reads stored tile bytes; TIFF directories are parsed once per file version and shared."""

    def __init__(self) -> None:
        # per file version: its TIFF file, its directories (each page's, then its SubIFDs), and what `read` asks of
        # a directory's tags, found once (`_passing`)
        self._dirs: dict[tuple[str, vfs.Version], tuple[TiffFile, list[list[Ifd]], _Kinds]] = {}
        self._lock = threading.Lock()

    def read_directories(self, path: str, meta: ImageMeta) -> None:
        """Parse and keep the file's directories now (when the image is opened)."""
        self._directories(path, vfs.version_of(path, meta.mtime, meta.file_size))

    def _directories(self, path: str, version: vfs.Version, now: bool = False
                     ) -> tuple[TiffFile, list[list[Ifd]], _Kinds]:
        key = (path, version)
        with self._lock:
            found = self._dirs.get(key)
        if found is not None:
            return found
        if now:
            raise vfs.WouldBlock("directories not parsed yet")
        with vfs.open_binary(path) as f:
            tf = TiffFile(f)
        if vfs.remote(path):
            with vfs.reader(path) as r:
                tf.load_tables(r.pread_many_cached)
        return self.keep(path, version, tf)

    def keep(self, path: str, version: vfs.Version, tf: TiffFile) -> tuple[TiffFile, list[list[Ifd]], _Kinds]:
        """Keep `tf`, the file's directories as parsed (with its tile tables when the file is remote), unless a
        parse of the same version is kept already: the image's metadata parses them once (pyramid.py), for both."""
        pages = [[page, *tf.subifds[i]] for i, page in enumerate(tf.pages)]
        made: tuple[TiffFile, list[list[Ifd]], _Kinds] = (tf, pages, {})
        key = (path, version)
        with self._lock:
            kept = self._dirs.get(key)
            if kept is not None:
                return kept
            if len(self._dirs) > 256:
                self._dirs.clear()
            self._dirs[key] = made
        return made

    def read(self, path: str, meta: ImageMeta, level: int, col: int, row: int, fmt: OutputFormat,
             page: int = 0, now: bool = False) -> StoredTile | None:
        """The stored tile as a complete image file in `fmt`, or None when it is stored otherwise.
        `page` is the image of a stack (its levels are TIFF page `lv.page + page`, as in reader.py).
        `now`: read without waiting (on the event loop: `vfs.NowReader`), from directories parsed before;
        `vfs.WouldBlock` when that cannot be done."""
        lv = meta.levels[level]
        version = vfs.version_of(path, meta.mtime, meta.file_size)
        tf, pages, kinds = self._directories(path, version, now)
        found = _passing(pages, kinds, lv.page + page, lv.subifd + 1, fmt)
        if found is None:
            return None
        ifd, rgb = found
        index = row * lv.columns() + col
        with vfs.NowReader(path, version) if now else vfs.reader(path) as r:
            offset, count = tf.tile_location(r.pread, ifd, index)
            if not 0 < count <= MAX_TILE_BYTES:  # a damaged or hostile byte count: never allocated
                return None
            data = r.pread(count, offset)
        if len(data) != count:
            return None
        icc = ifd.values.get(ICC_PROFILE)
        icc = icc if isinstance(icc, bytes) and icc else None
        local = not vfs.remote(path)
        if fmt is OutputFormat.WEBP:
            if data[:4] != b"RIFF":
                return None
            return StoredTile(bytes(data), icc, Located(path, version, offset, count) if local else None)
        tables = ifd.values.get(JPEG_TABLES)
        if not data.startswith(b"\xff\xd8"):
            return None
        marker = _colour_marker(rgb, data)
        if marker is None:
            return None
        if isinstance(tables, bytes) and len(tables) > 4:  # the tables, then the tile without its SOI
            head = b"".join((b"\xff\xd8", marker, memoryview(tables)[2:-2]))
        elif marker or isinstance(data, bytearray):  # the marker; or a copy out of the read buffer
            head = b"\xff\xd8" + marker
        else:
            head = b""
        at = Located(path, version, offset, count, head, 2 if head else 0) if local else None
        if head:  # one copy
            return StoredTile(b"".join((head, memoryview(data)[2:])), icc, at)
        return StoredTile(bytes(data), icc, at)


def _passing(pages: list[list[Ifd]], kinds: _Kinds, at: int, sub: int, fmt: OutputFormat) -> tuple[Ifd, bool] | None:
    """Directory `sub` of page `at`'s chain and whether its pixels are RGB samples (`rgb_samples`), when its tiles
    pass as `fmt` (`passable`, their offsets known); else None. What it asks of the tags is found once (`kinds`)."""
    chain = pages[at] if at < len(pages) else []
    if sub >= len(chain):
        return None
    ifd = chain[sub]
    kind = kinds.get((at, sub, fmt))
    if kind is None:
        kind = kinds[(at, sub, fmt)] = (passable(ifd, fmt) and TILE_OFFSETS in ifd.tags, rgb_samples(ifd))
    return (ifd, kind[1]) if kind[0] else None


ADOBE_RGB = b"\xff\xee\x00\x0eAdobe\x00\x64\x00\x00\x00\x00\x00"  # APP14, version 100, transform 0


def rgb_samples(ifd: Ifd) -> bool:
    """Whether a directory's pixels are stored as RGB samples (not YCbCr or grey)."""
    return ifd.num(SAMPLES, 1) == 3 and ifd.num(PHOTOMETRIC) == 2


def _colour_marker(rgb: bool, data: bytes | bytearray) -> bytes | None:
    """The Adobe segment an RGB-sample tile (`rgb`: `rgb_samples`) needs so that decoders do not take it for
    YCbCr (b"" when none is needed), or None when the stream says JFIF (YCbCr) over RGB samples."""
    if not rgb:
        return b""
    if data[2:4] == b"\xff\xe0" and data[6:10] == b"JFIF":
        return None
    return b"" if data[2:4] == b"\xff\xee" else ADOBE_RGB


def passable(ifd: Ifd, fmt: OutputFormat) -> bool:
    """Whether a directory's tiles are `fmt` streams of 8-bit grey or RGB/YCbCr pixels, one plane."""
    bits = set(ifd.ints(BITS)) or {1}
    return (ifd.num(COMPRESSION) == CODECS[fmt] and bits == {8} and ifd.num(SAMPLES, 1) in (1, 3)
            and ifd.num(PLANAR_CONFIG, 1) == 1 and ifd.num(PHOTOMETRIC) in (1, 2, 6))
