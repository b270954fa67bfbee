"""Request limits for every route, before routing: the request target (path and query string) at most
`Settings.max_url_bytes` (414), a request body at most `max_body_bytes` (413) and sent within
`body_timeout` (408).

A Content-Length past the limit is refused before any of the body is read. A body without one
(chunked) is counted as the application reads it and refused as soon as it passes the limit, so no
more than the limit plus one chunk is ever held (uvicorn stops reading the socket once 64 KiB wait
unread). The 413 and 408 answers close the connection: the rest of the body is never read. On the
wire, `tileserver serve` also bounds the request head as it arrives (web/server.py).
"""

from __future__ import annotations

import time

import anyio
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..errors import PayloadTooLarge, RequestTimeout, TileServerError, URITooLong, error_response
from ..settings import Settings


def declared_length(headers: list[tuple[bytes, bytes]]) -> int | None:
    """The Content-Length of a request, None without one (or chunked); a malformed value was refused
    by the server's parser already, and counts as none here."""
    for name, value in headers:
        if name == b"content-length":
            return int(value) if value.isdigit() else None
    return None


def has_body(scope: Scope) -> bool:
    return any(name in (b"content-length", b"transfer-encoding") for name, _ in scope["headers"])


class RequestLimitMiddleware:
    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.max_url = settings.max_url_bytes
        self.max_body = settings.max_body_bytes
        self.body_timeout = settings.body_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refusal = self.refusal(scope)
        if refusal is not None:
            await error_response(refusal)(scope, receive, send)
            return
        await self.app(scope, self.bounded(receive) if has_body(scope) else receive, send)

    def refusal(self, scope: Scope) -> TileServerError | None:
        query = scope["query_string"]
        target = len(scope.get("raw_path") or scope["path"].encode()) + (len(query) + 1 if query else 0)
        if target > self.max_url:
            return URITooLong(f"the request target is {target} bytes; at most {self.max_url} are accepted")
        length = declared_length(scope["headers"])
        if length is not None and length > self.max_body:
            return PayloadTooLarge(f"the request body is {length} bytes; at most {self.max_body} are accepted")
        return None

    def bounded(self, receive: Receive) -> Receive:
        """`receive` counting the body's bytes and timing its arrival, until its last part."""
        received = 0
        deadline: float | None = None
        done = False

        async def receive_bounded() -> Message:
            nonlocal received, deadline, done
            if done:
                return await receive()
            if deadline is None:
                deadline = time.monotonic() + self.body_timeout
            with anyio.move_on_after(deadline - time.monotonic()) as waited:
                message = await receive()
            if waited.cancelled_caught:
                raise RequestTimeout(f"the request body did not come within {self.body_timeout:g} s")
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body:
                    raise PayloadTooLarge(f"the request body is over {self.max_body} bytes")
            done = message["type"] != "http.request" or not message.get("more_body", False)
            return message

        return receive_bounded
