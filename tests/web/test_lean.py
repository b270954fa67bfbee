"""The lean path (web/lean.py): tile URLs answered by their endpoint without the rest of the stack, with exactly
what the full stack sends (status, headers but Date, body), cold and conditional, for GET and HEAD, and counted
and logged as any other request."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from tileserver import protocols
from tileserver.app import create_app
from tileserver.settings import Settings
from tileserver.web.lean import LeanMiddleware

from ..conftest import RGB_TIF, decode

TILE_URLS = [
    pytest.param("/iip?FIF=a.tif&JTL=2,1", True, id="iip-jtl"),
    pytest.param("/fcgi-bin/iipsrv.fcgi?FIF=a.tif&QLT=60&JTL=2,3", True, id="iip-qlt"),
    pytest.param("/iip?fif=a.tif&jtl=0,0", True, id="iip-lower-case"),
    pytest.param("/iip?FIF=a.tif&JTL=2,999", True, id="iip-tile-out-of-range"),
    pytest.param("/iip?FIF=missing.tif&JTL=0,0", True, id="iip-missing-image"),
    pytest.param("/iip?FIF=a.tif&JTL=x,y", True, id="iip-bad-jtl"),
    pytest.param("/iiif/3/a.tif/0,0,512,512/256,/0/default.jpg", True, id="iiif3-tile"),
    pytest.param("/iiif/2/a.tif/full/100,/0/gray.png", True, id="iiif2-png"),
    pytest.param("/iiif/a.tif/512,512,512,189/256,/0/default.jpg", True, id="iiif-default-version"),
    pytest.param("/iiif/3/a.tif/0,0,512,512/256,/0/default.bogus", True, id="iiif-bad-format"),
    pytest.param("/iiif/3/a.tif/nope/max/0/default.jpg", True, id="iiif-bad-region"),
    pytest.param("/iiif/3/missing.tif/full/max/0/default.jpg", True, id="iiif-missing-image"),
    pytest.param("/deepzoom/a.tif_files/10/1_1.jpg", True, id="deepzoom"),
    pytest.param("/deepzoom/a.tif_files/10/99_1.jpg", True, id="deepzoom-out-of-range"),
    pytest.param("/deepzoom/a.tif_files/10/1_1.bmp", True, id="deepzoom-bad-format"),
    pytest.param("/zoomify/a.tif/TileGroup0/2-1-1.jpg", True, id="zoomify"),
    pytest.param("/zoomify/a.tif/TileGroup0/9-0-0.jpg", True, id="zoomify-out-of-range"),
    # not tile URLs: the full stack's, and the same answer either way
    pytest.param("/iiif/3/a.tif/info.json", False, id="iiif-info"),
    pytest.param("/deepzoom/a.tif.dzi", False, id="dzi"),
    pytest.param("/iip?FIF=a.tif&OBJ=IIP,1.0", False, id="iip-obj"),
    pytest.param("/iiif/manifests/a.tif.json", False, id="manifest"),
]


def full_stack(app: Starlette) -> Starlette:
    """`app` without the lean path (the middleware stack is built at the first request)."""
    app.user_middleware = [m for m in app.user_middleware if m.cls is not LeanMiddleware]
    return app


@pytest.fixture
def root(tmp_path: Path, image_root: Path) -> Path:
    shutil.copy(image_root / RGB_TIF, tmp_path / "a.tif")
    return tmp_path


def settings_of(root: Path, **more: Any) -> Settings:
    return Settings(**{"root": root, "cors": "*", "stat_interval": 0, **more})


async def pair(settings: Settings) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
    """Clients of two apps of `settings`, each with caches of its own: lean (as built) and full stack."""
    lean, full = create_app(settings), full_stack(create_app(settings))
    async with lean.router.lifespan_context(lean), full.router.lifespan_context(full), \
            httpx.AsyncClient(transport=httpx.ASGITransport(app=lean), base_url="http://testserver") as a, \
            httpx.AsyncClient(transport=httpx.ASGITransport(app=full), base_url="http://testserver") as b:
        yield a, b


@pytest.fixture
async def clients(root: Path) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
    async for both in pair(settings_of(root)):
        yield both


@pytest.fixture
def taken(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Whether each request went the lean way, in order."""
    seen: list[bool] = []
    original = LeanMiddleware.route_of

    def spy(self: LeanMiddleware, scope: Any) -> Any:
        found = original(self, scope)
        seen.append(found is not None)
        return found

    monkeypatch.setattr(LeanMiddleware, "route_of", spy)
    return seen


def without_date(r: httpx.Response) -> list[tuple[str, str]]:
    """The headers but Date, with Server-Timing's stages but not their durations (`decode;dur=1.23` -> `decode`)."""
    return [(k, re.sub(r";dur=[0-9.]+", "", v) if k == "server-timing" else v) for k, v in r.headers.multi_items()
            if k != "date"]


def same(a: httpx.Response, b: httpx.Response) -> None:
    assert a.status_code == b.status_code
    assert without_date(a) == without_date(b)
    assert a.content == b.content


@pytest.mark.parametrize(("url", "lean"), TILE_URLS)
async def test_lean_answers_exactly_as_the_full_stack(clients: tuple[httpx.AsyncClient, httpx.AsyncClient],
                                                      taken: list[bool], url: str, lean: bool) -> None:
    a, b = clients
    for method in ("GET", "GET", "HEAD"):  # cold, then replayed (tiles) or remembered, then HEAD
        mine, theirs = await a.request(method, url), await b.request(method, url)
        same(mine, theirs)
    assert taken[0] is lean and taken[-1] is lean  # the replayed GET never reaches it
    if mine.status_code == 200 and lean:
        etag = mine.headers["etag"]
        for headers in ({"If-None-Match": etag}, {"If-None-Match": f'W/{etag}, "other"'}, {"If-None-Match": '"x"'}):
            mine, theirs = await a.get(url, headers=headers), await b.get(url, headers=headers)
            same(mine, theirs)
            assert taken[-1]
        assert mine.status_code == 200
        assert (await a.get(url, headers={"If-None-Match": etag})).status_code == 304


async def test_cold_tiles_decode_and_errors_are_clear(clients: tuple[httpx.AsyncClient, httpx.AsyncClient],
                                                      taken: list[bool], root: Path) -> None:
    a, _ = clients
    tile = await a.get("/iiif/3/a.tif/0,0,512,512/256,/0/default.jpg")
    assert tile.status_code == 200 and decode(tile.content).width == 256
    bad = await a.get("/iiif/3/a.tif/nope/max/0/default.jpg")
    assert bad.status_code == 400 and bad.headers["cache-control"] == "no-cache"
    gone = await a.get("/iip?FIF=missing.tif&JTL=0,0")
    assert gone.status_code == 404 and str(root).encode() not in gone.content
    assert taken == [True, True, True]


@pytest.mark.parametrize("url", ["/iip?FIF=a.tif&JTL=2,1", "/iiif/3/a.tif/0,0,512,512/256,/0/default.jpg",
                                 "/deepzoom/a.tif_files/10/1_1.jpg"])
async def test_cors_requests_go_down_the_full_stack(clients: tuple[httpx.AsyncClient, httpx.AsyncClient],
                                                   taken: list[bool], url: str) -> None:
    a, b = clients
    headers = {"Origin": "http://viewer.example"}
    mine, theirs = await a.get(url, headers=headers), await b.get(url, headers=headers)
    same(mine, theirs)
    assert mine.headers["access-control-allow-origin"] == "*" and taken == [False]
    preflight = {**headers, "Access-Control-Request-Method": "GET"}
    same(await a.options(url, headers=preflight), await b.options(url, headers=preflight))


async def test_without_cors_an_origin_changes_nothing(root: Path, taken: list[bool]) -> None:
    url = "/iiif/3/a.tif/0,0,512,512/256,/0/default.jpg"
    async for a, b in pair(settings_of(root, cors="")):
        headers = {"Origin": "http://viewer.example"}
        same(await a.get(url, headers=headers), await b.get(url, headers=headers))
        assert taken == [True]


async def test_long_targets_and_bodies_go_down_the_full_stack(root: Path, taken: list[bool]) -> None:
    long = "/iiif/3/a.tif/0,0,512,512/256,/0/default.jpg?" + "x" * 300
    async for a, b in pair(settings_of(root, max_url_bytes=256)):
        mine, theirs = await a.get(long), await b.get(long)
        same(mine, theirs)
        assert mine.status_code == 414
        body = {"content": b"x" * 10}
        same(await a.request("GET", "/iip?FIF=a.tif&JTL=0,0", **body),
             await b.request("GET", "/iip?FIF=a.tif&JTL=0,0", **body))
        assert taken == [False, False]


async def test_no_lean_path_with_an_access_policy(root: Path) -> None:
    policy = json.dumps({"tiers": {"preview": {"max_width": 600, "max_height": 600}},
                         "rules": [{"match": "*", "anonymous": "preview"}]})
    app = create_app(settings_of(root, access_policy=policy, access_key="k" * 32))
    assert not any(m.cls is LeanMiddleware for m in app.user_middleware)
    assert any(m.cls is LeanMiddleware for m in create_app(settings_of(root)).user_middleware)


async def test_lean_requests_are_counted_and_logged(root: Path, taken: list[bool],
                                                    capfd: pytest.CaptureFixture[str]) -> None:
    app = create_app(settings_of(root, access_log="json"))
    async with app.router.lifespan_context(app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        capfd.readouterr()
        ok = await client.get("/zoomify/a.tif/TileGroup0/2-1-1.jpg")
        missing = await client.get("/iiif/3/missing.tif/full/max/0/default.jpg")
    assert ok.status_code == 200 and missing.status_code == 404 and taken == [True, True]
    lines = [json.loads(line) for line in capfd.readouterr().err.splitlines() if line.startswith("{")]
    assert [(x["protocol"], x["route"], x["status"]) for x in lines] == [
        ("zoomify", "/zoomify/{path:path}", 200), ("iiif", "/iiif/3/{rest:path}", 404)]
    assert lines[0]["source"] is not None and lines[0]["bytes"] == len(ok.content)


@pytest.mark.parametrize(("path", "query", "tile"), [
    ("/iip", b"FIF=a.tif&JTL=1,0", True), ("/iip", b"FIF=a.tif&OBJ=IIP,1.0", False),
    ("/fcgi-bin/iipsrv.fcgi", b"FIF=a&jtl=0,0", True), ("/iiif/3/a/full/max/0/default.jpg", b"", True),
    ("/iiif/a/full/max/0/default.jpg", b"", True), ("/iiif/3/a/info.json", b"", False),
    ("/deepzoom/a.tif_files/9/1_0.jpg", b"", True), ("/deepzoom/a.tif.dzi", b"", False),
    ("/zoomify/a.tif/TileGroup0/0-0-0.jpg", b"", True), ("/zoomify/a.tif/ImageProperties.xml", b"", False),
    ("/viewer/a.tif", b"", False),
])
def test_tile_shapes(path: str, query: bytes, tile: bool) -> None:
    assert protocols.is_tile_shape(path, query) is tile
