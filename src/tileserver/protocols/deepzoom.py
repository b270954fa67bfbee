"""DeepZoom (DZI), as OpenSeadragon reads it: `/deepzoom/{identifier}.dzi` and
`/deepzoom/{identifier}_files/{level}/{col}_{row}.{jpg|jpeg|png|webp}`, plus iipsrv's query forms
`?DeepZoom={identifier}.dzi` and `?DeepZoom={identifier}_files/{level}/{col}_{row}.jpg`.

Geometry (reference: /work/shared/reference/protocols.md §4; OpenSeadragon `tilesource.js`):
levels run from 0 (1x1) to ceil(log2(max(w, h))) (full size); level L is the full size halved
(rounding up) max-L times; tiles are `TileSize` steps with `Overlap` extra pixels on interior sides
only. Every level is served at its exact size, including those below the file's smallest pyramid
level, and anything outside the image is a 404, never clamped (unlike iipsrv, iipsrv.md §4).
The maths lives in `levels.py` (`dz_shift`, `scaled_tile`); this module only parses and translates.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from ..errors import BadRequest, UnsupportedFormat
from ..levels import dz_shift, scaled_tile
from ..models import ImageMeta, OutputFormat, TileRequest
from ..settings import Settings
from ..web.http import Pending, TileNow, Translated, send_document, send_remembered, send_tile, tile_now

NAMESPACE = "http://schemas.microsoft.com/deepzoom/2008"
XML = "application/xml"
FORMAT = "jpg"  # the Format announced in the .dzi; tiles may still be asked as png or webp
FORMATS = {"jpg": OutputFormat.JPEG, "jpeg": OutputFormat.JPEG, "png": OutputFormat.PNG,
           "webp": OutputFormat.WEBP}
INFO = re.compile(r"(?P<ident>.+)\.dzi")
TILE = re.compile(r"(?P<ident>.+)_files/(?P<level>\d{1,9})/(?P<col>\d{1,9})_(?P<row>\d{1,9})\.(?P<ext>\w+)")


@dataclass(frozen=True)
class DziInfo:
    """A request for the `.dzi` descriptor."""

    ident: str


@dataclass(frozen=True)
class DziTile:
    """A request for tile (col, row) of DeepZoom `level` (0 = 1x1)."""

    ident: str
    level: int
    col: int
    row: int
    fmt: OutputFormat


@dataclass(frozen=True)
class Layout:
    """TileSize and Overlap of the DeepZoom pyramid served for one image."""

    tile: int
    overlap: int


def parse(path: str) -> DziInfo | DziTile:
    """Parse the part after `/deepzoom/` (or the `DeepZoom=` argument); the identifier may hold `/`,
    and a tile path splits at the last `_files/`. Grammar: protocols.md §4.

    Examples: `maps/a.tif.dzi` -> `DziInfo("maps/a.tif")`;
    `maps/a.tif_files/9/1_0.jpg` -> `DziTile("maps/a.tif", 9, 1, 0, OutputFormat.JPEG)`.
    Anything else -> `BadRequest`; an unknown tile suffix -> `UnsupportedFormat` (400).
    """
    m = TILE.fullmatch(path)
    if m is not None:
        fmt = FORMATS.get(m["ext"].lower())
        if fmt is None:
            raise UnsupportedFormat(f"DeepZoom tiles are {', '.join(FORMATS)}, not {m['ext']}")
        return DziTile(m["ident"], int(m["level"]), int(m["col"]), int(m["row"]), fmt)
    m = INFO.fullmatch(path)
    if m is not None:
        return DziInfo(m["ident"])
    raise BadRequest(f"not a DeepZoom path: {path!r} (want <id>.dzi or <id>_files/<level>/<col>_<row>.jpg)")


def layout(meta: ImageMeta, settings: Settings) -> Layout:
    """Settings' tile size, or the file's own tile width so that tiles line up with stored ones."""
    return Layout(settings.deepzoom_tile_size or meta.levels[0].tile_width, settings.deepzoom_overlap)


def to_tile_request(t: DziTile, meta: ImageMeta, lay: Layout) -> TileRequest:
    """The tile's region in full-resolution pixels and its exact pixel size; raises `TileNotFound`
    for a level, column or row outside the image."""
    shift = dz_shift(meta.width, meta.height, t.level)
    box, size = scaled_tile(meta.width, meta.height, shift, lay.tile, lay.overlap, t.col, t.row)
    return TileRequest(ident=meta.ident, fmt=t.fmt, region=box, size=size)


def render_info(meta: ImageMeta, lay: Layout) -> bytes:
    """The .dzi descriptor (DeepZoom 2008 namespace, with an XML declaration, as libvips writes it)."""
    # `xmlns` as a plain attribute: ElementTree's default_namespace option rejects the
    # unqualified attributes DZI uses; the document is the same.
    root = ET.Element("Image", {"xmlns": NAMESPACE, "Format": FORMAT, "Overlap": str(lay.overlap),
                                "TileSize": str(lay.tile)})
    ET.SubElement(root, "Size", {"Height": str(meta.height), "Width": str(meta.width)})
    body: bytes = ET.tostring(root, encoding="UTF-8", xml_declaration=True)
    return body


def memo_key_of(path: str) -> str:
    """The key a path's translation is remembered under (`serve`, `now`)."""
    return f"deepzoom {path}"


async def serve(request: Request, path: str) -> Response:
    """parse -> one metadata lookup -> TileRequest -> render -> response."""
    key = memo_key_of(path)
    known = await send_remembered(request, key)
    if known is not None:
        return known
    p = parse(path)
    service = request.app.state.service
    meta = await service.info(p.ident)
    lay = layout(meta, request.app.state.settings)
    if isinstance(p, DziInfo):
        return send_document(request, render_info(meta, lay), XML, meta, f"dzi:{lay.tile}:{lay.overlap}")
    req = to_tile_request(p, meta, lay)
    return send_tile(request, key, meta, req, await service.render(req))


async def endpoint(request: Request) -> Response:
    return await serve(request, request.path_params["path"])


def now(request: Request) -> TileNow | Pending | None:
    """`endpoint` for a tile that needs no waiting (web/front.py), else None."""
    path = request.path_params["path"]
    return tile_now(request, memo_key_of(path), lambda: _translated_now(request, path))


def _translated_now(request: Request, path: str) -> Translated | Pending | None:
    p = parse(path)
    if not isinstance(p, DziTile):
        return None
    meta = request.app.state.service.info_now(p.ident)
    if meta is None:
        return Pending(p.ident)
    return meta, to_tile_request(p, meta, layout(meta, request.app.state.settings)), {}


ROUTES: list[BaseRoute] = [Route("/deepzoom/{path:path}", endpoint, methods=["GET"])]
NOW = {"/deepzoom/{path:path}": now}  # route -> its answer now (web/front.py)
QUERY_COMMANDS = {"deepzoom": serve}
