"""The cost of the shared cache, in process (the ASGI app called directly: no sockets, no HTTP client, so the
figures are the server's own work): a warm tile on the default path (no cache_url) replayed and through the full
stack, a local tile-cache hit, a shared-cache hit (Redis, memcached on loopback: the local tile cache emptied
before each lookup) and a cold render. Prints one markdown table (the best round of each row).

    .venv/bin/python bench/shared_cache.py                      # every row (needs redis-server, memcached)
    PYTHONPATH=/work/main/src .venv/bin/python bench/shared_cache.py --default-only   # the same rows of another
                                                                 # checkout (before/after the shared cache)

The image is a 4000x3000 JPEG-tiled pyramid written to a temporary folder; the tile is a stored 256-px JPEG
tile at full resolution asked as IIIF (`/iiif/3/big.tif/1024,1024,256,256/256,/0/default.jpg`), which is
passed through when rendered. Every server process started here is stopped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.append(str(Path(__file__).resolve().parents[1]))  # the project, for tests/cache_servers.py

PATH = "/iiif/3/big.tif/1024,1024,256,256/256,/0/default.jpg"


async def call(app: Any, path: str, headers: list[tuple[bytes, bytes]] | None = None, query: bytes = b""
               ) -> tuple[int, int]:
    """One GET through the ASGI app: (status, body bytes)."""
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
             "path": path, "raw_path": path.encode(), "query_string": query, "root_path": "",
             "headers": [(b"host", b"bench"), *(headers or [])], "client": ("127.0.0.1", 9), "server": ("bench", 80)}
    status, size = 0, 0

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status, size
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            size += len(message.get("body", b""))

    await app(scope, receive, send)
    return status, size


async def timed(fn: Callable[[], Awaitable[Any]], n: int, rounds: int) -> float:
    """The best over `rounds` of the mean microseconds per call of `n` calls (as timeit: on a shared machine the
    fastest round is the one least disturbed by other work)."""
    for _ in range(min(n, 200)):
        await fn()
    out = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(n):
            await fn()
        out.append((time.perf_counter() - start) / n * 1e6)
    return min(out)


def make_image(root: Path) -> None:
    import pyvips

    xyz = pyvips.Image.xyz(4000, 3000)
    img = (xyz[0] * 255 / 4000).cast("uchar").bandjoin([(xyz[1] * 255 / 3000).cast("uchar"),
                                                        pyvips.Image.gaussnoise(4000, 3000, sigma=40).cast("uchar")])
    img.copy(interpretation="srgb").tiffsave(str(root / "big.tif"), compression="jpeg", Q=85, tile=True,
                                              pyramid=True, tile_width=256, tile_height=256)


def app_for(root: Path, **settings: Any) -> Any:
    from tileserver.app import create_app
    from tileserver.settings import Settings

    app = create_app(Settings(root=root, metrics=False, **settings))
    app.state.service.start()
    return app


async def default_rows(root: Path, n: int, rounds: int) -> list[tuple[str, float]]:
    from tileserver.models import Box, OutputFormat, TileRequest

    app = app_for(root)
    service = app.state.service
    assert (await call(app, PATH))[0] == 200
    req = TileRequest(ident="big.tif", region=Box(1024, 1024, 256, 256), size=(256, 256))
    origin = [(b"origin", b"http://viewer.example")]  # CORS requests skip replay: the whole stack answers
    rows = [("warm tile, replayed (default path)", await timed(lambda: call(app, PATH), n, rounds)),
            ("warm tile, full stack (default path)", await timed(lambda: call(app, PATH, origin), n, rounds)),
            ("local tile-cache hit: `render()`", await timed(lambda: service.render(req), n, rounds))]

    async def cold() -> Any:
        service.tiles.clear()
        return await service.render(req)

    rows.append(("cold render (passthrough of a stored tile): `render()`", await timed(cold, max(n // 10, 50), rounds)))
    png = TileRequest(ident="big.tif", fmt=OutputFormat.PNG, region=Box(1000, 1000, 512, 512), size=(256, 256))

    async def cold_png() -> Any:
        service.tiles.clear()
        return await service.render(png)

    rows.append(("cold render (a 512-px region decoded, resized, PNG): `render()`",
                 await timed(cold_png, max(n // 40, 20), rounds)))
    service.stop()
    return rows


async def shared_rows(root: Path, kind: str, url: str, n: int, rounds: int) -> list[tuple[str, float]]:
    from tileserver.models import Box, TileRequest

    app = app_for(root, cache_url=url)
    service = app.state.service
    req = TileRequest(ident="big.tif", region=Box(1024, 1024, 256, 256), size=(256, 256))
    await service.render(req)
    await service.shared.drain()

    missed = 0

    async def shared_hit() -> Any:
        nonlocal missed
        service.tiles.clear()
        out = await service.render(req)
        missed += out.source != "shared"  # a call past cache_timeout on a loaded machine: rendered here instead
        return out

    rows = [(f"shared-cache hit, {kind}: `render()`", await timed(shared_hit, n, rounds)),
            (f"warm tile, replayed, cache_url={kind}", await timed(lambda: call(app, PATH), n, rounds))]
    errors = service.shared.stats()["errors"]
    await service.aclose()
    service.stop()
    if errors or missed:
        rows.append((f"({kind}: {errors} calls past cache_timeout or failed, {missed} lookups rendered here instead)",
                     float("nan")))
    return rows


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=1000, help="calls per round")
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--default-only", action="store_true", help="only the rows without a shared cache")
    a = ap.parse_args()
    import tileserver

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_image(root)
        rows = await default_rows(root, a.n, a.rounds)
        if not a.default_only:
            from tests.cache_servers import memcached_server, redis_server

            for kind, starter in (("redis", redis_server), ("memcached", memcached_server)):
                with starter() as server:
                    rows += await shared_rows(root, kind, server.url, a.n, a.rounds)
    where = Path(tileserver.__file__).resolve().parents[1]
    print(f"{platform.node()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}; tileserver from {where}; "
          f"best of {a.rounds} rounds of {a.n} calls\n")
    print("| what | µs per call |")
    print("|---|---|")
    for name, us in rows:
        print(f"| {name} | {us:.1f} |" if us == us else f"| {name} | |")


if __name__ == "__main__":
    asyncio.run(main())
