"""The pixel budget: how large an image this server agrees to serve, decided from the sizes its file
declares, when its metadata is read and before any pixel is decoded. A decompression bomb (a PNG of a
few hundred bytes whose header says 50000 x 50000) is refused here, in every protocol at once, and never
decoded.

Three caps, from the settings:
- `image` (`max_image_megapixels`): the declared pixels of every level. Tiles of a pyramid are read one
  at a time whatever the image's size, so this is a cap on what a header may claim, set above real images.
- `whole` (`max_untiled_megapixels`): the pixels read in full to serve the image: an untiled file (one
  stored level, with smaller levels made from it; converted to a pyramid in the background by
  `derived.py`, whose conversion reads it once, top to bottom), or the smallest stored level of any image
  when levels below it are made by shrinking it (a one-level tiled TIFF, a JPEG 2000 codestream with too
  few resolutions). It bounds the time such a read (or conversion) takes.
- `decode` (`max_decode_megapixels`): the pixels one decode holds in memory at once, which the format
  states as `ImageMeta.decode_pixels` (a stored tile, a strip, or a whole file that libvips decodes whole
  for random access); for a file read top to bottom (a conversion), what that read holds (`held`).

Past any of them the image is a `SourceTooLarge` (422), whose message names the setting, not the file.
`streamed_pixels` is what a top-to-bottom read (a derived pyramid's preview and conversion) holds, and
`TooLargeImage` answers an image whose pyramid could not be made and whose file is too large to read.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pyvips

from ..errors import SourceTooLarge
from ..models import ImageMeta, Level, OutputFormat
from ..settings import Settings
from .base import Box4, Selector, SourceImage, no_selection
from .passthrough import StoredTile
from .tiff import TiffFile

MEGA = 1_000_000


@dataclass(frozen=True)
class PixelBudget:
    image: int
    whole: int
    decode: int

    @classmethod
    def of(cls, settings: Settings) -> PixelBudget:
        return cls(int(settings.max_image_megapixels * MEGA), int(settings.max_untiled_megapixels * MEGA),
                   int(settings.max_decode_megapixels * MEGA))

    def check(self, meta: ImageMeta, held: int | None = None) -> None:
        """Refuse `meta` (SourceTooLarge) when it is past the budget. `held`: the pixels a read of it holds
        at once, when not `meta.decode_pixels` (0 there: the whole full-resolution level)."""
        if held is None:
            held = meta.decode_pixels or meta.width * meta.height
        self.check_levels(meta.ident, meta.levels, held)

    def check_levels(self, ident: str, levels: Sequence[Level], held: int) -> None:
        """`check` from an image's levels alone (for formats that decode something when they open a file:
        they check first)."""
        for lv in levels:
            if lv.width * lv.height > self.image:
                raise SourceTooLarge(f"{ident} is {lv.width}x{lv.height} pixels, more than this server serves "
                                     f"({_mp(self.image)}, max_image_megapixels)")
        whole = shrunk_level(levels)
        if whole is not None and whole.width * whole.height > self.whole:
            raise SourceTooLarge(f"{ident} would be read whole at {whole.width}x{whole.height} pixels, more than "
                                 f"this server reads at once ({_mp(self.whole)}, max_untiled_megapixels); "
                                 "store it as a tiled pyramid (tileserver convert)")
        if held > self.decode:
            raise SourceTooLarge(f"{ident} needs {_mp(held)} decoded at once, more than this server decodes "
                                 f"({_mp(self.decode)}, max_decode_megapixels); store it as a tiled pyramid "
                                 "(tileserver convert)")


def shrunk_level(levels: Sequence[Level]) -> Level | None:
    """The stored level that the virtual levels are made from (read whole to make them), or None when
    every level is stored."""
    last = max((i for i, lv in enumerate(levels) if lv.stored), default=None)
    if last is None:
        return levels[0] if levels else None
    return levels[last] if last < len(levels) - 1 else None


def _mp(pixels: int) -> str:
    return f"{pixels / MEGA:g} megapixels"


def streamed_pixels(path: str, meta: ImageMeta) -> int:
    """The pixels a top-to-bottom read of the file (the preview, the conversion) holds at once: a few rows
    of a baseline JPEG or a PNG, a strip of a TIFF; the whole image for what libvips decodes in one piece
    (progressive JPEG, interlaced PNG: their decoders keep every coefficient or pass; WebP)."""
    if meta.loader == "tiffload":
        with open(path, "rb") as f:
            return TiffFile(f, max_ifds=1).pages[0].decode_pixels  # a strip
    if meta.loader in ("jpegload", "pngload"):
        header = pyvips.Image.new_from_file(path)  # header only
        if "interlaced" not in header.get_fields() or not header.get("interlaced"):
            return meta.width * 16  # one row of 16-pixel JPEG blocks (a PNG: one row)
    return meta.width * meta.height


class TooLargeImage:
    """An image whose pyramid could not be made and which is too large to read from its file
    (the pixel budget): its description stays, its reads are refused (422)."""

    def __init__(self, meta: ImageMeta, reason: str) -> None:
        self.meta = meta
        self.reason = reason

    def read(self, level: int, box: Box4, page: int = 0, layers: int | None = None) -> Any:
        raise SourceTooLarge(self.reason)

    def stored_tile(self, level: int, col: int, row: int, fmt: OutputFormat, page: int = 0, now: bool = False
                    ) -> StoredTile | None:
        return None

    def select(self, selector: Selector) -> SourceImage:
        return no_selection(self, selector)
