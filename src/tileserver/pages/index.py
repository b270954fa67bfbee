"""Server pages: `/` (an HTML index of the images under the root, with thumbnails), `/health` (the full state as
JSON) and the probes `/health/live` (the process answers) and `/health/ready` (it can serve images)."""

from __future__ import annotations

import html
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Route

from .. import __version__
from ..errors import TileServerError
from ..sources.pyramid import libvips_version

INDEX_LIMIT = 500
PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>tileserver</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>body{{font-family:system-ui,sans-serif;margin:2em}}ul{{list-style:none;padding:0;display:flex;
flex-wrap:wrap;gap:1em}}li{{width:220px}}img{{max-width:200px;max-height:160px;display:block;
background:#eee}}small{{color:#555}}</style></head>
<body><h1>tileserver</h1><p>{count} image(s) under the image root.</p><ul>
{items}
</ul></body></html>"""
ITEM = """<li><a href="{full}"><img src="{thumb}" alt="{name}" loading="lazy"></a>
<b>{name}</b><br><small>{size}</small><br><small><a href="{viewer}">viewer</a> · <a href="{mirador}">Mirador</a>
· <a href="{manifest}">manifest</a> · <a href="{obj}">IIP OBJ</a></small></li>"""


async def index(request: Request) -> Response:
    service = request.app.state.service
    idents = await service.run(service.source.listing, "", INDEX_LIMIT)
    items = []
    for ident in idents:
        q = quote(ident, safe="/")
        try:
            meta = await service.info(ident)
            size = f"{meta.width} x {meta.height}, {len(meta.levels)} levels"
        except TileServerError as exc:
            size = html.escape(exc.message)
        items.append(ITEM.format(
            full=f"iip?FIF={q}&amp;WID=1600&amp;CVT=jpeg", thumb=f"iip?FIF={q}&amp;HEI=160&amp;CVT=jpeg",
            name=html.escape(ident), size=size, viewer=f"viewer/{q}", mirador=f"mirador/{q}",
            manifest=f"iiif/manifests/{quote(ident, safe='')}.json",
            obj=f"iip?FIF={q}&amp;OBJ=IIP,1.0&amp;OBJ=Max-size&amp;"
            "OBJ=Tile-size&amp;OBJ=Resolution-number&amp;OBJ=Resolutions"))
    return HTMLResponse(PAGE.format(count=len(idents), items="\n".join(items)))


async def health(request: Request) -> Response:
    service = request.app.state.service
    settings = request.app.state.settings
    formats = await service.output_formats()
    return JSONResponse({
        "status": "ok", "version": __version__, "libvips": libvips_version(),
        "output_formats": [f.suffix for f in formats], "protocols": list(settings.protocols),
        **service.stats(),
    }, headers={"Cache-Control": "no-cache"})


async def live(request: Request) -> Response:
    """Liveness: the process answers (its event loop runs); nothing else is checked."""
    return JSONResponse({"status": "ok"}, headers={"Cache-Control": "no-cache"})


async def ready(request: Request) -> Response:
    """Readiness: 200 while the thread pool runs a trivial job within `ready_timeout` and the image root is
    readable, else 503 with the failed checks."""
    checks = await request.app.state.service.ready(request.app.state.settings.ready_timeout)
    ok = all(checks.values())
    return JSONResponse({"status": "ok" if ok else "unavailable", **checks}, status_code=200 if ok else 503,
                        headers={"Cache-Control": "no-cache"})


ROUTES: list[BaseRoute] = [Route("/", index), Route("/health", health), Route("/health/live", live),
                           Route("/health/ready", ready)]
