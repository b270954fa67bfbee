"""IIP, iipsrv's query protocol, at `/iip` and at iipsrv's own path `/fcgi-bin/iipsrv.fcgi`
(GET query or POST form body). Handlers are linear: parse -> one metadata lookup -> TileRequest
-> render -> response. `IIIF=`, `DeepZoom=` and `Zoomify=` entries are handed to the protocol
that registered that query command (see `protocols/__init__.py`).
"""

from __future__ import annotations

import os
import struct
from dataclasses import replace
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Route

from ...errors import ERROR_BODY_KEY, BadRequest, NotFound, TileNotFound, TileServerError, plain_error
from ...levels import c_round, cap_size, fit_rotated, iip_resolution_to_level, tile_index
from ...models import Box, ImageMeta, Tile, TileRequest
from ...settings import Settings
from ...web.http import (
    Pending,
    TileNow,
    Translated,
    content_disposition,
    send_doc,
    send_document,
    send_remembered,
    send_tile,
    tile_now,
)
from . import samples
from .grammar import (
    CvtOut,
    EntryOut,
    IIPError,
    IIPQuery,
    ProfileOut,
    SpectraOut,
    TileOut,
    TilesOut,
    parse,
    split_query,
)
from .obj import obj_reply

NETFPX = "application/vnd.netfpx"
MAX_TIL_TILES = 1024
BANNER = """<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>tileserver IIP</title></head>
<body><h1>tileserver: IIP endpoint</h1><p>Ask for an image, e.g.
<code>?FIF=image.tif&amp;OBJ=IIP,1.0&amp;OBJ=Max-size</code> or
<code>?FIF=image.tif&amp;WID=400&amp;CVT=jpeg</code>.</p></body></html>"""


def iip_error_body(exc: TileServerError, status: int) -> Response:
    """IIP protocol errors in iipsrv's `Error/...` syntax; everything else as plain text."""
    if isinstance(exc, IIPError):
        return Response(exc.body, status_code=status, media_type=NETFPX,
                        headers={"Content-Disposition":
                                 'inline;filename="IIPisAMadGameClosedToOurUnderstanding.netfpx"'})
    return plain_error(exc, status)


# -- pure translation ---------------------------------------------------------------------------
def _clipped(meta: ImageMeta, region: tuple[float, float, float, float] | None) -> tuple[float, ...]:
    """RGN fractions cropped at the image edge, as (x0, y0, x1, y1); entirely outside -> 400."""
    if region is None:
        return 0.0, 0.0, 1.0, 1.0
    x, y, w, h = region
    x0, y0 = min(max(x, 0.0), 1.0), min(max(y, 0.0), 1.0)
    x1, y1 = min(max(x + w, 0.0), 1.0), min(max(y + h, 0.0), 1.0)
    if x1 <= x0 or y1 <= y0:
        raise BadRequest("RGN lies entirely outside the image")
    return x0, y0, x1, y1


def region_box(meta: ImageMeta, region: tuple[float, float, float, float] | None) -> Box:
    """RGN fractions -> full-resolution pixels, cropped at the image edge; outside -> 400."""
    x0, y0, x1, y1 = _clipped(meta, region)
    px0, py0 = c_round(x0 * meta.width), c_round(y0 * meta.height)
    px1, py1 = c_round(x1 * meta.width), c_round(y1 * meta.height)
    return Box(px0, py0, max(px1 - px0, 1), max(py1 - py0, 1))


def output_size(meta: ImageMeta, region: tuple[float, float, float, float] | None, width: int | None,
                height: int | None, settings: Settings) -> tuple[int, int]:
    """CVT's output size as iipsrv 1.3 computes it (View::getRequestSize): the missing side of WID/HEI
    from the region's exact aspect ratio in image pixels (not from its rounded pixel box), both given:
    fit inside them; capped by MAX_CVT from the same ratio. Without WID and HEI the region comes at full
    resolution (1.3 stretches it to the whole image's size instead: a bug we do not copy). No upscaling
    when it is off; `max_area` caps the rest."""
    x0, y0, x1, y1 = _clipped(meta, region)
    rw, rh = (x1 - x0) * meta.width, (y1 - y0) * meta.height
    ratio = rw / rh
    if width and height:
        if width / rw > height / rh:
            width = None
        else:
            height = None
    if width:
        w, h = width, c_round(width / ratio)
    elif height:
        w, h = c_round(height * ratio), height
    else:
        box = region_box(meta, region)
        w, h = box.w, box.h
    limit = settings.max_size
    if limit is not None and (w > limit or h > limit):
        if w == h:
            w, h = limit, limit
        else:
            w, h = (limit, c_round(limit / ratio)) if w > h else (c_round(limit * ratio), limit)
    if not settings.allow_upscaling and (w > c_round(rw) or h > c_round(rh)):
        w, h = max(c_round(rw), 1), max(c_round(rh), 1)
    return cap_size((max(w, 1), max(h, 1)), None, settings.max_area)


def _view(q: IIPQuery, meta: ImageMeta) -> dict[str, Any]:
    """The TileRequest fields every IIP image output shares. The view's x (SDS) is the page of an
    image stack, 0..len(meta.stack)-1, and must be 0 for a single image (iipsrv 1.3 answers 404 for a
    page a stack or SubIFD pyramid lacks); its y selects nothing in one file, and iipsrv ignores it.
    For an image sequence, `_sequence_view` has already put the file SDS names in place of `meta`."""
    page = q.view[0]
    if not 0 <= page < max(len(meta.stack), 1):
        kind = f"a stack of {len(meta.stack)} images" if meta.stack else "one view"
        raise TileNotFound(f"view {page},{q.view[1]} does not exist: this image has {kind}")
    return {"ident": meta.ident, "rotation": q.rotation, "mirror": q.mirror, "quality": q.quality,
            "processing": q.processing, "encoder_quality": q.encoder_quality,
            "tiff_compression": q.tiff_codec, "page": page, "layers": _layers(q, meta)}


def _layers(q: IIPQuery, meta: ImageMeta) -> int | None:
    """LYR's quality layers, carried only for sources stored in layers (JPEG 2000, `ImageMeta.layers`):
    for others they change nothing, so they must not split the tile cache."""
    return q.layers if meta.layers > 1 else None


def to_tile_request(q: IIPQuery, meta: ImageMeta, settings: Settings) -> TileRequest:
    common = _view(q, meta)
    out = q.output
    if isinstance(out, TileOut):
        level = iip_resolution_to_level(meta, out.resolution)
        lv = meta.levels[level]
        index = out.index
        if int(q.rotation) % 360 == 180 and index < lv.columns() * lv.rows():
            index = lv.columns() * lv.rows() - 1 - index  # as iipsrv 1.3: tile n of the turned image
        col, row = tile_index(lv, index)
        return TileRequest(tile=Tile(level, col, row), fmt=out.fmt, **common)
    if isinstance(out, CvtOut):
        box = region_box(meta, q.region)
        size = output_size(meta, q.region, q.width, q.height, settings)
        # the canvas after ROT is capped as WID/HEI are (iipsrv clamps to MAX_CVT): the view shrinks
        size = fit_rotated(size, q.rotation, settings.max_size, settings.max_area)
        return TileRequest(region=box, size=size, fmt=out.fmt, **common)
    raise BadRequest("no image output requested")


def til_tiles(meta: ImageMeta, out: TilesOut) -> list[tuple[int, Tile]]:
    """The (tile number, Tile) pairs of the rectangle spanned by start and end, columns outermost
    (iipsrv's order)."""
    level = iip_resolution_to_level(meta, out.resolution)
    lv = meta.levels[level]
    (sx, sy), (ex, ey) = tile_index(lv, out.start), tile_index(lv, out.end)
    sx, ex = min(sx, ex), max(sx, ex)
    count = (ex - sx + 1) * (ey - sy + 1)
    if count > MAX_TIL_TILES:
        raise BadRequest(f"TIL asks for {count} tiles; at most {MAX_TIL_TILES} per request")
    cols = lv.columns()
    return [(x + y * cols, Tile(level, x, y)) for x in range(sx, ex + 1) for y in range(sy, ey + 1)]


# -- endpoint -----------------------------------------------------------------------------------
async def _query(request: Request) -> str:
    if request.method == "POST":
        return (await request.body()).decode("latin-1")
    query: bytes = request.scope["query_string"]
    return query.decode("utf-8", "replace")  # as sent (still percent-encoded); stray raw bytes can't 500


async def iip(request: Request) -> Response:
    request.scope[ERROR_BODY_KEY] = iip_error_body
    raw = await _query(request)
    if not raw:
        return HTMLResponse(BANNER)
    service = request.app.state.service
    memo_key = memo_key_of(request.method, raw)
    known = await send_remembered(request, memo_key)  # seen before, same file version: no parsing
    if known is not None:
        return known
    doc = await service.recall_document(memo_key)  # an OBJ reply sent before, same file version
    if doc is not None:
        return send_doc(request, doc)
    q = parse(split_query(raw), raw)
    if isinstance(q.output, EntryOut):
        handler = request.app.state.query_protocols.get(q.output.protocol)
        if handler is None:
            raise IIPError("2 2", q.output.protocol, f"protocol {q.output.protocol} is not enabled")
        request.scope[ERROR_BODY_KEY] = plain_error
        response: Response = await handler(request, q.output.arg)
        return response
    meta = await service.info(q.fif) if q.fif is not None else None
    if q.objs:
        reply = obj_reply(meta, q, request.app.state.settings.rights)
        headers = {"IIP": reply.protocol} if reply.protocol else {}
        if meta is None:
            return Response(reply.body, media_type=reply.media_type, headers={**headers, "Cache-Control": "no-cache"})
        return send_doc(request, service.remember_document(memo_key, meta, reply.body, reply.media_type, headers))
    assert meta is not None
    if isinstance(q.output, TilesOut):
        return await _til(request, *await _sequence_view(request, q, meta))
    if isinstance(q.output, ProfileOut | SpectraOut):
        return await _samples(request, q.output, meta, q.view[1])
    q, meta = await _sequence_view(request, q, meta)
    req = to_tile_request(q, meta, request.app.state.settings)
    rendered = await service.render(req)
    return send_tile(request, memo_key, meta, req, rendered, _image_headers(q, meta, req, request.method))


def _image_headers(q: IIPQuery, meta: ImageMeta, req: TileRequest, method: str) -> dict[str, str]:
    """A CVT export's Content-Disposition (a download when POSTed, as iipsrv 1.3); nothing for a tile."""
    if not isinstance(q.output, CvtOut):
        return {}
    stem = os.path.splitext(os.path.basename(meta.ident))[0]
    kind = "attachment" if method == "POST" else "inline"
    return {"Content-Disposition": content_disposition(kind, f"{stem}.{req.fmt.suffix}")}


def memo_key_of(method: str, raw: str) -> str:
    """The key a query's translation or OBJ reply is remembered under (`iip`, `iip_now`)."""
    return f"iip {method} {raw}"


def iip_now(request: Request) -> TileNow | Pending | None:
    """`iip` for a GET of a tile or an export that needs no waiting (web/front.py), else None."""
    request.scope[ERROR_BODY_KEY] = iip_error_body  # as `iip`: a render's error in iipsrv's syntax
    raw: str = request.scope["query_string"].decode("utf-8", "replace")
    return tile_now(request, memo_key_of("GET", raw), lambda: _translated_now(request, raw)) if raw else None


def _translated_now(request: Request, raw: str) -> Translated | Pending | None:
    q = parse(split_query(raw), raw)
    if not isinstance(q.output, TileOut | CvtOut) or q.fif is None or q.objs:
        return None
    meta = request.app.state.service.info_now(q.fif)
    if meta is None:
        return Pending(q.fif)
    if meta.sequence is not None:
        return None
    req = to_tile_request(q, meta, request.app.state.settings)
    return meta, req, _image_headers(q, meta, req, "GET")


async def _sequence_view(request: Request, q: IIPQuery, meta: ImageMeta) -> tuple[IIPQuery, ImageMeta]:
    """For an image sequence, the file SDS x,y names (iipsrv 1.3 opens `<name>_pyr_XXX_YYY.tif` for
    tiles and CVT; `SDS=x` alone means y 0) and the query of its one view; a view the sequence lacks
    is a 404. Any other image comes back as it is."""
    if meta.sequence is None:
        return q, meta
    x, y = q.view
    missing = TileNotFound(f"view {x},{y} does not exist in the image sequence {meta.ident}")
    if x < 0 or y < 0:
        raise missing
    try:
        member: ImageMeta = await request.app.state.service.info(meta.sequence.member(x, y))
    except NotFound as exc:
        raise missing from exc
    if member.sequence is not None:
        raise missing
    return replace(q, view=(0, 90)), member


async def _til(request: Request, q: IIPQuery, meta: ImageMeta) -> Response:
    """IIP 1.0.5 multi-tile stream: per tile `Tile,r,n,0/len:` + type + subtype + JPEG + CRLF."""
    assert isinstance(q.output, TilesOut)
    service = request.app.state.service
    parts: list[bytes] = []
    common = _view(q, meta)
    provisional = False
    for n, tile in til_tiles(meta, q.output):
        rendered = await service.render(TileRequest(tile=tile, **common))
        data, provisional = rendered.body, provisional or rendered.provisional
        parts.append(f"Tile,{q.output.resolution},{n},0/{len(data) + 8}:".encode())
        parts.append(struct.pack("4B", 0x02, 0, 0, 0) + bytes((0x00, 0x11, 0x00, 0x00)) + data + b"\r\n")
    key = f"til:{q.output}:{q.view[0]}:{q.processing}:{q.quality}:{q.encoder_quality}"
    return send_document(request, b"".join(parts), NETFPX, meta, key, provisional=provisional)


async def _samples(request: Request, out: ProfileOut | SpectraOut, meta: ImageMeta, vertical: int) -> Response:
    """PFL (JSON) or SPECTRA (XML): the source's samples for every view (samples.py); for an image
    sequence every horizontal angle's file at the vertical angle of SDS, each placed by its own
    metadata, and the reply's validators cover every file read."""
    service = request.app.state.service
    found, read = [], []
    for view in samples.views(meta, vertical):
        source = meta if view.ident == meta.ident else await _sample_member(request, meta, view.ident)
        level, box = samples.sample_box(source, out)
        found.append((view, await service.samples(view.ident, level, box, view.page)))
        read.append(source)
    key = f"{'pfl' if isinstance(out, ProfileOut) else 'spectra'}:{out}"
    if meta.sequence is not None:
        key += ":" + ",".join(f"{m.ident}@{m.mtime}:{m.file_size}" for m in read)
        meta = max(read, key=lambda m: m.mtime)  # Last-Modified: the newest file read
    if isinstance(out, ProfileOut):
        return send_document(request, samples.render_profile(found), samples.JSON, meta, key)
    return send_document(request, samples.render_spectra(found), samples.XML, meta, key)


async def _sample_member(request: Request, meta: ImageMeta, ident: str) -> ImageMeta:
    """The metadata of sequence member `ident`; one that is not there is a 404 (1.3's PFL too; its
    SPECTRA breaks its 200 off with the 404 text)."""
    missing = TileNotFound(f"{ident} does not exist in the image sequence {meta.ident}")
    try:
        member: ImageMeta = await request.app.state.service.info(ident)
    except NotFound as exc:
        raise missing from exc
    if member.sequence is not None:
        raise missing
    return member


ROUTES: list[BaseRoute] = [
    Route("/iip", iip, methods=["GET", "POST"]),
    Route("/fcgi-bin/iipsrv.fcgi", iip, methods=["GET", "POST"]),
]
NOW = {"/iip": iip_now, "/fcgi-bin/iipsrv.fcgi": iip_now}  # route -> its answer now (web/front.py)
