"""Viewer pages: `/viewer/{identifier}` opens an image in OpenSeadragon with a switch between its
DeepZoom, IIIF 3, IIIF 2 and Zoomify tile sources (`?source=dzi|iiif3|iiif2|zoomify` picks the
first one, `?drawer=canvas|webgl|html` OpenSeadragon's drawer); `/mirador/{identifier}` opens its
IIIF Presentation 3 manifest in Mirador. A multi-page file (a document, a stack) opens in
OpenSeadragon's sequence mode, one page `{identifier};page={n}` after the other, each from the chosen
protocol (`?page=n` picks the first page shown).

The viewer JavaScript is never committed. Pages load the pinned npm packages in `PACKAGES` from
`settings.viewer_cdn` (jsDelivr by default) with Subresource Integrity hashes computed from the npm
tarballs' files, or, when `settings.viewer_assets` names a folder holding them (a `node_modules`,
as `tests/browser/setup.sh` installs), from `/assets/{package}/...` on this server: each pinned
package folder is mounted with starlette's `StaticFiles`, which never serves a path outside it.
The same hashes apply, so a local folder must hold the pinned versions.

Templates are `templates/*.html`, filled with `string.Template`; values are HTML-escaped, and the
page's configuration is one JSON object in a `<script type="application/json">` block.
"""

from __future__ import annotations

import html
import json
import posixpath
import re
from dataclasses import dataclass
from functools import cache
from importlib import resources
from string import Template
from typing import Any
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from ..errors import NotFound
from ..models import ImageMeta
from ..protocols.iiif import base_of
from ..protocols.iiif.urls import encode_ident
from ..settings import Settings

PACKAGES = {"openseadragon": "6.1.1", "mirador": "4.0.0", "leaflet": "1.9.4", "leaflet-iiif": "3.0.0",
            "ol": "10.11.0"}
SOURCES = (("dzi", "DeepZoom", "deepzoom"), ("iiif3", "IIIF 3", "iiif"), ("iiif2", "IIIF 2", "iiif"),
           ("zoomify", "Zoomify", "zoomify"))
DRAWERS = ("auto", "canvas", "webgl", "html")


@dataclass(frozen=True)
class Asset:
    """One file of a pinned npm package, with its SRI hash (sha384 of the file in the npm tarball)."""

    package: str
    path: str
    integrity: str

    @property
    def is_css(self) -> bool:
        return self.path.endswith(".css")


ASSETS = {
    "openseadragon": Asset("openseadragon", "build/openseadragon/openseadragon.min.js",
                           "sha384-KKly+4vqqBHitr2XfNKWa3+0asIVpzYs2HijkM/zz0X6rgnyLuQEVERX9HqkM5/P"),
    "mirador": Asset("mirador", "dist/mirador.min.js",
                     "sha384-htgTGGN+3plNExQGon3yKdiqYPAXLS8yj/jfexxUSNWOcMvTgoodTZ6jt6eQFLz9"),
    "leaflet.css": Asset("leaflet", "dist/leaflet.css",
                         "sha384-sHL9NAb7lN7rfvG5lfHpm643Xkcjzp4jFvuavGOndn6pjVqS6ny56CAt3nsEVT4H"),
    "leaflet": Asset("leaflet", "dist/leaflet.js",
                     "sha384-cxOPjt7s7Iz04uaHJceBmS+qpjv2JkIHNVcuOrM+YHwZOmJGBXI00mdUXEq65HTH"),
    "leaflet-iiif": Asset("leaflet-iiif", "leaflet-iiif.js",
                          "sha384-N1u+K0CGG4yqcNWZ1z9VJDHVCsLwJflgT2noJ8dj56CDcIHFmn9jV7FtMvW9eQYO"),
    "ol.css": Asset("ol", "ol.css", "sha384-Jpg1uvTciFJuHq+90Ly0/2SKRT9yS5OhbIN5FuFoFWji9fc44ok8xxO88CJi8Z5W"),
    "ol": Asset("ol", "dist/ol.js", "sha384-rwbCGPbgxLkcQaFvIra1Vz3KBT1yBeF2/1VgLs/gCCNCJ61GHJGimHpkufVKcqap"),
}
OSD_IMAGES = "build/openseadragon/images/"


# -- pure helpers -----------------------------------------------------------------------------------
def package_base(settings: Settings, root: str, package: str) -> str:
    """Where a package's files are: `/assets/{package}/` locally, else `{cdn}/{package}@{version}/`."""
    if settings.viewer_assets is not None:
        return f"{root}/assets/{package}/"
    return f"{settings.viewer_cdn.rstrip('/')}/{package}@{PACKAGES[package]}/"


def asset_tags(settings: Settings, root: str, *names: str) -> str:
    """`<script>`/`<link>` tags with integrity hashes for the named `ASSETS`."""
    tags = []
    for name in names:
        a = ASSETS[name]
        url = html.escape(package_base(settings, root, a.package) + a.path)
        if a.is_css:
            tags.append(f'<link rel="stylesheet" href="{url}" integrity="{a.integrity}" crossorigin="anonymous">')
        else:
            tags.append(f'<script src="{url}" integrity="{a.integrity}" crossorigin="anonymous"></script>')
    return "\n".join(tags)


def tile_sources(base: str, ident: str, protocols: tuple[str, ...]) -> dict[str, str]:
    """The tile-source URL of each enabled protocol (Zoomify: the folder holding ImageProperties.xml)."""
    raw, enc = quote(ident, safe="/"), encode_ident(ident)
    urls = {"dzi": f"{base}/deepzoom/{raw}.dzi", "iiif3": f"{base}/iiif/3/{enc}/info.json",
            "iiif2": f"{base}/iiif/2/{enc}/info.json", "zoomify": f"{base}/zoomify/{raw}/"}
    return {key: urls[key] for key, _, proto in SOURCES if proto in protocols}


def page_sources(base: str, meta: ImageMeta, protocols: tuple[str, ...]) -> list[dict[str, str]]:
    """The tile sources of each page of a multi-page file (`<ident>;page=<n>`); [] for one image."""
    return [tile_sources(base, f"{meta.ident};page={n}", protocols) for n in range(len(meta.page_list))]


def script_json(value: Any) -> str:
    """JSON safe inside a `<script>` element (no `</script>`, no `<!--`)."""
    return json.dumps(value).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


@cache
def template(name: str) -> Template:
    return Template(resources.files("tileserver.pages").joinpath("templates", name).read_text("utf-8"))


def render(name: str, **values: str) -> str:
    return template(name).substitute(values)


def source_switch(sources: dict[str, str], chosen: str) -> str:
    labels = {key: label for key, label, _ in SOURCES}
    return "\n".join(
        f'<label><input type="radio" name="source" value="{k}"{" checked" if k == chosen else ""}> {labels[k]}</label>'
        for k in sources)


# -- endpoints --------------------------------------------------------------------------------------
def _root(request: Request) -> str:
    return str(request.scope.get("root_path", ""))


async def viewer(request: Request) -> Response:
    ident = request.path_params["ident"]
    settings: Settings = request.app.state.settings
    meta = await request.app.state.service.info(ident)
    sources = tile_sources(base_of(request, ""), ident, settings.protocols)
    if not sources:
        raise NotFound("no tile protocol is enabled")
    chosen = request.query_params.get("source", "")
    chosen = chosen if chosen in sources else next(iter(sources))
    drawer = request.query_params.get("drawer", "auto")
    root = _root(request)
    pages = page_sources(base_of(request, ""), meta, settings.protocols)
    config = {"sources": sources, "source": chosen, "drawer": drawer if drawer in DRAWERS else "auto",
              "images": package_base(settings, root, "openseadragon") + OSD_IMAGES, "pages": pages,
              "page": first_page(request.query_params.get("page", "0"), len(pages))}
    size = f"{meta.width} x {meta.height}" + (f", {len(pages)} pages" if pages else "")
    page = render("viewer.html", title=html.escape(posixpath.basename(ident)), home=html.escape(f"{root}/"),
                  size=size, assets=asset_tags(settings, root, "openseadragon"),
                  switch=source_switch(sources, chosen), mirador=html.escape(mirador_link(root, ident, settings)),
                  config=script_json(config))
    return HTMLResponse(page, headers={"Cache-Control": "no-cache"})


def first_page(text: str, count: int) -> int:
    """`?page=n` when it names one of `count` pages, else 0: ASCII digits only (`str.isdigit` takes `²`,
    which `int` refuses) and few of them (`int` refuses more than 4300)."""
    return int(text) if re.fullmatch(r"[0-9]{1,6}", text) and int(text) < count else 0


def mirador_link(root: str, ident: str, settings: Settings) -> str:
    return f"{root}/mirador/{quote(ident, safe='/')}" if "iiif" in settings.protocols else ""


async def mirador(request: Request) -> Response:
    ident = request.path_params["ident"]
    settings: Settings = request.app.state.settings
    if "iiif" not in settings.protocols:
        raise NotFound("Mirador needs the IIIF protocol, which is disabled")
    await request.app.state.service.info(ident)
    base, root = base_of(request, ""), _root(request)
    config = {"manifest": f"{base}/iiif/manifests/{encode_ident(ident)}.json",
              "collection": f"{base}/iiif/collection.json"}
    page = render("mirador.html", title=html.escape(posixpath.basename(ident)),
                  assets=asset_tags(settings, root, "mirador"), config=script_json(config))
    return HTMLResponse(page, headers={"Cache-Control": "no-cache"})


def asset_mounts(settings: Settings) -> list[BaseRoute]:
    """One `StaticFiles` mount per pinned package found in `settings.viewer_assets`."""
    if settings.viewer_assets is None:
        return []
    folder = settings.viewer_assets.expanduser().resolve()
    if not folder.is_dir():
        raise ValueError(f"viewer_assets {folder} is not a folder")
    return [Mount(f"/assets/{p}", app=StaticFiles(directory=folder / p), name=f"assets-{p}")
            for p in PACKAGES if (folder / p).is_dir()]


ROUTES: list[BaseRoute] = [Route("/viewer/{ident:path}", viewer), Route("/mirador/{ident:path}", mirador)]
