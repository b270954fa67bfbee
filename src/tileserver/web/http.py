"""HTTP caching semantics applied once for every protocol: ETag, Last-Modified, 304 answers,
Cache-Control (on successful GET/HEAD only), and the `Surrogate-Key` / `Cache-Tag` naming the image (a CDN
purges every response of an image by it, as `DELETE /cache/{id}` does here)."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from email.utils import formatdate, parsedate_to_datetime
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import Response

from ..core import Document, etag_for, surrogate_key
from ..models import ImageMeta, Rendered, TileRequest
from . import replay, telemetry


def content_disposition(kind: str, filename: str) -> str:
    """`inline;filename="x.jpg"` as iipsrv writes it; names that are not plain ASCII get an ASCII
    fallback plus RFC 6266's `filename*=UTF-8''...` (headers are Latin-1 on the wire)."""
    safe = "".join(c if 32 <= ord(c) < 127 and c not in '"\\' else "_" for c in filename)
    if safe == filename:
        return f'{kind};filename="{filename}"'
    return f"{kind};filename=\"{safe}\";filename*=UTF-8''{quote(filename, safe='')}"


@functools.lru_cache(maxsize=4096)
def http_date(mtime: float) -> str:
    return formatdate(mtime, usegmt=True)


def _not_modified(request: Request, etag: str, mtime: float) -> bool:
    inm = request.headers.get("if-none-match")
    if inm is not None:
        tags = [t.strip().removeprefix("W/") for t in inm.split(",")]
        return etag in tags or "*" in tags
    ims = request.headers.get("if-modified-since")
    if ims:
        try:
            return int(mtime) <= parsedate_to_datetime(ims).timestamp()
        except (TypeError, ValueError, OverflowError):  # a year past the C range overflows
            return False
    return False


def send(
    request: Request, body: bytes, media_type: str, meta: ImageMeta, etag: str,
    headers: Mapping[str, str] | None = None, cache_control: str | None = None, provisional: bool = False,
) -> Response:
    """A 200 (or 304) response carrying the validators of `meta` and the configured Cache-Control.

    A `provisional` body (made from a preview while the image's pyramid is being made) is sent with
    `Cache-Control: no-store` and no validators, so nothing keeps it; a conditional request that
    matches the final response's validators (`etag`: a client holding the final response) is a 304."""
    cc = request.app.state.settings.cache_control if cache_control is None else cache_control
    tag = surrogate_key(meta.ident)  # CDNs purge by it (Fastly: Surrogate-Key, Cloudflare: Cache-Tag)
    out = {"ETag": etag, "Last-Modified": http_date(meta.mtime), "Surrogate-Key": tag, "Cache-Tag": tag}
    if cc:
        out["Cache-Control"] = cc
    if headers:
        out.update(headers)
    private = request.app.state.service.access_headers(meta.ident)  # None without an access policy
    if private is not None:
        _make_private(out, private)
    if request.method in ("GET", "HEAD") and _not_modified(request, etag, meta.mtime):
        return Response(status_code=304, headers=out)
    if provisional:
        out = {**(headers or {}), "Cache-Control": "no-store"}
    return Response(body, media_type=media_type, headers=out)


def _make_private(out: dict[str, str], private: Mapping[str, str]) -> None:
    """`out` as a response that differs by viewer: private (a `no-cache` or `no-store` it had kept) and varying by
    the credentials as well as whatever it varied by."""
    kept = [d.strip() for d in out.get("Cache-Control", "").split(",") if d.strip().lower() in ("no-cache", "no-store")]
    out["Cache-Control"] = ", ".join([private["Cache-Control"], *kept])
    vary = [v.strip() for v in out.get("Vary", "").split(",") if v.strip()]
    out["Vary"] = ", ".join(vary + [v.strip() for v in private["Vary"].split(",") if v.strip() not in vary])


def send_image(request: Request, rendered: Rendered, meta: ImageMeta,
               headers: Mapping[str, str] | None = None) -> Response:
    """An image response; its `Server-Timing` says where the body came from and how long its stages took
    (`Rendered.timing`), and the telemetry middleware learns the same (`telemetry.SOURCE`)."""
    if rendered.timing:
        headers = {**headers, "Server-Timing": rendered.timing} if headers else {"Server-Timing": rendered.timing}
    request.scope[telemetry.SOURCE] = rendered.source or None
    return send(request, rendered.body, rendered.media_type, meta, rendered.etag, headers,
                provisional=rendered.provisional)


async def send_remembered(request: Request, key: str) -> Response | None:
    """The response for a URL whose translation the core remembers (see `TileService.recall`), or
    None: protocols call this first and `send_tile(request, key, ...)` after translating."""
    service = request.app.state.service
    known = await service.recall(key)
    if known is None:
        return None
    rendered = await service.render(known.request)
    response = send_image(request, rendered, known.meta, dict(known.headers))
    if not rendered.provisional:
        replay.mark(request, known.meta, known.request, rendered.body)
    return response


def send_tile(request: Request, key: str, meta: ImageMeta, req: TileRequest, rendered: Rendered,
              headers: Mapping[str, str] | None = None) -> Response:
    """Send a freshly translated and rendered image; remember the translation under the protocol's
    `key` and the response for replay."""
    request.app.state.service.remember(key, meta, req, dict(headers or {}))
    response = send_image(request, rendered, meta, headers)
    if not rendered.provisional:
        replay.mark(request, meta, req, rendered.body)
    return response


def send_doc(request: Request, doc: Document) -> Response:
    response = send(request, doc.body, doc.media_type, doc.meta, doc.etag, dict(doc.headers))
    replay.mark(request, doc.meta, None, doc.body)
    return response


def send_document(request: Request, body: bytes, media_type: str, meta: ImageMeta, key: str,
                  headers: Mapping[str, str] | None = None, cache_control: str | None = None,
                  provisional: bool = False) -> Response:
    """Info documents (OBJ replies, info.json, .dzi) and tile streams: their ETag covers the body's
    request key; `provisional` as in `send`."""
    return send(request, body, media_type, meta, etag_for(meta, key), headers, cache_control, provisional)
