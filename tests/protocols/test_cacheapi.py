"""The cache API (protocols/cacheapi.py) on one replica without a shared cache: the bearer token (401, 403,
and 404 when none is configured), bounded warm-up requests (400, 413, 409), warm-up progress and pixels, and
purges that make this replica read the file again. Across replicas: tests/test_core_shared.py."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tileserver.core import surrogate_key
from tileserver.models import TileRequest
from tileserver.protocols import warm
from tileserver.settings import Settings

from ..conftest import RGB_TIF, decode, served

TOKEN = "api-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
async def api(image_root: Path) -> AsyncIterator[httpx.AsyncClient]:
    async with served(Settings(root=image_root, cache_api_token=TOKEN, cache_warm_max_tiles=40)) as c:  # type: ignore[arg-type]
        yield c


ROUTES = [("DELETE", f"/cache/{RGB_TIF}", None), ("DELETE", "/cache", None),
          ("POST", f"/cache/{RGB_TIF}/warm", {"protocols": ["iip"], "levels": [2]}),
          ("GET", f"/cache/{RGB_TIF}/warm", None)]


@pytest.mark.parametrize(("method", "path", "body"), ROUTES, ids=["purge", "purge-all", "warm", "progress"])
@pytest.mark.parametrize(("headers", "status"), [
    pytest.param({}, 401, id="none"),
    pytest.param({"Authorization": TOKEN}, 401, id="no-scheme"),
    pytest.param({"Authorization": f"Basic {TOKEN}"}, 401, id="basic"),
    pytest.param({"Authorization": "Bearer "}, 401, id="empty"),
    pytest.param({"Authorization": "Bearer " + TOKEN[:-1]}, 403, id="short"),
    pytest.param({"Authorization": "Bearer " + TOKEN + "x"}, 403, id="long"),
    pytest.param({"Authorization": "Bearer tökén-0123456789abcdef".encode("latin-1")}, 403, id="not-ascii"),
])
async def test_the_api_wants_its_token(api: httpx.AsyncClient, method: str, path: str, body: Any,
                                       headers: dict[str, Any], status: int) -> None:
    r = await api.request(method, path, headers=headers, json=body)
    assert r.status_code == status and TOKEN not in r.text
    if status == 401:
        assert r.headers["www-authenticate"].startswith("Bearer")


@pytest.mark.parametrize(("method", "path", "body"), ROUTES, ids=["purge", "purge-all", "warm", "progress"])
async def test_without_a_token_the_api_is_not_there(client: httpx.AsyncClient, method: str, path: str,
                                                    body: Any) -> None:
    r = await client.request(method, path, headers=AUTH, json=body)
    assert r.status_code in (404, 405)


@pytest.mark.parametrize("body", [
    pytest.param(b"not json", id="not-json"),
    pytest.param(b"[]", id="a-list"),
    pytest.param(b'{"levels": [0], "extra": 1}', id="extra-key"),
    pytest.param(b'{"protocols": ["gopher"], "levels": [0]}', id="unknown-protocol"),
    pytest.param(b'{"protocols": [], "levels": [0]}', id="no-protocol"),
    pytest.param(b'{"protocols": ["iip"]}', id="no-levels"),
    pytest.param(b'{"protocols": ["iip"], "levels": [-1]}', id="negative-level"),
    pytest.param(b'{"protocols": ["iip"], "levels": [64]}', id="level-64"),
    pytest.param(b'{"protocols": ["iip"], "levels": [true]}', id="bool-level"),
    pytest.param(b'{"protocols": ["iip"], "levels": ' + str(list(range(33))).encode() + b"}", id="33-levels"),
])
async def test_malformed_warm_ups_are_400(api: httpx.AsyncClient, body: bytes) -> None:
    r = await api.post(f"/cache/{RGB_TIF}/warm", headers={**AUTH, "Content-Type": "application/json"}, content=body)
    assert r.status_code == 400, r.text


async def test_warm_ups_past_the_limit_are_413_and_unknown_images_404(api: httpx.AsyncClient) -> None:
    big = await api.post(f"/cache/{RGB_TIF}/warm", headers=AUTH,
                         json={"protocols": ["iip", "iiif", "deepzoom", "zoomify"], "levels": [0]})  # 4 x 12
    assert big.status_code == 413 and big.json()["total"] > 40
    missing = await api.post("/cache/nope.tif/warm", headers=AUTH, json={"protocols": ["iip"], "levels": [0]})
    assert missing.status_code == 404
    assert (await api.get("/cache/nope.tif/warm", headers=AUTH)).status_code == 404


async def test_a_warm_up_renders_every_tile_it_counts(api: httpx.AsyncClient) -> None:
    started = await api.post(f"/cache/{RGB_TIF}/warm", headers=AUTH,
                             json={"protocols": ["iip", "zoomify", "iiif"], "levels": [1, 2]})
    assert started.status_code == 202, started.text
    again = await api.post(f"/cache/{RGB_TIF}/warm", headers=AUTH, json={"protocols": ["iip"], "levels": [2]})
    assert again.status_code in (202, 409)  # 409 while the first one still runs
    for _ in range(300):
        progress = (await api.get(f"/cache/{RGB_TIF}/warm", headers=AUTH)).json()
        if progress["state"] == "done":
            break
        await asyncio.sleep(0.05)
    assert progress["state"] == "done" and progress["errors"] == 0 and progress["done"] == progress["total"] > 0
    tile = await api.get(f"/zoomify/{RGB_TIF}/TileGroup0/1-1-0.jpg")  # tier 1 of 3 is level 1: 502x351
    assert tile.status_code == 200 and tile.headers["server-timing"] == "cache;desc=local"
    assert (decode(tile.content).width, decode(tile.content).height) == (502 - 256, 256)


async def test_a_purge_makes_this_replica_read_the_image_again(api: httpx.AsyncClient) -> None:
    url = f"/iiif/3/{RGB_TIF}/0,0,256,256/128,/0/default.png"
    await api.get(url)
    assert (await api.get(url)).headers["server-timing"] == "replay"
    purged = await api.delete(f"/cache/{RGB_TIF}", headers=AUTH)
    assert purged.status_code == 200
    assert purged.json() == {"purged": RGB_TIF, "cluster": False, "surrogate_key": surrogate_key(RGB_TIF)}
    after = await api.get(url)
    assert after.status_code == 200 and "decode" in after.headers["server-timing"]
    assert after.headers["surrogate-key"] == purged.json()["surrogate_key"]
    assert (await api.delete("/cache", headers=AUTH)).json() == {"purged": "*", "cluster": False}
    assert "decode" in (await api.get(url)).headers["server-timing"]


@pytest.mark.parametrize("protocol", ["iip", "iiif", "deepzoom", "zoomify"])
@pytest.mark.parametrize("level", [0, 1, 2, 5, 12])
async def test_warm_counts_match_the_tiles_made(image_root: Path, protocol: str, level: int) -> None:
    from tileserver.core import TileService

    settings = Settings(root=image_root)
    service = TileService(settings)
    meta = await service.info(RGB_TIF)
    made: list[TileRequest] = warm.WARMERS[protocol](meta, level, settings, await service.output_formats())
    assert len(made) == warm.count(meta, protocol, level, settings) == len(set(made))
    service.stop()
