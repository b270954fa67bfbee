"""HTTP caching semantics applied once for every protocol: ETag, Last-Modified, 304 answers,
Cache-Control (on successful GET/HEAD only), and the `Surrogate-Key` / `Cache-Tag` naming the image (a CDN
purges every response of an image by it, as `DELETE /cache/{id}` does here)."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from email.utils import formatdate, parsedate_to_datetime
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import Response

from ..core import Document, etag_for, surrogate_key
from ..models import ImageMeta, Rendered, TileRequest, fast_init
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


def validators(meta: ImageMeta, etag: str, cache_control: str, headers: Mapping[str, str] | None) -> dict[str, str]:
    """The headers of a 200 about `meta`, in the order they are sent: its validators, the `Surrogate-Key` and
    `Cache-Tag` naming the image, Cache-Control, then the response's own `headers`."""
    out = {"ETag": etag}
    out.update(_image_validators(meta.ident, meta.mtime, cache_control))
    if headers:
        out.update(headers)
    return out


@functools.lru_cache(maxsize=1024)
def _image_validators(ident: str, mtime: float, cache_control: str) -> tuple[tuple[str, str], ...]:
    """What `validators` gives every response about one image after its ETag."""
    tag = surrogate_key(ident)  # CDNs purge by it (Fastly: Surrogate-Key, Cloudflare: Cache-Tag)
    out = [("Last-Modified", http_date(mtime)), ("Surrogate-Key", tag), ("Cache-Tag", tag)]
    if cache_control:
        out.append(("Cache-Control", cache_control))
    return tuple(out)


@functools.lru_cache(maxsize=1024)
def _raw_image_validators(ident: str, mtime: float, cache_control: str) -> tuple[tuple[bytes, bytes], ...]:
    """`_image_validators` as raw headers."""
    return tuple(_raw(_image_validators(ident, mtime, cache_control)))


def _raw(headers: Iterable[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    """Headers as Starlette's Response lists them: lower-case names, latin-1."""
    return [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers]


VALIDATOR_NAMES = frozenset(("ETag", "Last-Modified", "Surrogate-Key", "Cache-Tag", "Cache-Control"))


def image_head(rendered: Rendered, meta: ImageMeta, cache_control: str, headers: Mapping[str, str] | None = None,
               vary_origin: bool = False) -> list[tuple[bytes, bytes]]:
    """The raw headers `send_image` makes for a 200 image answer to a GET that is not conditional, without an access
    policy, as Starlette's Response lists them (its headers, then content-length and content-type) and, with
    `vary_origin`, as CORSMiddleware then adds `Vary: Origin` to a request without `Origin` (web/front.py)."""
    if rendered.timing:
        headers = {**headers, "Server-Timing": rendered.timing} if headers else {"Server-Timing": rendered.timing}
    if not rendered.provisional and (not headers or headers.keys().isdisjoint(VALIDATOR_NAMES)):
        # as `validators` orders them: the ETag, the image's own validators (encoded once), then `headers`
        raw = [(b"etag", rendered.etag.encode("latin-1")),
               *_raw_image_validators(meta.ident, meta.mtime, cache_control)]
        if headers:
            raw += _raw(headers.items())
    else:
        out = ({**(headers or {}), "Cache-Control": "no-store"} if rendered.provisional  # as `send` has it
               else validators(meta, rendered.etag, cache_control, headers))
        raw = _raw(out.items())
    raw.append((b"content-length", b"%d" % len(rendered.body)))
    media_type = rendered.media_type
    if media_type.startswith("text/") and "charset=" not in media_type.lower():
        media_type += "; charset=utf-8"
    raw.append((b"content-type", media_type.encode("latin-1")))
    return with_vary_origin(raw) if vary_origin else raw


def with_vary_origin(raw: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """`raw` with `Origin` in its Vary, as CORSMiddleware adds it to the answer to a request without `Origin`."""
    at = [i for i, (k, _) in enumerate(raw) if k == b"vary"]  # as MutableHeaders sets it: where the first was
    value = (b"vary", b", ".join([*(raw[i][1] for i in at), b"Origin"]))
    if not at:
        return [*raw, value]
    out = [field for i, field in enumerate(raw) if i not in at[1:]]
    out[at[0]] = value
    return out


def send(
    request: Request, body: bytes, media_type: str, meta: ImageMeta, etag: str,
    headers: Mapping[str, str] | None = None, cache_control: str | None = None, provisional: bool = False,
) -> Response:
    """A 200 (or 304) response carrying the validators of `meta` and the configured Cache-Control.

    A `provisional` body (made from a preview while the image's pyramid is being made) is sent with
    `Cache-Control: no-store` and no validators, so nothing keeps it; a conditional request that
    matches the final response's validators (`etag`: a client holding the final response) is a 304."""
    cc = request.app.state.settings.cache_control if cache_control is None else cache_control
    out = validators(meta, etag, cc, headers)
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


@fast_init
@dataclass(frozen=True)
class TileNow:
    """An image answered without waiting (web/front.py): what `send_tile` would send, as its parts."""

    meta: ImageMeta
    request: TileRequest
    rendered: Rendered | None  # None: it must be rendered (`TileService.render`)
    headers: Mapping[str, str]


@dataclass(frozen=True)
class Pending:
    """A tile URL whose image's metadata is not at hand now (not loaded yet, or its file not checked for twice
    `stat_interval`): the front loads it as the endpoint would (`TileService.info`) and translates the URL again."""

    ident: str


Translated = tuple[ImageMeta, TileRequest, dict[str, str]]  # a protocol's sync translation: metadata, request, headers
NowHandler = Callable[[Request], TileNow | Pending | None]  # a tile route answered now (protocols.now_handlers)


def tile_now(request: Request, key: str, translate: Callable[[], Translated | Pending | None]
             ) -> TileNow | Pending | None:
    """`send_remembered`, else `translate` (a protocol's sync translation: `Pending` when it needs the image's
    metadata first, None where it cannot be made now) and `send_tile`, with the image when it needs no waiting
    (`TileService.render_now`; else `rendered` is None: the front renders it as the endpoint would); None when the
    URL cannot be translated now. The translation is remembered either way, so the full stack that answers instead
    does not parse again."""
    service = request.app.state.service
    known = service.recall_now(key)
    if known is not None:
        meta, req, headers = known.meta, known.request, dict(known.headers)
    else:
        made = translate()
        if made is None or isinstance(made, Pending):
            return made
        meta, req, headers = made
        service.remember_now(key, meta, req, headers)
    rendered = service.render_now(req)
    return TileNow(meta, req, None if rendered is None or rendered.provisional else rendered, headers)


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
