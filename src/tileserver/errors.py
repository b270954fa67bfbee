"""Domain errors and the one table that maps them to HTTP status codes.

Protocols and the core raise these; `install_handlers` turns them into responses. The status is
decided here for every protocol; the body format is the protocol's choice (IIP answers in its
`Error/...` syntax, the others in plain text), picked through `ERROR_BODY_KEY` in the ASGI scope.
Messages must never contain a server path: they may echo the client's identifier, nothing more, and
at most a short prefix of it (`echo`; `shorten` cuts every message as it is sent or logged).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

log = logging.getLogger("tileserver")


ECHO_LIMIT = 64  # characters of one client value an error message repeats
MESSAGE_LIMIT = 300  # characters of an error message sent or logged


class TileServerError(Exception):
    """Base class; `message` is safe to show to the client. `close_connection`: the answer ends the
    connection (the rest of the request was not read)."""

    close_connection = False

    def __init__(self, message: str = "") -> None:
        super().__init__(message)
        self.message = message


class BadRequest(TileServerError):
    """Malformed request syntax or value."""


class NotFound(TileServerError):
    """Unknown identifier or path."""


class TileNotFound(NotFound):
    """A level, tile, or region outside the image."""


class UnsupportedFormat(BadRequest):
    """An output format this server cannot write (400, as the IIIF validator expects)."""


class NotImplementedFeature(TileServerError):
    """A valid request for something not offered here (e.g. IIIF `^` with upscaling off)."""


class ImageTooLarge(TileServerError):
    """Output past the configured size limits."""


class Forbidden(TileServerError):
    """Refused by policy."""


class Unauthorized(Forbidden):
    """Refused to an anonymous viewer by the access policy (access/): 401, with a credential it may be allowed."""


class SourceTooLarge(TileServerError):
    """The image is readable but declares more pixels than the pixel budget lets this server decode
    (settings `max_image_megapixels`, `max_untiled_megapixels`, `max_decode_megapixels`; sources/budget.py).
    Refused when its metadata is read, before any pixel is decoded. 422: the request and the file are
    well-formed and the server understood both, but will not process this one (RFC 9110 15.5.21);
    not 413, which is about a request's own content (bodies past their limit get it), not 403, which
    IIIF clients read as an access-control answer (the IIIF Auth flow), not 415, which says the file
    is no image this server reads."""


class SourceError(TileServerError):
    """The image file exists but cannot be decoded: not an image, a format we do not read, or broken
    data. A bad file is not the server's fault: 415, the same for every protocol (as Cantaloupe's
    unsupported source format); the detail goes to the log only."""


class Busy(TileServerError):
    """Temporarily unable to serve (503 with `Retry-After`); not a fault, so logged without a traceback."""

    retry_after = 5


class StoreFailure(TileServerError):
    """An image store (S3, GCS, Azure, HTTP) failed after its retries, or refused this server's
    credentials: 502 with `Retry-After`. The store and key are logged once where it failed
    (sources/vfs.py); the message says nothing of them."""

    retry_after = 5


class StoreBusy(StoreFailure):
    """The store is throttling or unavailable (it answered 503 or 429, or refused the connection): 503."""


class StoreTimeout(StoreFailure):
    """The store did not answer within the configured timeout: 504."""


class RequestTimeout(TileServerError):
    """The client did not send its request body within `body_timeout` (408)."""

    close_connection = True


class PayloadTooLarge(TileServerError):
    """A request body past `max_body_bytes` (413)."""

    close_connection = True


class URITooLong(TileServerError):
    """A request target past `max_url_bytes` (414, RFC 9110 section 15.5.15)."""


STATUS_CODES: dict[type[TileServerError], int] = {
    TileServerError: 500,
    BadRequest: 400,
    NotFound: 404,
    UnsupportedFormat: 400,
    NotImplementedFeature: 501,
    ImageTooLarge: 403,
    Forbidden: 403,
    Unauthorized: 401,
    SourceTooLarge: 422,
    SourceError: 415,
    Busy: 503,
    StoreFailure: 502,
    StoreBusy: 503,
    StoreTimeout: 504,
    RequestTimeout: 408,
    PayloadTooLarge: 413,
    URITooLong: 414,
}

ErrorBody = Callable[[TileServerError, int], Response]
ERROR_BODY_KEY = "tileserver.error_body"


def status_for(exc: TileServerError) -> int:
    for cls in type(exc).__mro__:
        if cls in STATUS_CODES:
            return STATUS_CODES[cls]
    return 500


def echo(value: str, limit: int = ECHO_LIMIT) -> str:
    """A client's value as an error message may repeat it: at most `limit` characters, then `...`.
    `echo("a" * 100, 4) == "aaaa..."`."""
    return value if len(value) <= limit else value[:limit] + "..."


def shorten(message: str) -> str:
    """An error message as it is sent or logged: every run of more than ECHO_LIMIT non-blank characters
    (an identifier, a parameter: input echoed whole) cut by `echo`, and the whole at most MESSAGE_LIMIT."""
    if len(message) <= ECHO_LIMIT:
        return message
    words = [echo(w) for w in message.split(" ")]
    return echo(" ".join(words), MESSAGE_LIMIT)


def plain_error(exc: TileServerError, status: int) -> Response:
    return PlainTextResponse(shorten(exc.message) or "error", status_code=status)


async def handle(request: Request, exc: Exception) -> Response:
    """The answer to a `TileServerError` raised by an endpoint (logged by status)."""
    assert isinstance(exc, TileServerError)
    status = status_for(exc)
    path, message = echo(request.url.path, MESSAGE_LIMIT), shorten(exc.message)
    if isinstance(exc, (Busy, StoreFailure)):  # not a fault here (a store failure is logged where it failed)
        log.warning("%s %s -> %d: %s", request.method, path, status, message)
    elif status >= 500:
        log.error("%s %s -> %d: %s", request.method, path, status, message, exc_info=exc)
    else:
        log.info("%s %s -> %d: %s", request.method, path, status, message)
    return error_response(exc, request.scope.get(ERROR_BODY_KEY, plain_error))


def error_response(exc: TileServerError, render: ErrorBody = plain_error) -> Response:
    """The answer to `exc`: its status, the body `render` makes, `Cache-Control: no-cache`."""
    response = render(exc, status_for(exc))
    response.headers["Cache-Control"] = "no-cache"
    if exc.close_connection:
        response.headers["Connection"] = "close"
    if isinstance(exc, (Busy, StoreFailure)):
        response.headers["Retry-After"] = str(exc.retry_after)
    if isinstance(exc, Unauthorized):  # a 401 names how to authenticate (RFC 9110 section 11.6.1)
        response.headers["WWW-Authenticate"] = 'Bearer realm="tileserver"'
    return response


def install_handlers(app: Starlette) -> None:
    app.add_exception_handler(TileServerError, handle)
