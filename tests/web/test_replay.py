"""Replay: a repeated GET is answered from memory with exactly what the full stack sends, and only
while nothing that could change the answer has changed."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette

from tileserver.app import create_app
from tileserver.settings import Settings
from tileserver.web.replay import replay_key

from ..conftest import RGB_1000, RGB_TIF, decode


@pytest.fixture
async def app(tmp_path: Path, image_root: Path) -> AsyncIterator[Starlette]:
    shutil.copy(image_root / RGB_TIF, tmp_path / "a.tif")
    application = create_app(Settings(root=tmp_path, cors="*", stat_interval=0))
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def client(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as c:
        yield c


def replayed(app: Starlette) -> int:
    return int(app.state.service.replayed)


def without_date(r: httpx.Response) -> list[tuple[str, str]]:
    """The headers but Date, and Server-Timing (a replayed image says `replay`: tests/web/test_telemetry.py)."""
    return [(k, v) for k, v in r.headers.multi_items() if k not in ("date", "server-timing")]


@pytest.mark.parametrize(
    "url",
    [
        pytest.param("/iip?FIF=a.tif&JTL=2,1", id="iip-jtl"),
        pytest.param("/fcgi-bin/iipsrv.fcgi?FIF=a.tif&QLT=60&JTL=2,3", id="iip-qlt-edge"),
        pytest.param("/iip?FIF=a.tif&WID=200&CVT=jpeg", id="iip-cvt-disposition"),
        pytest.param("/iiif/3/a.tif/0,0,512,512/256,/0/default.jpg", id="iiif3-tile"),
        pytest.param("/iiif/2/a.tif/full/100,/0/gray.png", id="iiif2-png"),
        pytest.param("/iiif/3/a.tif/info.json", id="iiif-info"),
        pytest.param("/deepzoom/a.tif_files/10/1_1.jpg", id="deepzoom"),
        pytest.param("/zoomify/a.tif/TileGroup0/2-1-1.jpg", id="zoomify"),
    ],
)
async def test_repeat_is_replayed_exactly(app: Starlette, client: httpx.AsyncClient, url: str) -> None:
    first = await client.get(url)
    assert first.status_code == 200 and replayed(app) == 0
    second = await client.get(url)
    assert replayed(app) == 1
    assert second.status_code == 200 and second.content == first.content
    assert without_date(second) == without_date(first)
    image = not url.endswith(".json")
    assert ("server-timing" in first.headers) is image and second.headers.get("server-timing") == (
        "replay" if image else None)


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({"If-None-Match": "*"}, id="conditional"),
        pytest.param({"Range": "bytes=0-10"}, id="range"),
        pytest.param({"Origin": "http://viewer.example"}, id="cors"),
    ],
)
async def test_requests_the_full_stack_must_answer(app: Starlette, client: httpx.AsyncClient,
                                                   headers: dict[str, str]) -> None:
    url = "/iip?FIF=a.tif&JTL=1,0"
    plain = await client.get(url)
    r = await client.get(url, headers=headers)
    assert replayed(app) == 0
    if "If-None-Match" in headers:
        assert r.status_code == 304
    if "Origin" in headers:
        assert r.headers["access-control-allow-origin"] == "*"
    if "Range" in headers:
        assert r.status_code == 200 and r.content == plain.content
    head = await client.head(url)
    assert head.status_code == 200 and head.content == b"" and replayed(app) == 0


async def test_host_and_accept_are_part_of_the_key(app: Starlette, client: httpx.AsyncClient) -> None:
    url = "/iiif/3/a.tif/0,0,256,256/256,/0/default.jpg"
    one = await client.get(url, headers={"Host": "one.example"})
    two = await client.get(url, headers={"Host": "two.example"})
    assert "//one.example/" in one.headers["link"] and "//two.example/" in two.headers["link"]
    info = await client.get("/iiif/3/a.tif/info.json", headers={"Accept": "application/ld+json"})
    plain = await client.get("/iiif/3/a.tif/info.json", headers={"Accept": "application/json"})
    assert info.headers["content-type"].startswith("application/ld+json")
    assert plain.headers["content-type"].startswith("application/json")
    assert replayed(app) == 0


async def test_changed_or_deleted_file_is_never_replayed(app: Starlette, client: httpx.AsyncClient,
                                                         tmp_path: Path, image_root: Path) -> None:
    url = "/iip?FIF=a.tif&WID=1000&CVT=jpeg"
    before = await client.get(url)
    mtime = (tmp_path / "a.tif").stat().st_mtime
    shutil.copy(image_root / RGB_1000, tmp_path / "a.tif")
    os.utime(tmp_path / "a.tif", (mtime + 10, mtime + 10))
    after = await client.get(url)
    assert replayed(app) == 0
    assert after.headers["etag"] != before.headers["etag"]
    assert decode(before.content).height == 699 and decode(after.content).height == 700  # 1003x701, then 1000x700
    (tmp_path / "a.tif").unlink()
    gone = await client.get(url)
    assert gone.status_code == 404 and replayed(app) == 0


async def test_evicted_tiles_are_rendered_again(tmp_path: Path, image_root: Path) -> None:
    shutil.copy(image_root / RGB_TIF, tmp_path / "a.tif")
    app = create_app(Settings(root=tmp_path, tile_cache_mb=0))
    async with app.router.lifespan_context(app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        first = await client.get("/iip?FIF=a.tif&JTL=2,0")
        second = await client.get("/iip?FIF=a.tif&JTL=2,0")
        assert second.content == first.content and replayed(app) == 0


def test_key_covers_what_an_answer_depends_on() -> None:
    def scope(**over: object) -> dict[str, object]:
        base: dict[str, object] = {"type": "http", "method": "GET", "scheme": "http", "root_path": "",
                                   "path": "/iip", "raw_path": b"/iip", "query_string": b"FIF=a.tif&JTL=0,0",
                                   "headers": [(b"host", b"h"), (b"user-agent", b"x")]}
        return {**base, **over}

    key = replay_key(scope())
    assert key is not None
    assert replay_key(scope(headers=[(b"user-agent", b"y"), (b"host", b"h")])) == key  # other headers: same key
    for changed in (scope(scheme="https"), scope(root_path="/tiles"), scope(query_string=b"FIF=a.tif&JTL=0,1"),
                    scope(headers=[(b"host", b"other")]), scope(headers=[(b"host", b"h"), (b"x-forwarded-host", b"p")]),
                    scope(raw_path=b"/fcgi-bin/iipsrv.fcgi")):
        assert replay_key(changed) not in (None, key)
    for refused in (scope(method="HEAD"), scope(method="POST"), scope(type="websocket"),
                    scope(headers=[(b"if-modified-since", b"x")]), scope(headers=[(b"origin", b"o")])):
        assert replay_key(refused) is None


@pytest.mark.parametrize("url", ["/iip?FIF=a.tif&JTL=2,1", "/iiif/3/a.tif/0,0,512,512/256,/0/default.jpg"],
                         ids=["iip", "iiif"])
async def test_a_stored_tile_let_go_by_the_tile_cache_is_still_replayed(app: Starlette, client: httpx.AsyncClient,
                                                                        url: str) -> None:
    """A working set larger than the tile cache: the stored tile is read again from where it is (core `_cached`)."""
    first = await client.get(url)
    app.state.service.tiles.clear()
    again = await client.get(url)
    assert replayed(app) == 1 and again.content == first.content and without_date(again) == without_date(first)
