"""IIP `OBJ` replies, in iipsrv 1.3's exact syntax (`application/vnd.netfpx`, CRLF lines).

Line formats: `Name:value`, `Name:w h`, `Colorspace,0-<n>,0:...`. `OBJ=IIP,1.0` adds no body line: as
in 1.3 it becomes the response header `IIP: 1.3`. A metadata object (`title`, `rights`, `xmp`, ...)
answers its raw value as a line and makes the reply `text/plain` (`application/xml` for XMP).
The IIP spec's own names (`copyright`, `subject`, `author`, `create-dtm`, `app-name`), which 1.3 no
longer knows, answer the same fields. `OBJ=metadata` and `OBJ=stack` answer JSON (`application/json`).
A whole slide's properties (`ImageMeta.properties`: `openslide.objective-power`, `aperio.AppMag`, ...)
are objects of their own names too (matched without case, as 1.3 lower-cases OBJ arguments), answered
as plain text, and part of `OBJ=metadata`; its microns per pixel are its `dpi`.
An object the image lacks (no DPI, no title, not a stack) adds nothing; a reply that ends up empty is
iipsrv's `2 1` error, naming the query. An unknown object is `Error/<len>:3 2 <name>`.

Where 1.3 writes bytes that are not what it means, we write what it means: JSON strings are escaped
(1.3 copies values as they are, binary EXIF included, which it also puts into `OBJ=metadata`; we leave
EXIF out), and long error arguments are not cut at 31 bytes.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

from ...levels import c_float
from ...models import ImageMeta
from .grammar import IIPError, IIPQuery

IIP_VERSION = "1.3"
SERVER_VERSION = "3.65"
OPT_COMM = "CVT CNT QLT JTL JTLS WID HEI RGN MINMAX SHD CMP INV CTW"
OPT_OBJ = "Horizontal-views Vertical-views Tile-size Bits-per-channel Min-Max-sample-values Resolutions"
NETFPX = "application/vnd.netfpx"

# iipsrv 1.3's metadata objects; every one answers the raw value of the image metadata field of its name
METADATA_OBJECTS = {
    "rights", "title", "description", "creator", "keywords", "comment", "last-author", "rev-number",
    "edit-time", "last-printed", "date", "last-save-dtm", "software", "make", "model", "xmp", "scale",
}
# the IIP 1.0.5 spec's FlashPix names for the same fields (iipsrv 1.1 answered them; 1.3 forgot them)
SPEC_NAMES = {"copyright": "rights", "subject": "description", "author": "creator", "create-dtm": "date",
              "app-name": "software"}
SUMMARY_INFO = ("rights", "description", "creator", "date", "software")
NOT_IN_METADATA_JSON = {"icc", "xmp", "exif"}


@dataclass(frozen=True)
class ObjReply:
    body: bytes
    media_type: str
    protocol: str | None  # the `IIP` response header, when OBJ=IIP,x was asked


@dataclass
class _Reply:
    lines: list[str]
    media_type: str = NETFPX
    protocol: str | None = None


def pixels_per_metre(value: float, unit: int) -> float:
    """iipsrv's DPI object: TIFF/JFIF resolution in pixels per metre (unit 2 inch, 3 cm, else as stored)."""
    v = c_float(value)
    if unit == 3:
        return c_float(v * 100.0)
    if unit == 2:
        return c_float(v / 0.0254)
    return v


def _max_size(meta: ImageMeta, q: IIPQuery) -> str:
    w, h = meta.width, meta.height
    if int(q.rotation) % 180 == 90:
        w, h = h, w
    return f"Max-size:{w} {h}"


def _colorspace(meta: ImageMeta) -> str:
    """1.3: 1 (planes `1 0`) for grey, 4 (calibrated) for CIELAB, 3 (planes `3 0 1 2`) for everything else."""
    if meta.colorspace == "lab":
        code, calibrated, planes = 4, 1, "3 0 1 2"
    elif meta.bands - meta.has_alpha == 1:
        code, calibrated, planes = 1, 0, "1 0"
    else:
        code, calibrated, planes = 3, 0, "3 0 1 2"
    return f"Colorspace,0-{len(meta.levels) - 1},0:{calibrated} 0 {code} {planes}"


def _minmax(meta: ImageMeta) -> str:
    text = "".join(f" {_g(lo)}  {_g(hi)} " for lo, hi in zip(meta.min_values, meta.max_values, strict=True))
    return f"Min-Max-sample-values:{text[:-1]}"


def _g(value: float) -> str:
    """C's %.9g of a float."""
    return f"{c_float(value):.9g}"


def _dpi(meta: ImageMeta) -> list[str]:
    if meta.resolution is None:
        return []
    x, y, unit = meta.resolution
    px, py = pixels_per_metre(x, unit), pixels_per_metre(y, unit)
    return [f"DPI:{px:f} {py:f}"] if px and py else []


def horizontal_views(meta: ImageMeta) -> list[int]:
    """The views (SDS x): a sequence's horizontal angles, the pages of a stack, else the one view 0."""
    if meta.views is not None:
        return list(meta.views[0])
    return list(range(len(meta.stack))) if len(meta.stack) > 1 else [0]


def vertical_views(meta: ImageMeta) -> list[int]:
    """The vertical views (SDS y): a sequence's vertical angles, else the one view 90."""
    return list(meta.views[1]) if meta.views is not None else [90]


def _json_string(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)


def _stack(meta: ImageMeta) -> list[str]:
    if not meta.stack:
        return []
    items = [f'\n\t{{\n\t\t"id": {n},\n\t\t"name": {_json_string(s.name)},\n\t\t"scale": {_g(s.scale)}\n\t}}'
             for n, s in enumerate(meta.stack)]
    return ["[ " + ",".join(items) + "\n]"]


def _metadata_json(meta: ImageMeta, rights: str) -> str:
    fields = {**dict(meta.properties), **dict(meta.metadata)}
    if rights and not fields.get("rights"):
        fields["rights"] = rights
    items = [f"\n\t{_json_string(k)}: {_json_string(v)}" for k, v in sorted(fields.items())
             if v and k not in NOT_IN_METADATA_JSON]
    return "{ " + ",".join(items) + "\n}" if items else "{\n}"


ImageObj = Callable[[ImageMeta, IIPQuery], list[str]]

IMAGE_OBJECTS: dict[str, ImageObj] = {
    "basic-info": lambda m, q: [f"IIP-server:{SERVER_VERSION}", _max_size(m, q),
                                f"Resolution-number:{len(m.levels)}", _colorspace(m)],
    "resolution-number": lambda m, q: [f"Resolution-number:{len(m.levels)}"],
    "max-size": lambda m, q: [_max_size(m, q)],
    "tile-size": lambda m, q: [f"Tile-size:{m.tile_size[0]} {m.tile_size[1]}"],
    "bits-per-channel": lambda m, q: [f"Bits-per-channel:{m.bits}"],
    "vertical-views": lambda m, q: ["Vertical-views:" + " ".join(map(str, vertical_views(m)))],
    "horizontal-views": lambda m, q: ["Horizontal-views:" + " ".join(map(str, horizontal_views(m)))],
    "min-max-sample-values": lambda m, q: [_minmax(m)],
    "resolutions": lambda m, q: ["Resolutions:" + ",".join(f"{lv.width} {lv.height}" for lv in reversed(m.levels))],
    "dpi": lambda m, q: _dpi(m),
}

STATIC_OBJECTS: dict[str, str] = {
    "iip-server": f"IIP-server:{SERVER_VERSION}",
    "iip-opt-comm": f"IIP-opt-comm:{OPT_COMM}",
    "iip-opt-obj": f"IIP-opt-obj:{OPT_OBJ}",
}


def _answer(name: str, meta: ImageMeta | None, q: IIPQuery, reply: _Reply, rights: str) -> None:
    if name.startswith("iip,"):
        reply.protocol = IIP_VERSION
        return
    if name in STATIC_OBJECTS:
        reply.lines.append(STATIC_OBJECTS[name])
        return
    if meta is None:
        raise IIPError("1 3", "", "no image given: FIF must come first")
    if name in IMAGE_OBJECTS:
        reply.lines += IMAGE_OBJECTS[name](meta, q)
    elif "colorspace" in name:
        reply.lines.append(_colorspace(meta))
    elif name == "stack":
        if lines := _stack(meta):
            reply.lines += lines
            reply.media_type = "application/json"
    elif name == "metadata":
        reply.lines.append(_metadata_json(meta, rights))
        reply.media_type = "application/json"
    elif name == "summary-info":
        for key in SUMMARY_INFO:
            _field(meta, key, reply, rights)
    elif not _text_object(meta, name, reply, rights):
        raise IIPError("3 2", name, f"unsupported object {name}")


def _text_object(meta: ImageMeta, name: str, reply: _Reply, rights: str) -> bool:
    """A metadata object (1.3's, the spec's names) or an image property, as plain text; False if `name`
    is neither."""
    if name in METADATA_OBJECTS or name in SPEC_NAMES:
        _field(meta, SPEC_NAMES.get(name, name), reply, rights)
        return True
    value = _property(meta, name)
    if value is None:
        return False
    if value:
        reply.lines.append(value)
        reply.media_type = "text/plain"
    return True


def _property(meta: ImageMeta, name: str) -> str | None:
    """The value of the image property named `name` (any case), None when it has none of that name."""
    for key, value in meta.properties:
        if key.lower() == name:
            return value
    return None


def _field(meta: ImageMeta, key: str, reply: _Reply, rights: str) -> None:
    value = meta.meta(key) or (rights if key == "rights" else "")
    if value:
        reply.lines.append(value)
        reply.media_type = "application/xml" if key == "xmp" else "text/plain"


def obj_reply(meta: ImageMeta | None, q: IIPQuery, rights: str = "") -> ObjReply:
    """The reply to a request's OBJ objects, in their order; `rights` stands in for an image without any
    (iipsrv's COPYRIGHT setting)."""
    reply = _Reply([])
    for name in q.objs:
        _answer(name, meta, q, reply, rights)
    if not reply.lines and reply.protocol is None:
        raise IIPError("2 1", q.raw, "the requested objects are not available for this image")
    body = "".join(line + "\r\n" for line in reply.lines).encode()
    return ObjReply(body, reply.media_type, reply.protocol)
