"""The size each tile or image URL must decode to, worked out from a protocol's own metadata and
grammar (no browser, no server): IIP `JTL=r,k` from `obj=Resolutions` and `Tile-size`; Zoomify
`z-x-y` and DeepZoom `L/x_y` from the full size, tile size (and DZI `Overlap`) with each level half
the next, rounded up; IIIF `region/size` from the region clipped to the image and the size keyword.
Where a grammar leaves rounding open (IIIF `w,` and `!w,h`, IIP `WID`), both neighbours are allowed."""

from __future__ import annotations

import json
import math
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from urllib.parse import parse_qsl, unquote, urlsplit

Size = tuple[int, int]

IIP_PATHS = ("/iip", "/fcgi-bin/iipsrv.fcgi")
IIP_TILE = re.compile(r"(\d+),(\d+)")
ZOOMIFY = re.compile(r"/zoomify/(.+)/TileGroup\d+/(\d+)-(\d+)-(\d+)\.jpg")
DZI = re.compile(r"/deepzoom/(.+)_files/(\d+)/(\d+)_(\d+)\.\w+")
IIIF = re.compile(r"/iiif/[23]/([^/]+)/([^/]+)/([^/]+)/[^/]+/[^/]+\.\w+")


@dataclass(frozen=True)
class Grid:
    """What a protocol's metadata says about an image: level sizes from full resolution down, the
    tile size, DeepZoom's overlap, and how the protocol numbers its levels."""

    levels: tuple[Size, ...]
    tile: Size
    overlap: int = 0
    numbering: str = "from-smallest"  # IIP and Zoomify: 0 = smallest; DeepZoom: "dzi"; IIIF: scale factors

    @property
    def full(self) -> Size:
        return self.levels[0]

    def index(self, level: int) -> int:
        """The protocol's level number as a position in `levels` (0 = full resolution)."""
        if self.numbering == "dzi":
            return dzi_max_level(*self.full) - level
        return len(self.levels) - 1 - level

    def counts(self, index: int) -> Size:
        w, h = self.levels[index]
        return math.ceil(w / self.tile[0]), math.ceil(h / self.tile[1])


@dataclass(frozen=True)
class Expect:
    """One image URL: the sizes it may decode to and, for tiles, the level (0 = full resolution)
    and the tile's column and row there."""

    sizes: frozenset[Size]
    index: int | None = None
    col: int = 0
    row: int = 0


def halvings(w: int, h: int, count: int) -> tuple[Size, ...]:
    """`count` sizes from w x h down, each half the one before, rounded up."""
    return tuple((-(-w // 2**k), -(-h // 2**k)) for k in range(count))


def dzi_max_level(w: int, h: int) -> int:
    return math.ceil(math.log2(max(w, h)))


def zoomify_tiers(w: int, h: int, tile: int) -> int:
    tiers = 1
    while w > tile or h > tile:
        w, h, tiers = -(-w // 2), -(-h // 2), tiers + 1
    return tiers


def scaled(n: int, num: int, den: int) -> set[int]:
    """n·num/den, rounded either way when it is not whole (at least 1)."""
    exact = n * num / den
    return {max(1, math.floor(exact)), max(1, math.ceil(exact))}


def fits(w: int, h: int, box_w: int, box_h: int) -> frozenset[Size]:
    """IIIF `!w,h`: the largest size with w x h's aspect ratio inside the box."""
    if box_w * h <= box_h * w:
        return frozenset((box_w, y) for y in scaled(h, box_w, w))
    return frozenset((x, box_h) for x in scaled(w, box_h, h))


# -- metadata documents -> Grid ----------------------------------------------------------------


def iip_grid(text: str) -> Grid:
    """`obj=Max-size`, `Tile-size`, `Resolution-number`, `Resolutions` lines (`Resolutions` smallest first)."""
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    full = tuple(int(v) for v in fields["Max-size"].split())
    tile = tuple(int(v) for v in fields["Tile-size"].split())
    sizes = [tuple(int(v) for v in pair.split()) for pair in fields["Resolutions"].split(",")]
    assert len(sizes) == int(fields["Resolution-number"]), fields
    assert sizes[-1] == full, (sizes, full)
    return Grid(tuple((w, h) for w, h in reversed(sizes)), (tile[0], tile[1]))


def zoomify_grid(text: str) -> Grid:
    props = ET.fromstring(text).attrib
    w, h, tile = int(props["WIDTH"]), int(props["HEIGHT"]), int(props["TILESIZE"])
    grid = Grid(halvings(w, h, zoomify_tiers(w, h, tile)), (tile, tile))
    assert int(props["NUMTILES"]) == sum(cx * cy for cx, cy in map(grid.counts, range(len(grid.levels)))), props
    return grid


def dzi_grid(text: str) -> Grid:
    root = ET.fromstring(text)
    size = root.find("{http://schemas.microsoft.com/deepzoom/2008}Size")
    assert size is not None, text
    w, h, tile = int(size.attrib["Width"]), int(size.attrib["Height"]), int(root.attrib["TileSize"])
    return Grid(halvings(w, h, dzi_max_level(w, h) + 1), (tile, tile), int(root.attrib["Overlap"]), "dzi")


def iiif_grid(text: str) -> Grid:
    info = json.loads(text)
    tiles = info["tiles"][0]
    tile = (tiles["width"], tiles.get("height", tiles["width"]))
    return Grid(halvings(info["width"], info["height"], len(tiles["scaleFactors"])), tile, numbering="iiif")


# -- URL -> Expect -------------------------------------------------------------------------------


def expect(url: str, grid: Grid) -> Expect | None:
    """The sizes an image URL of any of the four protocols must decode to; None for a URL that asks
    for no image (metadata); ValueError for an image form this harness does not know."""
    parts = urlsplit(url)
    if parts.path in IIP_PATHS:
        return iip_expect(parse_qsl(parts.query), grid)
    path = unquote(parts.path)
    if m := ZOOMIFY.fullmatch(path):
        return tile_expect(grid, int(m[2]), int(m[3]), int(m[4]))
    if m := DZI.fullmatch(path):
        return tile_expect(grid, int(m[2]), int(m[3]), int(m[4]))
    if m := IIIF.fullmatch(parts.path):
        return iiif_expect(unquote(m[2]), unquote(m[3]), grid)
    return None


def tile_expect(grid: Grid, level: int, x: int, y: int) -> Expect:
    """A tile of a fixed grid: the level's size cut into tiles, edge tiles partial, DeepZoom's
    overlap added on the sides that have a neighbour. A tile outside the grid may be nothing."""
    index = grid.index(level)
    if not 0 <= index < len(grid.levels) or x >= grid.counts(index)[0] or y >= grid.counts(index)[1]:
        return Expect(frozenset(), index, x, y)
    (lw, lh), (tw, th), ov = grid.levels[index], grid.tile, grid.overlap
    w = min((x + 1) * tw + ov, lw) - (x * tw - (ov if x else 0))
    h = min((y + 1) * th + ov, lh) - (y * th - (ov if y else 0))
    return Expect(frozenset({(w, h)}), index, x, y)


def iip_expect(query: list[tuple[str, str]], grid: Grid) -> Expect | None:
    params = {k.upper(): v for k, v in query}
    for command in ("JTL", "PTL", "WTL", "ATL"):
        if command in params:
            m = IIP_TILE.fullmatch(params[command])
            if m is None:
                raise ValueError(f"unknown IIP tile form {params[command]!r}")
            index, k = grid.index(int(m[1])), int(m[2])
            cols = grid.counts(index)[0] if 0 <= index < len(grid.levels) else 1
            return tile_expect(grid, int(m[1]), k % cols, k // cols)
    if "CVT" not in params:
        return None
    if "RGN" in params or ("WID" in params) == ("HEI" in params):
        raise ValueError(f"only WID or HEI exports of the whole image are known here: {query}")
    w, h = grid.full
    if "WID" in params:
        wid = int(params["WID"])
        return Expect(frozenset((wid, y) for y in scaled(h, wid, w)))
    hei = int(params["HEI"])
    return Expect(frozenset((x, hei) for x in scaled(w, hei, h)))


def iiif_expect(region: str, size: str, grid: Grid) -> Expect:
    """Region `full` or `x,y,w,h` (clipped to the image); size `max`, `full`, `w,`, `,h`, `w,h` or `!w,h`.
    A region of tile·2ᵏ pixels at a multiple of itself is a tile of level k."""
    full_w, full_h = grid.full
    x, y, rw, rh = (0, 0, full_w, full_h) if region == "full" else tuple(int(v) for v in region.split(","))
    cw, ch = min(rw, full_w - x), min(rh, full_h - y)
    if size in ("max", "full"):
        sizes = frozenset({(cw, ch)})
    elif size.startswith("!"):
        bw, bh = (int(v) for v in size[1:].split(","))
        sizes = fits(cw, ch, bw, bh)
    else:
        sw, _, sh = size.partition(",")
        if sw and sh:
            sizes = frozenset({(int(sw), int(sh))})
        elif sw:
            sizes = frozenset((int(sw), v) for v in scaled(ch, int(sw), cw))
        else:
            sizes = frozenset((v, int(sh)) for v in scaled(cw, int(sh), ch))
    k = math.log2(rw / grid.tile[0]) if rw >= grid.tile[0] else -1
    if region == "full" or k != int(k) or x % rw or y % rh:
        return Expect(sizes)
    return Expect(sizes, int(k), x // rw, y // rh)
