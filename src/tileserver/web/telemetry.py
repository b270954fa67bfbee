"""What the HTTP edge tells operators: one middleware, outermost (replayed responses pass through it too), that
counts every response in the metrics (protocol, route template, status, latency, where an image's body came
from) and writes the access log line; the periodic sample of the cache counters; and `/metrics`.

Handlers say where an image body came from in the ASGI scope (`SOURCE`: passthrough, recode, decode, cache;
replay sets `replay`), the router says which route answered (`scope["route"]`), and a replayed response carries
the labels recorded with it (`LABELS`), so nothing here parses a URL or a header.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import time
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .. import metrics

if TYPE_CHECKING:
    from ..core import TileService

SOURCE = "tileserver.source"  # where an image response's body came from (set by http.send_image, replay)
LABELS = "tileserver.labels"  # (protocol, route template) of a replayed response
PROTOCOL = "tileserver.protocol"  # the protocol that answered, when not the route's own (IIP `?IIIF=...`)
UNMATCHED = ("none", "unmatched")  # no route matched (a 404 or 405 from the router)
# route template prefixes -> protocol label; anything else is a server page
PREFIXES = (("/iiif/manifests/", "presentation"), ("/iiif/collection", "presentation"), ("/iiif/", "iiif"),
            ("/iip", "iip"), ("/fcgi-bin/", "iip"), ("/deepzoom/", "deepzoom"), ("/zoomify/", "zoomify"))
QUERY_LOGGED = 2048  # characters of a query string written to the access log


@functools.lru_cache(maxsize=256)
def protocol_of(route: str) -> str:
    """The protocol label of a route template: `/iiif/3/{rest:path}` -> iiif, `/health` -> server."""
    return next((name for prefix, name in PREFIXES if route.startswith(prefix)), "server")


def labels(scope: Scope) -> tuple[str, str]:
    """(protocol, route template) of a response: recorded with a replayed one, else the router's match."""
    recorded: tuple[str, str] | None = scope.get(LABELS)
    if recorded is not None:
        return recorded
    path = getattr(scope.get("route"), "path", None)
    if path is None:
        return UNMATCHED
    return scope.get(PROTOCOL) or protocol_of(path), path


class Telemetry:
    """Counts each response (metrics) and logs it (`access_log`: off, json, text) when its last byte is sent
    (`done`): for the middleware below, and for the front (web/front.py). The process id is taken when the app is
    built: each uvicorn worker builds its own (`cli.app_from_env`)."""

    def __init__(self, access_log: str = "off", record: bool = True) -> None:
        self.log = access_log != "off"
        self.json = access_log == "json"
        self.record = record
        self.pid = os.getpid()  # the worker process, in json lines

    def done(self, scope: Scope, status: int, sent: int, seconds: float) -> None:
        protocol, route = labels(scope)
        source = scope.get(SOURCE)
        if self.record:
            metrics.request(protocol, route, status, seconds)
            if source is not None:
                metrics.image(source)
        if self.log:
            write_line(self._line(scope, status, sent, seconds, source, protocol, route))

    def _line(self, scope: Scope, status: int, sent: int, seconds: float, source: str | None, protocol: str,
              route: str) -> str:
        client = scope.get("client")
        host = client[0] if client else None
        query = scope["query_string"].decode("latin-1")[:QUERY_LOGGED]
        if not self.json:
            target = scope["path"] + ("?" + query if query else "")
            return (f'{host or "-"} "{scope["method"]} {target}" {status} {sent} {seconds * 1e3:.2f}ms '
                    f'{source or "-"}')
        return json.dumps({
            "time": _utc(time.time()), "method": scope["method"], "path": scope["path"], "query": query,
            "status": status, "bytes": sent, "duration_ms": round(seconds * 1e3, 3), "source": source,
            "client": host, "protocol": protocol, "route": route, "worker": self.pid,
        }, separators=(",", ":"))


class TelemetryMiddleware(Telemetry):
    def __init__(self, app: ASGIApp, access_log: str = "off", record: bool = True) -> None:
        super().__init__(access_log, record)
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status, sent = 0, 0

        async def counted(message: Message) -> None:
            nonlocal status, sent
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, counted)
        finally:  # an exception before the response started: the server sends a 500; HEAD: the body is not sent
            self.done(scope, status or 500, 0 if scope["method"] == "HEAD" else sent, time.perf_counter() - start)


@functools.lru_cache(maxsize=4)
def _second(now: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now))


def _utc(now: float) -> str:
    """ISO 8601 UTC with milliseconds: 2026-05-04T10:11:12.345Z."""
    return f"{_second(int(now))}.{int(now % 1 * 1000):03d}Z"


def write_line(line: str) -> None:
    """One access log line to stderr, in one `write` (not through `logging`, which costs several times more per
    line): the worker processes share stderr, and a write of a line this short to a pipe or a file is whole."""
    data = (line + "\n").encode("utf-8", "replace")
    while data:
        data = data[os.write(2, data):]


# -- cache counters and /metrics ------------------------------------------------------------------
async def sample_every(service: TileService, sampler: metrics.Sampler) -> None:
    """Sample the service's cache counters every `metrics.SAMPLE_INTERVAL` seconds until cancelled."""
    while True:
        await asyncio.sleep(metrics.SAMPLE_INTERVAL)
        sample(service, sampler)


def sample(service: TileService, sampler: metrics.Sampler) -> None:
    metrics.flush()  # this worker's held request counts (metrics.flush), with its cache counters
    sampler.caches(service.cache_stats())
    sampler.shared(None if service.shared is None else service.shared.stats())


@contextlib.asynccontextmanager
async def sampling(service: TileService, sampler: metrics.Sampler) -> Any:
    """Samples while the app runs; at its end a last sample, and this worker's live gauges are dropped."""
    task = asyncio.ensure_future(sample_every(service, sampler))
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        sample(service, sampler)
        metrics.mark_dead()


async def scrape(request: Request) -> Response:
    """`/metrics`: every family, across the worker processes of this server (this worker's caches sampled
    now, the others' within `metrics.SAMPLE_INTERVAL`); the files are read off the event loop."""
    state = request.app.state
    sample(state.service, state.sampler)
    body = await asyncio.to_thread(metrics.exposition)
    return Response(body, headers={"Content-Type": metrics.CONTENT_TYPE, "Cache-Control": "no-cache"})


ROUTES: list[BaseRoute] = [Route("/metrics", scrape, methods=["GET"])]
