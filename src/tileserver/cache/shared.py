"""The shared second-level cache: one Redis or memcached (cache/backends.py) that every replica of a cluster
reads and writes behind its own in-process caches (the core owns the order: memory -> shared -> render).

- **Never in the way.** Every call is bounded by `cache_timeout`; a failure or a timeout is a miss, and it
  opens a circuit breaker: for `cache_breaker_seconds` no call is made at all (a dead Redis costs nothing per
  request), then the next call tries again. Writes go in the background (at most `MAX_PENDING` at once; more
  are dropped), so a request never waits for one.
- **Entries are data, not objects.** No pickle: an entry is `MAGIC`, a kind byte, a JSON header (which
  repeats the entry's key, checked on the way back) and the body bytes; image metadata is JSON
  (cache/codec.py). Anything that does not parse is a miss and an error in the counters.
- **Keys** are short and bounded: `tsc:<kind>:<32 hex>` hashes of what the entry depends on (the core gives the
  image's version, generation and the request). Entries larger than `cache_max_entry_bytes` are not stored.
- **Generations** (`generation`, `bump`): a random token per image name and one for everything, kept in the
  shared cache without expiry; they are part of every entry key, so a purge is one write and every replica
  stops seeing the old entries when it next reads the token (the core re-reads it every
  `cache_generation_ttl` seconds). A token that is missing (never set, or evicted by memcached) is replaced by
  a new random one: a lost token can only purge, never bring old entries back.
- **Leases** (`lease`, `release`): SET NX PX / memcached add, for single flight across the cluster.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import json
import logging
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from ..models import ImageMeta, OutputFormat, Rendered
from . import codec
from .backends import Backend, connect

log = logging.getLogger("tileserver.cache")
T = TypeVar("T")
MAGIC = b"TSC1"
TILE, META, NONE, JSON = b"t", b"m", b"n", b"j"  # entry kinds; NONE: "no entry will come, render it yourself"
GLOBAL = b"tsc:g"
TOKEN = re.compile(rb"[0-9a-f]{1,64}")
MEDIA_TYPES = frozenset(f.media_type for f in OutputFormat)
MAX_PENDING = 256  # background writes in flight per process
MAX_HEADER = 64 * 1024
POLL = (0.005, 0.01, 0.02, 0.04, 0.05)  # seconds between the polls of a lease's waiter, the last repeated


def digest(*parts: str | bytes) -> str:
    """32 hex characters naming `parts` (blake2b-128): the same in every process."""
    h = hashlib.blake2b(digest_size=16)
    for p in parts:
        h.update(p.encode() if isinstance(p, str) else p)
        h.update(b"\x00")
    return h.hexdigest()


def entry_key(kind: str, *parts: str) -> bytes:
    return f"tsc:{kind}:{digest(*parts)}".encode()


def generation_key(name: str) -> bytes:
    return entry_key("g", name)


def lease_key(key: bytes) -> bytes:
    return b"tsc:l:" + key.rpartition(b":")[2]


# -- entries --------------------------------------------------------------------------------------------
def pack(kind: bytes, key: bytes, header: dict[str, Any], body: bytes = b"") -> bytes:
    head = json.dumps({**header, "key": key.decode()}, separators=(",", ":")).encode()
    return MAGIC + kind + len(head).to_bytes(4, "big") + head + body


def unpack(kind: bytes, key: bytes, data: bytes) -> tuple[dict[str, Any], bytes]:
    """The header and body of an entry of `kind` stored under `key`; ValueError for anything else."""
    if data[:4] != MAGIC or data[4:5] != kind:
        raise ValueError("not an entry of this kind")
    size = int.from_bytes(data[5:9], "big")
    if not 0 < size <= min(MAX_HEADER, len(data) - 9):
        raise ValueError("bad header length")
    header = json.loads(data[9:9 + size])
    if not isinstance(header, dict) or header.pop("key", None) != key.decode():
        raise ValueError("the entry was stored under another key")
    return header, data[9 + size:]


def pack_tile(key: bytes, out: Rendered) -> bytes:
    return pack(TILE, key, {"media_type": out.media_type, "width": out.width, "height": out.height,
                            "made": out.source}, out.body)


def unpack_tile(key: bytes, data: bytes) -> Rendered | None:
    """The tile of an entry (without its ETag, which the core computes); None for a NONE marker."""
    if data[4:5] == NONE:
        unpack(NONE, key, data)
        return None
    header, body = unpack(TILE, key, data)
    media_type, width, height = header.get("media_type"), header.get("width"), header.get("height")
    if media_type not in MEDIA_TYPES or not isinstance(width, int) or not isinstance(height, int) or not body:
        raise ValueError("not a tile entry")
    return Rendered(body, media_type, width, height, source="shared", timing="cache;desc=shared")


def pack_meta(key: bytes, meta: ImageMeta) -> bytes:
    return pack(META, key, {}, codec.dumps(meta))


def unpack_meta(key: bytes, data: bytes) -> ImageMeta:
    """The metadata of an entry, when it is shaped as a reader makes it (levels from full size down, each with
    a tile size), else ValueError: protocols compute grids from it before any file is opened."""
    _, body = unpack(META, key, data)
    meta = codec.loads(ImageMeta, body)
    levels = meta.levels
    if (not levels or (levels[0].width, levels[0].height) != (meta.width, meta.height) or meta.bands < 1
            or any(lv.width < 1 or lv.height < 1 or lv.tile_width < 1 or lv.tile_height < 1 for lv in levels)
            or any(b.width > a.width or b.height > a.height for a, b in itertools.pairwise(levels))):
        raise ValueError("the metadata is not shaped as an image's")
    return meta


# -- the cache --------------------------------------------------------------------------------------------
@dataclass
class Counters:
    hits: dict[str, int] = field(default_factory=lambda: {"tile": 0, "metadata": 0})
    misses: dict[str, int] = field(default_factory=lambda: {"tile": 0, "metadata": 0})
    errors: int = 0  # calls that failed or timed out (each opens the breaker)
    skipped: int = 0  # calls not made while the breaker was open
    corrupt: int = 0  # entries that did not parse (counted as misses too)
    writes: int = 0
    dropped: int = 0  # writes not made: too large, or too many in flight
    leases: int = 0  # leases won: this replica renders and stores the tile
    lease_waits: int = 0  # misses that found another replica's lease and waited for its result
    lease_served: int = 0  # ... and got it
    lease_expired: int = 0  # ... and rendered it themselves after all (the lease ran out, or no entry came)
    breaker_trips: int = 0


class SharedCache:
    def __init__(self, backend: Backend, *, timeout: float, pause: float, ttl: int, max_entry: int,
                 lease_ms: int, where: str = "") -> None:
        self.backend = backend
        self.timeout = timeout
        self.pause = pause
        self.ttl = ttl
        self.max_entry = max_entry
        self.lease_ms = lease_ms
        self.where = where  # the URL without its password, for logs and /health
        self.counters = Counters()
        self._open_until = 0.0
        self._pending: set[asyncio.Task[None]] = set()
        self._flights: dict[bytes, asyncio.Future[tuple[Rendered, bool]]] = {}
        self._closed = False

    @classmethod
    def from_url(cls, url: str, **options: Any) -> SharedCache:
        from .backends import check_url, redacted

        return cls(connect(check_url(url), options["timeout"]), where=redacted(url), **options)

    @property
    def available(self) -> bool:
        """False while the breaker is open (after a failure, for `pause` seconds)."""
        return time.monotonic() >= self._open_until

    async def _call(self, op: Callable[..., Awaitable[T]], *args: Any) -> tuple[bool, T | None]:
        """(True, result) or (False, None) when the breaker is open or the call failed or took too long."""
        if not self.available or self._closed:
            self.counters.skipped += 1
            return False, None
        tripped = self._open_until > 0
        try:
            async with asyncio.timeout(self.timeout):
                result = await op(*args)
        except Exception as exc:  # any failure of the cache is a miss, never the request's failure
            self._trip(exc)
            return False, None
        if tripped:
            self._open_until = 0.0
            log.warning("shared cache %s answers again", self.where)
        return True, result

    def _trip(self, exc: BaseException) -> None:
        self.counters.errors += 1
        self.counters.breaker_trips += 1
        if self._open_until == 0.0:
            log.warning("shared cache %s failed (%s: %s); not used for %.1f s at a time until it answers",
                        self.where, type(exc).__name__, str(exc)[:200], self.pause)
        self._open_until = time.monotonic() + self.pause

    async def get_many(self, keys: list[bytes]) -> list[bytes | None] | None:
        ok, found = await self._call(self.backend.get_many, keys)
        return found if ok else None

    async def get(self, key: bytes) -> bytes | None:
        found = await self.get_many([key])
        return None if found is None else found[0]

    # -- entries of the core ---------------------------------------------------------------------------
    async def tile(self, key: bytes, count: bool = True) -> Rendered | bool | None:
        """The tile stored under `key`; None when there is none, False for a NONE marker (render it here)."""
        data = await self.get(key)
        try:
            out = None if data is None else unpack_tile(key, data)
        except ValueError as exc:
            self._corrupt(key, exc)
            data = out = None
        if count:
            self._count("tile", out is not None)
        return False if data is not None and out is None else out

    def put_tile(self, key: bytes, out: Rendered) -> None:
        self.store(key, pack_tile(key, out), self.ttl)

    async def meta(self, key: bytes) -> ImageMeta | None:
        data = await self.get(key)
        meta = None
        if data is not None:
            try:
                meta = unpack_meta(key, data)
            except ValueError as exc:
                self._corrupt(key, exc)
        self._count("metadata", meta is not None)
        return meta

    def put_meta(self, key: bytes, meta: ImageMeta) -> None:
        self.store(key, pack_meta(key, meta), self.ttl)

    async def document(self, key: bytes) -> dict[str, Any] | None:
        """A small JSON object stored with `put_document` (warm-up progress)."""
        data = await self.get(key)
        try:
            return None if data is None else unpack(JSON, key, data)[0]
        except ValueError as exc:
            self._corrupt(key, exc)
            return None

    def put_document(self, key: bytes, value: dict[str, Any], ttl: int) -> None:
        self.store(key, pack(JSON, key, value), ttl)

    def _count(self, kind: str, hit: bool) -> None:
        if hit:
            self.counters.hits[kind] += 1
        else:
            self.counters.misses[kind] += 1

    def _corrupt(self, key: bytes, exc: Exception) -> None:
        self.counters.corrupt += 1
        log.warning("shared cache entry %s is not valid (%s); ignored", key.decode(), exc)

    # -- writes, in the background ---------------------------------------------------------------------
    def store(self, key: bytes, value: bytes, ttl: int, then_delete: bytes | None = None) -> None:
        """Write `value` under `key` without waiting (and delete `then_delete` after it: a lease)."""
        if len(value) + len(key) > self.max_entry or len(self._pending) >= MAX_PENDING or not self.available:
            self.counters.dropped += 1
            if then_delete is not None:
                self.release(then_delete)
            return
        self._spawn(self._write(key, value, ttl, then_delete))

    async def _write(self, key: bytes, value: bytes, ttl: int, then_delete: bytes | None) -> None:
        ok, _ = await self._call(self.backend.set, key, value, ttl)
        self.counters.writes += ok
        if then_delete is not None:
            await self._call(self.backend.delete, then_delete)

    def release(self, lease: bytes) -> None:
        if len(self._pending) < MAX_PENDING:
            self._spawn(self._call(self.backend.delete, lease))

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def drain(self) -> None:
        """Wait for the background writes (tests, shutdown)."""
        while self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)

    # -- single flight across the cluster ----------------------------------------------------------------
    async def tile_or_render(self, key: bytes, render: Callable[[], Awaitable[Rendered]]) -> tuple[Rendered, bool]:
        """The tile of `key` from the shared cache (True), or made by `render` here (False) and stored: once per
        cluster while the misses overlap. Concurrent misses in this process share one flight; across replicas
        the first takes the lease and the others poll for its result until the lease's time is up (then they
        render it themselves). A NONE marker (the holder could not store it) sends them to render at once."""
        flight = self._flights.get(key)
        if flight is None:
            found = await self.tile(key)  # a hit, the common case, needs no flight
            if isinstance(found, Rendered):
                return found, True
            flight = self._flights.get(key)  # another miss here started one meanwhile
            if flight is None:
                flight = self._flights[key] = asyncio.ensure_future(self._flight(key, render, found))
                flight.add_done_callback(lambda done: self._landed(key, done))
        return await asyncio.shield(flight)

    def _landed(self, key: bytes, done: asyncio.Future[tuple[Rendered, bool]]) -> None:
        if self._flights.get(key) is done:
            del self._flights[key]
        if not done.cancelled():
            done.exception()  # retrieved: every waiter may have gone

    async def _flight(self, key: bytes, render: Callable[[], Awaitable[Rendered]], found: bool | None
                      ) -> tuple[Rendered, bool]:
        """After a miss (`found` None) or a NONE marker (False: render here at once, without a lease)."""
        won = None if found is False else await self.lease(key)
        if won is False:  # another replica renders it
            waited = await self._wait(key)
            if waited is not None:
                return waited, True
        elif won:
            self.counters.leases += 1
            late = await self.tile(key, count=False)  # stored by the holder before us, between our miss and lease
            if isinstance(late, Rendered):
                self.release(lease_key(key))
                return late, True
        return await self._render_and_store(key, render, bool(won)), False

    async def _wait(self, key: bytes) -> Rendered | None:
        self.counters.lease_waits += 1
        deadline = time.monotonic() + self.lease_ms / 1000
        for delay in itertools.chain(POLL, itertools.repeat(POLL[-1])):
            if time.monotonic() + delay > deadline or not self.available:
                break
            await asyncio.sleep(delay)
            found = await self.tile(key, count=False)
            if isinstance(found, Rendered):
                self.counters.lease_served += 1
                return found
            if found is False:
                break
        self.counters.lease_expired += 1
        return None

    async def _render_and_store(self, key: bytes, render: Callable[[], Awaitable[Rendered]], leased: bool
                                ) -> Rendered:
        lease = lease_key(key) if leased else None
        try:
            out = await render()
        except BaseException:
            if lease is not None:
                self.store(key, pack(NONE, key, {}), self._lease_seconds, then_delete=lease)
            raise
        value = pack_tile(key, out)
        if out.provisional or len(value) + len(key) > self.max_entry:
            self.counters.dropped += not out.provisional
            if lease is not None:
                self.store(key, pack(NONE, key, {}), self._lease_seconds, then_delete=lease)
        else:
            self.store(key, value, self.ttl, then_delete=lease)
        return out

    @property
    def _lease_seconds(self) -> int:
        return max(1, -(-self.lease_ms // 1000))

    # -- leases and generations --------------------------------------------------------------------------
    async def lease(self, key: bytes) -> bool | None:
        """Whether this replica got the lease of `key` (for `lease_ms`); None when the cache is unavailable."""
        ok, won = await self._call(self.backend.add, lease_key(key), b"1", self.lease_ms)
        return bool(won) if ok else None

    async def generation(self, name: str) -> str | None:
        """The current generation of image `name` and of everything, as one token; None when unavailable."""
        keys = [GLOBAL, generation_key(name)]
        found = await self.get_many(keys)
        if found is None:
            return None
        for key, value in zip(keys, found, strict=True):
            if value is None:  # never set, or evicted: a new random token (a lost one only ever purges more)
                ok, _ = await self._call(self.backend.add, key, secrets.token_hex(8).encode(), 0)
                if not ok:
                    return None
        if None in found:
            found = await self.get_many(keys)
            if found is None:
                return None
        if not all(v is not None and TOKEN.fullmatch(v) for v in found):
            self.counters.corrupt += 1
            return None
        return "/".join(v.decode() for v in found if v is not None)

    async def bump(self, name: str | None) -> bool:
        """A new generation for image `name` (None: for everything): its entries are not read again by any
        replica once it has re-read the generation. Waits for the write; whether it was made."""
        key = GLOBAL if name is None else generation_key(name)
        ok, _ = await self._call(self.backend.set, key, secrets.token_hex(8).encode(), 0)
        return ok

    # -- state --------------------------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        c = self.counters
        return {"backend": self.backend.name, "url": self.where, "available": self.available,
                "hits": sum(c.hits.values()), "misses": sum(c.misses.values()),
                "tile_hits": c.hits["tile"], "tile_misses": c.misses["tile"],
                "metadata_hits": c.hits["metadata"], "metadata_misses": c.misses["metadata"],
                "errors": c.errors, "skipped": c.skipped, "corrupt": c.corrupt, "writes": c.writes,
                "dropped": c.dropped, "pending": len(self._pending), "leases": c.leases,
                "lease_waits": c.lease_waits, "lease_served": c.lease_served, "lease_expired": c.lease_expired}

    async def close(self) -> None:
        """Stop: flights still rendering are cancelled, the background writes get a moment to finish."""
        for flight in list(self._flights.values()):
            flight.cancel()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(max(self.timeout * 10, 1.0)):
                await self.drain()
        self._closed = True
        with contextlib.suppress(Exception):
            await self.backend.close()
