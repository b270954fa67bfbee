"""Zoomify: `/zoomify/{identifier}/ImageProperties.xml` and
`/zoomify/{identifier}/TileGroup{n}/{tier}-{col}-{row}.jpg`, plus iipsrv's query forms
`?Zoomify={identifier}/ImageProperties.xml` and `?Zoomify={identifier}/TileGroup{n}/{z}-{x}-{y}.jpg`.

Geometry (reference: /work/shared/reference/protocols.md §3): 256-pixel tiles, no overlap; tiers
are the full size halved with rounding up until one tile holds the image, tier 0 the smallest, as
libvips `dzsave --layout zoomify` and OpenLayers compute them (OpenSeadragon's Zoomify source halves
with floor and can expect one tier fewer near powers of two: see the README). `NUMTILES` counts
the tiles of all tiers (iipsrv 1.1 counts only full resolution). The `TileGroup` number is
accepted whatever it is, since clients compute it differently; tiles outside a tier are a 404.
The maths lives in `levels.py` (`zoomify_shift`, `scaled_tile`); this module only parses and translates.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from ..errors import BadRequest, UnsupportedFormat
from ..levels import ZOOMIFY_TILE, scaled_tile, zoomify_num_tiles, zoomify_shift
from ..models import ImageMeta, OutputFormat, TileRequest
from ..web.http import Pending, TileNow, Translated, send_document, send_remembered, send_tile, tile_now

XML = "application/xml"
INFO = re.compile(r"(?P<ident>.+)/ImageProperties\.xml")
TILE = re.compile(r"(?P<ident>.+)/TileGroup(?P<group>\d{1,9})/(?P<tier>\d{1,9})-(?P<col>\d{1,9})-(?P<row>\d{1,9})"
                  r"\.(?P<ext>\w+)")


@dataclass(frozen=True)
class ZoomifyInfo:
    """A request for `ImageProperties.xml`."""

    ident: str


@dataclass(frozen=True)
class ZoomifyTile:
    """A request for tile (col, row) of `tier` (0 = smallest); `group` as the client sent it."""

    ident: str
    group: int
    tier: int
    col: int
    row: int


def parse(path: str) -> ZoomifyInfo | ZoomifyTile:
    """Parse the part after `/zoomify/` (or the `Zoomify=` argument); the identifier may hold `/`
    and ends before the last `/TileGroup`. Grammar: protocols.md §3.

    Examples: `maps/a.tif/ImageProperties.xml` -> `ZoomifyInfo("maps/a.tif")`;
    `maps/a.tif/TileGroup0/2-1-0.jpg` -> `ZoomifyTile("maps/a.tif", 0, 2, 1, 0)`.
    Anything else -> `BadRequest`; a tile suffix other than jpg -> `UnsupportedFormat` (400).
    """
    m = TILE.fullmatch(path)
    if m is not None:
        if m["ext"].lower() not in ("jpg", "jpeg"):
            raise UnsupportedFormat(f"Zoomify tiles are jpg, not {m['ext']}")
        return ZoomifyTile(m["ident"], int(m["group"]), int(m["tier"]), int(m["col"]), int(m["row"]))
    m = INFO.fullmatch(path)
    if m is not None:
        return ZoomifyInfo(m["ident"])
    raise BadRequest(f"not a Zoomify path: {path!r} (want <id>/ImageProperties.xml or "
                     "<id>/TileGroup<n>/<tier>-<col>-<row>.jpg)")


def to_tile_request(t: ZoomifyTile, meta: ImageMeta, floor: bool = False) -> TileRequest:
    """The tile's region in full-resolution pixels and its exact (edge-cropped) pixel size; raises
    `TileNotFound` for a tier, column or row outside the image. The group number is not checked.
    `floor`: tiers halve rounding down, as OpenSeadragon computes them (`zoomify_rounding="down"`)."""
    shift = zoomify_shift(meta.width, meta.height, t.tier, floor=floor)
    box, size = scaled_tile(meta.width, meta.height, shift, ZOOMIFY_TILE, 0, t.col, t.row, floor)
    return TileRequest(ident=meta.ident, fmt=OutputFormat.JPEG, region=box, size=size)


def render_info(meta: ImageMeta, floor: bool = False) -> bytes:
    """`<IMAGE_PROPERTIES WIDTH=.. HEIGHT=.. NUMTILES=.. NUMIMAGES="1" VERSION="1.8" TILESIZE="256" />`,
    without an XML declaration, as libvips writes it."""
    el = ET.Element("IMAGE_PROPERTIES", {
        "WIDTH": str(meta.width), "HEIGHT": str(meta.height),
        "NUMTILES": str(zoomify_num_tiles(meta.width, meta.height, floor=floor)),
        "NUMIMAGES": "1", "VERSION": "1.8", "TILESIZE": str(ZOOMIFY_TILE),
    })
    return ET.tostring(el, encoding="unicode").encode()


def memo_key_of(path: str) -> str:
    """The key a path's translation is remembered under (`serve`, `now`)."""
    return f"zoomify {path}"


async def serve(request: Request, path: str) -> Response:
    """parse -> one metadata lookup -> TileRequest -> render -> response."""
    key = memo_key_of(path)
    known = await send_remembered(request, key)
    if known is not None:
        return known
    p = parse(path)
    service = request.app.state.service
    meta = await service.info(p.ident)
    floor = request.app.state.settings.zoomify_rounding == "down"
    if isinstance(p, ZoomifyInfo):
        return send_document(request, render_info(meta, floor), XML, meta, f"zoomify:ImageProperties:{floor}")
    req = to_tile_request(p, meta, floor)
    return send_tile(request, key, meta, req, await service.render(req))


async def endpoint(request: Request) -> Response:
    return await serve(request, request.path_params["path"])


def now(request: Request) -> TileNow | Pending | None:
    """`endpoint` for a tile that needs no waiting (web/front.py), else None."""
    path = request.path_params["path"]
    return tile_now(request, memo_key_of(path), lambda: _translated_now(request, path))


def _translated_now(request: Request, path: str) -> Translated | Pending | None:
    p = parse(path)
    if not isinstance(p, ZoomifyTile):
        return None
    meta = request.app.state.service.info_now(p.ident)
    if meta is None:
        return Pending(p.ident)
    return meta, to_tile_request(p, meta, request.app.state.settings.zoomify_rounding == "down"), {}


ROUTES: list[BaseRoute] = [Route("/zoomify/{path:path}", endpoint, methods=["GET"])]
NOW = {"/zoomify/{path:path}": now}  # route -> its answer now (web/front.py)
QUERY_COMMANDS = {"zoomify": serve}
