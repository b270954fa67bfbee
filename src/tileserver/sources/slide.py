"""Whole-slide images through OpenSlide: Aperio SVS, Hamamatsu NDPI/VMS/VMU, Leica SCN, MIRAX, Philips
TIFF, Sakura SVSlide, Trestle, Ventana BIF, Zeiss CZI and DICOM WSI (whatever OpenSlide reads).

Claimed by content: a cheap look at the first bytes (TIFF or BigTIFF, DICOM's `DICM` at byte 128,
SQLite for Sakura, `ZISRAWFILE` for Zeiss, a Hamamatsu VMS/VMU key file), then OpenSlide's own probe
(`detect_format`). MIRAX is the one format OpenSlide recognises by name: it opens a `.mrxs` file only
under that extension (its data sits in a folder of the same name), so a `.mrxs` name is the pre-check
there. Plain tiled TIFFs, which OpenSlide calls `generic-tiff`, stay with the libvips reader
(`pyramid.py`): it reads them faster and passes their tiles through.

Levels are the slide's own pyramid (OpenSlide's level sizes, tile sizes from `openslide.level[N].tile-*`,
else the configured tile size), then virtual levels halving down to one tile, each the 2 x 2 mean of
the level above (small ones kept, bounded, in memory). Pixels come from OpenSlide's `read_region`
(`slidelib.py`), flattened onto the slide's background colour. A level's pixel (x, y) is OpenSlide's
level-0 point (round(x * d), round(y * d)) for the level's downsample d: exact when d is a whole number.

Stored tiles of Aperio slides are sent as they are (pass-through, `passthrough.StoredTiles`): each
OpenSlide level is matched by size and tile size to its TIFF directory. Aperio's JPEG tiles hold RGB
samples (Photometric RGB); the spliced stream gets an Adobe marker saying so, so that every decoder
gives the pixels OpenSlide gives. Other TIFF-based vendors are not passed through: OpenSlide places
their tiles itself (Ventana and Trestle tiles overlap, Leica SCN and Philips compose several images,
NDPI is not tiled), so a stored tile is not a tile of OpenSlide's level. JPEG 2000 SVS (33003/33005)
and levels after one with missing (empty) tiles, which OpenSlide paints from the level above, are
decoded too.

Associated images (label, macro, thumbnail, ...) are `<slide>;associated=<name>`: one stored level
plus virtual levels. Every OpenSlide error is a 415 (`SourceError`), a vanished file a 404.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

import numpy as np
import pyvips

from ..cache.memory import ByteLRU
from ..errors import ImageTooLarge, NotFound, SourceError
from ..levels import level_factor, with_virtual
from ..models import ImageMeta, Level, OutputFormat
from . import slidelib, vfs
from .base import Box4, Selector, SourceImage, no_selection
from .budget import PixelBudget
from .passthrough import StoredTile, StoredTiles, passable
from .tiff import TILE_BYTECOUNTS, TILE_LENGTH, TILE_OFFSETS, TILE_WIDTH, TiffFile

log = logging.getLogger("tileserver.sources.slide")

TIFF_MAGIC = (b"II*\0", b"MM\0*", b"II+\0", b"MM\0+")
BY_NAME = (".mrxs",)  # OpenSlide's MIRAX driver opens only files of this extension
PASSTHROUGH_VENDORS = {"aperio"}
CHUNK = 2048  # side of the boxes one OpenSlide call paints (ARGB: 16 MiB)
MAX_READ_PIXELS = 128 << 20  # largest box one read may ask of a slide (RGB: 384 MiB)
CACHED_LEVEL_PIXELS = 16 << 20  # virtual levels up to this size are kept whole (bounded LRU)
BANDS = 3


def remote_vendor(path: str) -> str | None:
    """The slide vendor of a tiled TIFF in a store, from its first directory, by the marks OpenSlide's
    TIFF-based drivers look for (the object is copied locally only once it is known to be a slide)."""
    with vfs.open_binary(path) as f:
        tf = TiffFile(f, max_ifds=1)
    if not tf.pages:
        return None
    ifd = tf.pages[0]
    desc, soft, xmp = (v if isinstance(v := ifd.values.get(t), bytes) else b"" for t in (270, 305, 700))
    if desc.startswith(b"Aperio"):
        return "aperio"
    if 65420 in ifd.tags:
        return "hamamatsu"
    if b"DPUfsImport" in desc:
        return "philips"
    if desc.startswith(b"<?xml") and b"leica" in desc.lower():
        return "leica"
    if soft.startswith(b"MedScan"):
        return "trestle"
    if b"iScan" in xmp:
        return "ventana"
    return None


def probable_slide(path: str, head: bytes) -> bool:
    """The cheap pre-check before OpenSlide's own probe: file kinds OpenSlide has drivers for."""
    return (head[:4] in TIFF_MAGIC or head[128:132] == b"DICM" or head.startswith(b"SQLite format 3\0")
            or head.startswith(b"ZISRAWFILE") or b"Virtual Microscope Specimen]" in head[:64]
            or path.endswith(BY_NAME))


class SlideReader:
    """What the slides of one process share: OpenSlide's tile cache, the kept virtual levels and
    associated images, and the parsed TIFF directories of pass-through slides."""

    def __init__(self, tile_size: int = 256, cache_bytes: int = 64 << 20, decoded_bytes: int = 256 << 20,
                 budget: PixelBudget | None = None) -> None:
        self.tile_size = tile_size
        self.budget = budget
        self.cache = slidelib.new_cache(cache_bytes)
        self.decoded: ByteLRU[tuple[str, float, str, int], Any] = ByteLRU(decoded_bytes)
        self.stored = StoredTiles()


class SlideFormat:
    name = "openslide"
    ranged = False  # see registry.py

    def __init__(self, reader: SlideReader) -> None:
        self.reader = reader

    def probe(self, path: str, head: bytes) -> bool:
        if not probable_slide(path, head):
            return False
        if vfs.remote(path):  # a tiled TIFF in a store (the registry copied anything else)
            return remote_vendor(path) is not None
        vendor = slidelib.detect(path)
        return vendor is not None and vendor != "generic-tiff"

    def open(self, path: str, ident: str) -> SlideImage:
        return SlideImage(self.reader, path, ident)


def _to_vips(pixels: Any, icc: bytes | None) -> Any:
    arr = np.ascontiguousarray(pixels)
    h, w = arr.shape[:2]
    img = pyvips.Image.new_from_memory(arr.data, w, h, BANDS, "uchar").copy(interpretation="srgb")
    if icc:
        img.set_type(pyvips.GValue.blob_type, "icc-profile-data", icc)
    return img


def _halve(src: Any, w: int, h: int) -> Any:
    """The 2 x 2 mean of `src` as `w` x `h` pixels (`src` padded by its edge where a 1-pixel side
    cannot halve)."""
    sh, sw = src.shape[:2]
    if (sh, sw) != (2 * h, 2 * w):
        src = np.pad(src, ((0, 2 * h - sh), (0, 2 * w - sw), (0, 0)), mode="edge")
    blocks = src.reshape(h, 2, w, 2, BANDS).astype(np.uint16)
    return ((blocks.sum(axis=(1, 3)) + 2) // 4).astype(np.uint8)


class _Pyramid:
    """Pixels of stored levels (`_stored`, per kind of image) and of the virtual levels below them."""

    meta: ImageMeta
    reader: SlideReader
    path: str
    icc: bytes | None
    kind: str  # the LRU key's name: "slide" or the associated image's

    def _stored(self, level: int, box: Box4) -> Any:
        raise NotImplementedError

    def read(self, level: int, box: Box4, page: int = 0, layers: int | None = None) -> Any:
        if box[2] * box[3] > MAX_READ_PIXELS:
            raise ImageTooLarge("region too large to read from this slide at this size")
        return _to_vips(self._pixels(level, box), self.icc)

    def _pixels(self, level: int, box: Box4) -> Any:
        if self.meta.levels[level].stored:
            return self._stored(level, box)
        whole = self._whole(level)
        x, y, w, h = box
        return whole[y : y + h, x : x + w] if whole is not None else self._shrunk(level, box)

    def _shrunk(self, level: int, box: Box4) -> Any:
        """Pixels of a virtual level from the level above, CHUNK/2 pixels a side at a time."""
        x, y, w, h = box
        above = self.meta.levels[level - 1]
        out = np.empty((h, w, BANDS), np.uint8)
        step = CHUNK // 2
        for cy in range(0, h, step):
            for cx in range(0, w, step):
                cw, ch = min(step, w - cx), min(step, h - cy)
                sx, sy = 2 * (x + cx), 2 * (y + cy)
                sw, sh = min(2 * cw, above.width - sx), min(2 * ch, above.height - sy)
                out[cy : cy + ch, cx : cx + cw] = _halve(self._pixels(level - 1, (sx, sy, sw, sh)), cw, ch)
        return out

    def _whole(self, level: int) -> Any:
        """A small virtual level, made once and kept in the shared LRU; None for big ones."""
        lv = self.meta.levels[level]
        if lv.width * lv.height > CACHED_LEVEL_PIXELS:
            return None
        key = (self.path, self.meta.mtime, self.kind, level)
        found = self.reader.decoded.get(key)
        if found is None:
            found = self._shrunk(level, (0, 0, lv.width, lv.height))
            found.setflags(write=False)
            self.reader.decoded.put(key, found, found.nbytes)
        return found


class SlideImage(_Pyramid):
    """One slide, with one OpenSlide handle (thread-safe) kept while the core keeps the image."""

    kind = "slide"

    def __init__(self, reader: SlideReader, path: str, ident: str) -> None:
        self.reader = reader
        self.path = path
        self._lock = threading.Lock()
        try:
            st = os.stat(path)
            self._handle: Any = self._open()
            props = slidelib.properties(self._handle)
            dims = slidelib.levels(self._handle)
            self.associated = slidelib.associated(self._handle)
        except FileNotFoundError as exc:
            raise NotFound(f"image not found: {ident}") from exc
        except (slidelib.SlideError, OSError) as exc:
            raise self._error(exc, ident, "opened") from exc
        if not dims or min(min(w, h) for w, h, _ in dims) < 1:
            raise SourceError("the slide has no pixels")
        self.background = slidelib.background(props)
        self.icc = slidelib.icc_profile(self._handle)
        self.downsamples = [d for _, _, d in dims]
        stored = self._levels(props, dims)
        self.tiff_dirs = self._tiff_dirs(path, props, stored)
        stored = [Level(lv.width, lv.height, lv.tile_width, lv.tile_height, lv.factor, True,
                        self.tiff_dirs.get(i, 0)) for i, lv in enumerate(stored)]
        full = (dims[0][0], dims[0][1])
        self.meta = ImageMeta(
            ident=ident, width=full[0], height=full[1], levels=with_virtual(stored, full),
            bands=BANDS, bits=8, sample_format="uint", colorspace="srgb", has_alpha=False,
            has_icc=self.icc is not None, mtime=st.st_mtime, file_size=st.st_size,
            min_values=(0.0,) * BANDS, max_values=(255.0,) * BANDS, loader="openslide",
            resolution=_resolution(props), metadata=_descriptive(props),
            compression="jpeg" if 0 in self.tiff_dirs else "",
            properties=tuple(sorted(props.items())), associated=tuple(sorted(self.associated)),
            decode_pixels=max(lv.tile_width * lv.tile_height for lv in stored),
        )
        if reader.budget is not None:  # before OpenSlide decodes a tile
            reader.budget.check(self.meta)
        self._check_readable()

    # -- opening --------------------------------------------------------------------------------
    def _open(self) -> Any:
        handle = slidelib.open_slide(self.path)
        slidelib.use_cache(handle, self.reader.cache)
        return handle

    def handle(self) -> Any:
        with self._lock:
            if self._handle is None:
                self._handle = self._open()
            return self._handle

    def _failed(self, handle: Any) -> None:
        """Drop a handle in OpenSlide's (sticky) error state: the next read opens a fresh one. Reads
        still running on it keep their reference; the handle closes when the last one ends."""
        with self._lock:
            if self._handle is handle:
                self._handle = None

    def _error(self, exc: Exception, ident: str, what: str) -> SourceError | NotFound:
        if not os.path.exists(self.path):
            return NotFound(f"image not found: {ident}")
        log.error("OpenSlide: %s could not be %s: %s", ident, what, exc)
        return SourceError("the slide could not be read")

    def _levels(self, props: dict[str, str], dims: list[tuple[int, int, float]]) -> list[Level]:
        full = (dims[0][0], dims[0][1])
        out = []
        for i, (w, h, _) in enumerate(dims):
            tw = _int(props.get(f"openslide.level[{i}].tile-width")) or self.reader.tile_size
            th = _int(props.get(f"openslide.level[{i}].tile-height")) or self.reader.tile_size
            out.append(Level(w, h, tw, th, level_factor(full, (w, h)), True))
        return out

    def _check_readable(self) -> None:
        """Decode one tile of the smallest level now, so a slide whose pixels OpenSlide cannot decode is a
        415 for its info documents too, not only for its tiles."""
        smallest = max(i for i, lv in enumerate(self.meta.levels) if lv.stored)
        lv = self.meta.levels[smallest]
        self._stored(smallest, (0, 0, min(lv.width, lv.tile_width), min(lv.height, lv.tile_height)))

    @staticmethod
    def _tiff_dirs(path: str, props: dict[str, str], levels: list[Level]) -> dict[int, int]:
        """OpenSlide level -> TIFF directory, for the levels whose stored JPEG tiles are OpenSlide's tiles."""
        if props.get("openslide.vendor") not in PASSTHROUGH_VENDORS:
            return {}
        try:
            with open(path, "rb") as f:
                tf = TiffFile(f)
            fd = os.open(path, os.O_RDONLY)
            try:
                return _match_directories(tf, fd, levels)
            finally:
                os.close(fd)
        except (OSError, ValueError, IndexError, KeyError) as exc:
            log.warning("%s: TIFF directories not readable, no pass-through: %s", os.path.basename(path), exc)
            return {}

    # -- pixels ---------------------------------------------------------------------------------
    def _stored(self, level: int, box: Box4) -> Any:
        x, y, w, h = box
        d = self.downsamples[level]
        out = np.empty((h, w, BANDS), np.uint8)
        handle = self.handle()
        try:
            for cy in range(0, h, CHUNK):
                for cx in range(0, w, CHUNK):
                    cw, ch = min(CHUNK, w - cx), min(CHUNK, h - cy)
                    argb = slidelib.read_argb(handle, round((x + cx) * d), round((y + cy) * d), level, cw, ch)
                    slidelib.flatten(argb, self.background, out[cy : cy + ch, cx : cx + cw])
        except slidelib.SlideError as exc:
            self._failed(handle)
            raise self._error(exc, self.meta.ident, "decoded") from exc
        return out

    def stored_tile(self, level: int, col: int, row: int, fmt: OutputFormat, page: int = 0, now: bool = False
                    ) -> StoredTile | None:
        if level not in self.tiff_dirs or page:
            return None
        try:
            return self.reader.stored.read(self.path, self.meta, level, col, row, fmt, now=now)
        except (OSError, ValueError, IndexError, KeyError) as exc:
            log.warning("stored tile %s of %s not readable: %s", (level, col, row), self.meta.ident, exc)
            return None

    def select(self, selector: Selector) -> SourceImage:
        if selector.associated is None or selector.page is not None or selector.channels is not None:
            return no_selection(self, selector)
        name = selector.associated
        if name not in self.associated:
            raise NotFound(f"{self.meta.ident} has no associated image {name}")
        return AssociatedImage(self, name)


class AssociatedImage(_Pyramid):
    """A slide's associated image (label, macro, thumbnail): one stored level, virtual levels below."""

    def __init__(self, slide: SlideImage, name: str) -> None:
        self.slide = slide
        self.reader = slide.reader
        self.path = slide.path
        self.kind = f"associated={name}"
        self.name = name
        w, h = slide.associated[name]
        if w < 1 or h < 1 or w * h > MAX_READ_PIXELS:
            raise SourceError("the associated image cannot be read")
        self.icc = slidelib.icc_profile(slide.handle(), name)
        t = self.reader.tile_size
        stored = [Level(w, h, t, t, 1.0, True)]
        m = slide.meta
        self.meta = ImageMeta(
            ident=f"{m.ident};associated={name}", width=w, height=h, levels=with_virtual(stored, (w, h)),
            bands=BANDS, bits=8, sample_format="uint", colorspace="srgb", has_alpha=False,
            has_icc=self.icc is not None, mtime=m.mtime, file_size=m.file_size, min_values=m.min_values,
            max_values=m.max_values, loader="openslide", metadata=(("title", f"{m.ident} ({name})"),),
            decode_pixels=w * h,
        )
        if self.reader.budget is not None:  # decoded whole, below
            self.reader.budget.check(self.meta)
        self._image()  # decoded now: an undecodable associated image is a 415 for its info documents too

    def _image(self) -> Any:
        key = (self.path, self.meta.mtime, self.kind, 0)
        found = self.reader.decoded.get(key)
        if found is None:
            handle = self.slide.handle()
            try:
                argb = slidelib.read_associated_argb(handle, self.name, (self.meta.width, self.meta.height))
            except slidelib.SlideError as exc:
                self.slide._failed(handle)
                raise self.slide._error(exc, self.meta.ident, "decoded") from exc
            found = slidelib.flatten(argb, self.slide.background)
            found.setflags(write=False)
            self.reader.decoded.put(key, found, found.nbytes)
        return found

    def _stored(self, level: int, box: Box4) -> Any:
        x, y, w, h = box
        return self._image()[y : y + h, x : x + w]

    def stored_tile(self, level: int, col: int, row: int, fmt: OutputFormat, page: int = 0, now: bool = False
                    ) -> StoredTile | None:
        return None

    def select(self, selector: Selector) -> SourceImage:
        return no_selection(self, selector)


def _match_directories(tf: TiffFile, fd: int, levels: list[Level]) -> dict[int, int]:
    """Each level's TIFF directory: the next tiled one of its size and tile size, with tiles stored as
    JPEG that can pass through. After a level with an empty (missing) tile OpenSlide paints parts of
    the following levels from the level above, so those levels are not passed through."""
    out: dict[int, int] = {}
    start = 0
    for i, lv in enumerate(levels):
        for d in range(start, len(tf.pages)):
            ifd = tf.pages[d]
            if ifd.tiled and ifd.size == (lv.width, lv.height) and \
                    (ifd.num(TILE_WIDTH), ifd.num(TILE_LENGTH)) == (lv.tile_width, lv.tile_height):
                break
        else:
            return out
        start = d + 1
        if not passable(ifd, OutputFormat.JPEG) or TILE_OFFSETS not in ifd.tags:
            return out
        out[i] = d
        tf.tile_location(lambda n, o: os.pread(fd, n, o), ifd, 0)  # loads the byte counts into the directory
        counts = ifd.values.get(TILE_BYTECOUNTS)
        if not isinstance(counts, tuple) or 0 in counts:
            return out
    return out


def _int(text: str | None) -> int:
    try:
        return int(text) if text else 0
    except ValueError:
        return 0


def _float(text: str | None) -> float | None:
    try:
        value = float(text) if text else None
    except ValueError:
        return None
    return value if value is not None and 0 < value < float("inf") else None


def _resolution(props: dict[str, str]) -> tuple[float, float, int] | None:
    """Microns per pixel as TIFF-style pixels per centimetre (unit 3): what OBJ `dpi` reports."""
    x, y = _float(props.get("openslide.mpp-x")), _float(props.get("openslide.mpp-y"))
    return (1e4 / x, 1e4 / y, 3) if x and y else None


def _descriptive(props: dict[str, str]) -> tuple[tuple[str, str], ...]:
    comment = props.get("openslide.comment", "").strip()
    return (("description", comment),) if comment else ()
