"""OPTIONS on every route (web/options.py): 204 with the route's methods in `Allow`, with and without
CORS; preflights answered by the CORS middleware when CORS is on."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tileserver.settings import Settings

from ..conftest import RGB_TIF, served

READ = "GET, HEAD, OPTIONS"
ROUTES = [
    pytest.param(f"/iip?FIF={RGB_TIF}&JTL=1,0", "GET, HEAD, OPTIONS, POST", id="iip-tile"),
    pytest.param(f"/fcgi-bin/iipsrv.fcgi?FIF={RGB_TIF}&OBJ=IIP,1.0", "GET, HEAD, OPTIONS, POST", id="iip-info"),
    pytest.param(f"/iiif/3/{RGB_TIF}/0,0,256,256/max/0/default.jpg", READ, id="iiif3-tile"),
    pytest.param(f"/iiif/2/{RGB_TIF}/info.json", READ, id="iiif2-info"),
    pytest.param(f"/iiif/{RGB_TIF}", READ, id="iiif-base"),
    pytest.param(f"/deepzoom/{RGB_TIF}_files/9/0_0.jpg", READ, id="deepzoom-tile"),
    pytest.param(f"/deepzoom/{RGB_TIF}.dzi", READ, id="deepzoom-info"),
    pytest.param(f"/zoomify/{RGB_TIF}/TileGroup0/0-0-0.jpg", READ, id="zoomify-tile"),
    pytest.param(f"/zoomify/{RGB_TIF}/ImageProperties.xml", READ, id="zoomify-info"),
    pytest.param(f"/iiif/manifests/{RGB_TIF}.json", READ, id="manifest"),
    pytest.param("/iiif/collection.json", READ, id="collection"),
    pytest.param("/iiif/collections/sub.json", READ, id="sub-collection"),
    pytest.param(f"/viewer/{RGB_TIF}", READ, id="viewer"),
    pytest.param(f"/mirador/{RGB_TIF}", READ, id="mirador"),
    pytest.param("/", READ, id="index"),
    pytest.param("/health", READ, id="health"),
    pytest.param("/assets/openseadragon/build/openseadragon/openseadragon.min.js", READ, id="assets"),
]
ORIGIN = "http://viewer.example"
PREFLIGHT = {"Origin": ORIGIN, "Access-Control-Request-Method": "GET"}


@pytest.fixture(scope="module")
def assets(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("node_modules")
    (folder / "openseadragon" / "build" / "openseadragon").mkdir(parents=True)
    (folder / "openseadragon" / "build" / "openseadragon" / "openseadragon.min.js").write_text("// osd")
    return folder


@pytest.fixture(scope="module", params=["*", ""], ids=["cors", "no-cors"])
def cors(request: pytest.FixtureRequest) -> str:
    value: str = request.param
    return value


@pytest.fixture(scope="module")
async def client(cors: str, image_root: Path, assets: Path) -> AsyncIterator[httpx.AsyncClient]:
    async with served(Settings(root=image_root, cors=cors, viewer_assets=assets)) as c:
        yield c


@pytest.mark.parametrize(("path", "allow"), ROUTES)
async def test_options_names_the_routes_methods(client: httpx.AsyncClient, path: str, allow: str) -> None:
    r = await client.options(path)
    assert r.status_code == 204 and r.content == b""
    assert r.headers["allow"] == allow
    assert "access-control-allow-origin" not in r.headers


@pytest.mark.parametrize(("path", "allow"), ROUTES)
async def test_options_from_a_page_elsewhere(client: httpx.AsyncClient, cors: str, path: str, allow: str) -> None:
    r = await client.options(path, headers={"Origin": ORIGIN})
    assert r.status_code == 204 and r.headers["allow"] == allow
    assert r.headers.get("access-control-allow-origin") == (cors or None)


@pytest.mark.parametrize(("path", "allow"), ROUTES)
async def test_preflight(client: httpx.AsyncClient, cors: str, path: str, allow: str) -> None:
    r = await client.options(path, headers=PREFLIGHT)
    if cors:
        assert r.status_code == 200
        assert r.headers["access-control-allow-origin"] == "*"
        assert "GET" in r.headers["access-control-allow-methods"]
    else:  # no CORS: the plain answer, which a browser takes as a refusal
        assert r.status_code == 204 and r.headers["allow"] == allow
        assert "access-control-allow-origin" not in r.headers


@pytest.mark.parametrize("path", ["/nothing-here", "/iipx", "/deepzoomx/a.dzi"])
async def test_options_on_no_route_is_a_404(client: httpx.AsyncClient, path: str) -> None:
    assert (await client.options(path)).status_code == 404


@pytest.mark.parametrize(("path", "allow"), ROUTES[:3])
async def test_the_methods_named_are_answered(client: httpx.AsyncClient, path: str, allow: str) -> None:
    for method in allow.split(", "):
        if method != "POST":
            assert (await client.request(method, path)).status_code in (200, 204), method
    assert (await client.request("DELETE", path)).status_code == 405
