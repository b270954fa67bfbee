"""The conversion of one large untiled image into a tiled pyramidal TIFF, run as its own process
(`python -m tileserver.sources.derive_job SRC DST ...`) by `derived.py`.

A process of its own, at a lower priority (`--nice`), so that a huge decode neither holds the server's
interpreter nor takes the CPU from tile requests (measured: 20000 x 15000 JPEG converted while 2 threads
served tiles: 12 % fewer tiles/s in a niced process, 19 % in a process at the same priority, 30 % in a
thread of the server), and a library crash on a hostile file takes down only this process. The image is
read once, sequentially (no temporary copy of the decoded image); levels halve rounding down
until one tile holds the image, as the levels the server advertised for the original. Exit status 0:
DST written; 2: the image could not be decoded or written (libvips' reason on stderr).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any

BIGTIFF_BYTES = 3 << 30  # decoded size (with the pyramid's third) above which BigTIFF is written


def save_options(image: Any, compression: str, quality: int, tile: int) -> dict[str, Any]:
    opts: dict[str, Any] = {"tile": True, "pyramid": True, "tile_width": tile, "tile_height": tile,
                            "compression": compression, "keep": "icc",
                            "bigtiff": image.width * image.height * image.bands * 4 // 3
                            * (2 if image.format == "ushort" else 1) > BIGTIFF_BYTES}
    if compression == "jpeg":
        opts["Q"] = quality
    else:
        opts["predictor"] = "horizontal"
    return opts


def convert(src: str, dst: str, compression: str, quality: int, tile: int) -> None:
    import pyvips

    pyvips.block_untrusted_set(True)
    image = pyvips.Image.new_from_file(src, access="sequential", fail_on="error")
    image.tiffsave(dst, **save_options(image, compression, quality, tile))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="derive_job")
    parser.add_argument("src")
    parser.add_argument("dst")
    parser.add_argument("--compression", choices=("jpeg", "deflate"), default="jpeg")
    parser.add_argument("--quality", type=int, default=90)
    parser.add_argument("--tile", type=int, default=256)
    parser.add_argument("--nice", type=int, default=10)
    args = parser.parse_args(argv)
    if args.nice:
        os.nice(args.nice)
    import pyvips

    try:
        convert(args.src, args.dst, args.compression, args.quality, args.tile)
    except pyvips.Error as exc:
        print((exc.detail or exc.message or "libvips error").strip(), file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
