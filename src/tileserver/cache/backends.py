"""The two shared-cache servers behind one small async interface (`Backend`): Redis (redis-py's asyncio
client) and memcached (emcache), picked by the URL of `Settings.cache_url`:

    redis://HOST:PORT/DB   rediss://... (TLS)   redis://:PASSWORD@HOST:PORT/DB
    memcached://HOST:PORT[,HOST:PORT...]        (keys spread over the servers by rendezvous hashing)

Values are bytes; keys are short ASCII (memcached allows 250 bytes, no spaces). `add` is the lease
primitive: SET NX PX on Redis, `add` on memcached (whose expiry counts whole seconds). Each call may raise
anything (timeouts, refused connections, protocol errors): the caller (`shared.SharedCache`) bounds it in
time and turns every failure into a miss.

emcache rather than aiomcache: it spreads keys over several servers itself (iipsrv's MEMCACHED_SERVERS is a
list), bounds each call with its own timeout, keeps a bounded pool per server and ships type hints;
aiomcache speaks to one server only. Both were as fast here (bench/cache_clients.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import re
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

SCHEMES = ("redis://", "rediss://", "memcached://")
MEMCACHED_PORT = 11211
CONNECTIONS = 32  # per server, per process


class Backend(Protocol):
    name: str  # "redis" or "memcached"

    async def get_many(self, keys: list[bytes]) -> list[bytes | None]: ...

    async def set(self, key: bytes, value: bytes, ttl: int) -> None:
        """Store `value`; `ttl` seconds, 0: no expiry."""

    async def add(self, key: bytes, value: bytes, ttl_ms: int) -> bool:
        """Store `value` only if `key` holds nothing; whether it did. `ttl_ms` 0: no expiry."""

    async def delete(self, key: bytes) -> None: ...

    async def close(self) -> None: ...


def redacted(url: str) -> str:
    """`url` without its password, for logs and /health."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    user = parts.username or ""
    return parts._replace(netloc=f"{user}:***@{host}{port}").geturl()


SERVER = re.compile(r"\[(?P<v6>[0-9A-Fa-f:.]+)\](?::(?P<p6>\d{1,5}))?|(?P<host>[^:\[\]\s/]+)(?::(?P<port>\d{1,5}))?")


def memcached_servers(url: str) -> list[tuple[str, int]]:
    """`memcached://a:11211,b` -> [("a", 11211), ("b", 11211)] (port 11211 when none is given, as iipsrv's
    MEMCACHED_SERVERS; `[::1]:11211` for IPv6); ValueError when malformed."""
    servers = []
    for part in url.removeprefix("memcached://").rstrip("/").split(","):
        part = part.strip().split(" ")[0]  # libmemcached's lists may give a weight after a space: ignored
        if not part:
            continue
        m = SERVER.fullmatch(part)
        port = int((m["p6"] or m["port"] or MEMCACHED_PORT) if m else 0)
        if m is None or not 0 < port < 65536:
            raise ValueError(f"not a memcached server: {part!r} (want HOST:PORT)")
        servers.append((m["v6"] or m["host"], port))
    if not servers:
        raise ValueError("a memcached URL names at least one server: memcached://HOST:PORT")
    return servers


def check_url(url: str) -> str:
    """`url` when it names a shared cache this server speaks to, else ValueError."""
    if not url.startswith(SCHEMES):
        raise ValueError(f"cache_url must start with {', '.join(SCHEMES)}")
    if url.startswith("memcached://"):
        memcached_servers(url)
        return url
    parts = urlsplit(url)
    if not parts.hostname:
        raise ValueError("a Redis URL names its host: redis://HOST:PORT/DB")
    db = unquote(parts.path.strip("/")) or "0"
    if not db.isdigit():
        raise ValueError(f"the Redis database is a number, not {db!r}")
    return url


def connect(url: str, timeout: float) -> Backend:
    """The backend for `url` (checked by `check_url`); no connection is made before its first call."""
    if url.startswith("memcached://"):
        return Memcached(memcached_servers(url), timeout)
    return Redis(url, timeout)


class Redis:
    name = "redis"

    def __init__(self, url: str, timeout: float) -> None:
        import redis.asyncio as aredis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        # a blocking pool waits (up to `timeout`) for a free connection instead of failing when all are busy;
        # one retry at once, on a new connection: a pooled one may be stale (the server restarted); beyond that
        # a failed call is a miss, and the caller's breaker decides when to try again
        pool = aredis.BlockingConnectionPool.from_url(
            url, max_connections=CONNECTIONS, timeout=timeout, socket_timeout=timeout,
            socket_connect_timeout=timeout, retry=Retry(NoBackoff(), 1))
        self.client: Any = aredis.Redis(connection_pool=pool)

    async def get_many(self, keys: list[bytes]) -> list[bytes | None]:
        if len(keys) == 1:
            return [await self.client.get(keys[0])]
        return list(await self.client.mget(keys))

    async def set(self, key: bytes, value: bytes, ttl: int) -> None:
        await self.client.set(key, value, ex=ttl or None)

    async def add(self, key: bytes, value: bytes, ttl_ms: int) -> bool:
        return bool(await self.client.set(key, value, nx=True, px=ttl_ms or None))

    async def delete(self, key: bytes) -> None:
        await self.client.delete(key)

    async def close(self) -> None:
        await self.client.aclose(close_connection_pool=True)


class Memcached:
    name = "memcached"

    def __init__(self, servers: list[tuple[str, int]], timeout: float) -> None:
        self.servers = servers
        self.timeout = timeout
        self._client: asyncio.Future[Any] | None = None

    async def _connected(self) -> Any:
        """emcache's client, made once in the running event loop; shielded, so that a call that times out
        while it is made does not leave half a client behind."""
        if self._client is None:
            import emcache

            nodes = [emcache.MemcachedHostAddress(h, p) for h, p in self.servers]
            self._client = asyncio.ensure_future(emcache.create_client(
                nodes, timeout=self.timeout, connection_timeout=self.timeout, max_connections=CONNECTIONS,
                min_connections=1))
        return await asyncio.shield(self._client)

    async def get_many(self, keys: list[bytes]) -> list[bytes | None]:
        client = await self._connected()
        if len(keys) == 1:
            item = await client.get(keys[0])
            return [None if item is None else bytes(item.value)]
        found = await client.get_many(keys)
        return [None if found.get(k) is None else bytes(found[k].value) for k in keys]

    async def set(self, key: bytes, value: bytes, ttl: int) -> None:
        await (await self._connected()).set(key, value, exptime=ttl)

    async def add(self, key: bytes, value: bytes, ttl_ms: int) -> bool:
        import emcache

        client = await self._connected()
        try:  # memcached counts expiry in whole seconds: a lease lasts at least `ttl_ms`
            await client.add(key, value, exptime=math.ceil(ttl_ms / 1000) if ttl_ms else 0)
        except emcache.NotStoredStorageCommandError:
            return False
        return True

    async def delete(self, key: bytes) -> None:
        import emcache

        with contextlib.suppress(emcache.NotFoundCommandError):
            await (await self._connected()).delete(key)

    async def close(self) -> None:
        if self._client is not None:
            made, self._client = self._client, None
            with contextlib.suppress(Exception):
                await (await made).close()
