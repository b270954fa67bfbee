"""Two replicas (in-process apps, each with its own TileService) sharing one real Redis or memcached
(tests/cache_servers.py): what one renders or reads the other serves from the shared cache without opening the
file, a purge through one is seen by the other within the generation TTL, a dead or hung cache costs no failed
request and (past the first call) no time, and concurrent misses across replicas decode a tile once."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from tileserver.app import create_app
from tileserver.core import TileService
from tileserver.models import Rendered, TileRequest
from tileserver.settings import Settings

from .cache_servers import CacheServer, cache_server
from .conftest import RGB_TIF, decode

TOKEN = "test-token-0123456789abcdef"
GEN_TTL = 0.2
TILE_URL = f"/iiif/3/{RGB_TIF}/0,0,512,512/256,/0/default.png"


@pytest.fixture(scope="module", params=["redis", "memcached"])
def server(request: pytest.FixtureRequest) -> Iterator[CacheServer]:
    with cache_server(request.param) as s:
        yield s


@pytest.fixture
def shared(server: CacheServer) -> CacheServer:
    if server.proc is None:
        server.start()
    server.flush()
    return server


def settings_for(root: Path, server: CacheServer, **changes: Any) -> Settings:
    options: dict[str, Any] = {"root": root, "cache_url": server.url, "cache_api_token": TOKEN,
                               "cache_generation_ttl": GEN_TTL, "cache_breaker_seconds": 0.5,
                               "cache_timeout": 0.5, "cache_lease_ms": 1500, **changes}
    return Settings(**options)


class Replica:
    """An app, a client for it, and spies on its service: files opened, images rendered."""

    def __init__(self, app: Starlette, client: httpx.AsyncClient) -> None:
        self.app, self.client = app, client
        self.service: TileService = app.state.service
        self.opened: list[str] = []
        self.rendered: list[TileRequest] = []
        real_open, real_render = self.service.formats.open, self.service._render_here

        def opening(path: str, ident: str) -> Any:
            self.opened.append(ident)
            return real_open(path, ident)

        async def rendering(entry: Any, req: TileRequest, key: Any, background: bool = False) -> Rendered:
            self.rendered.append(req)
            await asyncio.sleep(self.render_delay)
            return await real_render(entry, req, key, background)

        self.render_delay = 0.0
        self.service.formats.open = opening  # type: ignore[method-assign]
        self.service._render_here = rendering  # type: ignore[method-assign]

    async def settle(self) -> None:
        """Wait for the background writes to the shared cache."""
        assert self.service.shared is not None
        await self.service.shared.drain()


@asynccontextmanager
async def replica(settings: Settings) -> AsyncIterator[Replica]:
    app = create_app(settings)
    app.state.service.start()
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            yield Replica(app, client)
    finally:
        await app.state.service.aclose()
        app.state.service.stop()


@asynccontextmanager
async def two(image_root: Path, server: CacheServer, **changes: Any) -> AsyncIterator[tuple[Replica, Replica]]:
    async with replica(settings_for(image_root, server, **changes)) as a, \
            replica(settings_for(image_root, server, **changes)) as b:
        yield a, b


AUTH = {"Authorization": f"Bearer {TOKEN}"}


async def test_a_tile_rendered_by_one_replica_is_served_by_the_other(image_root: Path, shared: CacheServer) -> None:
    async with two(image_root, shared) as (a, b):
        first = await a.client.get(TILE_URL)
        assert first.status_code == 200 and len(a.rendered) == 1 and a.opened == [RGB_TIF]
        await a.settle()
        second = await b.client.get(TILE_URL)
        assert second.status_code == 200
        assert second.content == first.content and decode(second.content).width == 256
        assert b.rendered == [] and b.opened == []  # counted: no render and no file opened on B
        assert second.headers["server-timing"] == "cache;desc=shared"
        assert second.headers["etag"] == first.headers["etag"]  # the same validators on every replica
        stats = b.service.shared.stats() if b.service.shared else {}
        assert (stats["tile_hits"], stats["metadata_hits"]) == (1, 1)
        health = (await b.client.get("/health")).json()["shared_cache"]
        assert (health["tile_hits"], health["backend"], health["available"]) == (1, shared.kind, True)
        scraped = (await b.client.get("/metrics")).text
        assert 'tileserver_cache_hits_total{cache="shared_tile"}' in scraped
        third = await b.client.get(TILE_URL)  # now from B's own memory (replayed)
        assert third.content == first.content and b.service.shared.stats()["tile_hits"] == 1  # type: ignore[union-attr]


@pytest.mark.parametrize("path", [f"/iiif/3/{RGB_TIF}/info.json", f"/deepzoom/{RGB_TIF}.dzi",
                                  f"/zoomify/{RGB_TIF}/ImageProperties.xml",
                                  f"/iip?FIF={RGB_TIF}&OBJ=IIP,1.0&OBJ=Max-size&OBJ=Resolution-number"],
                         ids=["iiif", "deepzoom", "zoomify", "iip-obj"])
async def test_info_documents_come_from_shared_metadata_without_opening_the_file(
        image_root: Path, shared: CacheServer, path: str) -> None:
    async with two(image_root, shared) as (a, b):
        first = await a.client.get(path)
        await a.settle()
        second = await b.client.get(path)
        assert first.status_code == second.status_code == 200
        assert second.content == first.content and second.headers["etag"] == first.headers["etag"]
        assert a.opened == [RGB_TIF] and b.opened == []


async def test_a_tile_of_an_image_known_from_shared_metadata_opens_the_file_once(
        image_root: Path, shared: CacheServer) -> None:
    async with two(image_root, shared) as (a, b):
        assert (await a.client.get(f"/iiif/3/{RGB_TIF}/info.json")).status_code == 200
        await a.settle()
        tiles = [f"/iiif/3/{RGB_TIF}/{x},0,256,256/256,/0/default.png" for x in (0, 256, 512)]
        answers = await asyncio.gather(*(b.client.get(url) for url in tiles))
        assert [r.status_code for r in answers] == [200, 200, 200]
        assert b.opened == [RGB_TIF], b.opened
        assert len(b.rendered) == 3, b.rendered  # rendered on B, the file opened there once
        assert [decode(r.content).width for r in answers] == [256, 256, 256]


async def wait_until(check: Callable[[], Any], timeout: float) -> float:
    """Seconds until `await check()` is true; fails after `timeout`."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if await check():
            return time.monotonic() - start
        await asyncio.sleep(0.02)
    raise AssertionError(f"not seen within {timeout} s")


@pytest.mark.parametrize("everything", [False, True], ids=["image", "all"])
async def test_a_purge_through_one_replica_is_seen_by_the_other(image_root: Path, shared: CacheServer,
                                                                everything: bool) -> None:
    async with two(image_root, shared) as (a, b):
        await a.client.get(TILE_URL)
        await a.settle()
        assert (await b.client.get(TILE_URL)).headers["server-timing"] == "cache;desc=shared"
        assert (await b.client.get(TILE_URL)).headers["server-timing"] == "replay"
        purged = await a.client.delete("/cache" if everything else f"/cache/{RGB_TIF}", headers=AUTH)
        assert purged.status_code == 200 and purged.json()["cluster"] is True
        renders = len(b.rendered)

        async def fresh_on_b() -> bool:
            r = await b.client.get(TILE_URL)
            return r.status_code == 200 and "cache" not in r.headers["server-timing"] and \
                r.headers["server-timing"] != "replay"

        seen = await wait_until(fresh_on_b, 5 * GEN_TTL + 2)
        assert seen < GEN_TTL + 1.0  # the bound: the generation TTL (plus a loaded machine's slack)
        assert len(b.rendered) == renders + 1 and b.opened == [RGB_TIF]  # B re-read the file and rendered anew
        again = await a.client.get(TILE_URL)  # A purged itself at once: its answer is not its old cached one
        assert again.headers["server-timing"] in ("cache;desc=shared", "replay") or "decode" in \
            again.headers["server-timing"]
        assert again.headers["surrogate-key"] == again.headers["cache-tag"] == purged.json().get(
            "surrogate_key", again.headers["surrogate-key"])


async def test_a_purge_forgets_this_replica_at_once(image_root: Path, shared: CacheServer) -> None:
    async with two(image_root, shared) as (a, _b):
        await a.client.get(TILE_URL)
        assert (await a.client.get(TILE_URL)).headers["server-timing"] == "replay"
        assert (await a.client.delete(f"/cache/{RGB_TIF}", headers=AUTH)).status_code == 200
        after = await a.client.get(TILE_URL)
        assert after.status_code == 200 and after.headers["server-timing"] not in ("replay", "cache;desc=local")
        assert len(a.rendered) == 2 and a.opened == [RGB_TIF, RGB_TIF]


@pytest.mark.parametrize(("change", "shares"), [
    pytest.param({"jpeg_quality": 40}, False, id="another-jpeg-quality"),
    pytest.param({"interpolation": "nearest"}, False, id="another-kernel"),
    pytest.param({"port": 9999, "threads": 3}, True, id="only-process-settings"),  # and another derive_dir
    pytest.param({"derive_dir": None}, False, id="no-derivation"),
])
async def test_replicas_share_entries_only_when_their_output_settings_agree(
        image_root: Path, shared: CacheServer, change: dict[str, Any], shares: bool) -> None:
    url = f"/iiif/3/{RGB_TIF}/0,0,600,600/300,/0/default.jpg"
    async with replica(settings_for(image_root, shared, derive_dir=image_root.parent / "derived-a")) as a, \
            replica(settings_for(image_root, shared, **{"derive_dir": image_root.parent / "derived-b", **change})) as b:
        await a.client.get(url)
        await a.settle()
        answer = await b.client.get(url)
        assert answer.status_code == 200
        assert (answer.headers["server-timing"] == "cache;desc=shared") is shares
        assert (b.rendered == []) is shares


async def test_concurrent_misses_across_replicas_decode_once(image_root: Path, shared: CacheServer) -> None:
    async with two(image_root, shared) as (a, b):
        for r in (a, b):
            await r.client.get(f"/iiif/3/{RGB_TIF}/info.json")  # metadata loaded on both first
            r.render_delay = 0.3  # the decode takes long enough for every miss to overlap it
        answers = await asyncio.gather(*(r.client.get(TILE_URL) for _ in range(6) for r in (a, b)))
        assert all(r.status_code == 200 for r in answers)
        assert len({r.content for r in answers}) == 1
        assert len(a.rendered) + len(b.rendered) == 1  # once for the cluster
        waiter = b if a.rendered else a
        stats = waiter.service.shared.stats()  # type: ignore[union-attr]
        assert stats["lease_waits"] == 1 and stats["lease_served"] == 1  # 6 misses, one flight, one wait


async def test_a_lease_that_is_never_fulfilled_runs_out(image_root: Path, shared: CacheServer) -> None:
    async with two(image_root, shared, cache_lease_ms=600) as (a, b):
        await a.client.get(f"/iiif/3/{RGB_TIF}/info.json")
        await a.settle()
        assert a.service.shared is not None and b.service.shared is not None
        a.render_delay = 5.0  # A takes the lease and hangs (a replica that died mid-render)
        start = time.monotonic()
        stuck = asyncio.ensure_future(a.client.get(TILE_URL))
        while not a.rendered:  # A holds the lease once it renders
            assert time.monotonic() - start < 5.0
            await asyncio.sleep(0.01)
        answer = await b.client.get(TILE_URL)
        waited = time.monotonic() - start
        assert answer.status_code == 200 and len(b.rendered) == 1
        # the lease (600 ms) was taken after A asked, so it cannot have run out sooner; then B rendered itself
        assert 0.6 <= waited < 3.6
        assert b.service.shared.stats()["lease_expired"] == 1
        stuck.cancel()


async def test_a_dead_shared_cache_fails_no_request_and_costs_no_time(image_root: Path, shared: CacheServer) -> None:
    async with two(image_root, shared, cache_timeout=0.3, cache_breaker_seconds=30) as (a, _b):
        assert (await a.client.get(f"/iiif/3/{RGB_TIF}/info.json")).status_code == 200
        await a.settle()
        shared.pause()  # hung: every call would wait for its timeout
        try:
            start = time.monotonic()
            urls = [f"/iiif/3/{RGB_TIF}/{x},{y},128,128/128,/0/default.png" for x in (0, 128, 256, 384)
                    for y in (0, 128, 256)]
            answers = [await a.client.get(url) for url in urls]
            elapsed = time.monotonic() - start
        finally:
            shared.resume()
        assert [r.status_code for r in answers] == [200] * len(urls)
        stats = a.service.shared.stats()  # type: ignore[union-attr]
        assert stats["errors"] == 1 and stats["skipped"] >= len(urls)  # one timeout, then not asked at all
        assert elapsed < 0.3 * 3 + 0.1 * len(urls)  # the timeout paid once, not per request
        assert not stats["available"]


async def test_a_stopped_shared_cache_is_used_again_when_it_is_back(image_root: Path, shared: CacheServer) -> None:
    async with two(image_root, shared, cache_breaker_seconds=0.3) as (a, b):
        await a.client.get(f"/iiif/3/{RGB_TIF}/info.json")
        shared.stop()
        try:
            answers = [await a.client.get(f"/iiif/3/{RGB_TIF}/{x},0,128,128/128,/0/default.png") for x in (0, 128)]
            assert [r.status_code for r in answers] == [200, 200]
            assert a.service.shared is not None and a.service.shared.stats()["errors"] >= 1
        finally:
            shared.start()
        await asyncio.sleep(0.4)  # the breaker's pause
        await a.client.get(TILE_URL)
        await a.settle()
        assert (await b.client.get(TILE_URL)).headers["server-timing"] == "cache;desc=shared"


async def test_a_purge_the_shared_cache_does_not_take_is_a_503_and_purges_this_replica(
        image_root: Path, shared: CacheServer) -> None:
    async with two(image_root, shared) as (a, _b):
        await a.client.get(TILE_URL)
        shared.stop()
        try:
            r = await a.client.delete(f"/cache/{RGB_TIF}", headers=AUTH)
            assert r.status_code == 503 and r.json()["cluster"] is False and int(r.headers["retry-after"]) >= 1
            after = await a.client.get(TILE_URL)
            assert after.status_code == 200 and "decode" in after.headers["server-timing"]  # read and made again
        finally:
            shared.start()


async def test_entries_larger_than_the_limit_are_not_stored(image_root: Path, shared: CacheServer) -> None:
    async with two(image_root, shared, cache_max_entry_bytes=2048) as (a, b):
        url = f"/iiif/3/{RGB_TIF}/full/600,/0/default.png"  # far larger than 2 KB
        await a.client.get(url)
        await a.settle()
        assert (await b.client.get(url)).status_code == 200 and len(b.rendered) == 1
        assert a.service.shared is not None and a.service.shared.stats()["dropped"] >= 1


async def test_warmed_tiles_are_served_from_the_shared_cache(image_root: Path, shared: CacheServer) -> None:
    async with two(image_root, shared) as (a, b):
        started = await a.client.post(f"/cache/{RGB_TIF}/warm", headers=AUTH,
                                      json={"protocols": ["deepzoom", "iiif"], "levels": [1, 2]})
        assert started.status_code == 202, started.text
        total = started.json()["total"]
        assert total > 0 and started.headers["location"] == f"/cache/{RGB_TIF}/warm"

        async def finished() -> bool:
            r = await b.client.get(f"/cache/{RGB_TIF}/warm", headers=AUTH)  # read on the other replica
            return r.status_code == 200 and r.json()["state"] == "done"

        await wait_until(finished, 30)
        progress = (await a.client.get(f"/cache/{RGB_TIF}/warm", headers=AUTH)).json()
        assert (progress["done"], progress["errors"]) == (total, 0)
        await a.settle()
        # DeepZoom level 9 of 1003x701 (max 10) is level 1 here: 502x351, two 256-px columns and rows
        dz = await b.client.get(f"/deepzoom/{RGB_TIF}_files/9/1_1.jpg")
        assert dz.status_code == 200 and dz.headers["server-timing"] == "cache;desc=shared"
        assert b.rendered == [] and decode(dz.content).width == 502 - 256


# -- images in S3: the other replica sends the store no GET at all ------------------------------------------------
@pytest.fixture(scope="module")
def s3_images(image_root: Path) -> Iterator[Any]:
    from .stores import moto_server

    with moto_server() as s3:
        s3.create_bucket("cluster")
        s3.put("cluster", f"set/{RGB_TIF}", image_root / RGB_TIF)
        yield s3


def s3_settings(s3: Any, endpoint: str, server: CacheServer | None) -> Settings:
    cache: dict[str, Any] = {} if server is None else {"cache_url": server.url, "cache_generation_ttl": GEN_TTL}
    return Settings(root_url="s3://cluster/set/", store_endpoint=endpoint, store_access_key_id=s3.access_key_id,
                    store_secret_access_key=s3.secret_access_key, store_region=s3.region, derive_dir=None,
                    **cache)


@pytest.mark.parametrize("with_cache", [True, False], ids=["shared", "alone"])
async def test_over_s3_the_other_replica_only_asks_for_the_version(s3_images: Any, shared: CacheServer,
                                                                   with_cache: bool) -> None:
    """B knows the image and its tile from the shared cache: one HEAD (its version), no GET of a directory or a
    tile. Alone (no shared cache) B reads both from the store: what the shared cache saves."""
    from tileserver.sources import vfs

    from .stores import StoreProxy

    server = shared if with_cache else None
    with StoreProxy(s3_images.endpoint) as proxy:
        async with replica(s3_settings(s3_images, s3_images.endpoint, server)) as a:
            first = await a.client.get(TILE_URL)
            info = await a.client.get(f"/iiif/3/{RGB_TIF}/info.json")
            assert first.status_code == info.status_code == 200
            if a.service.shared is not None:
                await a.settle()
            vfs._blocks.clear()  # what another process would not have: this process's store caches
            vfs._stats.clear()
            async with replica(s3_settings(s3_images, proxy.url, server)) as b:
                assert (await b.client.get(f"/iiif/3/{RGB_TIF}/info.json")).content == info.content
                tile = await b.client.get(TILE_URL)
                assert tile.content == first.content
    methods = [ex.method for ex in proxy.exchanges()]
    if with_cache:
        assert methods == ["HEAD"] and b.opened == [] and b.rendered == []
    else:
        assert methods.count("GET") >= 2 and b.opened == [RGB_TIF]


async def test_a_replica_with_the_file_open_reads_stored_tiles_from_it(image_root: Path, shared: CacheServer) -> None:
    """A stored tile passed through costs a read of the page cache (core `_stored_now`): a replica that has the
    file open reads it there rather than asking the shared cache, with the same body and validators."""
    tile, other = f"/iip?FIF={RGB_TIF}&JTL=2,0", f"/iip?FIF={RGB_TIF}&JTL=2,1"  # two stored tiles
    async with two(image_root, shared) as (a, b):
        first = await a.client.get(tile)
        await a.settle()
        assert (await b.client.get(other)).status_code == 200 and b.opened == [RGB_TIF]  # B opened the file
        second = await b.client.get(tile)
        assert second.headers["server-timing"].startswith("passthrough;dur=")
        assert second.content == first.content and second.headers["etag"] == first.headers["etag"]
        assert b.service.shared is not None and b.service.shared.stats()["tile_hits"] == 0
