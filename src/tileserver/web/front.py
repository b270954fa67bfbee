"""The front: GET requests answered at the HTTP protocol level, before uvicorn starts an ASGI cycle for them.

`tileserver serve`'s HTTP protocol (web/server.py) hands each complete request head to `Front.answer` first. The
front takes:

- a response replay would send (web/replay.py: the same key, the same record): sent at once;
- a tile URL of a protocol's `NOW` handlers (IIP `JTL` and `CVT`, IIIF image requests, DeepZoom and Zoomify
  tiles, `protocols.now_handlers`) that can be translated now (the image's metadata is fresh): sent at once when
  its image is in the tile cache or is a stored tile readable now (`TileService.render_now`), else rendered as the
  endpoint renders it (`TileService.render`, the pool and its admission) by a task of the connection
  (`GuardedProtocol._answer_later`), its error answered as the lean path answers it (`errors.handle`);
- such a URL whose image's metadata is not at hand (the image not loaded yet in this worker, or its file not
  checked for twice `stat_interval`: `http.Pending`): a task of the connection loads it as the endpoint would
  (`TileService.info`, one load per image however many wait), its error answered by `errors.handle`, then
  translates the URL again and takes it as above (a worker's first requests for an image no longer go down the
  full stack while it opens).

It sends what the full stack would: the same route choice (web/lean.py's `first_route`), key, translation and core
calls, the headers of `http.image_head`, forwarded headers as the trusted-proxy middleware leaves them, `Vary:
Origin` as CORSMiddleware adds it; the answer is recorded for replay and counted and logged by the same `Telemetry`.
Everything else gets None and goes down uvicorn's ASGI cycle and the full stack as before: other methods and URLs,
requests with a body, conditional, range and CORS requests, URLs whose translation fails (the full stack makes the
error response), URLs whose metadata is never fresh (`stat_interval` 0: every request checks the file), and every
request while an access policy is configured (`create_app` makes no front then).

Why: a stored tile in the page cache takes ~35 µs to read and splice, and the ASGI cycle, its task, the middleware
chain and Starlette's Request and Response around it ~0.5 ms of Python (README, Performance).
"""

from __future__ import annotations

import logging
import operator
import time
from collections.abc import Coroutine, Hashable, Mapping, Sequence
from typing import Any

from starlette._utils import get_route_path
from starlette.requests import Request
from starlette.routing import BaseRoute, Mount, Route, WebSocketRoute
from starlette.types import Scope
from uvicorn.protocols.http.httptools_impl import HEADER_VALUE_RE

from .. import errors
from ..core import TileService
from ..errors import TileServerError
from ..models import Rendered
from ..settings import Settings
from . import replay, telemetry
from .http import NowHandler, Pending, TileNow, image_head, with_vary_origin
from .lean import first_route
from .limits import has_body
from .proxies import TrustedProxies

log = logging.getLogger("tileserver")
_value = operator.itemgetter(1)  # a header's value
REPLAYED = (b"server-timing", replay.REPLAY_TIMING)  # in place of how a recorded answer was made

Answer = tuple[int, list[tuple[bytes, bytes]], bytes]  # status, headers (after uvicorn's own), body
Later = Coroutine[Any, Any, Answer | None]  # an answer that waits for the pool (`Front.answer`); None: the full stack's


def _head(route: BaseRoute) -> str:
    """The literal start of every path `route` matches (its pattern up to the first parameter; a Mount's pattern is
    its path and `/{path:path}`)."""
    path: str = getattr(route, "path", "")
    if isinstance(route, Mount):
        path += "/"
    return path.split("{", 1)[0]


class Front:
    def __init__(self, app: Any, routes: Sequence[BaseRoute], handlers: Mapping[str, NowHandler],
                 shape: Any, settings: Settings, counter: telemetry.Telemetry) -> None:
        self.app = app
        self.service: TileService = app.state.service
        self.routes = routes  # the app's route table, in the router's order
        self.handlers = handlers  # route path -> its protocol's handler
        self.taken = frozenset(id(r) for r in routes if getattr(r, "path", None) in handlers)
        # the router's choice for a GET depends only on its path when no route matches on more (a Host): kept for
        # the paths of routes without parameters, which are few
        self.by_path = all(type(r) in (Route, Mount, WebSocketRoute) for r in routes)
        self.fixed: dict[tuple[str, str], tuple[Route, Any]] = {}
        # and a route can match a path only if the path starts with the route's literal head (`_head`): the routes
        # that may match a path whose first segment is S, in order, kept per S for the few segments of tile URLs
        self.heads = [(r, _head(r)) for r in routes] if self.by_path else None
        self.near: dict[str, list[BaseRoute]] = {}
        self.shape = shape  # (path, query) -> whether it may be a tile URL (protocols.is_front_shape)
        self.trusted = TrustedProxies(settings.trusted_proxies)
        self.cache_control = settings.cache_control
        self.vary_origin = bool(settings.cors)
        self.max_url = settings.max_url_bytes
        self.counter = counter
        # metadata loaded for a request is at hand for its translation, unless every request checks the file again
        self.waits = settings.stat_interval > 0

    def answer(self, scope: Scope) -> Answer | Later | None:
        """What the full stack would send for `scope` (an HTTP scope as uvicorn makes it, before its app is called):
        now, when it needs no waiting; a coroutine that renders it in the pool as the endpoint would (then the
        answer, or the error's, as the full stack makes them), for a tile URL translated now; else None."""
        start = time.perf_counter()
        if scope["method"] != "GET" or has_body(scope):
            return None
        scope = self.trusted.forwarded(scope)
        key = replay.replay_key(scope)  # None: a conditional, range or CORS request
        if key is None:
            return None
        hit = self.service.replay_now(key)
        if hit is not None:
            body, recorded = hit
            done = {**scope, telemetry.LABELS: recorded.labels,
                    telemetry.SOURCE: "replay" if recorded.request is not None else None}
            self.counter.done(done, 200, len(body), time.perf_counter() - start)
            return 200, list(recorded.headers), body
        path: str = scope["path"]
        query: bytes = scope["query_string"]
        if not self.shape(path, query) or len(scope.get("raw_path") or b"") + len(query) + 1 > self.max_url:
            return None
        where = (scope["root_path"], path)
        found = self.fixed.get(where)
        if found is None:
            found = first_route(self._near(scope), self.taken, scope)
            if found is None:
                return None
            if self.by_path and not found[1].get("path_params") and len(self.fixed) < 64:
                self.fixed[where] = found  # a route without parameters (IIP's): the same choice for that path
        route, child = found
        sub = {**scope, **child, "path_params": dict(child.get("path_params") or {}), "app": self.app, "route": route}
        handler = self.handlers[route.path]
        try:
            now = handler(Request(sub))
        except TileServerError:  # the full stack answers it, with the protocol's error body
            return None
        if now is None:
            return None
        if isinstance(now, Pending):
            return self._loaded(key, handler, sub, now, start) if self.waits else None
        return self._taken(key, sub, now, start)

    def _taken(self, key: Hashable, sub: Scope, now: TileNow, start: float) -> Answer | Later | None:
        self.service.recorded.missed()  # replay's lookup, as the full stack counts it
        if now.rendered is None:
            return self._later(key, sub, now, start)
        return self._sent(key, sub, now, now.rendered, start)

    def _near(self, scope: Scope) -> Sequence[BaseRoute]:
        """The routes that may match `scope`'s path, in the router's order (all of them unless `by_path`)."""
        if self.heads is None:
            return self.routes
        route_path = get_route_path(scope)  # as `Route.matches` takes it
        cut = route_path.find("/", 1)
        segment = route_path if cut < 0 else route_path[:cut]
        near = self.near.get(segment)
        if near is None:
            # a path of segment S starts with head H only if S starts with H, or H with S and then "/"
            near = [r for r, head in self.heads if segment.startswith(head) or head.startswith(segment + "/")]
            if len(self.near) < 64:
                self.near[segment] = near
        return near

    def _sent(self, key: Hashable, sub: Scope, now: TileNow, rendered: Rendered, start: float) -> Answer | None:
        headers = image_head(rendered, now.meta, self.cache_control, now.headers, self.vary_origin)
        if HEADER_VALUE_RE.search(b"\t".join(map(_value, headers))):  # uvicorn refuses to send it: the full stack's
            return None
        if not rendered.provisional:  # recorded for replay, as the full stack records it
            kept = list(headers)
            if rendered.timing:  # image_head's one Server-Timing field
                kept[kept.index((b"server-timing", rendered.timing.encode("latin-1")))] = REPLAYED
            self.service.record(key, now.meta, now.request, rendered.body, tuple(kept), telemetry.labels(sub))
        sub[telemetry.SOURCE] = rendered.source or None
        self.counter.done(sub, 200, len(rendered.body), time.perf_counter() - start)
        return 200, headers, rendered.body

    async def _loaded(self, key: Hashable, handler: NowHandler, sub: Scope, pending: Pending, start: float
                      ) -> Answer | None:
        """A tile URL whose image's metadata was not at hand: loaded as the endpoint loads it (`TileService.info`: one
        load per image, however many requests wait for it), its error answered as the lean path answers it; then
        translated again and taken as `answer` takes it; None (the full stack's) when it still cannot be."""
        try:
            await self.service.info(pending.ident)
        except TileServerError as exc:
            return await self._error(sub, exc, start)
        try:
            now = handler(Request(sub))
        except TileServerError:
            return None
        if not isinstance(now, TileNow):
            return None
        taken = self._taken(key, sub, now, start)
        return taken if taken is None or isinstance(taken, tuple) else await taken

    async def _later(self, key: Hashable, sub: Scope, now: TileNow, start: float) -> Answer | None:
        """`render` in the pool, as the endpoint awaits it; its error answered as the lean path answers it."""
        try:
            rendered = await self.service.render(now.request)
        except TileServerError as exc:
            return await self._error(sub, exc, start)
        return self._sent(key, sub, now, rendered, start)

    async def _error(self, sub: Scope, exc: TileServerError, start: float) -> Answer:
        response = await errors.handle(Request(sub), exc)
        body = bytes(response.body)
        headers = list(response.raw_headers)
        self.counter.done(sub, response.status_code, len(body), time.perf_counter() - start)
        return response.status_code, with_vary_origin(headers) if self.vary_origin else headers, body
