"""Pure level and tile-index maths shared by the core and every protocol.

Convention: level 0 is full resolution. IIP resolution numbers count from the smallest level;
DeepZoom and Zoomify conversions live here too so no protocol re-derives tile geometry.
"""

from __future__ import annotations

import math

from .errors import TileNotFound
from .models import Box, ImageMeta, Level


def level_factor(full: tuple[int, int], size: tuple[int, int]) -> float:
    """Downsampling factor of a level of `size` in an image of `full` size.

    Pyramid writers halve by exactly 2 per level and round the edge down (libvips, iipsrv's
    vips-made TIFFs) or up (DeepZoom): either way the pixel grid scales by a power of two. When the
    sizes fit `full / 2**k` within one pixel, return `2**k`; otherwise the plain width ratio.
    """
    fw, fh = full
    w, h = size
    ratio = fw / w if w else 1.0
    k = round(math.log2(ratio)) if ratio > 0 else 0
    p = 2.0**k
    if abs(fw / p - w) < 1 and abs(fh / p - h) < 1:
        return p
    return ratio


def halvings(width: int, height: int, tile: int) -> list[tuple[int, int]]:
    """Sizes from full resolution down, halving with rounding up, until one tile holds the image."""
    sizes = [(width, height)]
    while width > tile or height > tile:
        width, height = -(-width // 2), -(-height // 2)
        sizes.append((width, height))
    return sizes


def virtual_levels(width: int, height: int, tile: int) -> tuple[Level, ...]:
    """Levels for a single-resolution image: full size, then halvings down to one tile."""
    return tuple(
        Level(w, h, tile, tile, level_factor((width, height), (w, h)), stored=(i == 0))
        for i, (w, h) in enumerate(halvings(width, height, tile))
    )


def iip_resolution_to_level(meta: ImageMeta, resolution: int) -> int:
    """IIP resolution r (0 = smallest) -> level index (0 = full)."""
    n = len(meta.levels)
    if not 0 <= resolution < n:
        raise TileNotFound(f"resolution {resolution} does not exist (0..{n - 1})")
    return n - 1 - resolution


def tile_box(level: Level, col: int, row: int) -> tuple[int, int, int, int]:
    """(x, y, w, h) of a native tile in the level's own pixels; raises for tiles outside the grid."""
    if not (0 <= col < level.columns() and 0 <= row < level.rows()):
        raise TileNotFound(f"tile {col},{row} is outside the {level.columns()}x{level.rows()} grid")
    x, y = col * level.tile_width, row * level.tile_height
    return x, y, min(level.tile_width, level.width - x), min(level.tile_height, level.height - y)


def tile_index(level: Level, index: int) -> tuple[int, int]:
    """Row-major tile number (IIP JTL) -> (col, row)."""
    cols = level.columns()
    if not 0 <= index < cols * level.rows():
        raise TileNotFound(f"tile {index} does not exist")
    return index % cols, index // cols


def choose_level(meta: ImageMeta, region: Box, size: tuple[int, int]) -> int:
    """The smallest level at which `region` still has at least `size` pixels (1 px tolerance for
    rounded level sizes), so exports and tiles never read more pixels than they need."""
    best = 0
    for i, lv in enumerate(meta.levels):
        if region.w / lv.factor + 1 >= size[0] and region.h / lv.factor + 1 >= size[1]:
            best = i
        else:
            break
    return best


def region_at_level(level: Level, region: Box) -> tuple[int, int, int, int]:
    """A full-resolution box mapped onto a level's pixels, rounded outwards and clipped."""
    f = level.factor
    x0 = min(math.floor(region.x / f + 1e-9), level.width - 1)
    y0 = min(math.floor(region.y / f + 1e-9), level.height - 1)
    x1 = min(max(math.ceil((region.x + region.w) / f - 1e-9), x0 + 1), level.width)
    y1 = min(max(math.ceil((region.y + region.h) / f - 1e-9), y0 + 1), level.height)
    return x0, y0, x1 - x0, y1 - y0


def fit_inside(w: int, h: int, box_w: int | None, box_h: int | None) -> tuple[int, int]:
    """Output size for a w x h region asked to be `box_w` wide and/or `box_h` high, keeping the
    aspect ratio (both given: the largest size that fits inside the box). At least 1 x 1."""
    if box_w is not None and (box_h is None or box_w * h <= box_h * w):
        return box_w, max(1, round(h * box_w / w))
    if box_h is not None:
        return max(1, round(w * box_h / h)), box_h
    return w, h


def cap_size(size: tuple[int, int], max_size: int | None, max_area: int | None) -> tuple[int, int]:
    """Shrink `size` (keeping its aspect ratio) until it is within the configured limits."""
    w, h = size
    s = 1.0
    if max_size is not None and max(w, h) > max_size:
        s = max_size / max(w, h)
    if max_area is not None and w * h * s * s > max_area:
        s = math.sqrt(max_area / (w * h))
    if s >= 1.0:
        return size
    return max(1, int(w * s)), max(1, int(h * s))
