"""Protocols: each translates its URL grammar into the core's `TileRequest` and never imports pyvips.

How to add a protocol:
1. Write `protocols/<name>.py` (or a package) with `ROUTES: list[BaseRoute]` and pure functions
   `parse_*(...)`, `to_tile_request(parsed, meta) -> TileRequest`, `render_info(meta, ...) -> bytes`.
   Handlers stay linear: `http.send_remembered(request, key)` (a URL seen before) or parse ->
   `await service.info(ident)` -> translate -> `await service.render(req)` -> `http.send_tile(...)`
   (which remembers the translation and records the response for web/replay.py); errors are raised as
   `errors.*` and mapped to status centrally.
2. If iipsrv reaches it through a query command (`?IIIF=...`), also export
   `QUERY_COMMANDS: dict[str, QueryHandler]` (lower-case command -> async handler(request, arg)).
3. For its tile URLs, also export `NOW: dict[str, NowHandler]` (route path -> a sync handler that answers through
   `http.tile_now` with the same key and translation as the endpoint, None where it would wait): the front
   (web/front.py) answers with it at the HTTP protocol level, with exactly the endpoint's headers.
4. Register the module in `AVAILABLE` below; `Settings.protocols` turns it on or off.
Shared tile maths goes in `levels.py`, never in a protocol module.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from types import ModuleType

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from ..web.http import NowHandler
from . import deepzoom, iiif, iip, zoomify

QueryHandler = Callable[[Request, str], Awaitable[Response]]

AVAILABLE: dict[str, ModuleType] = {"iip": iip, "iiif": iiif, "deepzoom": deepzoom, "zoomify": zoomify}


def enabled(names: tuple[str, ...]) -> list[ModuleType]:
    unknown = set(names) - set(AVAILABLE)
    if unknown:
        raise ValueError(f"unknown protocols: {', '.join(sorted(unknown))}")
    return [AVAILABLE[n] for n in AVAILABLE if n in names]


def routes(names: tuple[str, ...]) -> list[BaseRoute]:
    return [r for m in enabled(names) for r in m.ROUTES]


def now_handlers(names: tuple[str, ...]) -> dict[str, NowHandler]:
    """Route path -> the protocol's answer-now handler of that route (web/front.py)."""
    out: dict[str, NowHandler] = {}
    for m in enabled(names):
        out.update(getattr(m, "NOW", {}))
    return out


def query_commands(names: tuple[str, ...]) -> dict[str, QueryHandler]:
    out: dict[str, QueryHandler] = {}
    for m in enabled(names):
        out.update(getattr(m, "QUERY_COMMANDS", {}))
    return out


# the tile URL shapes the lean path takes (web/lean.py), by the protocols' own tile patterns; IIIF's is
# `iiif.urls.path_target`'s image shape: id, region, size, rotation, quality.format after the version prefix
IIIF_TILE = re.compile(r"/iiif/(?:[23]/)?[^/]+/[^/]+/[^/]+/[^/]+/[^/]+\.[^/]+")
IIP_PATHS = frozenset({"/iip", "/fcgi-bin/iipsrv.fcgi"})


def is_front_shape(path: str, query: bytes) -> bool:
    """Whether a GET of `path?query` may be answered by the front (web/front.py): a tile URL, or an IIP `CVT`
    export (cached ones: a fresh export is never stored)."""
    return is_tile_shape(path, query) or (path in IIP_PATHS and b"cvt=" in query.lower())


def is_tile_shape(path: str, query: bytes) -> bool:
    """Whether a GET of `path?query` has the shape of a tile request: IIP `JTL`, an IIIF image request, a
    DeepZoom or a Zoomify tile. `/deepzoom/a.tif_files/9/1_0.jpg` -> True, `/deepzoom/a.tif.dzi` -> False."""
    if path in IIP_PATHS:
        return b"jtl=" in query.lower()
    if path.startswith("/iiif/"):
        return IIIF_TILE.fullmatch(path) is not None
    if path.startswith("/deepzoom/"):
        return deepzoom.TILE.fullmatch(path, len("/deepzoom/")) is not None
    if path.startswith("/zoomify/"):
        return zoomify.TILE.fullmatch(path, len("/zoomify/")) is not None
    return False
