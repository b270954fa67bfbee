"""Viewer pages without a browser: the page's configuration (tile-source URLs that answer), asset
tags with SRI hashes for the CDN or the local folder, the local folder served strictly inside each
package, and the hashes matching the installed npm files when `tests/browser/setup.sh` has run."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from tileserver.app import create_app
from tileserver.pages.viewers import ASSETS, PACKAGES, script_json
from tileserver.settings import Settings

from ..conftest import RGB_TIF, SUBIFD_TIF
from ..document_images import DOC_SIZES, DOC_TIF

NODE_MODULES = Path(__file__).resolve().parents[2] / ".cache" / "viewer-node" / "node_modules"


def page_config(page: str) -> dict[str, Any]:
    m = re.search(r'<script type="application/json" id="config">(.*?)</script>', page, re.S)
    assert m is not None
    config: dict[str, Any] = json.loads(m.group(1))
    return config


def scripts(page: str) -> list[tuple[str, str]]:
    return re.findall(r'<script src="([^"]+)" integrity="([^"]+)" crossorigin="anonymous">', page)


async def test_viewer_page_sources_answer(client: httpx.AsyncClient) -> None:
    r = await client.get(f"/viewer/{SUBIFD_TIF}?source=iiif2&drawer=canvas")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    config = page_config(r.text)
    assert config["source"] == "iiif2" and config["drawer"] == "canvas"
    assert set(config["sources"]) == {"dzi", "iiif3", "iiif2", "zoomify"}
    for key, url in config["sources"].items():
        url = url.removeprefix("http://testserver") + ("ImageProperties.xml" if key == "zoomify" else "")
        assert (await client.get(url)).status_code == 200, url
    assert 'value="iiif2" checked' in r.text
    assert f'href="/mirador/{SUBIFD_TIF}"' in r.text


@pytest.mark.parametrize("first", [0, 2])
async def test_viewer_lists_the_pages_of_a_document(client: httpx.AsyncClient, first: int) -> None:
    r = await client.get(f"/viewer/{DOC_TIF}?page={first}")
    config = page_config(r.text)
    assert config["page"] == first and len(config["pages"]) == len(DOC_SIZES)
    assert f"{DOC_SIZES[0][0]} x {DOC_SIZES[0][1]}, 3 pages" in r.text
    for n, sources in enumerate(config["pages"]):
        assert set(sources) == {"dzi", "iiif3", "iiif2", "zoomify"}
        info = (await client.get(sources["iiif3"].removeprefix("http://testserver"))).json()
        assert (info["width"], info["height"]) == DOC_SIZES[n]
        assert info["id"].endswith(f"%3Bpage%3D{n}")
        for key in ("dzi", "zoomify"):
            url = sources[key].removeprefix("http://testserver") + ("ImageProperties.xml" if key == "zoomify" else "")
            body = (await client.get(url)).text
            assert f'"{DOC_SIZES[n][0]}"' in body and f'"{DOC_SIZES[n][1]}"' in body, url


@pytest.mark.parametrize("page", [
    pytest.param("9" * 5000, id="past-int-digit-limit"),  # found by fuzzing: int() refused it, a 500
    pytest.param("%C2%B2", id="superscript-two"),  # isdigit() but not int()
    pytest.param("%D9%A3", id="arabic-indic-three"),
    pytest.param("3", id="past-the-last-page"),
    pytest.param("-1", id="negative"),
    pytest.param("", id="empty"),
])
async def test_a_page_that_is_not_one_opens_the_first(client: httpx.AsyncClient, page: str) -> None:
    r = await client.get(f"/viewer/{DOC_TIF}?page={page}")
    assert r.status_code == 200
    assert page_config(r.text)["page"] == 0


async def test_a_single_image_has_no_page_list(client: httpx.AsyncClient) -> None:
    config = page_config((await client.get(f"/viewer/{RGB_TIF}?page=3")).text)
    assert config["pages"] == [] and config["page"] == 0


async def test_viewer_page_defaults_and_escapes(client: httpx.AsyncClient) -> None:
    config = page_config((await client.get(f"/viewer/{RGB_TIF}?source=<x>&drawer=</script>")).text)
    assert config["source"] == "dzi" and config["drawer"] == "auto"
    assert json.loads(script_json("</script><!--&")) == "</script><!--&"
    assert "<" not in script_json("</script>")


async def test_pages_of_a_missing_image_are_404(client: httpx.AsyncClient) -> None:
    for path in ("/viewer/nope.tif", "/mirador/nope.tif", "/viewer/../../etc/passwd"):
        assert (await client.get(path)).status_code == 404, path


async def test_cdn_assets_are_pinned_with_integrity(client: httpx.AsyncClient) -> None:
    page = (await client.get(f"/mirador/{RGB_TIF}")).text
    assert scripts(page) == [(f"https://cdn.jsdelivr.net/npm/mirador@{PACKAGES['mirador']}/dist/mirador.min.js",
                              ASSETS["mirador"].integrity)]
    config = page_config(page)
    assert config["manifest"] == f"http://testserver/iiif/manifests/{RGB_TIF}.json"
    assert (await client.get(config["manifest"].removeprefix("http://testserver"))).status_code == 200


async def test_index_links_viewers(client: httpx.AsyncClient) -> None:
    page = (await client.get("/")).text
    for link in (f'href="viewer/{SUBIFD_TIF}"', f'href="mirador/{SUBIFD_TIF}"',
                 f'href="iiif/manifests/{SUBIFD_TIF.replace("/", "%2F")}.json"'):
        assert link in page


def fake_packages(folder: Path) -> None:
    for name, asset in ASSETS.items():
        path = folder / asset.package / asset.path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"/* {name} */")
    (folder / "secret.txt").write_text("not a package file")


@pytest.fixture
def local_app(tmp_path: Path, image_root: Path) -> Starlette:
    fake_packages(tmp_path / "node_modules")
    return create_app(Settings(root=image_root, viewer_assets=tmp_path / "node_modules"))


async def test_local_assets_are_served_strictly_inside_each_package(local_app: Starlette) -> None:
    transport = httpx.ASGITransport(app=local_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        page = (await c.get(f"/viewer/{RGB_TIF}")).text
        [(src, _)] = scripts(page)
        assert src == "/assets/openseadragon/build/openseadragon/openseadragon.min.js"
        assert (await c.get(src)).text == "/* openseadragon */"
        assert page_config(page)["images"] == "/assets/openseadragon/build/openseadragon/images/"
        for path in ("/assets/secret.txt", "/assets/leaflet/%2e%2e/secret.txt", "/assets/leaflet/..%2Fsecret.txt",
                     "/assets/ol/%2e%2e/%2e%2e/etc/passwd"):
            assert (await c.get(path)).status_code == 404, path


def test_an_empty_assets_variable_means_the_cdn(image_root: Path) -> None:
    assert Settings(root=image_root, viewer_assets="").viewer_assets is None  # type: ignore[arg-type]


def test_missing_assets_folder_fails_loudly(tmp_path: Path, image_root: Path) -> None:
    with pytest.raises(ValueError, match="not a folder"):
        create_app(Settings(root=image_root, viewer_assets=tmp_path / "missing"))


@pytest.mark.skipif(not NODE_MODULES.is_dir(), reason="viewer packages not installed (tests/browser/setup.sh)")
@pytest.mark.parametrize("name", sorted(ASSETS))
def test_integrity_matches_the_installed_package(name: str) -> None:
    asset = ASSETS[name]
    meta = json.loads((NODE_MODULES / asset.package / "package.json").read_text())
    assert meta["version"] == PACKAGES[asset.package]
    digest = hashlib.sha384((NODE_MODULES / asset.package / asset.path).read_bytes()).digest()
    assert asset.integrity == "sha384-" + base64.b64encode(digest).decode()


async def test_pages_follow_the_enabled_protocols(image_root: Path) -> None:
    app = create_app(Settings(root=image_root, protocols="iip,deepzoom"))  # type: ignore[arg-type]
    app.state.service.start()
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as c:
            config = page_config((await c.get(f"/viewer/{RGB_TIF}?source=iiif3")).text)
            assert list(config["sources"]) == ["dzi"] and config["source"] == "dzi"
            assert (await c.get(f"/mirador/{RGB_TIF}")).status_code == 404
            assert (await c.get(f"/iiif/manifests/{RGB_TIF}.json")).status_code == 404
            assert (await c.get("/iiif/collection.json")).status_code == 404
    finally:
        app.state.service.stop()
