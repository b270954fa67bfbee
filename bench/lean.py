"""First-request tiles in process, lean path (web/lean.py) against the full stack: the ASGI app called directly
(no sockets, no HTTP client), each URL asked once per app (a fresh app per round: nothing remembered, nothing
replayed, every tile read from the file), so the figures are a cold tile's own cost in the server.

    .venv/bin/python bench/lean.py                 # alternated rounds, lean and full stack; then the request's
                                                   # own cost (a cached tile, not replayed: best of rounds)
    .venv/bin/python bench/lean.py --profile iiif  # cProfile of lean cold IIIF tiles, the top functions

The image is a 4000x3000 JPEG-tiled pyramid (256-px tiles) written to a temporary folder; the URLs are its
192 full-resolution tiles, passed through as stored: IIP `JTL`, IIIF, DeepZoom, Zoomify.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.append(str(Path(__file__).resolve().parent))

from shared_cache import call, make_image, timed

COLS, ROWS, TILE = 16, 12, 256


def urls(protocol: str) -> list[str]:
    if protocol == "iip":  # IIP level 4 of a 5-level pyramid (0 = smallest) is full resolution
        return [f"/iip?FIF=big.tif&JTL=4,{i}" for i in range(COLS * ROWS)]
    if protocol == "iiif":
        return [f"/iiif/3/big.tif/{x * TILE},{y * TILE},{TILE},{TILE}/{TILE},/0/default.jpg"
                for y in range(ROWS) for x in range(COLS) if x * TILE + TILE <= 4000 and y * TILE + TILE <= 3000]
    if protocol == "deepzoom":  # DeepZoom level 12 of 4000x3000 is full resolution
        return [f"/deepzoom/big.tif_files/12/{x}_{y}.jpg" for y in range(ROWS) for x in range(COLS)]
    before = 1 + 4 + 12 + 48  # the tiles of Zoomify tiers 0-3, counted ahead of tier 4 (full resolution) in groups
    return [f"/zoomify/big.tif/TileGroup{(before + y * COLS + x) // 256}/4-{x}-{y}.jpg"
            for y in range(ROWS) for x in range(COLS)]


def app_for(root: Path, lean: bool) -> Any:
    from tileserver.app import create_app
    from tileserver.settings import Settings
    from tileserver.web.lean import LeanMiddleware

    app = create_app(Settings(root=root, metrics=False))
    if not lean:
        app.user_middleware = [m for m in app.user_middleware if m.cls is not LeanMiddleware]
    app.state.service.start()
    return app


def get(path: str) -> tuple[str, bytes]:
    p, _, q = path.partition("?")
    return p, q.encode()


async def one(app: Any, path: str, headers: list[tuple[bytes, bytes]] | None = None) -> int:
    p, q = get(path)
    return (await call(app, p, headers, q))[0]


async def round_of(root: Path, lean: bool, protocol: str) -> float:
    """Mean microseconds per cold tile over every URL of `protocol`, in a fresh app (its image opened first)."""
    app = app_for(root, lean)
    try:
        assert await one(app, "/iiif/3/big.tif/info.json") == 200  # the image opened: metadata is warm
        todo = urls(protocol)
        start = time.perf_counter()
        for u in todo:
            status = await one(app, u)
            assert status == 200, (u, status)
        return (time.perf_counter() - start) / len(todo) * 1e6
    finally:
        app.state.service.stop()


async def table(root: Path, rounds: int) -> None:
    print("| protocol | full stack µs (median, min-max) | lean µs (median, min-max) | lean / full |")
    print("|---|---|---|---|")
    for protocol in ("iip", "iiif", "deepzoom", "zoomify"):
        full: list[float] = []
        lean: list[float] = []
        await round_of(root, True, protocol)  # one unmeasured round: imports, code paths, the page cache
        for _ in range(rounds):
            full.append(await round_of(root, False, protocol))
            lean.append(await round_of(root, True, protocol))
        f, m = statistics.median(full), statistics.median(lean)
        print(f"| {protocol} | {f:.0f} ({min(full):.0f}-{max(full):.0f}) | {m:.0f} ({min(lean):.0f}-{max(lean):.0f}) "
              f"| {m / f:.2f} |")


async def framework(root: Path, rounds: int) -> None:
    """The request's own cost without the render: a tile in the tile cache asked with a non-matching
    `If-None-Match` (never replayed, so it goes through the stack and the endpoint, a 200 from the cache)."""
    print("\n| warm tile, not replayed (`If-None-Match` other) | full stack µs | lean µs | lean / full |")
    print("|---|---|---|---|")
    other = [(b"if-none-match", b'"other"')]
    for protocol in ("iip", "iiif", "deepzoom", "zoomify"):
        url = urls(protocol)[17]
        out = []
        for lean in (False, True):
            app = app_for(root, lean)
            assert await one(app, url, other) == 200
            out.append(await timed(lambda app=app, url=url: one(app, url, other), 2000, rounds))
            app.state.service.stop()
        print(f"| {protocol} | {out[0]:.0f} | {out[1]:.0f} | {out[1] / out[0]:.2f} |")


async def profile(root: Path, protocol: str) -> None:
    await round_of(root, True, protocol)
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(5):
        await round_of(root, True, protocol)
    prof.disable()
    pstats.Stats(prof).sort_stats("tottime").print_stats(45)


async def both(root: Path, rounds: int) -> None:
    await table(root, rounds)
    await framework(root, rounds)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--profile", metavar="PROTOCOL")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_image(root)
        asyncio.run(profile(root, args.profile) if args.profile else both(root, args.rounds))


if __name__ == "__main__":
    main()
