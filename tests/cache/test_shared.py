"""The shared cache tier on its own: entries framed and checked, the circuit breaker, bounded background writes,
generations that only ever purge, leases; against a scripted backend and against real Redis and memcached."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import replace

import pytest

from tileserver.cache import shared as sc
from tileserver.cache.backends import check_url, memcached_servers, redacted
from tileserver.models import Rendered

from ..cache_servers import CacheServer, cache_server
from .test_codec import META

TILE = Rendered(b"\xff\xd8 jpeg bytes \xff\xd9", "image/jpeg", 256, 200, source="decode")


class Scripted:
    """A backend in memory that can be told to fail or hang."""

    name = "scripted"

    def __init__(self) -> None:
        self.data: dict[bytes, bytes] = {}
        self.calls = 0
        self.mode = "ok"  # ok, fail, hang

    async def _act(self) -> None:
        self.calls += 1
        if self.mode == "fail":
            raise ConnectionError("refused")
        if self.mode == "hang":
            await asyncio.sleep(60)

    async def get_many(self, keys: list[bytes]) -> list[bytes | None]:
        await self._act()
        return [self.data.get(k) for k in keys]

    async def set(self, key: bytes, value: bytes, ttl: int) -> None:
        await self._act()
        self.data[key] = value

    async def add(self, key: bytes, value: bytes, ttl_ms: int) -> bool:
        await self._act()
        if key in self.data:
            return False
        self.data[key] = value
        return True

    async def delete(self, key: bytes) -> None:
        await self._act()
        self.data.pop(key, None)

    async def close(self) -> None:
        pass


def cache_of(backend: object, **changes: object) -> sc.SharedCache:
    options: dict[str, object] = {"timeout": 0.1, "pause": 0.3, "ttl": 60, "max_entry": 1 << 20, "lease_ms": 300,
                                  **changes}
    return sc.SharedCache(backend, **options)  # type: ignore[arg-type]


def test_keys_are_bounded_and_stable() -> None:
    key = sc.entry_key("t", "x" * 10_000, "y")
    assert key.startswith(b"tsc:t:") and len(key) == len("tsc:t:") + 32
    assert key == sc.entry_key("t", "x" * 10_000, "y") != sc.entry_key("t", "x" * 10_000, "z")
    assert sc.lease_key(key) == b"tsc:l:" + key[6:]


@pytest.mark.parametrize(("pack", "unpack"), [
    (lambda k: sc.pack_tile(k, TILE), lambda k, d: sc.unpack_tile(k, d)),
    (lambda k: sc.pack_meta(k, META), lambda k, d: sc.unpack_meta(k, d)),
], ids=["tile", "meta"])
def test_entries_round_trip_and_are_bound_to_their_key(pack, unpack) -> None:  # type: ignore[no-untyped-def]
    key, other = sc.entry_key("t", "a"), sc.entry_key("t", "b")
    data = pack(key)
    back = unpack(key, data)
    assert back == (sc.unpack_tile(key, data) if isinstance(back, Rendered) else META)
    with pytest.raises(ValueError, match="another key"):
        unpack(other, data)  # an entry copied under another key (a collision, or tampering)
    for broken in (b"", data[:8], b"TSC1x" + data[5:], data[:5] + b"\xff\xff\xff\xff" + data[9:], b"\x80\x04" + data):
        with pytest.raises(ValueError):
            unpack(key, broken)


@pytest.mark.parametrize("changes", [
    pytest.param({"levels": ()}, id="no-levels"),
    pytest.param({"width": 2000}, id="full-level-another-size"),
    pytest.param({"bands": 0}, id="no-bands"),
    pytest.param({"levels": (META.levels[0], replace(META.levels[1], tile_width=0))}, id="zero-tile"),
    pytest.param({"levels": (META.levels[1], META.levels[0])}, id="growing-levels"),
])
def test_metadata_not_shaped_as_an_image_is_refused(changes: dict[str, object]) -> None:
    key = sc.entry_key("m", "a")
    with pytest.raises(ValueError):
        sc.unpack_meta(key, sc.pack_meta(key, replace(META, **changes)))  # type: ignore[arg-type]


def test_a_tile_entry_gives_the_body_and_a_known_media_type_only() -> None:
    key = sc.entry_key("t", "a")
    out = sc.unpack_tile(key, sc.pack_tile(key, TILE))
    assert out is not None and (out.body, out.media_type, out.width, out.height) == (TILE.body, "image/jpeg", 256, 200)
    assert (out.source, out.timing, out.etag) == ("shared", "cache;desc=shared", "")
    forged = sc.pack(sc.TILE, key, {"media_type": "text/html\r\nSet-Cookie: x", "width": 1, "height": 1}, b"x")
    with pytest.raises(ValueError, match="not a tile"):
        sc.unpack_tile(key, forged)


async def test_a_failure_opens_the_breaker_and_no_call_is_made_while_it_is_open() -> None:
    backend = Scripted()
    cache = cache_of(backend)
    backend.mode = "fail"
    assert await cache.tile(sc.entry_key("t", "a")) is None
    assert backend.calls == 1 and not cache.available
    for _ in range(50):
        assert await cache.meta(sc.entry_key("m", "a")) is None
    assert backend.calls == 1 and cache.counters.skipped == 50 and cache.counters.errors == 1
    backend.mode = "ok"
    await asyncio.sleep(0.35)
    assert cache.available and await cache.tile(sc.entry_key("t", "a")) is None and backend.calls == 2


async def test_a_hung_backend_costs_one_timeout() -> None:
    backend = Scripted()
    backend.mode = "hang"
    cache = cache_of(backend, timeout=0.1, pause=30)
    start = time.monotonic()
    for _ in range(20):
        assert await cache.tile(sc.entry_key("t", "a")) is None
    assert time.monotonic() - start < 0.1 * 3  # one timeout, then the breaker: not twenty
    assert cache.counters.errors == 1 and cache.counters.skipped == 19


async def test_writes_are_bounded_in_size_and_in_number() -> None:
    backend = Scripted()
    cache = cache_of(backend, max_entry=200)
    cache.put_tile(sc.entry_key("t", "small"), TILE)
    cache.put_tile(sc.entry_key("t", "big"), Rendered(b"x" * 500, "image/jpeg", 1, 1))
    backend.mode = "hang"
    for i in range(sc.MAX_PENDING + 10):
        cache.put_tile(sc.entry_key("t", str(i)), TILE)
    assert cache.counters.dropped >= 11 and len(cache._pending) == sc.MAX_PENDING
    backend.mode = "ok"
    await cache.close()
    assert sc.entry_key("t", "small") in backend.data and sc.entry_key("t", "big") not in backend.data


async def test_corrupt_entries_are_misses() -> None:
    backend = Scripted()
    cache = cache_of(backend)
    key = sc.entry_key("m", "a")
    backend.data[key] = sc.MAGIC + sc.META + (5).to_bytes(4, "big") + b'{"ke'
    assert await cache.meta(key) is None and cache.counters.corrupt == 1 and cache.available


async def test_generations_are_made_once_and_a_lost_one_is_never_brought_back() -> None:
    backend = Scripted()
    cache = cache_of(backend)
    first = await cache.generation("a.tif")
    assert first is not None and first == await cache.generation("a.tif")
    assert await cache.bump("a.tif") and (after := await cache.generation("a.tif")) != first
    assert after is not None and after.split("/")[0] == first.split("/")[0]  # the global part stays
    assert await cache.bump(None) and (everything := await cache.generation("b.tif")) is not None
    assert everything.split("/")[0] != first.split("/")[0]
    backend.data.clear()  # evicted (memcached) or flushed: a new random token, never the old one back
    assert await cache.generation("a.tif") not in (first, after, None)
    backend.mode = "fail"
    assert await cache.generation("a.tif") is None


async def test_a_render_waits_for_the_lease_holder_and_takes_its_result() -> None:
    backend = Scripted()
    holder, waiter = cache_of(backend), cache_of(backend)
    key = sc.entry_key("t", "lease")
    release = asyncio.Event()
    renders = []

    async def slow() -> Rendered:
        renders.append("holder")
        await release.wait()
        return TILE

    async def never() -> Rendered:
        renders.append("waiter")
        return TILE

    first = asyncio.ensure_future(holder.tile_or_render(key, slow))
    await asyncio.sleep(0.02)
    second = asyncio.ensure_future(waiter.tile_or_render(key, never))
    await asyncio.sleep(0.05)
    release.set()
    (out1, shared1), (out2, shared2) = await first, await second
    assert out1 is TILE
    assert renders == ["holder"] and (shared1, shared2) == (False, True)
    assert out2.body == TILE.body and waiter.counters.lease_served == 1
    await holder.drain()
    assert sc.lease_key(key) not in backend.data  # released after the entry was written


async def test_a_lease_won_after_the_holder_stored_the_tile_renders_nothing() -> None:
    """A replica misses, the holder stores the tile and releases its lease, then this replica takes the lease
    (the three replicas of tests/test_cluster.py met this): it finds the tile, renders nothing, lets go."""
    key = sc.entry_key("t", "late")

    class Late(Scripted):
        async def add(self, k: bytes, value: bytes, ttl_ms: int) -> bool:
            self.data[key] = sc.pack_tile(key, TILE)  # the holder's write landed just before this lease
            return await super().add(k, value, ttl_ms)

    backend = Late()
    cache = cache_of(backend)
    renders = []

    async def render() -> Rendered:
        renders.append("here")
        return TILE

    out, from_shared = await cache.tile_or_render(key, render)
    assert renders == [] and from_shared and out.body == TILE.body
    await cache.drain()
    assert sc.lease_key(key) not in backend.data


async def test_a_failed_render_tells_the_waiters_at_once() -> None:
    backend = Scripted()
    holder, waiter = cache_of(backend, lease_ms=5000), cache_of(backend, lease_ms=5000)
    key = sc.entry_key("t", "fails")

    async def failing() -> Rendered:
        await asyncio.sleep(0.05)
        raise RuntimeError("decode failed")

    async def fine() -> Rendered:
        return TILE

    first = asyncio.ensure_future(holder.tile_or_render(key, failing))
    await asyncio.sleep(0.01)
    start = time.monotonic()
    second = asyncio.ensure_future(waiter.tile_or_render(key, fine))
    with pytest.raises(RuntimeError):
        await first
    out, from_shared = await second
    assert out is TILE
    assert not from_shared and time.monotonic() - start < 2.0  # the NONE marker, not the 5-s lease


@pytest.mark.parametrize(("url", "servers"), [
    ("memcached://a:11211,b", [("a", 11211), ("b", 11211)]),
    ("memcached://[::1]:11300", [("::1", 11300)]),
    ("memcached://host:11211 2, other:1", [("host", 11211), ("other", 1)]),  # libmemcached's weights ignored
])
def test_memcached_server_lists(url: str, servers: list[tuple[str, int]]) -> None:
    assert memcached_servers(url) == servers


@pytest.mark.parametrize("url", ["memcached://a:99999", "memcached://a:b", "memcached://", "redis://x/db",
                                 "redis://:6379/0", "http://x"])
def test_bad_cache_urls(url: str) -> None:
    with pytest.raises(ValueError):
        check_url(url)


def test_passwords_are_not_shown() -> None:
    assert redacted("redis://:s3cret@cache:6379/1") == "redis://:***@cache:6379/1"
    assert redacted("redis://user:s3cret@cache/0") == "redis://user:***@cache/0"
    assert redacted("memcached://a:1,b:2") == "memcached://a:1,b:2"


# -- against the real servers ----------------------------------------------------------------------------
@pytest.fixture(scope="module", params=["redis", "memcached"])
def server(request: pytest.FixtureRequest) -> Iterator[CacheServer]:
    with cache_server(request.param) as s:
        yield s


async def test_a_real_server_keeps_entries_generations_and_leases(server: CacheServer) -> None:
    server.flush()
    cache = sc.SharedCache.from_url(server.url, timeout=0.5, pause=1.0, ttl=60, max_entry=1 << 20, lease_ms=1000)
    try:
        key = sc.entry_key("t", server.kind)
        assert await cache.tile(key) is None
        cache.put_tile(key, TILE)
        cache.put_meta(sc.entry_key("m", server.kind), META)
        await cache.drain()
        found = await cache.tile(key)
        assert isinstance(found, Rendered) and found.body == TILE.body
        assert await cache.meta(sc.entry_key("m", server.kind)) == META
        assert await cache.lease(key) is True and await cache.lease(key) is False
        gen = await cache.generation("a.tif")
        server.flush()
        assert await cache.generation("a.tif") not in (gen, None)
        assert cache.counters.errors == 0
    finally:
        await cache.close()
