"""OME-TIFF channel composite vs plain RGB tiles, in-process: cold 256-px JPEG tiles per second through
`TileService.render` (the whole render pipeline: read, composite or not, encode), one markdown table.

    .venv/bin/python bench/ome_composite.py                  # 4096 x 4096, 3 repeats, threads 1 and 2
    .venv/bin/python bench/ome_composite.py --size 2048 --repeats 1 --threads 1   # a short run

Images (written once to --dir, /tmp/tilebench/ome by default, with tifffile; tiled 256, deflate, pyramids
in SubIFDs down to one tile):
  - `rgb8-deflate.tif`: 8-bit RGB (three of the channels scaled to 8 bits), the plain RGB anchor;
  - `rgb8-jpeg.tif`: the same RGB as a JPEG-tiled pyramid (libvips tiffsave Q90), pass-through off,
    so every tile is decoded and encoded (our fastest non-pass-through path);
  - `ome-4ch16.ome.tif`: 4 channels of 16 bits, one IFD each with its SubIFD levels (as bioformats2raw
    and raw2ometiff write OME-TIFF), with OME colours.
  - `rgb8-raw.tif`, `ome-4ch16-raw.ome.tif`: the same, uncompressed (decoding is then no part of the cost).
Scenarios: every tile of every level once, in a shuffled order (fixed seed), on a freshly made
TileService (empty tile, decoded-level and handle caches; the OS page cache is warm after the first
run), `threads` pool threads with 2 x threads requests in flight. Repeats alternate the scenarios
(A B C A B C) and the table shows medians: tiles/s (wall clock) and CPU milliseconds per tile (every
thread of the process; steadier than wall time on a shared machine). The last column is each row's
CPU cost per tile against the deflate RGB row; the issue's goal is a 4-channel composite at most 2x.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import statistics
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyvips

from tileserver.core import TileService
from tileserver.models import OutputFormat, Tile, TileRequest
from tileserver.settings import Settings

OME_COLOURS = [-16776961, 16711935, 65535, -1]  # red, green, blue, white (OME signed RGBA)


@dataclass(frozen=True)
class Scenario:
    name: str
    ident: str
    passthrough: bool = False
    fmt: OutputFormat = OutputFormat.JPEG


SCENARIOS = [
    Scenario("RGB 8-bit, deflate tiles (anchor)", "rgb8-deflate.tif"),
    Scenario("RGB 8-bit, JPEG tiles (pass-through off)", "rgb8-jpeg.tif"),
    Scenario("OME 4 x 16-bit channels, deflate, composite", "ome-4ch16.ome.tif"),
    Scenario("OME ;c= 3 channels with windows and colours", "ome-4ch16.ome.tif;c=1:500-9000:ff0000,2,4::00ffff"),
    Scenario("OME ;c=2, one channel, 16-bit PNG", "ome-4ch16.ome.tif;c=2", fmt=OutputFormat.PNG),
    Scenario("RGB 8-bit, uncompressed tiles", "rgb8-raw.tif"),
    Scenario("OME 4 x 16-bit channels, uncompressed, composite", "ome-4ch16-raw.ome.tif"),
]


def channels(size: int) -> np.ndarray:
    """(4, size, size) uint16 with microscopy-like texture: blurred noise (cells), gradients, offsets."""
    xyz = pyvips.Image.xyz(size, size)
    out = []
    for c in range(4):
        cells = pyvips.Image.gaussnoise(size, size, mean=0, sigma=1, seed=c + 1).gaussblur(3 + c)
        v = (cells * (6000 + 2000 * c) + xyz[c % 2] * (3000 / size) + 400 * (c + 1)).cast("ushort")
        out.append(np.asarray(v.numpy()))
    return np.stack(out)


def pyramid(data: np.ndarray) -> list[np.ndarray]:
    levels = [data]
    while max(levels[-1].shape[-2:]) > 256:
        levels.append(levels[-1][..., ::2, ::2].copy())
    return levels


def make_images(root: Path, size: int) -> None:
    import tifffile

    root.mkdir(parents=True, exist_ok=True)
    stamp = root / f".made-{size}"
    if stamp.exists():
        return
    print(f"writing {size} x {size} test images to {root} ...", file=sys.stderr)
    data = channels(size)
    levels = pyramid(data)
    meta = {"axes": "CYX", "Channel": {"Name": ["DAPI", "FITC", "TRITC", "Cy5"], "Color": OME_COLOURS}}
    rgb = [np.moveaxis((lv[:3] >> 6).clip(0, 255).astype(np.uint8), 0, -1).copy() for lv in levels]
    for suffix, compression in (("", "zlib"), ("-raw", None)):
        opts = {"tile": (256, 256), "compression": compression}
        with tifffile.TiffWriter(root / f"ome-4ch16{suffix}.ome.tif", ome=True, bigtiff=True) as tif:
            tif.write(levels[0], subifds=len(levels) - 1, metadata=meta, photometric="minisblack", **opts)
            for lv in levels[1:]:
                tif.write(lv, subfiletype=1, photometric="minisblack", metadata=None, **opts)
        name = "rgb8-deflate.tif" if compression else "rgb8-raw.tif"
        with tifffile.TiffWriter(root / name, bigtiff=True) as tif:
            tif.write(rgb[0], subifds=len(rgb) - 1, photometric="rgb", metadata=None, **opts)
            for rlv in rgb[1:]:
                tif.write(rlv, subfiletype=1, photometric="rgb", metadata=None, **opts)
    pyvips.Image.new_from_array(rgb[0]).copy(interpretation="srgb").tiffsave(
        str(root / "rgb8-jpeg.tif"), tile=True, pyramid=True, tile_width=256, tile_height=256, compression="jpeg",
        Q=90, subifd=True)
    stamp.touch()


async def run(root: Path, sc: Scenario, threads: int, seed: int) -> tuple[float, float, int]:
    """(seconds, process CPU seconds, tiles) to render every tile of every level once, shuffled, on a
    fresh service. CPU time counts every thread of this process: on a shared machine it is the steadier
    measure of what a tile costs."""
    service = TileService(Settings(root=root, threads=threads, passthrough=sc.passthrough))
    service.start()
    try:
        meta = await service.info(sc.ident)
        tiles = [Tile(i, c, r) for i, lv in enumerate(meta.levels)
                 for r in range(lv.rows()) for c in range(lv.columns())]
        random.Random(seed).shuffle(tiles)
        requests = [TileRequest(ident=meta.ident, fmt=sc.fmt, tile=t) for t in tiles]
        limit = asyncio.Semaphore(2 * threads)

        async def one(req: TileRequest) -> None:
            async with limit:
                await service.render(req)

        start, cpu = time.perf_counter(), time.process_time()
        await asyncio.gather(*(one(r) for r in requests))
        return time.perf_counter() - start, time.process_time() - cpu, len(requests)
    finally:
        service.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", type=Path, default=Path(os.environ.get("TILEBENCH_DIR", "/tmp/tilebench")) / "ome")
    ap.add_argument("--size", type=int, default=4096, help="image width and height (default 4096)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="pool sizes to measure (default 1 2)")
    args = ap.parse_args()
    root = args.dir / str(args.size)
    make_images(root, args.size)
    os.environ.setdefault("VIPS_CONCURRENCY", "1")
    rates: dict[tuple[str, int], list[float]] = {}
    cpus: dict[tuple[str, int], list[float]] = {}
    count = 0
    for rep in range(args.repeats):
        for threads in args.threads:
            for sc in SCENARIOS:
                seconds, cpu, count = asyncio.run(run(root, sc, threads, seed=rep))
                rates.setdefault((sc.name, threads), []).append(count / seconds)
                cpus.setdefault((sc.name, threads), []).append(1000 * cpu / count)
                print(f"  repeat {rep + 1} threads {threads} {sc.name}: {count / seconds:.0f} tiles/s, "
                      f"{1000 * cpu / count:.2f} CPU ms per tile", file=sys.stderr)
    print(f"\n{args.size} x {args.size}, {count} tiles of 256 px per pass (every level), {args.repeats} repeats, "
          f"medians; {platform.node()} ({os.cpu_count()} cores), libvips {pyvips.version(0)}.{pyvips.version(1)}."
          f"{pyvips.version(2)}, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC\n")
    print(f"load average at the end: {' '.join(f'{v:.2f}' for v in os.getloadavg())}\n")
    print("| scenario | output | threads | cold tiles/s | CPU ms per tile | cost vs RGB deflate (CPU) |")
    print("|---|---|---|---|---|---|")
    for threads in args.threads:
        anchor = statistics.median(cpus[(SCENARIOS[0].name, threads)])
        for sc in SCENARIOS:
            rate = statistics.median(rates[(sc.name, threads)])
            cpu = statistics.median(cpus[(sc.name, threads)])
            print(f"| {sc.name} | {sc.fmt.suffix} | {threads} | {rate:.0f} | {cpu:.2f} | {cpu / anchor:.2f}x |")


if __name__ == "__main__":
    main()
