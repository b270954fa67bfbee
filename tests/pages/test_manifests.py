"""IIIF Presentation 3 manifests and collections: the rules of the specification that can be checked
offline (https://iiif.io/api/presentation/3.0/: required properties per type, value types, language
maps, HTTP(S) ids, no fragments in Canvas ids, painting annotations targeting their Canvas), the
public base taken from the proxy headers like the Image API ids, and every id meant to be
dereferenced (manifests, collections, image services, thumbnails, painted images) resolving on our
server to what it claims."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from tileserver.pages.manifests import build_collection, split_listing

from ..conftest import ALPHA_PNG, RGB_TIF, SUBIFD_TIF, decode
from ..document_images import DOC_LABELS, DOC_SIZES, DOC_TIF, GIF_PAGES
from ..stack_images import FLAT_STACK_TIF, STACK_NAMES, STACK_TIF

CONTEXT = "http://iiif.io/api/presentation/3/context.json"
REQUIRED = {
    "Collection": {"id", "type", "label", "items"},
    "Manifest": {"id", "type", "label", "items"},
    "Canvas": {"id", "type", "width", "height"},
    "AnnotationPage": {"id", "type"},
    "Annotation": {"id", "type", "motivation", "target"},
}


def check_language_map(value: Any) -> None:
    assert isinstance(value, dict) and value
    for lang, strings in value.items():
        assert isinstance(lang, str) and isinstance(strings, list) and strings
        assert all(isinstance(s, str) for s in strings)


def check_resource(node: dict[str, Any], reference: bool = False) -> None:
    """Presentation 3 §3-4 rules for one typed resource, recursively. A Collection's items are
    references: `id`, `type` and `label` only (§5.1)."""
    kind = node["type"]
    required = {"id", "type", "label"} if reference else REQUIRED.get(kind, {"id", "type"})
    assert required <= set(node), kind
    assert urlsplit(node["id"]).scheme in ("http", "https")
    for key in ("label", "summary"):
        if key in node:
            check_language_map(node[key])
    for entry in node.get("metadata", []):
        check_language_map(entry["label"])
        check_language_map(entry["value"])
    if kind == "Canvas":
        assert "#" not in node["id"]
        assert all(isinstance(node[k], int) and node[k] > 0 for k in ("width", "height"))
    if kind == "Annotation":
        assert node["motivation"] == "painting" and node["body"]["type"] == "Image"
    for child in node.get("items", []):
        check_resource(child, reference=kind == "Collection")
    for child in node.get("thumbnail", []) + node.get("service", []):
        check_resource(child)
    if "body" in node:
        check_resource(node["body"])


def local(url: str) -> str:
    parts = urlsplit(url)
    assert parts.netloc == "testserver"
    return parts.path + (f"?{parts.query}" if parts.query else "")


def painting(manifest: dict[str, Any]) -> dict[str, Any]:
    canvas = manifest["items"][0]
    annotation: dict[str, Any] = canvas["items"][0]["items"][0]
    assert annotation["target"] == canvas["id"]
    return annotation


@pytest.mark.parametrize("ident", [RGB_TIF, SUBIFD_TIF, ALPHA_PNG])
async def test_manifest_follows_presentation_3(client: httpx.AsyncClient, ident: str) -> None:
    encoded = ident.replace("/", "%2F")
    r = await client.get(f"/iiif/manifests/{encoded}.json")
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    m = r.json()
    assert m["@context"] == CONTEXT and m["type"] == "Manifest"
    assert m["id"] == f"http://testserver/iiif/manifests/{encoded}.json"
    check_resource(m)
    assert m["label"] == {"none": [ident.rsplit("/", 1)[-1]]}
    assert len(m["items"]) == 1
    info = (await client.get(f"/iiif/3/{encoded}/info.json")).json()
    canvas = m["items"][0]
    assert (canvas["width"], canvas["height"]) == (info["width"], info["height"])
    body = painting(m)["body"]
    assert body["service"] == [{"id": info["id"], "type": "ImageService3", "profile": "level2"}]


async def test_manifest_ids_resolve(client: httpx.AsyncClient) -> None:
    m = (await client.get(f"/iiif/manifests/{SUBIFD_TIF.replace('/', '%2F')}.json")).json()
    assert (await client.get(local(m["id"]))).json() == m
    body = painting(m)["body"]
    full = decode((await client.get(local(body["id"]))).content)
    assert (full.width, full.height) == (body["width"], body["height"]) == (700, 530)
    service = (await client.get(local(body["service"][0]["id"] + "/info.json"))).json()
    assert service["id"] == body["service"][0]["id"] and service["type"] == "ImageService3"
    thumb = m["thumbnail"][0]
    img = decode((await client.get(local(thumb["id"]))).content)
    assert (img.width, img.height) == (thumb["width"], thumb["height"])
    parent = (await client.get(local(m["partOf"][0]["id"]))).json()
    assert m["id"] in [item["id"] for item in parent["items"]]


@pytest.mark.parametrize(("ident", "pages"), [
    pytest.param(DOC_TIF, [(*size, label or f"Page {n + 1}") for n, (size, label) in
                           enumerate(zip(DOC_SIZES, DOC_LABELS, strict=True))], id="document"),
    pytest.param(STACK_TIF, [(451, 331, name) for name in STACK_NAMES], id="stack"),
    pytest.param(FLAT_STACK_TIF, [(200, 150, name) for name in STACK_NAMES], id="flat-stack"),
    pytest.param(GIF_PAGES, [(97, 61, f"Page {n}") for n in (1, 2, 3)], id="gif"),
])
async def test_every_page_is_a_canvas_in_order(client: httpx.AsyncClient, ident: str,
                                               pages: list[tuple[int, int, str]]) -> None:
    """One Canvas per page, in page order, each of its page's size and painted with that page's own
    image service `<ident>;page=<n>` (encoded as the Image API's identifiers are), which resolves to
    an info.json and full image of that size."""
    m = (await client.get(f"/iiif/manifests/{ident}.json")).json()
    check_resource(m)
    canvases = m["items"]
    assert [(c["width"], c["height"], c["label"]["none"][0]) for c in canvases] == pages
    assert len({c["id"] for c in canvases}) == len(pages)
    for n, c in enumerate(canvases):
        annotation = c["items"][0]["items"][0]
        assert annotation["target"] == c["id"]
        body = annotation["body"]
        service = body["service"][0]["id"]
        assert service == f"http://testserver/iiif/3/{ident}%3Bpage%3D{n}"
        info = (await client.get(local(service + "/info.json"))).json()
        assert info["id"] == service and (info["width"], info["height"]) == (c["width"], c["height"])
        assert (body["width"], body["height"]) == (c["width"], c["height"])
    last = decode((await client.get(local(canvases[-1]["items"][0]["items"][0]["body"]["id"]))).content)
    assert (last.width, last.height) == pages[-1][:2]
    assert {"label": {"en": ["Pages"]}, "value": {"none": [str(len(pages))]}} in m["metadata"]


async def test_a_page_has_a_manifest_of_one_canvas(client: httpx.AsyncClient) -> None:
    m = (await client.get(f"/iiif/manifests/{DOC_TIF}%3Bpage%3D1.json")).json()
    assert [(c["width"], c["height"]) for c in m["items"]] == [DOC_SIZES[1]]
    assert painting(m)["body"]["service"][0]["id"] == f"http://testserver/iiif/3/{DOC_TIF}%3Bpage%3D1"


async def test_manifest_ids_follow_forwarded_headers(client: httpx.AsyncClient) -> None:
    headers = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "img.example.org"}
    m = (await client.get(f"/iiif/manifests/{RGB_TIF}.json", headers=headers)).json()
    info = (await client.get(f"/iiif/3/{RGB_TIF}/info.json", headers=headers)).json()
    assert m["id"] == f"https://img.example.org/iiif/manifests/{RGB_TIF}.json"
    assert painting(m)["body"]["service"][0]["id"] == info["id"]


async def test_manifest_media_type_and_errors(client: httpx.AsyncClient) -> None:
    r = await client.get(f"/iiif/manifests/{RGB_TIF}.json", headers={"Accept": "application/ld+json"})
    assert r.headers["content-type"] == f'application/ld+json;profile="{CONTEXT}"'
    assert (await client.get("/iiif/manifests/nope.tif.json")).status_code == 404
    assert (await client.get("/iiif/manifests/..%2F..%2Fetc%2Fpasswd.json")).status_code == 404


async def test_collections_nest_and_resolve(client: httpx.AsyncClient) -> None:
    root = (await client.get("/iiif/collection.json")).json()
    check_resource(root)
    assert root["id"] == "http://testserver/iiif/collection.json" and "partOf" not in root
    kinds = {item["id"]: item["type"] for item in root["items"]}
    assert kinds["http://testserver/iiif/collections/sub.json"] == "Collection"
    assert kinds[f"http://testserver/iiif/manifests/{RGB_TIF}.json"] == "Manifest"
    sub = (await client.get("/iiif/collections/sub.json")).json()
    check_resource(sub)
    assert sub["partOf"] == [{"id": root["id"], "type": "Collection"}]
    for item in sub["items"]:
        m = (await client.get(local(item["id"]))).json()
        assert m["type"] == "Manifest" and m["id"] == item["id"]


async def test_collection_of_a_missing_or_escaping_folder_is_404(client: httpx.AsyncClient) -> None:
    for path in ("/iiif/collections/nope.json", "/iiif/collections/..%2F..%2Fetc.json",
                 f"/iiif/collections/{RGB_TIF}.json"):
        assert (await client.get(path)).status_code == 404, path


@pytest.mark.parametrize(("idents", "folder", "expected"), [
    pytest.param(["a.tif", "b/c.tif", "b/d/e.tif"], "", (["b"], ["a.tif"]), id="root"),
    pytest.param(["a/x.tif", "a/b/y.tif", "a/b/c/z.tif"], "a", (["a/b"], ["a/x.tif"]), id="sub"),
    pytest.param([], "", ([], []), id="empty"),
])
def test_split_listing(idents: list[str], folder: str, expected: tuple[list[str], list[str]]) -> None:
    assert split_listing(idents, folder) == expected


def test_collection_encodes_folder_slashes() -> None:
    doc = build_collection("http://h", "a/b", ["a/b/c"], ["a/b/x.tif"])
    assert doc["id"] == "http://h/iiif/collections/a%2Fb.json"
    assert [i["id"] for i in doc["items"]] == ["http://h/iiif/collections/a%2Fb%2Fc.json",
                                              "http://h/iiif/manifests/a%2Fb%2Fx.tif.json"]
    assert doc["partOf"][0]["id"] == "http://h/iiif/collections/a.json"
