"""IIIF Image API 3.0 and 2.1 at level 2, with every optional feature (https://iiif.io/api/image/3.0/).

URIs: `/iiif/3/{id}/...` (3.0), `/iiif/2/{id}/...` (2.1), `/iiif/{id}/...` (`settings.iiif_version`),
and iipsrv's `?IIIF={id}/...` on the IIP endpoints. Each answers the base URI (303 to info.json),
`{id}/info.json`, and `{id}/{region}/{size}/{rotation}/{quality}.{format}`. Handlers are linear:
parse -> `await service.info(id)` -> `to_tile_request` -> `await service.render(req)` -> response.
The `TileRequest` is built from the canonical values, so every spelling of one image shares one
cache entry and one ETag. Status codes: 400 malformed, 404 unknown image (or a raw `/` in an
identifier), 501 upscaling when the server does not upscale, 403 explicit sizes past
`max_size`/`max_area`, or whose canvas after a rotation is (`max` is capped instead, as the spec defines
it, so that its rotated canvas is within them too).
"""

from __future__ import annotations

import json
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from ...access.tokens import current_viewer
from ...errors import NotFound, TileServerError, Unauthorized, status_for
from ...models import ImageMeta, TileRequest
from ...settings import Settings
from ...web.http import Pending, TileNow, Translated, send_doc, send_remembered, send_tile, tile_now
from . import auth
from .grammar import ImageParams, Limits, Version, canonical_region, canonical_size
from .info import CONTEXT, PROFILE_URI, PROTOCOL, Service, info_media_type, render_info
from .urls import (
    Target,
    decode,
    encode_ident,
    path_target,
    query_target,
    raw_query_value,
    raw_tail,
    scope_base,
    split_page,
)


# -- pure translation -------------------------------------------------------------------------------
def to_tile_request(p: ImageParams, meta: ImageMeta, limits: Limits, version: Version, page: int = 0
                    ) -> tuple[TileRequest, str]:
    """The core request and the canonical `region/size/rotation/quality.format` path; `page` is the
    image of a stack the identifier names (`urls.split_page`), 404 when the stack has no such page.

    `0,0,1003,701/max/0/default.jpg` and `full/max/0/default.jpg` on a 1003x701 image both give
    `TileRequest(region=Box(0, 0, 1003, 701), size=(1003, 701))` and `full/max/0/default.jpg`."""
    check_page(meta, page)
    box = p.region.box(meta.width, meta.height)
    size = p.size.resolve((box.w, box.h), limits, version)
    size = p.size.rotated(size, p.rotation.angle, limits)
    req = TileRequest(ident=meta.ident, fmt=p.fmt, region=box, size=size, rotation=p.rotation.angle,
                      mirror=p.rotation.mirror, quality=p.quality, page=page)
    canonical = "/".join((canonical_region(box, meta.width, meta.height),
                          canonical_size(size, (box.w, box.h), limits, version),
                          p.rotation.canonical(), f"{p.quality.value}.{p.fmt.suffix}"))
    return req, canonical


def check_page(meta: ImageMeta, page: int) -> None:
    if not 0 <= page < max(len(meta.stack), 1):
        raise NotFound(f"{meta.ident} has no page {page}")


def limits_of(settings: Settings) -> Limits:
    return Limits(settings.max_size, settings.max_area, settings.allow_upscaling)


async def service_of(request: Request) -> Service:
    settings: Settings = request.app.state.settings
    formats = await request.app.state.service.output_formats()
    return Service(formats, limits_of(settings), settings.cors.strip() == "*", settings.rights)


def base_of(request: Request, path: str) -> str:
    """The public URI of `path` on this server (`path` already encoded)."""
    settings: Settings = request.app.state.settings
    # the scope's scheme is the URL's (request.url would parse the whole URL for it, once per tile)
    return scope_base(request.scope, settings.base_url) + path


# -- responses --------------------------------------------------------------------------------------
async def answer(request: Request, target: Target, base: str, version: Version, public: str | None = None
                 ) -> Response:
    """`base` is the image's public base URI (its `id`, page index included), without a trailing slash;
    `public` the base of its substitute image service (`/public/iiif/...`: the anonymous tier, for IIIF Auth),
    None where there is none (the `?IIIF=` form, and the substitute itself)."""
    target = split_page(target, request.app.state.settings.iiif_delimiter)
    if target.kind == "redirect":
        return Response(status_code=303, headers={"Location": f"{base}/info.json"})
    if target.kind == "info":
        return await info_response(request, target.ident, base, version, target.page, public)
    if target.kind == "probe":
        return await probe_response(request, target.ident, version, public)
    return await image_response(request, target, base, version)


async def info_response(request: Request, ident: str, base: str, version: Version, page: int = 0,
                        public: str | None = None) -> Response:
    service = request.app.state.service
    media_type = info_media_type(request.headers.get("accept", ""), version)
    key = f"iiif-info {version} {media_type} {base}"
    doc = await service.recall_document(key)
    if doc is None:
        offer = await service_of(request)
        flow = request.app.state.auth_flow if public is not None else None
        access = None if flow is None else await service.access_of(ident)
        described = access is not None and access.restricted
        extra = auth.services(flow, base_of(request, ""), f"{base}/probe", version) if described else []
        try:
            meta = await service.info(ident)
        except Unauthorized:
            if not extra:
                raise
            return _login_required(request, base, version, extra)
        check_page(meta, page)  # every page shares the stack's sizes: one info.json apart from its id
        shown = public if extra and public is not None and auth.degraded(access, current_viewer().authorised) else base
        headers = {"Link": f'<{PROFILE_URI[version]}>;rel="profile"', "Vary": "Accept"}
        doc = service.remember_document(key, meta, render_info(meta, shown, offer, version, extra), media_type,
                                        headers)
    return send_doc(request, doc)


def _login_required(request: Request, base: str, version: Version, extra: list[dict[str, object]]) -> Response:
    """The 401 of an image denied to anonymous viewers, as IIIF Auth 1.0 has it: a description naming the login
    services (and the probe), without the image's size or levels."""
    if version == 3:
        head = {"@context": [auth.CONTEXT2, CONTEXT[3]], "id": base, "type": "ImageService3", "protocol": PROTOCOL,
                "profile": "level2"}
    else:
        head = {"@context": CONTEXT[2], "@id": base, "protocol": PROTOCOL, "profile": [PROFILE_URI[2]]}
    body = json.dumps({**head, "service": extra}, indent=2).encode()
    return Response(body, 401, media_type="application/json",
                    headers={"Cache-Control": "private, no-store", "Vary": "Cookie, Authorization"})


async def probe_response(request: Request, ident: str, version: Version, public: str | None) -> Response:
    """The Auth 2.0 probe: always HTTP 200, the status it reports in the body (a missing image's is 404)."""
    service = request.app.state.service
    flow = request.app.state.auth_flow
    if public is None or service.access is None:
        raise NotFound("no probe service here")
    authorised = current_viewer().authorised
    try:
        access = await service.access_of(ident)
        status = auth.probe_status(access, authorised)
    except TileServerError as exc:
        status = status_for(exc)
        if status not in (401, 403, 404):
            raise
        access = None
    substitute = public if auth.degraded(access, authorised) else None
    body = json.dumps(auth.probe_result(status, substitute, version, flow), indent=2).encode()
    return Response(body, 200, media_type="application/ld+json",
                    headers={"Cache-Control": "private, no-store", "Vary": "Authorization, Cookie"})


async def image_response(request: Request, target: Target, base: str, version: Version) -> Response:
    key = image_key(version, base, target)
    known = await send_remembered(request, key)
    if known is not None:
        return known
    offer = await service_of(request)
    region, size, rotation, filename = (decode(s) for s in target.params)
    params = ImageParams.parse(region, size, rotation, filename, version, offer.formats)
    meta = await request.app.state.service.info(target.ident)
    req, canonical = to_tile_request(params, meta, offer.limits, version, target.page)
    rendered = await request.app.state.service.render(req)
    return send_tile(request, key, meta, req, rendered, _links(version, base, canonical))


def image_key(version: Version, base: str, target: Target) -> str:
    """The key an image request's translation is remembered under (`image_response`, `_now_by_path`)."""
    return f"iiif {version} {base} {'/'.join(target.params)}"


def _links(version: Version, base: str, canonical: str) -> dict[str, str]:
    return {"Link": f'<{PROFILE_URI[version]}>;rel="profile", <{base}/{canonical}>;rel="canonical"'}


def _now_by_path(request: Request, prefix: str, version: Version) -> TileNow | Pending | None:
    """`_by_path` for an image request that needs no waiting (web/front.py), else None: the same key and
    translation as `image_response`'s."""
    target = path_target(raw_tail(request.scope, prefix))
    base = base_of(request, f"{prefix}/{encode_ident(target.ident)}")
    target = split_page(target, request.app.state.settings.iiif_delimiter)
    if target.kind != "image":
        return None
    key = image_key(version, base, target)
    return tile_now(request, key, lambda: _translated_now(request, target, base, version))


def _translated_now(request: Request, target: Target, base: str, version: Version) -> Translated | Pending | None:
    service = request.app.state.service
    formats = service.formats_now()
    if formats is None:
        return None
    region, size, rotation, filename = (decode(s) for s in target.params)
    params = ImageParams.parse(region, size, rotation, filename, version, formats)
    meta = service.info_now(target.ident)
    if meta is None:
        return Pending(target.ident)
    req, canonical = to_tile_request(params, meta, limits_of(request.app.state.settings), version, target.page)
    return meta, req, _links(version, base, canonical)


# -- endpoints --------------------------------------------------------------------------------------
async def _by_path(request: Request, prefix: str, version: Version) -> Response:
    target = path_target(raw_tail(request.scope, prefix))
    name = encode_ident(target.ident)
    substitute = None
    if request.app.state.service.access is not None and not prefix.startswith(PUBLIC):
        substitute = base_of(request, f"{PUBLIC}{prefix}/{name}")
    return await answer(request, target, base_of(request, f"{prefix}/{name}"), version, substitute)


async def iiif3(request: Request) -> Response:
    return await _by_path(request, "/iiif/3", 3)


async def iiif2(request: Request) -> Response:
    return await _by_path(request, "/iiif/2", 2)


async def iiif_default(request: Request) -> Response:
    return await _by_path(request, "/iiif", request.app.state.settings.iiif_version)


async def public3(request: Request) -> Response:
    return await _by_path(request, PUBLIC + "/iiif/3", 3)


async def public2(request: Request) -> Response:
    return await _by_path(request, PUBLIC + "/iiif/2", 2)


async def public_default(request: Request) -> Response:
    return await _by_path(request, PUBLIC + "/iiif", request.app.state.settings.iiif_version)


async def iiif_query(request: Request, arg: str) -> Response:
    """iipsrv's `?IIIF=` entry (GET query or POST body). The identifier and parameters are taken
    from the raw query so they are decoded once; the POST form falls back to the decoded `arg`."""
    raw = raw_query_value(request.url.query, "iiif") if request.method != "POST" else None
    target = query_target(raw if raw is not None else _reencode(arg))
    if not target.ident:
        raise NotFound("no identifier given")
    root = request.scope.get("root_path", "")
    path = request.url.path.removeprefix(root) if root else request.url.path
    base = base_of(request, f"{quote(path)}?IIIF={encode_ident(target.ident, safe='/')}")
    return await answer(request, target, base, request.app.state.settings.iiif_version)


def _reencode(arg: str) -> str:
    """Escape `%` so that an already-decoded argument survives the second decode unchanged."""
    return arg.replace("%", "%25")


ROUTES: list[BaseRoute] = [
    Route("/iiif/3/{rest:path}", iiif3, methods=["GET", "HEAD"]),
    Route("/iiif/2/{rest:path}", iiif2, methods=["GET", "HEAD"]),
    Route("/iiif/{rest:path}", iiif_default, methods=["GET", "HEAD"]),
]
NOW = {  # route -> its answer now (web/front.py)
    "/iiif/3/{rest:path}": lambda request: _now_by_path(request, "/iiif/3", 3),
    "/iiif/2/{rest:path}": lambda request: _now_by_path(request, "/iiif/2", 2),
    "/iiif/{rest:path}": lambda request: _now_by_path(request, "/iiif", request.app.state.settings.iiif_version),
}
QUERY_COMMANDS = {"iiif": iiif_query}
PUBLIC = "/public"  # the substitute image services: an image's anonymous tier, whoever asks (web/access.py)
# with an access policy: the same image services under PUBLIC (the middleware makes every request there anonymous)
PUBLIC_ROUTES: list[BaseRoute] = [
    Route(PUBLIC + "/iiif/3/{rest:path}", public3, methods=["GET", "HEAD"]),
    Route(PUBLIC + "/iiif/2/{rest:path}", public2, methods=["GET", "HEAD"]),
    Route(PUBLIC + "/iiif/{rest:path}", public_default, methods=["GET", "HEAD"]),
]
