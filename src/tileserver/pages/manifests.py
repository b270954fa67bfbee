"""IIIF Presentation API 3.0 documents built on the fly (https://iiif.io/api/presentation/3.0/).

`/iiif/manifests/{identifier}.json`: a Manifest with one Canvas sized to the image, painted by one
Annotation whose body is the full image with an `ImageService3` service at `/iiif/3/{identifier}`,
plus a thumbnail. The label is the image's title metadata, else its file name. A multi-page file (a
document, an image stack, an animated GIF) has one Canvas per page, in page order, each of its page's
size, painted with the page's own image service `/iiif/3/{identifier};page={n}` (`;` and `=` encoded,
as every identifier character but the unreserved ones) and labelled with the page's name, else
"Page {n + 1}".
A whole slide's associated images are in its Manifest too: its label, macro (overview) and any other
associated image each as a further Canvas after the slide's own (they are pictures of the same glass
slide, which viewers such as Mirador then show beside it), its `thumbnail` as the Manifest's
thumbnail. `metadata` lists the slide's vendor, objective power, microns per pixel and the vendor's
own properties.
`/iiif/collection.json` is the Collection of the image root, `/iiif/collections/{folder}.json` the
Collection of a sub-folder (slashes raw or as `%2F`): sub-folders are nested Collections, images
Manifests. These paths never clash with the Image API, whose identifiers cannot hold a raw `/`; the
one exception is an image named `collection.json` at the root, whose bare base URI (the redirect to
its info.json) is shadowed.

Every `id` uses the same public base as the Image API ids (`protocols.iiif.base_of`: the configured
`base_url`, else `Forwarded`/`X-Forwarded-*`, else the request's scheme, host and root path).
Canvas, AnnotationPage and Annotation ids are URIs under the manifest's id; they identify, they are
not served (the Presentation API does not require them to dereference).
"""

from __future__ import annotations

import json
import posixpath
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from ..errors import TileServerError
from ..models import ImageMeta
from ..protocols.iiif import auth, base_of
from ..protocols.iiif.urls import encode_ident
from ..web.http import send_document

CONTEXT = "http://iiif.io/api/presentation/3/context.json"
MEDIA_TYPE = f'application/ld+json;profile="{CONTEXT}"'
THUMB_HEIGHT = 160
COLLECTION_LIMIT = 10_000
# `rights` must be one of these (Presentation 3 §3.3.1); other statements go to requiredStatement
RIGHTS_PREFIXES = ("http://creativecommons.org/", "https://creativecommons.org/",
                   "http://rightsstatements.org/", "https://rightsstatements.org/")
METADATA_LABELS = (("title", "Title"), ("creator", "Creator"), ("date", "Date"), ("description", "Description"),
                   ("software", "Software"))
SLIDE_LABELS = (("openslide.vendor", "Slide format"), ("openslide.objective-power", "Objective power"))
VENDOR_PROPERTIES = 64  # a vendor's own properties listed at most (DICOM has hundreds: OBJ=metadata has all)
THUMBNAIL = "thumbnail"


def lang(value: str, language: str = "none") -> dict[str, list[str]]:
    """A language map: `lang("x") == {"none": ["x"]}`."""
    return {language: [value]}


def label_of(meta: ImageMeta) -> str:
    return meta.meta("title") or posixpath.basename(meta.ident)


def manifest_url(base: str, ident: str) -> str:
    return f"{base}/iiif/manifests/{encode_ident(ident)}.json"


def collection_url(base: str, folder: str) -> str:
    return f"{base}/iiif/collections/{encode_ident(folder)}.json" if folder else f"{base}/iiif/collection.json"


def image_service(base: str, ident: str) -> dict[str, Any]:
    return {"id": f"{base}/iiif/3/{encode_ident(ident)}", "type": "ImageService3", "profile": "level2"}


def thumbnail(base: str, meta: ImageMeta) -> list[dict[str, Any]]:
    height = min(THUMB_HEIGHT, meta.height)
    width = max(1, round(meta.width * height / meta.height))
    return [{"id": f"{base}/iiif/3/{encode_ident(meta.ident)}/full/{width},{height}/0/default.jpg",
             "type": "Image", "format": "image/jpeg", "width": width, "height": height,
             "service": [image_service(base, meta.ident)]}]


def metadata(meta: ImageMeta) -> list[dict[str, Any]]:
    out = [{"label": lang("Size", "en"), "value": lang(f"{meta.width} x {meta.height} pixels")}]
    if meta.page_list:
        out.append({"label": lang("Pages", "en"), "value": lang(str(len(meta.page_list)))})
    for key, name in METADATA_LABELS:
        value = meta.meta(key)
        if value:
            out.append({"label": lang(name, "en"), "value": lang(value)})
    return out + slide_metadata(meta)


def slide_metadata(meta: ImageMeta) -> list[dict[str, Any]]:
    """A slide's standard properties with labels, then its vendor's own (`aperio.AppMag`, ...) by name."""
    props = dict(meta.properties)
    out = [{"label": lang(name, "en"), "value": lang(props[key])} for key, name in SLIDE_LABELS if props.get(key)]
    mpp = meta.microns_per_pixel
    if mpp is not None:
        out.append({"label": lang("Microns per pixel", "en"), "value": lang(f"{mpp[0]:g} x {mpp[1]:g}")})
    if meta.associated:
        out.append({"label": lang("Associated images", "en"), "value": lang(", ".join(meta.associated))})
    vendor = props.get("openslide.vendor")
    own = [(k, v) for k, v in meta.properties if vendor and k.startswith(f"{vendor}.") and v and len(v) <= 1000]
    return out + [{"label": lang(k), "value": lang(v)} for k, v in own[:VENDOR_PROPERTIES]]


def rights(meta: ImageMeta, default: str) -> dict[str, Any]:
    """`rights` for a Creative Commons / RightsStatements URI, else a `requiredStatement`."""
    statement = meta.meta("rights") or default
    if not statement:
        return {}
    if statement.startswith(RIGHTS_PREFIXES):
        return {"rights": statement}
    return {"requiredStatement": {"label": lang("Rights", "en"), "value": lang(statement)}}


def canvas(mid: str, base: str, ident: str, size: tuple[int, int], label: str, number: int) -> dict[str, Any]:
    """Canvas `number` (from 1) painted with the whole of image `ident` of `size`."""
    cid = f"{mid.removesuffix('.json')}/canvas/p{number}"
    width, height = size
    body = {"id": f"{base}/iiif/3/{encode_ident(ident)}/full/max/0/default.jpg", "type": "Image",
            "format": "image/jpeg", "width": width, "height": height, "service": [image_service(base, ident)]}
    annotation = {"id": f"{cid}/annotation/p{number}-image", "type": "Annotation", "motivation": "painting",
                  "body": body, "target": cid}
    page = {"id": f"{cid}/page/p{number}", "type": "AnnotationPage", "items": [annotation]}
    return {"id": cid, "type": "Canvas", "label": lang(label), "width": width, "height": height, "items": [page]}


def canvases(mid: str, base: str, meta: ImageMeta) -> list[dict[str, Any]]:
    """One Canvas for a single image; one per page, in order, for a multi-page file (`page_list`)."""
    pages = meta.page_list
    if not pages:
        return [canvas(mid, base, meta.ident, (meta.width, meta.height), label_of(meta), 1)]
    return [canvas(mid, base, f"{meta.ident};page={n}", (p.width, p.height), p.label or f"Page {n + 1}", n + 1)
            for n, p in enumerate(pages)]


def build_manifest(base: str, meta: ImageMeta, default_rights: str = "",
                   associated: dict[str, ImageMeta] | None = None) -> dict[str, Any]:
    """The Manifest of one image (pure). `base` is the server's public base URI, no trailing slash;
    `associated` holds the metadata of a slide's associated images (`<ident>;associated=<name>`)."""
    mid = manifest_url(base, meta.ident)
    folder = posixpath.dirname(meta.ident)
    extra = dict(associated or {})
    thumb = extra.pop(THUMBNAIL, None)
    items = canvases(mid, base, meta)
    return {
        "@context": CONTEXT, "id": mid, "type": "Manifest", "label": lang(label_of(meta)),
        "metadata": metadata(meta), **rights(meta, default_rights), "thumbnail": thumbnail(base, thumb or meta),
        "partOf": [{"id": collection_url(base, folder), "type": "Collection"}],
        "items": items + [canvas(mid, base, m.ident, (m.width, m.height), name, n)
                          for n, (name, m) in enumerate(sorted(extra.items()), len(items) + 1)],
    }


def split_listing(idents: list[str], folder: str) -> tuple[list[str], list[str]]:
    """(sub-folders, images) directly inside `folder`, from a recursive listing of it.
    `split_listing(["a/x.tif", "a/b/y.tif", "a/b/c/z.tif"], "a") == (["a/b"], ["a/x.tif"])`."""
    prefix = f"{folder}/" if folder else ""
    folders: dict[str, None] = {}
    images: list[str] = []
    for ident in idents:
        rest = ident[len(prefix):]
        head, sep, _ = rest.partition("/")
        if sep:
            folders[prefix + head] = None
        else:
            images.append(ident)
    return list(folders), images


def build_collection(base: str, folder: str, folders: list[str], images: list[str]) -> dict[str, Any]:
    """The Collection of one folder (pure): nested Collections first, then one Manifest per image."""
    items: list[dict[str, Any]] = [
        {"id": collection_url(base, f), "type": "Collection", "label": lang(posixpath.basename(f))} for f in folders]
    items += [{"id": manifest_url(base, i), "type": "Manifest", "label": lang(posixpath.basename(i))}
              for i in images]
    doc: dict[str, Any] = {"@context": CONTEXT, "id": collection_url(base, folder), "type": "Collection",
                           "label": lang(posixpath.basename(folder) or "Images"), "items": items}
    if folder:
        doc["partOf"] = [{"id": collection_url(base, posixpath.dirname(folder)), "type": "Collection"}]
    return doc


def render(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, indent=2, ensure_ascii=False).encode()


def media_type(accept: str) -> str:
    """JSON-LD with the Presentation 3 profile when asked for, plain JSON otherwise (both allowed)."""
    return MEDIA_TYPE if "application/ld+json" in accept else "application/json"


def with_auth(doc: dict[str, Any], probe: Any) -> dict[str, Any]:
    """`doc` with the IIIF Auth 2.0 probe service (`probe(service_id)`: its description) in every image service
    it names (Auth 2.0 §2.1: the probe may also be declared in the Manifest), and the Auth context first."""
    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            out = {k: walk(v) for k, v in node.items()}
            if out.get("type") == "ImageService3" and "id" in out:
                out["service"] = probe(out["id"])
            return out
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node
    out: dict[str, Any] = walk(doc)
    out["@context"] = [auth.CONTEXT2, CONTEXT]
    return out


# -- endpoints --------------------------------------------------------------------------------------
async def manifest(request: Request) -> Response:
    ident = request.path_params["ident"]
    service = request.app.state.service
    meta = await service.info(ident)
    associated = {}
    for name in meta.associated:
        try:
            associated[name] = await service.info(f"{ident};associated={name}")
        except TileServerError:
            continue  # an unreadable label does not take the slide's manifest with it (its URLs say 415)
    doc = build_manifest(base_of(request, ""), meta, request.app.state.settings.rights, associated)
    flow = request.app.state.auth_flow
    access = None if flow is None else await service.access_of(ident)
    if access is not None and access.restricted and flow.profiles:
        doc = with_auth(doc, lambda sid: auth.auth2_services(flow, base_of(request, ""), f"{sid}/probe", 3))
    body = render(doc)
    mt = media_type(request.headers.get("accept", ""))
    return send_document(request, body, mt, meta, f"manifest:{mt}:{body.decode()}", {"Vary": "Accept"})


async def collection(request: Request) -> Response:
    folder = request.path_params.get("folder", "").strip("/")
    service = request.app.state.service
    if folder:
        await service.run(service.source.resolve_dir, folder)
    idents = await service.run(service.source.listing, folder, COLLECTION_LIMIT)
    folders, images = split_listing(idents, folder)
    body = render(build_collection(base_of(request, ""), folder, folders, images))
    headers = {"Vary": "Accept", "Cache-Control": "no-cache"}
    return Response(body, media_type=media_type(request.headers.get("accept", "")), headers=headers)


ROUTES: list[BaseRoute] = [
    Route("/iiif/manifests/{ident:path}.json", manifest, methods=["GET", "HEAD"]),
    Route("/iiif/collection.json", collection, methods=["GET", "HEAD"]),
    Route("/iiif/collections/{folder:path}.json", collection, methods=["GET", "HEAD"]),
]
