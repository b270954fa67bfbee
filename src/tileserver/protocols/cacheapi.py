"""The cache API, for operators: purge an image (or everything) across the cluster and warm an image's tiles.

    DELETE /cache/{identifier}          every tile, document and metadata entry of the image (and of its
                                        `;page=`/`;c=` selections), on every replica: 200 {"purged", "surrogate_key",
                                        "cluster"}; 503 when the shared cache did not take the purge (this
                                        replica is purged all the same)
    DELETE /cache                       everything
    POST   /cache/{identifier}/warm     {"protocols": ["iiif", "deepzoom"], "levels": [0, 1, 2]}: pre-renders
                                        those tiles in the background (protocols/warm.py), in the large lane (niced
                                        threads, behind clients' tiles); 202 with the progress and its Location
    GET    /cache/{identifier}/warm     the progress: {"total", "done", "errors", "state"}; from this replica, or
                                        from the shared cache when another replica runs the job

Every route wants `Authorization: Bearer <cache_api_token>`: 401 without it, 403 with another token
(compared in constant time); without a configured token the routes are not mounted (404). Identifiers are
the protocols' (a folder's `/` may be sent raw or as %2F).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from ..cache.shared import entry_key
from ..core import TileService, generation_name, surrogate_key
from ..errors import BadRequest, Busy, TileServerError
from ..models import TileRequest
from ..settings import Settings
from . import warm

log = logging.getLogger("tileserver.cacheapi")
MAX_LEVELS = 32
RUNNING = 2  # warm-up jobs at once per process
KEPT = 64  # finished jobs whose progress stays readable here
PUBLISH = 0.5  # seconds between the progress written to the shared cache
PROGRESS_TTL = 3600
BUSY_RETRIES = 20  # a warm-up render refused by admission control (503) waits and tries again this often


@dataclass
class WarmJob:
    ident: str
    protocols: list[str]
    levels: list[int]
    total: int
    done: int = 0
    errors: int = 0
    state: str = "running"  # running, done, cancelled
    started: float = field(default_factory=time.time)
    finished: float | None = None

    def view(self) -> dict[str, Any]:
        return {"identifier": self.ident, "protocols": self.protocols, "levels": self.levels, "total": self.total,
                "done": self.done, "errors": self.errors, "state": self.state, "started": round(self.started, 3),
                "finished": None if self.finished is None else round(self.finished, 3)}


class Warmer:
    """The warm-up jobs of this process (on `app.state.warmer`)."""

    def __init__(self, service: TileService) -> None:
        self.service = service
        self.jobs: dict[str, WarmJob] = {}
        self.tasks: set[asyncio.Task[None]] = set()

    def running(self) -> int:
        return sum(job.state == "running" for job in self.jobs.values())

    def start(self, job: WarmJob, reqs: list[TileRequest]) -> None:
        self.jobs.pop(job.ident, None)
        self.jobs[job.ident] = job
        while len(self.jobs) > KEPT:
            oldest = next(k for k, j in self.jobs.items() if j.state != "running")
            del self.jobs[oldest]
        task = asyncio.ensure_future(self._run(job, reqs))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _run(self, job: WarmJob, reqs: list[TileRequest]) -> None:
        published = 0.0
        try:
            for req in reqs:
                job.errors += not await self._render(req)
                job.done += 1
                if time.monotonic() - published >= PUBLISH:
                    self._publish(job)
                    published = time.monotonic()
            job.state = "done"
        except asyncio.CancelledError:
            job.state = "cancelled"
            raise
        finally:
            job.finished = time.time()
            self._publish(job)

    async def _render(self, req: TileRequest) -> bool:
        for _ in range(BUSY_RETRIES):
            try:
                await self.service.render(req, background=True)
                return True
            except Busy as exc:  # the large lane is full: clients' exports first, this waits
                await asyncio.sleep(min(max(exc.retry_after, 0.1), 2.0))
            except TileServerError as exc:
                log.info("warm-up of %s: %s", req.ident, exc.message)
                return False
        return False

    def _publish(self, job: WarmJob) -> None:
        if self.service.shared is not None:
            self.service.shared.put_document(progress_key(job.ident), job.view(), PROGRESS_TTL)

    async def close(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        for task in list(self.tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


def progress_key(ident: str) -> bytes:
    return entry_key("w", generation_name(ident), ident)


# -- guard ----------------------------------------------------------------------------------------------
def refused(request: Request) -> Response | None:
    """401 without a bearer token, 403 with the wrong one; None when the request may go on."""
    settings: Settings = request.app.state.settings
    assert settings.cache_api_token is not None  # the routes are mounted only with a token
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        return _json({"error": "the cache API needs Authorization: Bearer <token>"}, 401,
                     {"WWW-Authenticate": 'Bearer realm="tileserver cache"'})
    expected = settings.cache_api_token.get_secret_value().encode()
    if not hmac.compare_digest(given.strip().encode("utf-8", "replace"), expected):
        return _json({"error": "this token may not use the cache API"}, 403)
    return None


def identifier(request: Request) -> str:
    ident: str = request.path_params["ident"]
    limit = request.app.state.settings.max_identifier_length
    if not ident or len(ident) > limit or "\x00" in ident:
        raise BadRequest(f"an identifier of 1 to {limit} characters is needed")
    return ident


def _json(body: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(body, status_code=status, headers={"Cache-Control": "no-store", **(headers or {})})


# -- endpoints ------------------------------------------------------------------------------------------
async def purge_one(request: Request) -> Response:
    return refused(request) or await _purge(request, identifier(request))


async def purge_all(request: Request) -> Response:
    return refused(request) or await _purge(request, None)


async def _purge(request: Request, ident: str | None) -> Response:
    """Purged here at once; `cluster`: the other replicas were told too (through the shared cache)."""
    service: TileService = request.app.state.service
    told = await service.purge(ident)
    clustered = service.shared is not None
    body: dict[str, Any] = {"purged": "*" if ident is None else ident, "cluster": clustered and told}
    if ident is not None:
        body["surrogate_key"] = surrogate_key(ident)
    if clustered and not told:
        body["error"] = "the shared cache did not answer: purged on this replica only"
        retry = str(max(1, round(request.app.state.settings.cache_breaker_seconds)))
        return _json(body, 503, {"Retry-After": retry})
    return _json(body)


async def warm_start(request: Request) -> Response:
    denied = refused(request)
    if denied is not None:
        return denied
    ident = identifier(request)
    protocols, levels = _warm_body(await request.body(), request.app.state.settings)
    warmer: Warmer = request.app.state.warmer
    job = warmer.jobs.get(ident)
    if job is not None and job.state == "running":
        return _json({**job.view(), "error": "a warm-up of this image is running"}, 409)
    if warmer.running() >= RUNNING:
        return _json({"error": f"{RUNNING} warm-ups are running here; try again later"}, 503, {"Retry-After": "10"})
    service: TileService = request.app.state.service
    settings: Settings = request.app.state.settings
    meta = await service.info(ident)
    total = sum(warm.count(meta, p, lv, settings) for p in protocols for lv in levels)
    if total > settings.cache_warm_max_tiles:
        return _json({"error": f"{total} tiles asked for; at most {settings.cache_warm_max_tiles} per warm-up",
                      "total": total}, 413)
    reqs = warm.tile_requests(meta, protocols, levels, settings, await service.output_formats())
    job = WarmJob(ident, protocols, levels, len(reqs))
    warmer.start(job, reqs)
    return _json(job.view(), 202, {"Location": str(request.url.path)})


def _warm_body(raw: bytes, settings: Settings) -> tuple[list[str], list[int]]:
    """`{"protocols": [...], "levels": [...]}` checked: enabled protocols, levels 0-63, no other key."""
    try:
        body = json.loads(raw or b"{}")
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadRequest("the body is not JSON") from exc
    if not isinstance(body, dict) or set(body) - {"protocols", "levels"}:
        raise BadRequest('the body is {"protocols": [...], "levels": [...]}')
    protocols = body.get("protocols", list(settings.protocols))
    levels = body.get("levels")
    if (not isinstance(protocols, list) or not protocols
            or not all(isinstance(p, str) and p in settings.protocols for p in protocols)):
        raise BadRequest(f"protocols: a list of {', '.join(settings.protocols)}")
    if (not isinstance(levels, list) or not 0 < len(levels) <= MAX_LEVELS
            or not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 64 for v in levels)):
        raise BadRequest(f"levels: a list of 1 to {MAX_LEVELS} levels, 0 (full size) to 63")
    return list(dict.fromkeys(protocols)), sorted(set(levels), reverse=True)  # the smallest levels first


async def warm_progress(request: Request) -> Response:
    denied = refused(request)
    if denied is not None:
        return denied
    ident = identifier(request)
    job = request.app.state.warmer.jobs.get(ident)
    if job is not None:
        return _json(job.view())
    service: TileService = request.app.state.service
    found = None if service.shared is None else await service.shared.document(progress_key(ident))
    if found is None:
        return _json({"error": "no warm-up of this image is known"}, 404)
    return _json(found)


def routes(settings: Settings) -> list[BaseRoute]:
    """The API's routes, none when no token is configured."""
    if settings.cache_api_token is None:
        return []
    return [Route("/cache/{ident:path}/warm", warm_start, methods=["POST"]),
            Route("/cache/{ident:path}/warm", warm_progress, methods=["GET"]),
            Route("/cache", purge_all, methods=["DELETE"]),
            Route("/cache/{ident:path}", purge_one, methods=["DELETE"])]
