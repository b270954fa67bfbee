"""JPEG 2000 sources (`.jp2`, `.jpx`, raw `.j2k`/`.j2c` codestreams, HTJ2K), decoded with OpenJPEG.

Levels are the codestream's resolution levels as iipsrv 1.3 offers them: each halving rounds down
(`W >> r`, one pixel less than OpenJPEG's own `ceil(W / 2**r)` where that is odd; the grid is the
same, the last partial pixel is dropped), down to the first level that fits one tile, then virtual
levels halving down to one tile when the codestream has too few, as for TIFF pyramids. Tiles are
`virtual_tile_size` (256) at every level, as iipsrv 1.3 serves JPEG 2000.

Pixels are decoded in units, each decoded once and kept in a byte-bounded LRU shared by every
image of the process (`jp2_cache_mb`), single-flight (a thread that needs a unit another is
decoding waits for it): a unit is a whole codestream tile at the reduction asked for (one
`opj_get_decoded_tile`: a 1024-px tile at full resolution gives sixteen 256-px output tiles), or,
for untiled codestreams and tiles larger than `whole` pixels at that level, an aligned block of
`block` pixels decoded as an area. Units are keyed by file, reduction and quality layers, so IIP
`LYR` (`TileRequest.layers`) decodes and caches only the layers it asks for.

HTJ2K codestreams (a CAP marker for Part 15, or HT code-blocks) are decoded in whole tiles only:
OpenJPEG (2.5.0 to 2.5.4, measured) decodes HT code-blocks correctly when a decode covers whole
codestream tiles and returns flat grey, without an error, for any smaller area. An untiled HT image
is therefore decoded whole at each reduction, up to `HT_WHOLE_PIXELS`; larger ones are a 501. An
OpenJPEG older than 2.5 reads no HT at all: a 501 too, never grey tiles.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
from bisect import bisect_right
from concurrent.futures import Future
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pyvips

from ..cache.memory import ByteLRU
from ..errors import NotFound, NotImplementedFeature, SourceError
from ..levels import level_factor, with_virtual
from ..models import ImageMeta, Level, OutputFormat
from .base import Box4, Selector, SourceImage, no_selection
from .budget import PixelBudget
from .jp2header import J2K_SIGNATURE, JP2_SIGNATURE, Codestream, Header, HeaderError, read_header
from .jp2share import SharedUnits
from .openjpeg import CODEC_J2K, CODEC_JP2, Decoded, DecodeError, Library, library
from .passthrough import StoredTile

log = logging.getLogger("tileserver.sources.jp2")

BLOCK = 1024  # side of the blocks (at the level) an untiled or large-tiled codestream is decoded in
WHOLE = 2048  # codestream tiles up to this side at the level are decoded whole
HT_WHOLE_PIXELS = 16 << 20  # largest whole-tile (or whole-image) HTJ2K decode, in pixels at the level
VIPS_FORMATS = {np.dtype(np.uint8): "uchar", np.dtype(np.uint16): "ushort", np.dtype(np.int8): "char",
                np.dtype(np.int16): "short"}
UnitKey = tuple[str, float, int, int, int, int, int]  # path, mtime, reduction, layers, kind, col, row


class Units:
    """Decoded units of every open JPEG 2000 image: an LRU bounded in bytes, filled single-flight; with
    `shared`, filled from (and into) the units the server's other processes decoded (jp2share.py)."""

    def __init__(self, max_bytes: int, shared: SharedUnits | None = None) -> None:
        self.cache: ByteLRU[UnitKey, Decoded] = ByteLRU(max_bytes)
        self.shared = shared
        self._pending: dict[UnitKey, Future[Decoded]] = {}
        self._lock = threading.Lock()
        self.decodes = 0

    def get(self, key: UnitKey, decode: Any) -> Decoded:
        hit = self.cache.get(key)
        if hit is not None:
            return hit
        with self._lock:
            waiting = self._pending.get(key)
            if waiting is None:
                mine: Future[Decoded] = Future()
                self._pending[key] = mine
        if waiting is not None:
            return waiting.result()
        try:
            found = self.cache.get(key)  # finished by another thread between the miss and the lock
            if found is None:
                mine_only = functools.partial(self._decode, decode)
                found = mine_only() if self.shared is None else self.shared.get(key, mine_only)
                self.cache.put(key, found, found.pixels.nbytes + 200)
            mine.set_result(found)
            return found
        except BaseException as exc:
            mine.set_exception(exc)
            raise
        finally:
            with self._lock:
                del self._pending[key]

    def _decode(self, decode: Any) -> Decoded:
        self.decodes += 1  # decodes made in this process (not those found in the shared folder)
        found: Decoded = decode()
        return found


@dataclass(frozen=True)
class Grid:
    """Codestream tile boundaries at one reduction, in reduced coordinates (`xs[p]` is tile column p's
    left edge, `xs[-1]` the image's right edge), and the image's reduced origin."""

    xs: tuple[int, ...]
    ys: tuple[int, ...]

    @classmethod
    def of(cls, cs: Codestream, r: int) -> Grid:
        def edges(origin: int, start: int, step: int, end: int, n: int) -> tuple[int, ...]:
            cuts = [max(origin + p * step, start) for p in range(n)] + [end]
            return tuple(-(-c >> r) for c in cuts)

        return cls(edges(cs.tile_x0, cs.x0, cs.tile_width, cs.x1, cs.tiles_across),
                   edges(cs.tile_y0, cs.y0, cs.tile_height, cs.y1, cs.tiles_down))


class Jp2Image:
    """One JPEG 2000 file: `SourceImage`."""

    def __init__(self, fmt: Jp2Format, path: str, header: Header, meta: ImageMeta, lib: Library) -> None:
        self.fmt, self.path, self.header, self.meta, self.lib = fmt, path, header, meta, lib
        self.codec = CODEC_J2K if header.raw else CODEC_JP2
        cs = header.codestream
        self.grids = tuple(Grid.of(cs, r) for r in range(cs.resolutions))
        self.stored_levels = sum(lv.stored for lv in meta.levels)
        self._interpretation = _interpretation(meta)

    # -- SourceImage ----------------------------------------------------------------------------
    def read(self, level: int, box: Box4, page: int = 0, layers: int | None = None) -> Any:
        stored = self.stored_levels
        x, y, w, h = box
        if level < stored:
            return self._vips(self.pixels(level, box, layers))
        k = level - (stored - 1)  # a virtual level: 2**k pixels of the smallest stored level each
        px = self.pixels(stored - 1, (x << k, y << k, w << k, h << k), layers)
        return self._vips(px).shrink(1 << k, 1 << k)

    def stored_tile(self, level: int, col: int, row: int, fmt: OutputFormat, page: int = 0, now: bool = False
                    ) -> StoredTile | None:
        return None  # no stored tile is a file a client can read

    def select(self, selector: Selector) -> SourceImage:
        return no_selection(self, selector)

    # -- pixels ---------------------------------------------------------------------------------
    def pixels(self, r: int, box: Box4, layers: int | None) -> np.ndarray[Any, Any]:
        """`box` (level pixels) of stored level `r` as an array (height, width, bands)."""
        cs = self.header.codestream
        grid = self.grids[r]
        x, y, w, h = box
        X0, Y0 = grid.xs[0] + x, grid.ys[0] + y
        X1, Y1 = X0 + w, Y0 + h
        lay = 0 if layers is None or layers >= cs.layers else max(layers, 1)
        pieces = []
        for q in range(bisect_right(grid.ys, Y0) - 1, bisect_right(grid.ys, Y1 - 1)):
            for p in range(bisect_right(grid.xs, X0) - 1, bisect_right(grid.xs, X1 - 1)):
                pieces += self._units(r, lay, p, q, (X0, Y0, X1, Y1))
        if len(pieces) == 1:
            d = pieces[0]
            return d.pixels[Y0 - d.y0: Y1 - d.y0, X0 - d.x0: X1 - d.x0]
        out = np.empty((h, w, self.meta.bands), pieces[0].pixels.dtype)
        for d in pieces:
            dh, dw = d.pixels.shape[:2]
            ax0, ay0, ax1, ay1 = max(X0, d.x0), max(Y0, d.y0), min(X1, d.x0 + dw), min(Y1, d.y0 + dh)
            out[ay0 - Y0: ay1 - Y0, ax0 - X0: ax1 - X0] = d.pixels[ay0 - d.y0: ay1 - d.y0, ax0 - d.x0: ax1 - d.x0]
        return out

    def _units(self, r: int, lay: int, p: int, q: int, want: tuple[int, int, int, int]) -> list[Decoded]:
        """The decoded units of codestream tile (p, q) at reduction r that overlap `want`."""
        grid, cs = self.grids[r], self.header.codestream
        tx0, tx1, ty0, ty1 = grid.xs[p], grid.xs[p + 1], grid.ys[q], grid.ys[q + 1]
        tw, th = tx1 - tx0, ty1 - ty0
        index = q * cs.tiles_across + p
        if cs.ht or (tw <= self.fmt.whole and th <= self.fmt.whole):
            if cs.ht and tw * th > HT_WHOLE_PIXELS:
                raise NotImplementedFeature(
                    f"this HTJ2K codestream's tiles are too large to decode at this resolution ({tw}x{th} "
                    "pixels; OpenJPEG decodes HTJ2K only in whole tiles): re-encode it with tiles")
            return [self._unit((r, lay, -1, p, q), lambda: self._decode(r, lay, tile=index),
                               (tx0, ty0, tw, th))]
        b = self.fmt.block
        X0, Y0, X1, Y1 = want
        out = []
        for j in range((max(Y0, ty0) - ty0) // b, (min(Y1, ty1) - 1 - ty0) // b + 1):
            for i in range((max(X0, tx0) - tx0) // b, (min(X1, tx1) - 1 - tx0) // b + 1):
                bx0, by0 = tx0 + i * b, ty0 + j * b
                bx1, by1 = min(bx0 + b, tx1), min(by0 + b, ty1)
                area = (max(bx0 << r, cs.x0), max(by0 << r, cs.y0), min(bx1 << r, cs.x1), min(by1 << r, cs.y1))
                out.append(self._unit((r, lay, index, i, j), functools.partial(self._decode, r, lay, area=area),
                                      (bx0, by0, bx1 - bx0, by1 - by0)))
        return out

    def _unit(self, key: tuple[int, int, int, int, int], decode: Any, expect: Box4) -> Decoded:
        d: Decoded = self.fmt.units.get((self.path, self.meta.mtime, *key), decode)
        if (d.x0, d.y0, d.pixels.shape[1], d.pixels.shape[0]) != expect:
            log.error("%s: unit %s decoded at %s, expected %s", self.meta.ident, key,
                      (d.x0, d.y0, d.pixels.shape[1], d.pixels.shape[0]), expect)
            raise SourceError("the image could not be decoded")
        return d

    def _decode(self, r: int, lay: int, *, tile: int | None = None,
                area: tuple[int, int, int, int] | None = None) -> Decoded:
        try:
            d = self.lib.decode(self.path, self.codec, r, lay, tile=tile, area=area, threads=self.fmt.threads)
        except DecodeError as exc:
            log.error("JPEG 2000 decode of %s (reduction %d, tile %s, area %s) failed: %s",
                      self.meta.ident, r, tile, area, exc)
            raise SourceError("the image could not be decoded") from exc
        if d.pixels.shape[2] != self.meta.bands:
            raise SourceError("the image's components differ between its tiles")
        return d

    def _vips(self, px: np.ndarray[Any, Any]) -> Any:
        px = np.ascontiguousarray(px)
        h, w, bands = px.shape
        img = pyvips.Image.new_from_memory(px.data, w, h, bands, VIPS_FORMATS[px.dtype])
        img = img.copy(interpretation=self._interpretation)
        if self.header.icc:
            img.set_type(pyvips.GValue.blob_type, "icc-profile-data", self.header.icc)
        return img


class Jp2Format:
    """JPEG 2000, claimed by content: the JP2/JPX signature box, or a raw codestream's SOC + SIZ."""

    name = "jpeg2000"
    ranged = False  # see registry.py

    def __init__(self, cache_bytes: int, tile_size: int = 256, threads: int = 1, *, block: int = BLOCK,
                 whole: int = WHOLE, share: Path | None = None, share_bytes: int = 0,
                 budget: PixelBudget | None = None) -> None:
        shared = SharedUnits(share, share_bytes or cache_bytes) if share is not None else None
        self.units = Units(cache_bytes, shared)
        self.tile_size, self.threads, self.block, self.whole = tile_size, threads, block, whole
        self.budget = budget

    def probe(self, path: str, head: bytes) -> bool:
        return head.startswith(JP2_SIGNATURE) or head.startswith(J2K_SIGNATURE)

    def open(self, path: str, ident: str) -> Jp2Image:
        try:
            st = os.stat(path)
            with open(path, "rb") as f:
                header = read_header(f)
        except FileNotFoundError as exc:
            raise NotFound(f"image not found: {ident}") from exc
        except (OSError, HeaderError) as exc:
            log.error("cannot read JPEG 2000 %s: %s", ident, exc)
            raise SourceError("the image is not a readable JPEG 2000 file") from exc
        lib = library()
        if lib is None:
            raise NotImplementedFeature("JPEG 2000 needs libopenjp2 (Pillow's wheel bundles it)")
        cs = header.codestream
        if cs.ht and not lib.reads_ht:
            raise NotImplementedFeature(f"HTJ2K codestreams need OpenJPEG 2.5 or newer (this server has {lib.version})")
        if any(s != (1, 1) for s in cs.subsampling):
            raise SourceError("JPEG 2000 with subsampled components is not supported")
        levels = self._levels(cs)
        held = self.decode_pixels(cs, levels)
        if self.budget is not None:  # from the header alone, before OpenJPEG decodes anything
            self.budget.check_levels(ident, levels, held)
        probe = self._probe(lib, path, header, ident)
        meta = replace(self._meta(ident, st, header, probe, lib), decode_pixels=held)
        return Jp2Image(self, path, header, meta, lib)

    def decode_pixels(self, cs: Codestream, levels: tuple[Level, ...]) -> int:
        """The most pixels one read holds at once: the opening probe (the first codestream tile at the
        smallest resolution), a decoded unit (a whole tile up to `whole` a side, else a block; an HTJ2K
        tile whole, up to HT_WHOLE_PIXELS), or a read of a virtual level, which assembles the smallest
        stored level's pixels under it (all of them for the smallest virtual level)."""
        r = cs.resolutions - 1
        tw, th = min(cs.tile_width, cs.width), min(cs.tile_height, cs.height)
        held = (-(-tw >> r)) * (-(-th >> r))
        held = max(held, min(tw * th, HT_WHOLE_PIXELS if cs.ht else max(self.whole, self.block) ** 2))
        if not levels[-1].stored:
            smallest = max(i for i, lv in enumerate(levels) if lv.stored)
            held = max(held, levels[smallest].width * levels[smallest].height)
        return held

    def _probe(self, lib: Library, path: str, header: Header, ident: str) -> Decoded:
        """The first codestream tile at the smallest resolution (a few pixels): the components as the
        decoder delivers them (after a palette and channel definitions), their depth, and the colour
        space it reports. One tile only, so a file cut short after its first tiles still opens."""
        r = header.codestream.resolutions - 1
        try:
            return lib.decode(path, CODEC_J2K if header.raw else CODEC_JP2, r, 1, tile=0)
        except DecodeError as exc:
            log.error("cannot decode JPEG 2000 %s: %s", ident, exc)
            raise SourceError("the image is not a readable JPEG 2000 file") from exc

    def _meta(self, ident: str, st: os.stat_result, header: Header, probe: Decoded, lib: Library) -> ImageMeta:
        cs = header.codestream
        bands = probe.pixels.shape[2]
        bits = probe.prec
        top = float((1 << (bits - 1)) - 1) if probe.signed else float((1 << bits) - 1)
        low = -top - 1 if probe.signed else 0.0
        colorspace = header.colorspace or probe.colorspace
        if colorspace not in ("srgb", "grey", "cmyk") or (colorspace == "grey") != (bands <= 2):
            colorspace = "grey" if bands <= 2 else "srgb" if bands <= 4 else "multiband"
        if colorspace == "sycc":
            raise SourceError("sYCC JPEG 2000 is not supported")
        res = header.resolution
        metadata = {"xmp": _text(header.xmp)} if header.xmp else {}
        for xml in header.xml:
            if b"xmpmeta" in xml[:4096] and "xmp" not in metadata:
                metadata["xmp"] = _text(xml)
        properties = {
            "jpeg2000.codestream": "raw" if header.raw else header.brand.strip() or "jp2",
            "jpeg2000.tile-size": f"{cs.tile_width}x{cs.tile_height}" if cs.tiled else "untiled",
            "jpeg2000.resolutions": str(cs.resolutions), "jpeg2000.layers": str(cs.layers),
            "jpeg2000.progression": cs.progression, "jpeg2000.wavelet": "5/3" if cs.reversible else "9/7",
            "jpeg2000.htj2k": "yes" if cs.ht else "no", "jpeg2000.decoder": f"OpenJPEG {lib.version}",
        }
        return ImageMeta(
            ident=ident, width=cs.width, height=cs.height, levels=self._levels(cs), bands=bands, bits=bits,
            sample_format="int" if probe.signed else "uint", colorspace=colorspace,
            has_alpha=bands in (2, 4) and colorspace != "cmyk", has_icc=header.icc is not None,
            mtime=st.st_mtime, file_size=st.st_size, min_values=(low,) * bands, max_values=(top,) * bands,
            loader="jp2kload", resolution=(res[0] / 100, res[1] / 100, 3) if res else None,
            metadata=tuple(sorted(metadata.items())), compression="jpeg2000",
            properties=tuple(sorted(properties.items())), layers=cs.layers,
        )

    def _levels(self, cs: Codestream) -> tuple[Level, ...]:
        """The codestream's resolutions down to the first that fits one tile (as iipsrv 1.3 counts them:
        smaller ones are not offered), then virtual halvings when even the smallest does not fit."""
        t = self.tile_size
        full = (cs.width, cs.height)
        stored: list[Level] = []
        for r in range(cs.resolutions):
            w, h = max(cs.width >> r, 1), max(cs.height >> r, 1)
            stored.append(Level(w, h, t, t, level_factor(full, (w, h)) if r else 1.0, True))
            if w <= t and h <= t:
                break
        return with_virtual(stored, full)


def _text(data: bytes | None) -> str:
    return (data or b"").decode("utf-8", "replace").strip("\0 \r\n")


def _interpretation(meta: ImageMeta) -> str:
    wide = meta.bits > 8
    if meta.colorspace == "cmyk":
        return "cmyk"
    if meta.bands <= 2:
        return "grey16" if wide else "b-w"
    if meta.bands <= 4:
        return "rgb16" if wide else "srgb"
    return "multiband"
