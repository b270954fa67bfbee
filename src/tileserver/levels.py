"""Pure level and tile-index maths shared by the core and every protocol.

Convention: level 0 is full resolution. IIP resolution numbers count from the smallest level;
DeepZoom and Zoomify conversions live here too so no protocol re-derives tile geometry.
"""

from __future__ import annotations

import math
import struct

from .errors import TileNotFound
from .models import Box, ImageMeta, Level, TileRequest


def c_round(x: float) -> int:
    """C's round(): halves away from zero (Python's round() goes to the even neighbour)."""
    return math.floor(x + 0.5)


def c_float(x: float) -> float:
    """`x` as a C `float` holds it (iipsrv computes sizes, resolutions and values in single precision)."""
    return float(struct.unpack("f", struct.pack("f", x))[0])


def level_factor(full: tuple[int, int], size: tuple[int, int]) -> float:
    """Downsampling factor of a level of `size` in an image of `full` size.

    Pyramid writers halve by exactly 2 per level and round the edge down (libvips, iipsrv's
    vips-made TIFFs) or up (DeepZoom): either way the pixel grid scales by a power of two. When the
    sizes fit `full / 2**k` within one pixel, return `2**k`; otherwise the plain width ratio.
    """
    fw, fh = full
    w, h = size
    ratio = fw / w if w else 1.0
    big, small = (fw, w) if fw >= fh else (fh, h)  # the long side: a 1-pixel side never halves
    k = round(math.log2(big / small)) if big > 0 and small > 0 else 0
    p = 2.0**k
    if abs(fw / p - w) < 1 and abs(fh / p - h) < 1:
        return p
    return ratio


def halvings(width: int, height: int, tile: int, floor: bool = False) -> list[tuple[int, int]]:
    """Sizes from full resolution down, halving with rounding up (or down, with `floor`), until one
    tile holds the image."""
    sizes = [(width, height)]
    while width > tile or height > tile:
        width, height = (width // 2, height // 2) if floor else (-(-width // 2), -(-height // 2))
        sizes.append((max(width, 1), max(height, 1)))
    return sizes


def virtual_levels(width: int, height: int, tile: int) -> tuple[Level, ...]:
    """Levels for a single-resolution image: full size, then halvings down to one tile."""
    return tuple(
        Level(w, h, tile, tile, level_factor((width, height), (w, h)), stored=(i == 0))
        for i, (w, h) in enumerate(halvings(width, height, tile))
    )


def with_virtual(stored: list[Level], full: tuple[int, int]) -> tuple[Level, ...]:
    """`stored` levels followed by the virtual levels below the smallest: halvings rounding down
    (iipsrv's rule for JPEG and JPEG 2000) until one tile of that level's size holds the image."""
    last = stored[-1]
    tile = max(last.tile_width, last.tile_height)
    extra = halvings(last.width, last.height, tile, floor=True)[1:]
    return tuple(stored + [Level(w, h, last.tile_width, last.tile_height, level_factor(full, (w, h)), False)
                           for w, h in extra])


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


def source_box(meta: ImageMeta, req: TileRequest) -> tuple[int, tuple[int, int, int, int]]:
    """The level a request reads and the box in that level's pixels, before any resize: a native
    tile's own box, or a region mapped onto the smallest level that still has its output size."""
    if req.tile is not None:
        t = req.tile
        return t.level, tile_box(meta.levels[t.level], t.col, t.row)
    assert req.region is not None and req.size is not None
    index = choose_level(meta, req.region, req.size)
    return index, region_at_level(meta.levels[index], req.region)


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
    if max_size is not None and max(w, h) > max_size:
        w, h = (max_size, max(1, round(h * max_size / w))) if w >= h else (max(1, round(w * max_size / h)), max_size)
    if max_area is not None and w * h > max_area:
        s = math.sqrt(max_area / (w * h))
        w, h = max(1, int(w * s)), max(1, int(h * s))
    return w, h


def rotated_size(size: tuple[int, int], degrees: float) -> tuple[int, int]:
    """The canvas of a `size` image rotated by `degrees`: its sides swapped at 90 and 270, else the bounding
    box of the turned rectangle, `w' = |w cos a| + |h sin a|` and `h' = |h cos a| + |w sin a|` (IIIF
    implementation notes), rounded up: libvips' `rotate` rounds it to nearest, never larger."""
    w, h = size
    angle = degrees % 360
    if angle in (0, 180):
        return w, h
    if angle in (90, 270):
        return h, w
    c, s = abs(math.cos(math.radians(angle))), abs(math.sin(math.radians(angle)))
    return math.ceil(w * c + h * s - 1e-9), math.ceil(h * c + w * s - 1e-9)


def within_limits(size: tuple[int, int], max_size: int | None, max_area: int | None) -> bool:
    w, h = size
    return (max_size is None or max(w, h) <= max_size) and (max_area is None or w * h <= max_area)


def fit_rotated(size: tuple[int, int], degrees: float, max_size: int | None, max_area: int | None
                ) -> tuple[int, int]:
    """The largest size of `size`'s aspect ratio (never larger than `size`) whose canvas rotated by
    `degrees` is within `max_size` and `max_area`: a 45-degree turn of a 5000 x 5000 export under a 5000
    limit is 3535 x 3535, whose canvas is 5000 x 5000."""
    canvas = rotated_size(size, degrees)
    if within_limits(canvas, max_size, max_area):
        return size
    w, h = size
    scale = 1.0
    if max_size is not None:
        scale = min(scale, max_size / max(canvas))
    if max_area is not None:
        scale = min(scale, math.sqrt(max_area / (canvas[0] * canvas[1])))
    fitted = max(1, int(w * scale)), max(1, int(h * scale))
    while not within_limits(rotated_size(fitted, degrees), max_size, max_area) and max(fitted) > 1:
        fitted = max(1, fitted[0] - (fitted[0] >= fitted[1])), max(1, fitted[1] - (fitted[1] >= fitted[0]))
    return fitted


# -- DeepZoom and Zoomify ---------------------------------------------------------------------
# Both protocols cut the image into levels that halve with rounding up, so the level `shift`
# halvings below full resolution is ceil(W / 2**shift) x ceil(H / 2**shift) (nested integer
# ceil-division is exact), and one level pixel covers 2**shift full-resolution pixels.
# DeepZoom numbers levels from 1x1 (level 0) up to full size (level `dz_max_level`); Zoomify numbers
# tiers from the first level that fits one tile (tier 0) up to full size. Both reduce to
# `scaled_tile(width, height, shift, ...)`. References: /work/shared/reference/protocols.md §3-4,
# OpenSeadragon `tilesource.js` (`getNumTiles`, `getTileBounds`), libvips `dzsave.c`.

ZOOMIFY_TILE = 256
ZOOMIFY_GROUP = 256  # tiles per TileGroup folder (libvips, OpenLayers and OpenSeadragon agree)


def scaled_size(width: int, height: int, shift: int, floor: bool = False) -> tuple[int, int]:
    """Size of the level `shift` halvings (rounding up) below full size: 1000x700, 3 -> 125x88.
    With `floor`, halvings round down (OpenSeadragon's Zoomify tiers): 1000x700, 3 -> 125x87."""
    d = 1 << shift
    if floor:
        return max(width // d, 1), max(height // d, 1)
    return -(-width // d), -(-height // d)


def grid(size: tuple[int, int], tile: int) -> tuple[int, int]:
    """(columns, rows) of a level of `size` cut into `tile`-pixel steps: (125, 88), 64 -> (2, 2)."""
    return -(-size[0] // tile), -(-size[1] // tile)


def _span(index: int, tile: int, overlap: int, extent: int) -> tuple[int, int]:
    """(start, length) of tile `index` along one axis, as OpenSeadragon `getTileBounds`: interior
    sides carry `overlap` extra pixels, the image edges none, the last tile keeps what is left."""
    start = 0 if index == 0 else index * tile - overlap
    length = tile + (1 if index == 0 else 2) * overlap
    return start, min(length, extent - start)


def scaled_tile(
    width: int, height: int, shift: int, tile: int, overlap: int, col: int, row: int, floor: bool = False
) -> tuple[Box, tuple[int, int]]:
    """Tile (col, row) of the level `shift` halvings below full size, as (full-resolution box,
    output size). The box is the tile's level box times 2**shift, clipped to the image.

    Example: 1000x700, shift 2 (250x175), tile 254, overlap 1, tile (0, 0) -> the level box is
    0,0 250x175 (255 wide, clipped), so `(Box(0, 0, 1000, 700), (250, 175))`.
    Tiles outside the level's grid raise `TileNotFound`.
    """
    level = scaled_size(width, height, shift, floor)
    cols, rows = grid(level, tile)
    if not (0 <= col < cols and 0 <= row < rows):
        raise TileNotFound(f"tile {col},{row} is outside the {cols}x{rows} grid of a "
                           f"{level[0]}x{level[1]} level")
    x, w = _span(col, tile, overlap, level[0])
    y, h = _span(row, tile, overlap, level[1])
    d = 1 << shift
    full = Box(x * d, y * d, min(w * d, width - x * d), min(h * d, height - y * d))
    return full, (w, h)


def dz_max_level(width: int, height: int) -> int:
    """The DeepZoom full-resolution level, ceil(log2(max(w, h))): 1000x700 -> 10, 1x1 -> 0."""
    return (max(width, height) - 1).bit_length()


def dz_shift(width: int, height: int, level: int) -> int:
    """Halvings below full size of DeepZoom `level`; levels outside 0..max raise `TileNotFound`."""
    top = dz_max_level(width, height)
    if not 0 <= level <= top:
        raise TileNotFound(f"DeepZoom level {level} does not exist (0..{top})")
    return top - level


def zoomify_tiers(width: int, height: int, tile: int = ZOOMIFY_TILE, floor: bool = False) -> list[tuple[int, int]]:
    """Zoomify tier sizes, tier 0 (the first that fits one tile) first, as libvips `dzsave
    --layout zoomify` and OpenLayers (`tierSizeCalculation: 'default'`) compute them:
    513x300 -> [(129, 75), (257, 150), (513, 300)]. OpenSeadragon halves with floor instead
    (`floor=True`, setting `zoomify_rounding="down"`): [(256, 150), (513, 300)]."""
    return halvings(width, height, tile, floor)[::-1]


def zoomify_shift(width: int, height: int, tier: int, tile: int = ZOOMIFY_TILE, floor: bool = False) -> int:
    """Halvings below full size of Zoomify `tier`; tiers outside the pyramid raise `TileNotFound`."""
    count = len(zoomify_tiers(width, height, tile, floor))
    if not 0 <= tier < count:
        raise TileNotFound(f"Zoomify tier {tier} does not exist (0..{count - 1})")
    return count - 1 - tier


def zoomify_num_tiles(width: int, height: int, tile: int = ZOOMIFY_TILE, floor: bool = False) -> int:
    """NUMTILES: the tile count over all tiers (3000x2000 -> 1+2+6+24+96 = 129)."""
    return sum(c * r for c, r in (grid(s, tile) for s in zoomify_tiers(width, height, tile, floor)))


def zoomify_tile_group(width: int, height: int, tier: int, col: int, row: int,
                       tile: int = ZOOMIFY_TILE, floor: bool = False) -> int:
    """TileGroup folder of a tile: its row-major index over all tiers, smallest tier first,
    divided by 256. 10000x7000, tier 5, (16, 7) -> index 99 + 7*20 + 16 = 255 -> group 0."""
    tiers = zoomify_tiers(width, height, tile, floor)
    zoomify_shift(width, height, tier, tile, floor)
    cols, rows = grid(tiers[tier], tile)
    if not (0 <= col < cols and 0 <= row < rows):
        raise TileNotFound(f"tile {col},{row} is outside the {cols}x{rows} grid of tier {tier}")
    before = sum(c * r for c, r in (grid(s, tile) for s in tiers[:tier]))
    return (before + row * cols + col) // ZOOMIFY_GROUP
