"""IIP `OBJ` replies, in iipsrv's exact line syntax (`application/vnd.netfpx`, CRLF lines).

Formats (from iipsrv's IIPResponse): `Name:value`, `Name:w h`, metadata `name/<len>:value`, errors
`Error/<len>:3 2 <name>` for an unknown object. `IIP:1.0` is the first body line, as in iipsrv 1.1
(master moved it into an HTTP header, a regression we do not copy).
"""

from __future__ import annotations

from collections.abc import Callable

from ...models import ImageMeta
from .grammar import IIPError, IIPQuery

SERVER_VERSION = "3.65"
OPT_COMM = "CVT CNT QLT JTL TIL WID HEI RGN MINMAX CMP INV CTW COL GAM ROT SDS"
OPT_OBJ = "Horizontal-views Vertical-views Tile-size Bits-per-channel Min-Max-sample-values Resolutions"
COLORSPACE_CODES = {"grey": "1 0", "srgb": "3 0 1 2", "lab": "4 0 1 2"}

# metadata object names -> ImageMeta.metadata keys (iipsrv 1.1 names and master's names)
METADATA_NAMES = {
    "copyright": "rights", "rights": "rights", "title": "title", "subject": "description",
    "description": "description", "author": "creator", "creator": "creator", "create-dtm": "date",
    "date": "date", "app-name": "software", "software": "software", "make": "make", "model": "model",
}


def _g(value: float) -> str:
    """C's %.9g."""
    return f"{value:.9g}"


def _max_size(meta: ImageMeta, q: IIPQuery) -> list[str]:
    w, h = meta.width, meta.height
    if q.rotation in (90, 270):
        w, h = h, w
    return [f"Max-size:{w} {h}"]


def _colorspace(meta: ImageMeta, q: IIPQuery) -> list[str]:
    cs = "lab" if meta.colorspace == "lab" else "grey" if meta.bands - meta.has_alpha < 3 else "srgb"
    calibrated = 1 if cs == "lab" else 0
    nbands = meta.bands - (1 if meta.has_alpha else 0)
    return [f"Colorspace,0-{len(meta.levels) - 1},0:{calibrated} 0 {nbands} {COLORSPACE_CODES[cs]}"]


def _minmax(meta: ImageMeta, q: IIPQuery) -> list[str]:
    text = "".join(f" {_g(lo)}  {_g(hi)} " for lo, hi in zip(meta.min_values, meta.max_values, strict=True))
    return [f"Min-Max-sample-values:{text[:-1]}"]


def _resolutions(meta: ImageMeta, q: IIPQuery) -> list[str]:
    return ["Resolutions:" + ",".join(f"{lv.width} {lv.height}" for lv in reversed(meta.levels))]


ObjFn = Callable[[ImageMeta, IIPQuery], list[str]]

IMAGE_OBJECTS: dict[str, ObjFn] = {
    "max-size": _max_size,
    "tile-size": lambda m, q: [f"Tile-size:{m.tile_size[0]} {m.tile_size[1]}"],
    "resolution-number": lambda m, q: [f"Resolution-number:{len(m.levels)}"],
    "resolutions": _resolutions,
    "bits-per-channel": lambda m, q: [f"Bits-per-channel:{m.bits}"],
    "horizontal-views": lambda m, q: ["Horizontal-views:0"],
    "vertical-views": lambda m, q: ["Vertical-views:90"],
    "min-max-sample-values": _minmax,
    "basic-info": lambda m, q: [f"IIP-server:{SERVER_VERSION}", *_max_size(m, q),
                                f"Resolution-number:{len(m.levels)}", *_colorspace(m, q)],
    "summary-info": lambda m, q: [line for key in ("rights", "description", "creator", "date", "software")
                                  for line in _metadata(m, key, key)],
}

STATIC_OBJECTS: dict[str, Callable[[], list[str]]] = {
    "iip-server": lambda: [f"IIP-server:{SERVER_VERSION}"],
    "iip-opt-comm": lambda: [f"IIP-opt-comm:{OPT_COMM}"],
    "iip-opt-obj": lambda: [f"IIP-opt-obj:{OPT_OBJ}"],
}


def _metadata(meta: ImageMeta, name: str, key: str) -> list[str]:
    value = meta.meta(key)
    return [f"{name}/{len(value.encode())}:{value}"] if value else []


def needs_image(name: str) -> bool:
    return not (name.startswith("iip,") or name == "iip" or name in STATIC_OBJECTS)


def obj_lines(name: str, meta: ImageMeta | None, q: IIPQuery) -> list[str]:
    if name.startswith("iip,") or name == "iip":
        return ["IIP:1.0"]
    if name in STATIC_OBJECTS:
        return STATIC_OBJECTS[name]()
    if meta is None:
        raise IIPError("1 3", "", "no image given: FIF must come first")
    if name in IMAGE_OBJECTS:
        return IMAGE_OBJECTS[name](meta, q)
    if name.startswith("colorspace"):
        return _colorspace(meta, q)
    if name in METADATA_NAMES:
        return _metadata(meta, name, METADATA_NAMES[name])
    raise IIPError("3 2", name, f"unsupported object {name}")


def obj_reply(meta: ImageMeta | None, q: IIPQuery) -> bytes:
    lines = [line for name in q.objs for line in obj_lines(name, meta, q)]
    return "".join(line + "\r\n" for line in lines).encode()
