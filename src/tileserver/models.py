"""Protocol-neutral values shared by every layer: what an image is (`ImageMeta`), what a client
asks for (`TileRequest`), and what comes back (`Rendered`). All frozen, all hashable, so a request
is its own cache key.

Level convention everywhere below the protocols: `level` 0 is full resolution, `level` n is the
n-th reduction (IIP counts the other way; DeepZoom and Zoomify have their own numbering; each
protocol converts at its edge, in `levels.py`).
"""

from __future__ import annotations

import enum
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, TypeVar

C = TypeVar("C", bound=type)


def fast_init(cls: C) -> C:
    """A frozen dataclass whose `__init__` writes its fields into the instance's `__dict__` directly, as the
    dataclass's own does through `object.__setattr__` per field, about twice as fast (the values made for each
    request: its `TileRequest`, `Box`, `Rendered`...). The same signature, defaults and `__post_init__`; the
    instance stays frozen (`__setattr__` still refuses). Applied on top of `@dataclass(frozen=True)`."""
    if "__slots__" in cls.__dict__:  # no instance `__dict__` to write into
        return cls
    params = []
    defaults: dict[str, Any] = {}
    for f in fields(cls):
        if not f.init or f.kw_only:  # not a plain positional field: the dataclass's own init stays
            return cls
        if f.default is not MISSING:
            defaults[f"_d_{f.name}"] = f.default
            params.append(f"{f.name}=_d_{f.name}")
        elif f.default_factory is not MISSING:
            defaults[f"_f_{f.name}"] = f.default_factory
            defaults["_MISSING"] = MISSING
            params.append(f"{f.name}=_MISSING")
        else:
            params.append(f.name)
    lines = [f"def __init__(self, {', '.join(params)}):", "    d = self.__dict__"]
    for f in fields(cls):
        value = f"_f_{f.name}() if {f.name} is _MISSING else {f.name}" if f"_f_{f.name}" in defaults else f.name
        lines.append(f"    d[{f.name!r}] = {value}")
    if hasattr(cls, "__post_init__"):
        lines.append("    self.__post_init__()")
    made: dict[str, Any] = {}
    exec("\n".join(lines), defaults, made)  # source made above from the class's own field names
    init = made["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    cls.__init__ = init  # type: ignore[misc]
    return cls


class OutputFormat(enum.Enum):
    """Output formats: suffix (as in URLs), media type, and the pyvips saver suffix."""

    JPEG = ("jpg", "image/jpeg", ".jpg")
    PNG = ("png", "image/png", ".png")
    WEBP = ("webp", "image/webp", ".webp")
    AVIF = ("avif", "image/avif", ".avif")
    TIFF = ("tif", "image/tiff", ".tif")
    GIF = ("gif", "image/gif", ".gif")
    JP2 = ("jp2", "image/jp2", ".jp2")  # written by OpenJPEG through Pillow, not libvips

    _repr: str  # `_enum_reprs`

    def __init__(self, suffix: str, media_type: str, vips_suffix: str) -> None:
        self.suffix = suffix
        self.media_type = media_type
        self.vips_suffix = vips_suffix

    def __repr__(self) -> str:  # part of every request's repr, so of its ETag: made once (`_enum_reprs`)
        return self._repr

    @property
    def has_alpha(self) -> bool:
        return self in (OutputFormat.PNG, OutputFormat.WEBP, OutputFormat.AVIF, OutputFormat.TIFF,
                        OutputFormat.GIF, OutputFormat.JP2)


class Quality(enum.Enum):
    DEFAULT = "default"
    COLOR = "color"
    GRAY = "gray"
    BITONAL = "bitonal"

    _repr: str  # `_enum_reprs`

    def __repr__(self) -> str:  # as OutputFormat's
        return self._repr


def _enum_reprs(*kinds: type[enum.Enum]) -> None:
    """Each member's repr, as `enum.Enum` writes it, kept in the member (read by its `__repr__`)."""
    for kind in kinds:
        for member in kind:
            member._repr = enum.Enum.__repr__(member)  # type: ignore[attr-defined]


_enum_reprs(OutputFormat, Quality)


def _repr_once(obj: Any) -> str:
    """A frozen dataclass's repr as the dataclass writes it, made once (kept in the object): a request's repr is
    in its ETag."""
    made: str | None = obj.__dict__.get("_repr")
    if made is None:
        shown = ", ".join([f"{name}={getattr(obj, name)!r}" for name in _field_names(type(obj))])
        made = f"{type(obj).__qualname__}({shown})"
        object.__setattr__(obj, "_repr", made)
    return made


_FIELD_NAMES: dict[type, tuple[str, ...]] = {}


def _field_names(cls: type) -> tuple[str, ...]:
    """A dataclass's field names, in order (`_repr_once`: found once per class, not per object)."""
    names = _FIELD_NAMES.get(cls)
    if names is None:
        names = _FIELD_NAMES[cls] = tuple(f.name for f in fields(cls))
    return names


@dataclass(frozen=True)
class Level:
    """One resolution level: its size, native tile size, and its downsampling factor from full."""

    width: int
    height: int
    tile_width: int
    tile_height: int
    factor: float = 1.0
    stored: bool = True  # False: made by shrinking a larger level (virtual)
    page: int = 0  # reader detail: TIFF page (IFD) holding a stored level
    subifd: int = -1  # reader detail: SubIFD index of a stored level, -1 for none

    def columns(self) -> int:
        return -(-self.width // self.tile_width)

    def rows(self) -> int:
        return -(-self.height // self.tile_height)


@dataclass(frozen=True)
class StackItem:
    """One image of a stack (a multi-page image whose pages are views of one scene, iipsrv 1.3 `OBJ=stack`):
    its name (TIFF DocumentName) and its physical scale (TIFF StoNits, 1 when absent)."""

    name: str = ""
    scale: float = 1.0


@dataclass(frozen=True)
class Channel:
    """One channel of a multi-channel image (OME-TIFF, fluorescence): its name, its display colour
    (RGB, 0-255) and its display range in sample values, each None when the file does not say."""

    name: str = ""
    color: tuple[int, int, int] | None = None
    window: tuple[float, float] | None = None


@dataclass(frozen=True)
class Page:
    """One page of a multi-page document whose pages differ in size, addressed as `<ident>;page=<n>`."""

    width: int
    height: int
    label: str = ""


@dataclass(frozen=True)
class Sequence:
    """An image sequence as iipsrv 1.3 defines it: one image file per view, named by its horizontal and
    vertical angle (`seq_pyr_010_090.tif`: 10 and 90 degrees). `stem` is the members' identifier up to the
    angles (`sub/seq_pyr_`), `ext` their extension; the views are the sorted horizontal angles of the files
    at vertical angle 90 and the sorted vertical angles of the files at horizontal angle 0."""

    stem: str
    ext: str
    horizontal: tuple[int, ...]
    vertical: tuple[int, ...]

    def member(self, x: int, y: int) -> str:
        """The identifier of view `x`, `y` (angles padded to 3 digits, as 1.3 names them); it may not exist."""
        return f"{self.stem}{x:03d}_{y:03d}.{self.ext}"


@dataclass(frozen=True)
class ImageMeta:
    """What a protocol may know about an image: sizes, levels, bands, metadata. No paths. For an image
    sequence (`sequence` set) every field but `ident` and `sequence` is its first view's (000_090)."""

    ident: str
    width: int
    height: int
    levels: tuple[Level, ...]  # levels[0] is full resolution
    bands: int
    bits: int
    sample_format: str  # "uint", "int" or "float"
    colorspace: str  # "srgb", "grey", "lab", "cmyk", ...
    has_alpha: bool
    has_icc: bool
    mtime: float
    file_size: int
    min_values: tuple[float, ...]
    max_values: tuple[float, ...]
    loader: str = ""
    dpi: tuple[float, float] | None = None  # pixels per inch
    metadata: tuple[tuple[str, str], ...] = ()  # title, creator, rights, date, ...
    compression: str = ""  # stored tile compression of the TIFF levels ("jpeg", "webp", ...)
    stack: tuple[StackItem, ...] = ()  # the pages of an image stack, in page order; () for a single image
    resolution: tuple[float, float, int] | None = None  # TIFF XResolution, YResolution, ResolutionUnit as stored
    sequence: Sequence | None = None  # an image sequence: the rest describes its first view, 0,90
    properties: tuple[tuple[str, str], ...] = ()  # the format's own metadata (slide properties, ...), as named there
    associated: tuple[str, ...] = ()  # associated images (`<ident>;associated=<name>`): label, macro, thumbnail
    channels: tuple[Channel, ...] = ()  # named channels of a multi-channel image, one per band
    pages: tuple[Page, ...] = ()  # a document's pages (`<ident>;page=<n>`); () for one image or a stack
    layers: int = 0  # quality layers of a layered source (JPEG 2000), 0 when not layered
    # the levels are final but the pixels come from a reduced preview while a pyramid is being made
    # (sources/derived.py): responses made from it are not cached as final
    provisional: bool = False
    # the most pixels one read of a stored level decodes at once: a stored tile, a strip, or the whole
    # level of a file libvips decodes whole (sources/budget.py checks it); 0 when a format does not say
    # (taken as the whole full-resolution level)
    decode_pixels: int = 0

    @property
    def views(self) -> tuple[tuple[int, ...], tuple[int, ...]] | None:
        """A sequence's horizontal and vertical angles; None for one image file."""
        return None if self.sequence is None else (self.sequence.horizontal, self.sequence.vertical)

    @property
    def page_list(self) -> tuple[Page, ...]:
        """Every page that `<ident>;page=<n>` names, in order: a document's `pages`, or the images of a
        stack (each of the stack's size, named as in the stack); () for a single image."""
        if self.pages:
            return self.pages
        return tuple(Page(self.width, self.height, s.name) for s in self.stack) if len(self.stack) > 1 else ()

    @property
    def microns_per_pixel(self) -> tuple[float, float] | None:
        """The size of a full-resolution pixel in micrometres (x, y), from the properties `openslide.mpp-x`
        and `openslide.mpp-y` (OpenSlide's standard names, which any format may fill in); None if unknown."""
        props = dict(self.properties)
        try:
            x, y = float(props["openslide.mpp-x"]), float(props["openslide.mpp-y"])
        except (KeyError, ValueError):
            return None
        return (x, y) if 0 < x < float("inf") and 0 < y < float("inf") else None

    @property
    def tile_size(self) -> tuple[int, int]:
        return self.levels[0].tile_width, self.levels[0].tile_height

    def meta(self, key: str) -> str | None:
        return dict(self.metadata).get(key)

    def level(self, index: int) -> Level:
        return self.levels[index]


@fast_init
@dataclass(frozen=True)
class Tile:
    """A native tile: `col`, `row` in the tile grid of `level` (0 = full resolution)."""

    level: int
    col: int
    row: int

    def __repr__(self) -> str:  # the dataclass's, written out: in every ETag of a native tile
        return f"Tile(level={self.level!r}, col={self.col!r}, row={self.row!r})"


@fast_init
@dataclass(frozen=True)
class Box:
    """A rectangle in full-resolution pixels."""

    x: int
    y: int
    w: int
    h: int

    def __repr__(self) -> str:  # the dataclass's, written out: in every ETag of a region
        return f"Box(x={self.x!r}, y={self.y!r}, w={self.w!r}, h={self.h!r})"


@dataclass(frozen=True)
class Processing:
    """Pixel operations, applied in this order (as iipsrv 1.3's JTL.cc and CVT.cc): min/max
    normalisation, hill shading, colour twist, gamma/log, invert, colour map, convolution,
    contrast/stretch/equalisation."""

    minmax: tuple[tuple[int, float, float], ...] = ()  # (channel or -1 for all, min, max)
    shade: tuple[int, int] | None = None  # SHD light: degrees clockwise from 12 o'clock, degrees downwards
    twist: tuple[tuple[float, ...], ...] = ()  # rows = output bands, columns = input bands
    gamma: float | None = None
    log: bool = False
    invert: bool = False
    colormap: str | None = None  # hot, cold, jet, blue, green, red
    contrast: float | None = None
    stretch: bool = False
    equalize: bool = False
    convolution: tuple[float, ...] = ()  # CNV kernel, row-major, square with an odd side (1, 9 or 25 values)

    __repr__ = _repr_once

    @property
    def is_identity(self) -> bool:
        return self == NO_PROCESSING


NO_PROCESSING = Processing()


@dataclass(frozen=True)
class Watermark:
    """An image laid over the output (iipsrv's `WATERMARK`): `location` is a server-side image (a path or a
    store URL from the settings or the access policy, never from a client). `probability` is the share of
    tiles that get one (iipsrv's `WATERMARK_PROBABILITY`, chosen from the tile itself, so a tile is the same
    every time); `opacity` 0..1; `scale` of the watermark's own size; `position` is `random` (iipsrv: a
    random place in each tile or block), `center`, `top-left`, `top-right`, `bottom-left`, `bottom-right`
    or `repeat`. `blend` is `over` (alpha compositing) or `add` (iipsrv 1.3: the mark's colour times its
    alpha and `opacity` added to the pixels, clipped; a mark drawn on black brightens only where it is drawn)."""

    location: str
    opacity: float = 1.0
    probability: float = 1.0
    scale: float = 1.0
    position: str = "random"
    blend: str = "over"


@dataclass(frozen=True)
class TextOverlay:
    """Text laid over the output: `size` is the text's height in output pixels, `colour` 8-bit RGB."""

    text: str
    position: str = "bottom-right"
    opacity: float = 0.5
    size: int = 24
    colour: tuple[int, int, int] = (255, 255, 255)


@dataclass(frozen=True)
class Redaction:
    """A rectangle of the image, in full-resolution pixels, painted over (`colour`) in every output that
    shows any of it, at every level and through every protocol."""

    x: int
    y: int
    width: int
    height: int
    colour: tuple[int, int, int] = (0, 0, 0)


@dataclass(frozen=True)
class Overlays:
    """What is laid over an image response (an access tier's watermark, text and redactions). Part of the
    `TileRequest`, so responses with different overlays never share a cache entry or an ETag."""

    watermark: Watermark | None = None
    text: TextOverlay | None = None
    redactions: tuple[Redaction, ...] = ()

    def __bool__(self) -> bool:
        return self.watermark is not None or self.text is not None or bool(self.redactions)


@fast_init
@dataclass(frozen=True)
class TileRequest:
    """Everything needed to render one image response, independent of the protocol that asked.

    Either `tile` (a native tile, returned at its own size) or `region` (full-resolution pixels,
    resized to `size`) is set. Rotation is clockwise degrees, applied after mirroring (IIIF order).
    `encoder_quality` None means the configured default for the format. `page` selects one image of
    a stack (`ImageMeta.stack`, 0 = the first); every page shares the levels of `ImageMeta.levels`.
    """

    ident: str
    fmt: OutputFormat = OutputFormat.JPEG
    tile: Tile | None = None
    region: Box | None = None
    size: tuple[int, int] | None = None
    rotation: float = 0.0
    mirror: bool = False
    quality: Quality = Quality.DEFAULT
    processing: Processing = field(default=NO_PROCESSING)
    encoder_quality: int | None = None
    tiff_compression: str | None = None
    page: int = 0
    layers: int | None = None  # IIP LYR: JPEG 2000 quality layers to decode; None = all (see iip to_tile_request)
    overlays: Overlays | None = None  # laid over the output (imaging/overlay.py); set by the core, never a protocol

    def __post_init__(self) -> None:
        if (self.tile is None) == (self.region is None):
            raise ValueError("TileRequest needs exactly one of tile or region")
        if self.region is not None and self.size is None:
            raise ValueError("a region request needs an output size")

    def __hash__(self) -> int:
        """The hash of its repr, made once: a request is hashed several times on its way (each cache key it is in),
        and its repr is made for its ETag anyway. Equal requests have equal reprs (their fields' reprs: ints, strings,
        enums, tuples and dataclasses of them), so equal hashes."""
        made: int | None = self.__dict__.get("_hash")
        if made is None:
            made = self.__dict__["_hash"] = hash(repr(self))
        return made

    __repr__ = _repr_once  # in every ETag: made once

    def __getstate__(self) -> dict[str, object]:
        """Pickled without the hash: another process's hashes of the same strings differ."""
        return {k: v for k, v in self.__dict__.items() if k != "_hash"}


@dataclass(frozen=True)
class Samples:
    """Source sample values of a box at one level, at the source's own depth (no scaling to 8 bits):
    row-major, bands interleaved (`values[(y * width + x) * bands + b]`). Ints for integer formats."""

    width: int
    height: int
    bands: int
    bits: int
    floating: bool
    values: tuple[float, ...]


@fast_init
@dataclass(frozen=True)
class Rendered:
    """An encoded image body with what the HTTP layer needs for caching headers."""

    body: bytes
    media_type: str
    width: int
    height: int
    etag: str = ""  # of the final response; a provisional one is sent without validators
    provisional: bool = False  # made from a preview (ImageMeta.provisional): not cached, not replayed
    # how the body was made: `source` is passthrough, recode, decode or cache (a tile cache hit), and `timing`
    # the response's Server-Timing value saying so with the stage times (imaging/render.py)
    source: str = ""
    timing: str = ""
