"""The one interface every image format implements, and the identifier selectors every format shares.

A `Format` recognises a file by its content (`probe`, given the file's first bytes) and opens it as a
`SourceImage`: the image's description (`meta`: levels and their sizes, native tiles, bands, depth,
colour, metadata) and its pixels (`read`: a box of a level, as a pyvips image), plus a stored tile's own
encoded bytes where they can be sent as they are (`stored_tile`). The core, the protocols and the render
pipeline see only this; the registry (`registry.py`) tries the formats in order.

An identifier may end in selectors, `;key=value` each, after the name of a file:
`doc.tif;page=2` (a page of a multi-page document, from 0), `slide.svs;associated=label` (an associated
image of a slide), `cells.ome.tif;c=...` (channels of a multi-channel image, `sources/channels.py`).
A file whose own name holds a `;` is still found: the whole identifier is tried as a file name first.
Selectors are part of the identifier, so every URL a viewer builds from an info document keeps them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Protocol

from ..errors import BadRequest, NotFound
from ..models import ImageMeta, OutputFormat
from .passthrough import StoredTile

Box4 = tuple[int, int, int, int]  # x, y, width, height in a level's own pixels
HEAD_BYTES = 512  # bytes of a file a format's probe sees (DICOM's magic is at 128)
SELECTOR = re.compile(r"([a-z]+)=([^;]*)")
KEYS = ("page", "associated", "c")


@dataclass(frozen=True)
class Selector:
    """What an identifier's `;key=value` tail picks out of its file. All None: the file as a whole."""

    page: int | None = None
    associated: str | None = None
    channels: str | None = None  # the `c=` spec as written; parsed by `channels.parse_spec` in `select`

    @property
    def empty(self) -> bool:
        return self == Selector()


def split_selector(ident: str) -> tuple[str, Selector] | None:
    """(file identifier, selector) of an identifier ending in selectors, or None when it has none.
    Bad selectors (an unknown key, a key twice, a page that is not a number) are a 400."""
    parts = ident.split(";")
    if len(parts) < 2:
        return None
    first = len(parts)
    while first > 1 and SELECTOR.fullmatch(parts[first - 1]):
        first -= 1
    if first == len(parts):
        return None
    found: dict[str, str] = {}
    for part in parts[first:]:
        m = SELECTOR.fullmatch(part)
        assert m is not None
        key, value = m[1], m[2]
        if key not in KEYS:
            raise BadRequest(f"unknown selector {key!r} (known: {', '.join(KEYS)})")
        if key in found:
            raise BadRequest(f"selector {key!r} given twice")
        found[key] = value
    page = found.get("page")
    if page is not None and not re.fullmatch(r"[0-9]{1,6}", page):
        raise BadRequest("page must be a number from 0")
    associated = found.get("associated")
    if associated is not None and not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", associated):
        raise BadRequest("bad associated image name")
    return ";".join(parts[:first]), Selector(int(page) if page is not None else None, associated,
                                              found.get("c"))


class SourceImage(Protocol):
    """An opened image. Safe to use from the pool's threads at once; kept by the core while its file
    is unchanged, so a format may hold open handles and decoded data in it."""

    meta: ImageMeta

    def read(self, level: int, box: Box4, page: int = 0, layers: int | None = None) -> Any:
        """The pixels of `box` at level `level` (0 = full resolution) of stack page `page`, as a pyvips
        image of `meta.bands` bands in the source's own sample format. May be lazy. `layers`: the
        quality layers to decode (IIP `LYR`, for sources with `meta.layers`), None for all; formats
        without layers ignore it."""
        ...

    def stored_tile(self, level: int, col: int, row: int, fmt: OutputFormat, page: int = 0, now: bool = False
                    ) -> StoredTile | None:
        """The stored bytes of tile (`col`, `row`) of a stored level as a complete `fmt` file, when the
        format keeps tiles that way and that tile can be sent as it is; else None. `now`: on the event loop,
        so only without waiting (what is known of the file, its bytes from the page cache: `vfs.NowReader`);
        `vfs.WouldBlock` when the tile is one but cannot be read so."""
        ...

    def select(self, selector: Selector) -> SourceImage:
        """The image `selector` names in this one (a page, an associated image, a channel choice), with
        `meta.ident` the whole identifier. NotFound for what this image does not have."""
        ...


class Format(Protocol):
    """One file format (or family read by one library)."""

    name: str
    ranged: bool  # reads a tiled TIFF in a store by byte range (vfs.py); else the registry copies it first

    def probe(self, path: str, head: bytes) -> bool:
        """Whether this format reads the file, from its first `HEAD_BYTES` bytes (and, when a library's
        own probe needs it, the file itself). Cheap: it runs once per newly opened file."""
        ...

    def open(self, path: str, ident: str) -> SourceImage:
        """Open the file. NotFound when it is gone, SourceError (415) when it cannot be read."""
        ...


def no_selection(image: SourceImage, selector: Selector) -> SourceImage:
    """`select` for formats with nothing to select: the empty selector is the image itself."""
    if selector.empty:
        return image
    if selector.page is not None:
        raise NotFound(f"{image.meta.ident} has no page {selector.page}")
    if selector.associated is not None:
        raise NotFound(f"{image.meta.ident} has no associated image {selector.associated}")
    raise BadRequest(f"{image.meta.ident} has no channels to choose from")
