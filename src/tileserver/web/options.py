"""OPTIONS on every route: 204 with `Allow` naming the methods of the route the path belongs to (tiles,
info documents, manifests, pages, health, viewer assets), in one place instead of in each endpoint.

The routes are tried in the router's order; the first whose path matches, whatever its methods, names
them (the router would fall through a method mismatch to a later route: `/iiif/manifests/x.json` to
`/iiif/{rest:path}`, a 404). A path no route matches goes on to the router (404). CORS preflights
(`Origin` and `Access-Control-Request-Method`) are answered ahead of this by starlette's CORSMiddleware
when CORS is on; with it off they get this 204 without `Access-Control-*` headers, which a browser
takes as a refusal.
"""

from __future__ import annotations

from collections.abc import Sequence

from starlette.responses import Response
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Receive, Scope, Send

DEFAULT_METHODS = frozenset({"GET", "HEAD"})  # a Mount (static files) or a route that names none


def allowed(routes: Sequence[BaseRoute], scope: Scope) -> str | None:
    """`Allow` for the path of `scope`, or None when no route has that path."""
    for route in routes:
        match, _ = route.matches(scope)
        if match is not Match.NONE:
            methods = getattr(route, "methods", None) or DEFAULT_METHODS
            return ", ".join(sorted({*methods, "OPTIONS"}))
    return None


class OptionsMiddleware:
    def __init__(self, app: ASGIApp, routes: Sequence[BaseRoute]) -> None:
        self.app = app
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "OPTIONS":
            allow = allowed(self.routes, scope)
            if allow is not None:
                await Response(status_code=204, headers={"Allow": allow})(scope, receive, send)
                return
        await self.app(scope, receive, send)
