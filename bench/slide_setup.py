"""Images for bench/slide_serve.sh (not committed; written once into DIR, default /tmp/tilebench/slides):

- `big.svs`: a synthetic Aperio SVS of WIDTH x HEIGHT (default 40000 x 30000), 256-px RGB JPEG tiles at
  Q80 with JPEGTables (as Aperio writes them, tests/slide_images.py), levels 1, 1/4, 1/16, 1/64, a label,
  a macro and a thumbnail. Pixels are an H&E-like texture made per tile (no whole image in memory).
- `big.tif`: the same pyramid, tile for tile the same bytes, without Aperio's ImageDescription: a plain
  tiled pyramid TIFF (OpenSlide calls it generic-tiff), which tileserver reads through libvips and passes
  through as it does every pyramid TIFF; the two differ only in the reader that serves them.

Usage: .venv/bin/python bench/slide_setup.py [DIR] [--size 40000x30000]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.slide_images import level_sizes, texture, write_svs  # noqa: E402

TILE = 256
PATCH = 1024  # texture patches repeat with a per-tile shift and tint, so tiles differ


def tile_source(width: int, height: int) -> object:
    patches = [texture(PATCH, PATCH, seed) for seed in range(4)]

    def source(level: int, x: int, y: int, w: int, h: int) -> object:
        scale = 4**level
        gx, gy = x * scale // TILE, y * scale // TILE
        patch = patches[(gx * 7 + gy * 3) % len(patches)]
        ox, oy = (gx * 97) % (PATCH - TILE), (gy * 61) % (PATCH - TILE)
        px = patch[oy : oy + h, ox : ox + w].astype(np.int16)
        tint = np.array([(gx * 13) % 40 - 20, (gy * 11) % 40 - 20, ((gx + gy) * 5) % 30 - 15], np.int16)
        return np.clip(px + tint, 0, 255).astype(np.uint8)

    return source


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dir", nargs="?", default="/tmp/tilebench/slides")
    ap.add_argument("--size", default="40000x30000")
    a = ap.parse_args()
    w, h = (int(v) for v in a.size.split("x"))
    out = Path(a.dir)
    out.mkdir(parents=True, exist_ok=True)
    svs, tif = out / "big.svs", out / "big.tif"
    if not svs.exists():
        t = time.monotonic()
        part = svs.with_suffix(".part")
        label = texture(600, 400, 11)
        macro = texture(1500, 600, 12)
        thumb = texture(1024, 1024 * h // w, 13)
        sizes = write_svs(part, w, h, tile_source(w, h), levels=4, quality=80, label=label, macro=macro,
                          thumbnail=thumb)
        part.rename(svs)
        print(f"wrote {svs} {sizes} in {time.monotonic() - t:.0f} s")
    if not tif.exists():
        t = time.monotonic()
        part = tif.with_name("big.part.tif")
        write_svs(part, w, h, tile_source(w, h), levels=4, quality=80, aperio=False)
        part.rename(tif)
        print(f"wrote {tif} in {time.monotonic() - t:.0f} s")
    print(" ".join(f"{a}x{b}" for a, b in level_sizes(w, h, 4)))


if __name__ == "__main__":
    main()
