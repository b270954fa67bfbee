"""Prepare images for tileserver: write a tiled, pyramidal TIFF (the fastest source format), or with
--sample make the demo image. Usage:

    python examples/make_pyramid.py SRC DST.tif [--tile 256] [--quality 90] [--compression jpeg]
    python examples/make_pyramid.py --sample FOLDER
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pyvips


def sample_image(width: int = 4000, height: int = 3000) -> pyvips.Image:
    """A deterministic, colourful test scene: gradients, rings and fine texture at every scale."""
    xyz = pyvips.Image.xyz(width, height)
    x, y = xyz[0], xyz[1]
    cx, cy = width / 2, height / 2
    r = ((x - cx) ** 2 + (y - cy) ** 2) ** 0.5
    rings = ((r * 4.5).sin() * 60 + 128).cast("uchar")  # vips sin() takes degrees: 80 px period
    red = (x * (255.0 / width)).cast("uchar")
    green = (y * (255.0 / height)).cast("uchar")
    noise = pyvips.Image.gaussnoise(width, height, mean=0, sigma=25, seed=42).gaussblur(1.5)
    blue = (rings + noise).cast("uchar")
    grid = ((x % 250 < 3) | (y % 250 < 3)).ifthenelse(255, 0).cast("uchar")
    img = red.bandjoin([green, blue]).copy(interpretation="srgb")
    return (img | grid).cast("uchar").copy(interpretation="srgb")


def make_pyramid(src: pyvips.Image, dst: Path, tile: int = 256, quality: int = 90, compression: str = "jpeg") -> None:
    src.tiffsave(str(dst), tile=True, pyramid=True, tile_width=tile, tile_height=tile,
                 compression=compression, Q=quality, bigtiff=src.width * src.height > 2**31)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("src", nargs="?")
    p.add_argument("dst", nargs="?")
    p.add_argument("--sample", metavar="FOLDER", help="write the demo image sample.tif into FOLDER")
    p.add_argument("--tile", type=int, default=256)
    p.add_argument("--quality", type=int, default=90)
    p.add_argument("--compression", default="jpeg", choices=["jpeg", "webp", "deflate", "zstd", "lzw", "none"])
    args = p.parse_args(argv)
    if args.sample:
        folder = Path(args.sample)
        folder.mkdir(parents=True, exist_ok=True)
        dst = folder / "sample.tif"
        if not dst.exists():
            make_pyramid(sample_image(), dst, args.tile, args.quality, args.compression)
            print(f"wrote {dst}")
        return 0
    if not (args.src and args.dst):
        p.error("give SRC and DST, or --sample FOLDER")
    make_pyramid(pyvips.Image.new_from_file(args.src, access="sequential"), Path(args.dst), args.tile,
                 args.quality, args.compression)
    print(f"wrote {args.dst}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
