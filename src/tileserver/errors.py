"""Domain errors and the one table that maps them to HTTP status codes.

Protocols and the core raise these; `install_handlers` turns them into responses. The status is
decided here for every protocol; the body format is the protocol's choice (IIP answers in its
`Error/...` syntax, the others in plain text), picked through `ERROR_BODY_KEY` in the ASGI scope.
Messages must never contain a server path: they may echo the client's identifier, nothing more.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

log = logging.getLogger("tileserver")


class TileServerError(Exception):
    """Base class; `message` is safe to show to the client."""

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


STATUS_CODES: dict[type[TileServerError], int] = {
    TileServerError: 500,
    BadRequest: 400,
    NotFound: 404,
    UnsupportedFormat: 400,
    NotImplementedFeature: 501,
    ImageTooLarge: 403,
    Forbidden: 403,
    SourceTooLarge: 422,
    SourceError: 415,
    Busy: 503,
}

ErrorBody = Callable[[TileServerError, int], Response]
ERROR_BODY_KEY = "tileserver.error_body"


def status_for(exc: TileServerError) -> int:
    for cls in type(exc).__mro__:
        if cls in STATUS_CODES:
            return STATUS_CODES[cls]
    return 500


def plain_error(exc: TileServerError, status: int) -> Response:
    return PlainTextResponse(exc.message or "error", status_code=status)


async def _handle(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, TileServerError)
    status = status_for(exc)
    if isinstance(exc, Busy):
        log.warning("%s %s -> %d: %s", request.method, request.url.path, status, exc.message)
    elif status >= 500:
        log.error("%s %s -> %d: %s", request.method, request.url.path, status, exc.message, exc_info=exc)
    else:
        log.info("%s %s -> %d: %s", request.method, request.url.path, status, exc.message)
    render: ErrorBody = request.scope.get(ERROR_BODY_KEY, plain_error)
    response = render(exc, status)
    response.headers["Cache-Control"] = "no-cache"
    if isinstance(exc, Busy):
        response.headers["Retry-After"] = str(exc.retry_after)
    return response


def install_handlers(app: Starlette) -> None:
    app.add_exception_handler(TileServerError, _handle)
