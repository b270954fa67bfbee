"""The asyncio clients of Redis and memcached on loopback, side by side: one 30 KB value (a tile) and one 100-byte
value (a generation token) read one after another, and the 30 KB value read by 32 tasks at once. Prints one
markdown table (the best of `--rounds`). How the shared cache's clients were chosen (cache/backends.py).

    .venv/bin/python bench/cache_clients.py        # aiomcache only when installed (pip install aiomcache)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.append(str(Path(__file__).resolve().parents[1]))  # the project, for tests/cache_servers.py

TILE = os.urandom(30_000)
SMALL = b"x" * 100
CONCURRENT = 32

Get = Callable[[bytes], Awaitable[Any]]
Set = Callable[[bytes, bytes], Awaitable[Any]]


async def measure(get: Get, set_: Set, n: int, rounds: int) -> tuple[float, float, float]:
    await set_(b"tile", TILE)
    await set_(b"small", SMALL)
    assert await get(b"tile") == TILE

    async def sequential(key: bytes) -> float:
        start = time.perf_counter()
        for _ in range(n):
            await get(key)
        return (time.perf_counter() - start) / n * 1e6

    async def concurrent() -> float:
        async def worker() -> None:
            for _ in range(n // CONCURRENT):
                await get(b"tile")

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(CONCURRENT)))
        return (n // CONCURRENT * CONCURRENT) / (time.perf_counter() - start)

    tile = min([await sequential(b"tile") for _ in range(rounds)])
    small = min([await sequential(b"small") for _ in range(rounds)])
    rate = max([await concurrent() for _ in range(rounds)])
    return tile, small, rate


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=5)
    a = ap.parse_args()
    from tests.cache_servers import memcached_server, redis_server

    rows = []
    with redis_server() as redis_srv, memcached_server() as mc_srv:
        import redis.asyncio as aredis

        for parser in ("hiredis", "python"):
            options: dict[str, Any] = {}
            if parser == "python":
                from redis._parsers import _AsyncRESP2Parser

                options["parser_class"] = _AsyncRESP2Parser
            pool = aredis.BlockingConnectionPool(host="127.0.0.1", port=redis_srv.port, max_connections=32, **options)
            client = aredis.Redis(connection_pool=pool)
            import redis

            rows.append((f"redis-py {redis.__version__} ({parser} parser)",
                         await measure(client.get, client.set, a.n, a.rounds)))
            await client.aclose(close_connection_pool=True)
        import emcache

        mc = await emcache.create_client([emcache.MemcachedHostAddress("127.0.0.1", mc_srv.port)],
                                         max_connections=32, timeout=1.0)

        async def emcache_get(key: bytes) -> Any:
            item = await mc.get(key)
            return None if item is None else item.value

        rows.append(("emcache", await measure(emcache_get, mc.set, a.n, a.rounds)))
        await mc.close()
        try:
            import aiomcache
        except ImportError:
            aiomcache = None
        if aiomcache is not None:
            amc = aiomcache.Client("127.0.0.1", mc_srv.port, pool_size=32)
            rows.append(("aiomcache", await measure(amc.get, amc.set, a.n, a.rounds)))
            await amc.close()
    print(f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}; best of {a.rounds} rounds of {a.n} GETs\n")
    print(f"| client | 30 KB GET, µs | 100 B GET, µs | 30 KB GETs/s, {CONCURRENT} tasks |")
    print("|---|---|---|---|")
    for name, (tile, small, rate) in rows:
        print(f"| {name} | {tile:.0f} | {small:.0f} | {rate:.0f} |")


if __name__ == "__main__":
    asyncio.run(main())
