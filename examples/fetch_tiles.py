"""Shows: a IIIF client in Python with httpx: read info.json, fetch the tiles covering a region
concurrently, stitch them, and check the result against one IIIF region request. Usage:

    python examples/fetch_tiles.py http://127.0.0.1:8000 sample.tif --region 1000,700,1200,900 --scale 2

The region is in full-resolution pixels; `--scale` must be one of the image's scale factors (as
info.json lists them). Both requests ask for PNG, so the two images must match exactly.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx
import pyvips


@dataclass(frozen=True)
class Grid:
    """The tile grid of one scale factor: image size, tile size, scale factor."""

    width: int
    height: int
    tile_w: int
    tile_h: int
    scale: int

    def tile_region(self, col: int, row: int) -> tuple[int, int, int, int]:
        """A tile's region in full-resolution pixels (edge tiles are cut at the image edge)."""
        span_w, span_h = self.tile_w * self.scale, self.tile_h * self.scale
        x, y = col * span_w, row * span_h
        return x, y, min(span_w, self.width - x), min(span_h, self.height - y)

    def covering(self, x: int, y: int, w: int, h: int) -> tuple[range, range]:
        """The columns and rows of the tiles that cover a region."""
        span_w, span_h = self.tile_w * self.scale, self.tile_h * self.scale
        return range(x // span_w, (x + w - 1) // span_w + 1), range(y // span_h, (y + h - 1) // span_h + 1)


def image_url(service: str, region: tuple[int, int, int, int], scale: int) -> str:
    """A IIIF 3 request for `region` at 1/`scale` size, as PNG: `.../x,y,w,h/sw,sh/0/default.png`."""
    x, y, w, h = region
    return f"{service}/{x},{y},{w},{h}/{-(-w // scale)},{-(-h // scale)}/0/default.png"


def grid_of(info: dict[str, Any], scale: int) -> Grid:
    tiles = info["tiles"][0]
    if scale not in tiles["scaleFactors"]:
        raise SystemExit(f"scale {scale} is not one of the image's scale factors {tiles['scaleFactors']}")
    return Grid(info["width"], info["height"], tiles["width"], tiles.get("height", tiles["width"]), scale)


async def fetch_image(client: httpx.AsyncClient, url: str) -> Any:
    reply = await client.get(url)
    reply.raise_for_status()
    return pyvips.Image.new_from_buffer(reply.content, "")


async def stitch(client: httpx.AsyncClient, service: str, grid: Grid, region: tuple[int, int, int, int]) -> Any:
    """Fetch every tile covering `region` at once, join them, and cut the region out."""
    cols, rows = grid.covering(*region)
    urls = [image_url(service, grid.tile_region(c, r), grid.scale) for r in rows for c in cols]
    tiles = await asyncio.gather(*(fetch_image(client, u) for u in urls))
    mosaic = pyvips.Image.arrayjoin(tiles, across=len(cols))
    x, y, w, h = region
    s = grid.scale
    left, top = (x - cols[0] * grid.tile_w * s) // s, (y - rows[0] * grid.tile_h * s) // s
    return mosaic.crop(left, top, -(-w // s), -(-h // s)), len(urls)


async def compare(client: httpx.AsyncClient, identifier: str, region: tuple[int, int, int, int],
                  scale: int) -> dict[str, Any]:
    """Stitched tiles vs one region request: sizes, tile count, largest pixel difference."""
    service = f"/iiif/3/{quote(identifier, safe='')}"
    info = (await client.get(f"{service}/info.json")).raise_for_status().json()
    grid = grid_of(info, scale)
    stitched, count = await stitch(client, service, grid, region)
    single = await fetch_image(client, image_url(service, region, scale))
    diff = (stitched.cast("int") - single.cast("int")).abs().max() if stitched.width == single.width else None
    return {"tiles": count, "stitched": (stitched.width, stitched.height), "single": (single.width, single.height),
            "max_difference": diff}


def parse_region(text: str) -> tuple[int, int, int, int]:
    x, y, w, h = (int(v) for v in text.split(","))
    return x, y, w, h


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("server", help="tileserver base URL, e.g. http://127.0.0.1:8000")
    p.add_argument("identifier", help="image identifier, e.g. sample.tif")
    p.add_argument("--region", type=parse_region, default=(1000, 700, 1200, 900), help="x,y,w,h (full resolution)")
    p.add_argument("--scale", type=int, default=2, help="scale factor (1 = full resolution)")
    args = p.parse_args(argv)

    async def run() -> dict[str, Any]:
        async with httpx.AsyncClient(base_url=args.server, timeout=30) as client:
            return await compare(client, args.identifier, args.region, args.scale)

    result = asyncio.run(run())
    print(f"{result['tiles']} tiles stitched to {result['stitched']}, one region request {result['single']}, "
          f"largest pixel difference {result['max_difference']}")
    return 0 if result["max_difference"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
