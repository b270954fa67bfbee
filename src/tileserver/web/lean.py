"""The lean path: a tile request (IIP `JTL`, IIIF image requests, DeepZoom and Zoomify tiles) answered by its
protocol's endpoint called directly, without the rest of the stack in front of the router.

It sits behind replay (web/replay.py) and telemetry, so lean answers are recorded, replayed, counted and logged
as any other. What it skips is what cannot change a tile's answer when it steps in: CORS when the request has
no `Origin` (starlette's CORSMiddleware then only adds `Origin` to `Vary`, done here the same way), the request
limits when the request has no body and its target is within `max_url_bytes`, OPTIONS (only GET and HEAD come
here), starlette's exception middleware (a `TileServerError` is answered by the same handler, `errors.handle`;
anything else goes up to starlette's server-error middleware as before), and the router with starlette's endpoint
wrappers. Tile URLs
are recognised by the protocols' own patterns (`protocols.is_tile_shape`), and the route is still the first of
the table that matches, so a manifest or a cache route shadows a tile route here as it does in the router.

Everything else goes down the full stack: other URLs and methods, a request with a body, a CORS request, and
every request while an access policy is configured (the app does not install this middleware then: the access
middleware must read the credentials first, and it sits in front of the trusted-proxy middleware).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, MutableMapping, Sequence
from typing import Any

from starlette.requests import Request
from starlette.routing import BaseRoute, Match, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from .. import errors
from ..settings import Settings
from .limits import has_body

TileShape = Callable[[str, bytes], bool]  # (path, query) -> whether it is a tile URL (protocols.is_tile_shape)


class LeanMiddleware:
    def __init__(self, app: ASGIApp, routes: Sequence[BaseRoute], tile_routes: Collection[BaseRoute],
                 shape: TileShape, settings: Settings) -> None:
        self.app = app
        self.routes = routes  # the app's route table, in the router's order
        self.lean = frozenset(id(r) for r in tile_routes)
        self.shape = shape
        self.cors = bool(settings.cors)
        self.max_url = settings.max_url_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        found = self.route_of(scope)
        if found is None:
            await self.app(scope, receive, send)
            return
        route, child = found
        scope["route"] = route  # as the router sets them (telemetry labels the request by the route)
        scope.update(child)
        if "router" not in scope:
            scope["router"] = scope["app"].router
        request = Request(scope, receive, send)
        try:
            response = await route.endpoint(request)
        except errors.TileServerError as exc:
            response = await errors.handle(request, exc)
        if self.cors:  # what starlette's CORSMiddleware adds to the answer to a request without `Origin`
            response.headers["Vary"] = ", ".join([*response.headers.getlist("Vary"), "Origin"])
        await response(scope, receive, send)

    def route_of(self, scope: Scope) -> tuple[Route, MutableMapping[str, Any]] | None:
        """The tile route that answers `scope` and its child scope, or None for the full stack."""
        if scope["type"] != "http" or scope["method"] not in ("GET", "HEAD"):
            return None
        path: str = scope["path"]
        query: bytes = scope["query_string"]
        if not self.shape(path, query):
            return None
        if has_body(scope) or (self.cors and any(name == b"origin" for name, _ in scope["headers"])):
            return None
        target = len(scope.get("raw_path") or path.encode()) + (len(query) + 1 if query else 0)
        if target > self.max_url:
            return None
        return first_route(self.routes, self.lean, scope)


def first_route(routes: Sequence[BaseRoute], taken: Collection[int], scope: Scope
                ) -> tuple[Route, MutableMapping[str, Any]] | None:
    """The router's choice for `scope` (the first route that fully matches) and its child scope, if it is one of
    `taken` (route ids); else None."""
    for route in routes:
        match, child = route.matches(scope)
        if match is Match.FULL:
            if id(route) in taken and isinstance(route, Route):
                return route, child
            return None
    return None
