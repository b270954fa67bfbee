"""The front: GET requests answered at the HTTP protocol level, before uvicorn starts an ASGI cycle for them.

`tileserver serve`'s HTTP protocol (web/server.py) hands each complete request head to `Front.answer` first. The
front answers what needs no waiting:

- a response replay would send (web/replay.py: the same key, the same record), and
- a tile URL of a protocol's `NOW` handlers (IIP `JTL` and `CVT`, IIIF image requests, DeepZoom and Zoomify
  tiles, `protocols.now_handlers`) whose image metadata is fresh and whose image is in the tile cache or is a
  stored tile readable now (`TileService.render_now`).

It sends what the full stack would: the same route choice (web/lean.py's `first_route`), key, translation and core
calls, the headers of `http.image_head`, forwarded headers as the trusted-proxy middleware leaves them, `Vary:
Origin` as CORSMiddleware adds it; the answer is recorded for replay and counted and logged by the same `Telemetry`.
Everything else gets None and goes down uvicorn's ASGI cycle and the full stack as before: other methods and URLs,
requests with a body, conditional, range and CORS requests, every error (the full stack makes the error response),
anything that would wait (metadata to check, a tile to read or render in the pool), and every request while an
access policy is configured (`create_app` makes no front then).

Why: a stored tile in the page cache takes ~35 µs to read and splice, and the ASGI cycle, its task, the middleware
chain and Starlette's Request and Response around it ~0.5 ms of Python (README, Performance).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

from starlette.requests import Request
from starlette.routing import BaseRoute
from starlette.types import Scope

from ..core import TileService
from ..errors import TileServerError
from ..settings import Settings
from . import replay, telemetry
from .http import NowHandler, image_head
from .lean import first_route
from .limits import has_body
from .proxies import TrustedProxies

log = logging.getLogger("tileserver")

Answer = tuple[list[tuple[bytes, bytes]], bytes]  # a 200's headers (after uvicorn's own) and body


class Front:
    def __init__(self, app: Any, routes: Sequence[BaseRoute], handlers: Mapping[str, NowHandler],
                 shape: Any, settings: Settings, counter: telemetry.Telemetry) -> None:
        self.app = app
        self.service: TileService = app.state.service
        self.routes = routes  # the app's route table, in the router's order
        self.handlers = handlers  # route path -> its protocol's handler
        self.taken = frozenset(id(r) for r in routes if getattr(r, "path", None) in handlers)
        self.shape = shape  # (path, query) -> whether it may be a tile URL (protocols.is_front_shape)
        self.trusted = TrustedProxies(settings.trusted_proxies)
        self.cache_control = settings.cache_control
        self.vary_origin = bool(settings.cors)
        self.max_url = settings.max_url_bytes
        self.counter = counter

    def answer(self, scope: Scope) -> Answer | None:
        """The headers and body of a 200 the full stack would send for `scope` (an HTTP scope as uvicorn makes
        it, before its app is called), when they can be had now; else None."""
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
            return list(recorded.headers), body
        path: str = scope["path"]
        query: bytes = scope["query_string"]
        if not self.shape(path, query) or len(scope.get("raw_path") or b"") + len(query) + 1 > self.max_url:
            return None
        found = first_route(self.routes, self.taken, scope)
        if found is None:
            return None
        route, child = found
        sub = {**scope, **child, "app": self.app, "route": route}
        try:
            now = self.handlers[route.path](Request(sub))
        except TileServerError:  # the full stack answers it, with the protocol's error body
            return None
        if now is None:
            return None
        rendered = now.rendered
        headers = image_head(rendered, now.meta, self.cache_control, now.headers, self.vary_origin)
        self.service.recorded.missed()  # replay's lookup, as the full stack counts it
        labels = telemetry.labels(sub)
        kept = tuple((k, replay.REPLAY_TIMING) if k == b"server-timing" else (k, v) for k, v in headers)
        self.service.record(key, now.meta, now.request, rendered.body, kept, labels)
        sub[telemetry.SOURCE] = rendered.source or None
        self.counter.done(sub, 200, len(rendered.body), time.perf_counter() - start)
        return headers, rendered.body
