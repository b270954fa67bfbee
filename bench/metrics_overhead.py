"""What metrics, Server-Timing and the access log cost per request, measured in-process (no network, no client):
the app is called as an ASGI callable in a loop, for the cheapest answers there are, a replayed tile and a tile
cache hit through the full stack, and for decoded tiles (JPEG, whose stages are timed apart for free; PNG in
libvips' one pass, and with `split_timing`, made in memory first to time the encode alone). Each configuration
runs in a process of its own (prometheus-client picks its storage once per process), the configurations take
turns (`--rounds`), and the table shows for each the least CPU time (the process's, its render threads'
included) per request over every loop of every round: the least is the figure other load disturbs least.

    .venv/bin/python bench/metrics_overhead.py [--requests 3000] [--repeats 5] [--rounds 3]

Hand-run, never part of the tests.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

CONFIGS = {  # name -> settings
    "metrics off": {"metrics": False},
    "metrics on, one process": {"metrics": True},
    "metrics on, multiprocess folder": {"metrics": True, "metrics_dir": "FOLDER"},
    "metrics on, multiprocess + json access log": {"metrics": True, "metrics_dir": "FOLDER", "access_log": "json"},
}
CASES = {  # name -> (path, query, extra headers)
    "replayed tile": ("/iip", b"FIF=a.tif&JTL=2,1", []),
    "tile cache hit, full stack": ("/iip", b"FIF=a.tif&JTL=2,1", [(b"if-none-match", b'"other"')]),
}


def make_image(root: Path) -> None:
    import pyvips

    img = pyvips.Image.gaussnoise(1003, 701, mean=128, sigma=40).cast("uchar").bandjoin([128, 64])
    img.copy(interpretation="srgb").tiffsave(str(root / "a.tif"), tile=True, pyramid=True, compression="jpeg", Q=90,
                                              tile_width=256, tile_height=256)
    img.copy(interpretation="srgb").tiffsave(str(root / "d.tif"), tile=True, pyramid=True, compression="deflate",
                                              tile_width=256, tile_height=256)


async def call(app: Any, path: str, query: bytes, headers: list[tuple[bytes, bytes]]) -> int:
    from tileserver.warmup import get

    return await get(app, f"{path}?{query.decode()}" if query else path, headers)


async def measure(settings: dict[str, Any], root: Path, n: int, repeats: int) -> dict[str, float]:
    """CPU microseconds per request for each case (least of `repeats` loops of `n`), and a decoded tile's."""
    from tileserver.app import create_app
    from tileserver.settings import Settings

    app = create_app(Settings(root=root, **settings))
    out: dict[str, float] = {}
    async with app.router.lifespan_context(app):
        for name, (path, query, headers) in CASES.items():
            assert await call(app, path, query, []) == 200  # made, recorded
            runs = []
            for _ in range(repeats):
                t = time.process_time()
                for _ in range(n):
                    await call(app, path, query, headers)
                runs.append((time.process_time() - t) / n * 1e6)
            out[name] = min(runs)
        out["decoded tile, JPEG (stages timed apart for free)"] = await decoded(app, "jpg", n // 20, repeats)
        out["decoded tile, PNG (one libvips pass)"] = await decoded(app, "png", n // 20, repeats)
    split = create_app(Settings(root=root, **{**settings, "split_timing": True}))
    async with split.router.lifespan_context(split):
        out["decoded tile, PNG, split_timing (two passes)"] = await decoded(split, "png", n // 20, repeats)
    return out


async def decoded(app: Any, fmt: str, n: int, repeats: int) -> float:
    """CPU microseconds per tile of a deflate TIFF rendered anew (tile cache emptied each time) as `fmt`."""
    service = app.state.service
    runs = []
    for _ in range(repeats):
        t = time.process_time()
        for k in range(n):
            x, y = k % 3 * 256, k // 3 % 2 * 256
            await call(app, f"/iiif/3/d.tif/{x},{y},256,256/256,/0/default.{fmt}", b"", [(b"if-none-match", b'"x"')])
            service.tiles.clear()
        runs.append((time.process_time() - t) / n * 1e6)
    return min(runs)


def child(args: argparse.Namespace) -> None:
    settings = CONFIGS[args.child]
    with tempfile.TemporaryDirectory() as folder:
        settings = {k: (folder if v == "FOLDER" else v) for k, v in settings.items()}
        result = asyncio.run(measure(settings, Path(args.root), args.requests, args.repeats))
    print(json.dumps(result))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=4000)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--root", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args)
        return
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_image(root)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("TILESERVER_", "PROMETHEUS_"))}
        results: dict[str, dict[str, float]] = {}
        for _ in range(args.rounds):
            for name in CONFIGS:
                cmd = [sys.executable, __file__, "--child", name, "--root", str(root), "--requests",
                       str(args.requests), "--repeats", str(args.repeats)]
                done = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True, timeout=1800)
                got = json.loads(done.stdout.strip().splitlines()[-1])
                results[name] = {k: min(v, results.get(name, {}).get(k, v)) for k, v in got.items()}
    base = results["metrics off"]
    rows = list(base)
    print(f"| configuration | {' | '.join(rows)} |")
    print(f"|---|{'---|' * len(rows)}")
    for name, r in results.items():
        cells = [f"{r[c]:.1f} µs" + ("" if name == "metrics off" else f" ({r[c] - base[c]:+.1f})") for c in rows]
        print(f"| {name} | {' | '.join(cells)} |")
    print(f"\nCPU µs per request, least of {args.rounds} rounds x {args.repeats} loops of {args.requests} requests "
          f"({args.requests // 20} for decoded tiles); in parentheses the difference to metrics off; "
          f"Python {sys.version.split()[0]}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}.")


if __name__ == "__main__":
    main()
