"""Replay: a GET answered before is answered again from memory, in front of routing.

The first time a tile URL (or an info.json) is answered, `http.py` marks the request as replayable
and this middleware records the response's headers as they went out, with the image metadata and
the TileRequest they were made for (`TileService.record`). A later GET with the same key is answered
here with those headers and the body from the tile cache: no routing, no other middleware, no parsing
and no Response objects; an image's `Server-Timing` then says `replay` (never the decode time of its
first answer). That is most of a warm request's cost: on this machine a bare uvicorn app
sends a 59 KB answer about 30k times a second, the full Starlette stack about 11k, replay 15-17k.

It is only used while the answer cannot differ from what the full stack would send: the image file is
unchanged (the core's metadata check, every `stat_interval`), the tile is still cached, and everything a
response depends on is in the key (path, query, scheme, root path, Host, Accept, forwarding headers).
Conditional and range requests, CORS requests (`Origin`), methods other than GET, and anything that
fails here go down the full stack, which also records again.
"""

from __future__ import annotations

from collections.abc import Hashable

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..core import TileService
from ..errors import TileServerError
from ..models import ImageMeta, TileRequest
from . import telemetry
from .access import SCOPE_KEY

KEY_HEADERS = frozenset({b"host", b"accept", b"forwarded", b"x-forwarded-host", b"x-forwarded-proto",
                         b"x-forwarded-prefix"})
MARK = "tileserver.replayable"
FULL_STACK_HEADERS = frozenset({b"if-none-match", b"if-modified-since", b"if-match", b"if-unmodified-since",
                                b"if-range", b"range", b"origin"})
REPLAY_TIMING = b"replay"  # the Server-Timing of a replayed image, in place of how it was first made


def replay_key(scope: Scope) -> Hashable | None:
    """Everything a GET's answer depends on, or None when the request must go down the full stack."""
    if scope["type"] != "http" or scope["method"] != "GET":
        return None
    picked = []
    for name, value in scope["headers"]:
        if name in FULL_STACK_HEADERS:
            return None
        if name in KEY_HEADERS:
            picked.append((name, value))
    path = scope.get("raw_path") or scope["path"].encode()
    viewer = scope.get(SCOPE_KEY)  # set by the access middleware (access/): answers differ by viewer class
    return (scope.get("scheme"), scope.get("root_path", ""), path, scope["query_string"], tuple(sorted(picked)),
            None if viewer is None else viewer.key)


def mark(request: Request, meta: ImageMeta, tile: TileRequest | None, body: bytes) -> None:
    """Tell the middleware that this request's answer may be replayed: an image of `tile` (its body
    then stays in the tile cache only) or a document `body`, valid while `meta` is current."""
    request.scope[MARK] = (meta, tile, body)


class ReplayMiddleware:
    def __init__(self, app: ASGIApp, service: TileService) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        key = replay_key(scope)
        if key is None:
            await self.app(scope, receive, send)
            return
        try:
            hit = await self.service.replay(key)
        except TileServerError:
            hit = None  # e.g. the file is gone: the full stack answers with the right status
        if hit is not None:
            body, recorded = hit
            scope[telemetry.LABELS] = recorded.labels
            if recorded.request is not None:  # an image
                scope[telemetry.SOURCE] = "replay"
            await send({"type": "http.response.start", "status": 200, "headers": list(recorded.headers)})
            await send({"type": "http.response.body", "body": body})
            return
        await self._full_stack(key, scope, receive, send)

    async def _full_stack(self, key: Hashable, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer through the app, and record a marked 200 with the headers exactly as they went out
        (every middleware's included)."""
        sent: list[tuple[bytes, bytes]] = []
        status = 0

        async def capture(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                sent.extend((bytes(k), bytes(v)) for k, v in message.get("headers", ()))
            await send(message)

        await self.app(scope, receive, capture)
        marked = scope.get(MARK)
        if marked is not None and status == 200:
            meta, tile, body = marked
            # the recorded headers say `replay` where they said how the body was first made (Server-Timing)
            headers = tuple((k, REPLAY_TIMING) if k == b"server-timing" else (k, v) for k, v in sent)
            self.service.record(key, meta, tile, body, headers, telemetry.labels(scope))
