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
3. Register the module in `AVAILABLE` below; `Settings.protocols` turns it on or off.
Shared tile maths goes in `levels.py`, never in a protocol module.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from types import ModuleType

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

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


def query_commands(names: tuple[str, ...]) -> dict[str, QueryHandler]:
    out: dict[str, QueryHandler] = {}
    for m in enabled(names):
        out.update(getattr(m, "QUERY_COMMANDS", {}))
    return out
