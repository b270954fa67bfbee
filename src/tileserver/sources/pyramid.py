"""Synchronous pyvips pyramid reader: image metadata, and pixels of any level.

Stored levels come from a tiled pyramidal TIFF (levels as pages or as SubIFDs); below the smallest
stored level, and for single-resolution images (JPEG, PNG, WebP, striped TIFF...), levels are made
by halving (rounding up) until one tile holds the image. Opened tiled TIFFs are reused per thread
(libvips serialises reads on one handle); files libvips reads only from top to bottom (JPEG, PNG, WebP,
GIF, striped TIFF...) are decoded whole once, in one sequential pass, and kept with the decoded levels
(never opened for random access, which decodes them into a temporary file on disc); virtual levels are
materialised once and shared. `ImageMeta.decode_pixels` says what one read decodes (a tile, or the whole
file), for the pixel budget (budget.py); pixel reads fail on broken data (`FAIL_ON`).
A TIFF image stack (pages of one size, NewSubfileType multi-page, as iipsrv 1.3 reads them) is one
image whose pages are chosen per read (`page`); its page names and scales are `ImageMeta.stack`.
Any other multi-page file (a TIFF document whose pages differ in size, each with its own reductions:
`documents.py`; a GIF, WebP or HEIF with several pages) is read as its first page, listing its pages in
`ImageMeta.pages`. `<ident>;page=N` (`PyramidImage.select`) is page N of a document or a stack as an
image of its own, with its own levels.
All pyvips errors are translated here: nothing above this module sees `pyvips.Error`.
"""

from __future__ import annotations

import logging
import os
import re
import struct
import threading
from collections import OrderedDict
from dataclasses import replace
from typing import Any, NamedTuple

import pyvips

from ..cache.memory import ByteLRU
from ..errors import NotFound, SourceError, TileNotFound, TileServerError
from ..levels import with_virtual
from ..models import ImageMeta, Level, OutputFormat, Page, StackItem
from . import vfs
from .base import Box4, Selector, SourceImage
from .channels import select_channels
from .documents import DocPage, document_pages, stack_items
from .passthrough import StoredTile, StoredTiles
from .tiff import (
    SMAX,
    SMIN,
    Ifd,
    TiffFile,
    descriptive_tags,
    resolution,
)

log = logging.getLogger("tileserver.sources.pyramid")

BITS = {"uchar": 8, "char": 8, "ushort": 16, "short": 16, "uint": 32, "int": 32, "float": 32,
        "double": 64, "complex": 64, "dpcomplex": 128}
NUMPY_TYPES = {"uchar": "u1", "char": "i1", "ushort": "u2", "short": "i2", "uint": "u4", "int": "i4", "float": "f4",
               "double": "f8", "complex": "c8", "dpcomplex": "c16"}  # libvips sample format -> numpy dtype
SAMPLE = {"uchar": "uint", "ushort": "uint", "uint": "uint", "char": "int", "short": "int", "int": "int"}
RANGES = {"uchar": 255.0, "char": 127.0, "ushort": 65535.0, "short": 32767.0, "uint": 4294967295.0,
          "int": 2147483647.0}
COLORSPACES = {"srgb": "srgb", "rgb": "srgb", "rgb16": "srgb", "scrgb": "srgb", "b-w": "grey",
               "grey16": "grey", "lab": "lab", "labs": "lab", "labq": "lab", "cmyk": "cmyk",
               "xyz": "xyz", "hsv": "srgb"}
EXIF_TAGS = {"exif-ifd0-Artist": "creator", "exif-ifd0-Copyright": "rights",
             "exif-ifd0-ImageDescription": "description", "exif-ifd0-Make": "make",
             "exif-ifd0-Model": "model", "exif-ifd0-Software": "software", "exif-ifd0-DateTime": "date"}
SHRINK_ON_LOAD = {"jpegload", "webpload", "heifload"}
SAME_SIZE_PAGES = {"gifload", "webpload"}  # frames of an animation: every page has the first one's size
MAX_PAGES = 4096  # pages listed (and addressable) in a file other than TIFF (a TIFF's: TiffFile.MAX_IFDS)
MATERIALISE_PIXELS = 64 * 1024 * 1024
# pixel reads fail on broken or missing data (a 415), where libvips would fill it in grey; warnings
# (an unknown tag, extra bytes between markers) still decode
FAIL_ON = "error"


BLOCKED_LOADERS = ("VipsForeignLoadCsv", "VipsForeignLoadMatrix")  # text parsed whole into memory: not images


def configure_vips() -> None:
    """Process-wide libvips set-up: no untrusted loaders (libvips' own list: those not fuzzed for hostile
    input) and none of the text formats, one libvips thread per job (the app's thread pool gives the
    parallelism), and no operation cache (we cache handles and tiles), so libvips keeps no decoded pixels
    of its own between requests. The loaders keep their denial-of-service limits (`unlimited` is never
    set); the pixel budget (budget.py) refuses larger images before a loader decodes them."""
    pyvips.block_untrusted_set(True)
    for name in BLOCKED_LOADERS:
        pyvips.operation_block_set(name, True)
    pyvips.concurrency_set(1)
    pyvips.cache_set_max(0)
    pyvips.cache_set_max_mem(0)
    pyvips.cache_set_max_files(0)


def libvips_version() -> str:
    return f"{pyvips.version(0)}.{pyvips.version(1)}.{pyvips.version(2)}"


def vips_error(exc: pyvips.Error, what: str) -> TileServerError:
    """What a libvips error answers: a broken file (415), or the store failure that made libvips' read
    fail (a remote object read through a custom source: 502/503/504, logged where it failed)."""
    failed = vfs.recent_failure()
    if failed is not None:
        return failed
    log.error("libvips error for %s: %s", what, getattr(exc, "detail", exc))
    return SourceError("the image could not be decoded")


class _Layout(NamedTuple):
    """What the file says beyond libvips' header of one page: stored levels, ASCII tags, tile codec,
    SMin/SMax sample limits, resolution, the pages of an image stack and those of a document."""

    levels: list[Level]
    tags: dict[str, str]
    compression: str
    limits: tuple[tuple[float, ...], tuple[float, ...]] | None
    stack: tuple[StackItem, ...]
    pages: tuple[Page, ...]
    resolution: tuple[float, float, int] | None
    decode_pixels: int  # what one read decodes at once: a tile or strip of a TIFF, else the whole page


class PyramidReader:
    def __init__(self, tile_size: int = 256, open_images: int = 64, decoded_cache_bytes: int = 256 << 20):
        self.tile_size = tile_size
        self.open_images = open_images
        self._local = threading.local()
        # decoded levels kept in memory: virtual levels, and small stored levels read as a whole
        self._decoded: ByteLRU[tuple[str, vfs.Version, int, int], Any] = ByteLRU(decoded_cache_bytes)
        self._stored = StoredTiles()

    def decoded_stats(self) -> dict[str, int]:
        """The decoded-level cache's counters (metrics)."""
        return self._decoded.stats()

    # -- metadata -----------------------------------------------------------------------------
    def info(self, path: str, ident: str, page: int | None = None) -> ImageMeta:
        """The file's first page, listing the file's pages (`ImageMeta.stack` for a stack, `.pages`
        for any other multi-page file); with `page`, that page alone as an image of its own (its own
        levels, no page list). NotFound past the last page."""
        try:
            st = vfs.stat(path)
            img = vfs.header(path)
            loader = img.get("vips-loader").removesuffix("_source")  # a store object: tiffload_source
            if loader == "tiffload":
                img, layout = self._tiff_layout(path, ident, img, page, vfs.version_of(path, st.mtime, st.size))
            else:
                img, layout = self._other_layout(path, ident, img, loader, page)
        except NotFound as exc:
            raise NotFound(f"image not found: {ident}") from exc
        except pyvips.Error as exc:
            if not vfs.remote(path) and not os.path.exists(path):
                raise NotFound(f"image not found: {ident}") from exc
            raise vips_error(exc, ident) from exc
        except (OSError, ValueError) as exc:
            log.error("cannot read %s: %s", ident, exc)
            raise SourceError("the image could not be read") from exc
        fmt = img.get("format")
        top = RANGES.get(fmt, 1.0)
        low = 0.0 if fmt in ("uchar", "ushort", "uint") or top == 1.0 else -top - 1
        mins, maxs = layout.limits or ((low,) * img.bands, (top,) * img.bands)
        return ImageMeta(
            ident=ident, width=img.width, height=img.height,
            levels=with_virtual(layout.levels, (img.width, img.height)),
            bands=img.bands, bits=BITS.get(fmt, 8), sample_format=SAMPLE.get(fmt, "float"),
            colorspace=COLORSPACES.get(img.interpretation, "multiband" if img.bands > 4 else "srgb"),
            has_alpha=bool(img.hasalpha()), has_icc="icc-profile-data" in img.get_fields(),
            mtime=st.mtime, file_size=st.size, min_values=mins, max_values=maxs, loader=loader,
            resolution=layout.resolution, metadata=tuple(sorted(layout.tags.items())),
            compression=layout.compression, stack=layout.stack, pages=layout.pages,
            decode_pixels=layout.decode_pixels,
        )

    def _tiff_layout(self, path: str, ident: str, img: Any, page: int | None, version: vfs.Version
                     ) -> tuple[Any, _Layout]:
        """Page `page` (the first when None, with the file's pages) of a TIFF: its pyvips header and
        what its directories say. The directories of a JPEG- or WebP-tiled file are kept for its stored-tile
        reads (`StoredTiles.keep`, under the file's `version`): it is parsed once."""
        with vfs.open_binary(path) as f:
            tf = TiffFile(f)
        if vfs.remote(path):  # the tile tables too, now, in one request (libvips reads them from the cache)
            with vfs.reader(path) as r:
                tf.load_tables(r.pread_many_cached)
        if any(ifd.tiled and ifd.compression in ("jpeg", "webp") for ifd in tf.pages):
            self._stored.keep(path, version, tf)
        doc = document_pages(tf, self.tile_size)
        chosen = _page_of(doc, page, ident)
        ifd = tf.pages[chosen.page]
        if chosen.page:
            img = vfs.tiffload(path, fill=True, page=chosen.page)
        stored = list(chosen.levels)
        stack = stack_items(tf, stored, ident) if page is None else ()
        pages = _page_list(doc) if page is None and not stack else ()
        unit = _decode_pixels(tf, stored, max(len(stack), 1))
        return img, _Layout(stored, descriptive_tags(ifd), ifd.compression if ifd.tiled else "",
                            _limits(ifd, img.bands), stack, pages, resolution(ifd), unit)

    def _other_layout(self, path: str, ident: str, img: Any, loader: str, page: int | None
                      ) -> tuple[Any, _Layout]:
        """Page `page` (the first when None, with the file's pages) of a file other than TIFF: GIF,
        WebP and HEIF may have several (libvips' `n-pages`), every other format one."""
        count = min(img.get("n-pages"), MAX_PAGES) if "n-pages" in img.get_fields() else 1
        n = page or 0
        if not 0 <= n < count:
            raise NotFound(f"{ident} has no page {n}")
        first = img
        if n:
            img = pyvips.Image.new_from_file(path, page=n)
        t = self.tile_size
        pages: tuple[Page, ...] = ()
        if page is None and count > 1:
            pages = tuple(Page(*self._page_size(path, first, loader, k)) for k in range(count))
        return img, _Layout([Level(img.width, img.height, t, t, 1.0, True, n)], _exif(img), "", None, (), pages,
                            _resolution(path, loader, img), img.width * img.height)

    @staticmethod
    def _page_size(path: str, first: Any, loader: str, n: int) -> tuple[int, int]:
        if n == 0 or loader in SAME_SIZE_PAGES:
            return first.width, first.height
        img = pyvips.Image.new_from_file(path, page=n)  # a header read: pixels are decoded on demand
        return img.width, img.height

    # -- pixels -------------------------------------------------------------------------------
    # `page` selects one image of a stack (ImageMeta.stack): a stored level `lv` of it is TIFF page
    # `lv.page + page` (SubIFD `lv.subifd`), and its virtual levels are shrunk from that page. A page
    # opened on its own (`PyramidImage.select`) has levels naming its own directories and `page` 0;
    # decoded levels are kept by the directory of full resolution, so both ways share them.
    def level_image(self, path: str, meta: ImageMeta, index: int, page: int = 0) -> Any:
        """The whole level `index` of `page` as a (lazy) pyvips image."""
        check_page(meta, page)
        lv = meta.levels[index]
        try:
            if lv.stored:
                return self._open(path, meta, lv, page)
            return self._virtual_level(path, meta, index, page)
        except pyvips.Error as exc:
            raise vips_error(exc, meta.ident) from exc

    def read(self, path: str, meta: ImageMeta, index: int, box: tuple[int, int, int, int], page: int = 0) -> Any:
        """Pixels of `box` at level `index` of `page`. A read covering a quarter or more of a level
        that fits in memory decodes the whole level once and keeps it (exports and thumbnails then
        only resize and encode); smaller reads crop the file, or the kept level when there is one."""
        x, y, w, h = box
        lv = meta.levels[index]
        key = _decoded_key(path, meta, index, page)
        img = self._decoded.get(key)
        if img is None:
            img = self.level_image(path, meta, index, page)
            nbytes = lv.width * lv.height * meta.bands * max(meta.bits // 8, 1)
            if (lv.stored and meta.loader == "tiffload" and 4 * w * h >= lv.width * lv.height
                    and nbytes <= self._decoded.max_bytes // 4):
                try:
                    img = img.copy_memory()
                except pyvips.Error as exc:
                    raise vips_error(exc, meta.ident) from exc
                self._decoded.put(key, img, nbytes)
        return img.crop(x, y, w, h)

    def stored_tile(self, path: str, meta: ImageMeta, tile: tuple[int, int, int], fmt: OutputFormat,
                    page: int = 0, now: bool = False) -> StoredTile | None:
        """The stored bytes of a TIFF tile as a complete `fmt` file, or None (see passthrough.py); `now`: without
        waiting, or `vfs.WouldBlock` (`StoredTiles.read`)."""
        check_page(meta, page)
        try:
            return self._stored.read(path, meta, *tile, fmt, page=page, now=now)
        except (OSError, ValueError, IndexError, KeyError) as exc:
            log.warning("stored tile %s of %s not readable: %s", tile, meta.ident, exc)
            return None

    def prepare_stored(self, path: str, meta: ImageMeta) -> None:
        """Parse a local JPEG- or WebP-tiled TIFF's directories with its metadata (in the pool, where the image is
        opened), so that its first stored tiles are read on the event loop too (`StoredTiles.read` with `now`)."""
        if meta.loader != "tiffload" or meta.compression not in ("jpeg", "webp") or vfs.remote(path):
            return
        try:
            self._stored.read_directories(path, meta)
        except (OSError, ValueError, IndexError, KeyError) as exc:  # the first stored tile says it again
            log.warning("directories of %s not readable: %s", meta.ident, exc)

    def _open(self, path: str, meta: ImageMeta, lv: Level, page: int) -> Any:
        if meta.loader != "tiffload" or not meta.compression:  # not a tiled TIFF directory
            return self._whole(path, meta, lv.page + page)
        handles: OrderedDict[tuple[str, vfs.Version, int, int], Any] | None = getattr(self._local, "h", None)
        if handles is None:
            handles = self._local.h = OrderedDict()
        key = (path, vfs.version_of(path, meta.mtime, meta.file_size), lv.page + page, lv.subifd)
        img = handles.get(key)
        if img is not None:
            handles.move_to_end(key)
            return img
        img = vfs.tiffload(path, page=lv.page + page, subifd=lv.subifd, access="random", fail_on=FAIL_ON)
        handles[key] = img
        while len(handles) > self.open_images:
            handles.popitem(last=False)
        return img

    def _whole(self, path: str, meta: ImageMeta, page: int) -> Any:
        """Page `page` of a file libvips reads only from top to bottom (JPEG, PNG, WebP, GIF, HEIF, a
        striped TIFF, ...), decoded whole into memory in one sequential pass and kept with the decoded
        levels while it fits.
        Never opened for random access: libvips would decode such a file past VIPS_DISC_THRESHOLD (100 MB)
        into a temporary file on disc, kept open (and its disc space taken) as long as the handle. The
        pixel budget (budget.py) has bounded its size (`ImageMeta.decode_pixels`) before this runs."""
        key = (path, vfs.version_of(path, meta.mtime, meta.file_size), page, 0)
        img = self._decoded.get(key)
        if img is None:
            options = {"page": page} if page else {}
            img = pyvips.Image.new_from_file(path, access="sequential", fail_on=FAIL_ON, **options).copy_memory()
            self._decoded.put(key, img, img.width * img.height * img.bands * max(BITS.get(img.format, 8) // 8, 1))
        return img

    def _virtual_level(self, path: str, meta: ImageMeta, index: int, page: int) -> Any:
        key = _decoded_key(path, meta, index, page)
        img = self._decoded.get(key)
        if img is not None:
            return img
        lv = meta.levels[index]
        if meta.loader in SHRINK_ON_LOAD and index == 1 and meta.levels[0].page + page == 0:
            img = pyvips.Image.thumbnail(path, lv.width, height=lv.height, size="force", no_rotate=True,
                                         fail_on=FAIL_ON)
        else:
            img = shrink(self.level_image(path, meta, index - 1, page), lv.width, lv.height)
        if lv.width * lv.height * meta.bands <= MATERIALISE_PIXELS:
            img = img.copy_memory()
            self._decoded.put(key, img, lv.width * lv.height * meta.bands * max(meta.bits // 8, 1))
        return img


class PyramidImage:
    """One file read through libvips (`PyramidReader`): the `SourceImage` of TIFF pyramids, stacks and
    every single-resolution format libvips loads."""

    def __init__(self, reader: PyramidReader, path: str, meta: ImageMeta) -> None:
        self.reader = reader
        self.path = path
        self.meta = meta

    def read(self, level: int, box: Box4, page: int = 0, layers: int | None = None) -> Any:
        return self.reader.read(self.path, self.meta, level, box, page)

    def stored_tile(self, level: int, col: int, row: int, fmt: OutputFormat, page: int = 0, now: bool = False
                    ) -> StoredTile | None:
        if self.meta.loader != "tiffload":
            return None
        return self.reader.stored_tile(self.path, self.meta, (level, col, row), fmt, page, now)

    def select(self, selector: Selector) -> SourceImage:
        """`;page=N`: page N of a document or a stack (page 0 of a single image is the image), with
        its own levels; the rest of the selector applies to that page. NotFound past the last page.
        `;c=`: the chosen bands of any multi-band image (sources/channels.py)."""
        if selector.page is None:
            return select_channels(self, selector)
        ident = f"{self.meta.ident};page={selector.page}"
        page = PyramidImage(self.reader, self.path, self.reader.info(self.path, ident, selector.page))
        return page.select(replace(selector, page=None))


class PyvipsFormat:
    """Everything libvips loads (tiled and striped TIFF, JPEG, PNG, WebP, GIF, AVIF/HEIF, ...): the
    registry's last format, claiming every file no other format claimed; libvips probes by content."""

    name = "libvips"
    ranged = True  # tiled TIFFs in stores are read by byte range (registry.py); the rest is copied first

    def __init__(self, reader: PyramidReader) -> None:
        self.reader = reader

    def probe(self, path: str, head: bytes) -> bool:
        return True

    def open(self, path: str, ident: str) -> PyramidImage:
        meta = self.reader.info(path, ident)
        self.reader.prepare_stored(path, meta)
        return PyramidImage(self.reader, path, meta)


def _decoded_key(path: str, meta: ImageMeta, index: int, page: int) -> tuple[str, vfs.Version, int, int]:
    """A decoded level's key: file, version, directory of the page's full resolution, level."""
    return path, vfs.version_of(path, meta.mtime, meta.file_size), meta.levels[0].page + page, index


def shrink(src: Any, width: int, height: int) -> Any:
    """`src` reduced to `width` x `height`. 8-bit colour and grey (alpha premultiplied) through
    `thumbnail_image`, as libvips makes pyramids; other samples (16-bit, float, more than 4 bands) through
    `resize`, which keeps their format and bands (`thumbnail_image` makes 8-bit sRGB of them)."""
    if src.format == "uchar" and src.bands <= 4 and src.interpretation in ("srgb", "b-w", "cmyk", "lab", "labs"):
        return src.thumbnail_image(width, height=height, size="force", no_rotate=True)
    out = src.resize(width / src.width, vscale=height / src.height)
    if (out.width, out.height) != (width, height):
        out = out.embed(0, 0, width, height, extend="copy")
    return out


def check_page(meta: ImageMeta, page: int) -> None:
    """A page outside the stack (any page but 0 of a single image) is a missing tile, not a 500."""
    if not 0 <= page < max(len(meta.stack), 1):
        raise TileNotFound(f"{meta.ident} has no page {page}")


def _page_of(doc: tuple[DocPage, ...], page: int | None, ident: str) -> DocPage:
    if not 0 <= (page or 0) < len(doc):
        raise NotFound(f"{ident} has no page {page}")
    return doc[page or 0]


def _page_list(doc: tuple[DocPage, ...]) -> tuple[Page, ...]:
    """`ImageMeta.pages`: each page's size and label, for a file of more than one page."""
    return tuple(Page(*p.size, p.label) for p in doc) if len(doc) > 1 else ()


def _decode_pixels(tf: TiffFile, stored: list[Level], pages: int) -> int:
    """The largest tile of the directories holding `stored` (in each of a stack's `pages`), or the whole
    level of a striped one: libvips reads strips only in order, so a striped level is decoded whole."""
    out = 0
    for lv in stored:
        for p in range(lv.page, min(lv.page + pages, len(tf.pages))):
            subs = tf.subifds[p]
            ifd = tf.pages[p] if lv.subifd < 0 else subs[lv.subifd] if lv.subifd < len(subs) else None
            if ifd is not None:
                out = max(out, ifd.decode_pixels if ifd.tiled else ifd.size[0] * ifd.size[1])
    return out


def _limits(ifd: Ifd, bands: int) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """The SMinSampleValue / SMaxSampleValue of a directory, one per band, when it has both."""
    if SMIN not in ifd.values or SMAX not in ifd.values:
        return None
    mins = tuple(float(v) for v in ifd.values[SMIN])
    maxs = tuple(float(v) for v in ifd.values[SMAX])
    if len(mins) == 1 and bands > 1:
        mins, maxs = mins * bands, maxs * bands
    return (mins, maxs) if len(mins) == bands == len(maxs) else None


def _exif(img: Any) -> dict[str, str]:
    fields = set(img.get_fields())
    out: dict[str, str] = {}
    for field, name in EXIF_TAGS.items():
        if field in fields:
            value = re.sub(r"\s*\([^()]*\)$", "", str(img.get(field))).strip()
            if value:
                out[name] = value
    return out


def _resolution(path: str, loader: str, img: Any) -> tuple[float, float, int] | None:
    """The stored physical resolution as (x, y, TIFF unit: 1 none, 2 inch, 3 cm), as iipsrv reads it
    (a TIFF's: `tiff.resolution` of the page's directory): a JPEG's JFIF density (1:1, no unit, without
    a JFIF segment, as libjpeg), otherwise libvips' pixels per millimetre as pixels per cm."""
    if loader == "jpegload":
        with open(path, "rb") as f:
            head = f.read(18)
        if head[:4] in (b"\xff\xd8\xff\xe0",) and head[6:11] == b"JFIF\0":
            unit, x, y = struct.unpack(">BHH", head[13:18])
            return float(x), float(y), unit + 1 if unit in (1, 2) else 1
        return 1.0, 1.0, 1
    xres, yres = img.get("xres"), img.get("yres")  # pixels per millimetre
    return (xres * 10, yres * 10, 3) if xres > 0 and yres > 0 else None
