"""The tiles a viewer asks for, per protocol and zoom level, as TileRequests: what `POST /cache/{id}/warm`
pre-renders (protocols/cacheapi.py). Each protocol's own translation makes them from the URLs its clients send,
so a warmed tile is the very cache entry a later request hits.

A level counts halvings from the full resolution in every protocol: 0 is full size, 1 half, ... A level the
protocol does not have for the image (past its smallest) gives no tiles.

- `iip`: every `JTL=r,n` tile of IIP resolution r = levels - 1 - level (the file's levels, stored and virtual).
- `iiif`: every tile of the info.json `tiles` grid at the level's scale factor, as OpenSeadragon and the
  bench's URL lists ask for them: `x,y,w,h/sw,/0/default.jpg` with sw = ceil(w / scale).
- `deepzoom`: every tile of DeepZoom level max - level (the .dzi's tile size and overlap).
- `zoomify`: every tile of tier count - 1 - level.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from urllib.parse import quote

from ..levels import ZOOMIFY_TILE, dz_max_level, grid, scaled_size, zoomify_tiers
from ..models import ImageMeta, OutputFormat, TileRequest
from ..settings import Settings
from . import deepzoom, zoomify
from .iiif import grammar as iiif_grammar
from .iiif import limits_of
from .iiif import to_tile_request as iiif_request
from .iip import to_tile_request as iip_request
from .iip.grammar import parse as iip_parse
from .iip.grammar import split_query

Warmer = Callable[[ImageMeta, int, Settings, tuple[OutputFormat, ...]], list[TileRequest]]


def iip_tiles(meta: ImageMeta, level: int, settings: Settings, formats: tuple[OutputFormat, ...]
              ) -> list[TileRequest]:
    if not 0 <= level < len(meta.levels):
        return []
    lv = meta.levels[level]
    resolution = len(meta.levels) - 1 - level
    ident = quote(meta.ident, safe="/")
    out = []
    for n in range(lv.columns() * lv.rows()):
        raw = f"FIF={ident}&JTL={resolution},{n}"
        out.append(iip_request(iip_parse(split_query(raw), raw), meta, settings))
    return out


def iiif_tiles(meta: ImageMeta, level: int, settings: Settings, formats: tuple[OutputFormat, ...]
               ) -> list[TileRequest]:
    if not 0 <= level < len(meta.levels):
        return []
    lv = meta.levels[level]
    scale = max(round(lv.factor), 1)
    step_w, step_h = lv.tile_width * scale, lv.tile_height * scale
    version = settings.iiif_version
    out = []
    for y in range(0, meta.height, step_h):
        for x in range(0, meta.width, step_w):
            w, h = min(step_w, meta.width - x), min(step_h, meta.height - y)
            params = iiif_grammar.ImageParams.parse(f"{x},{y},{w},{h}", f"{math.ceil(w / scale)},", "0",
                                                    "default.jpg", version, formats)
            out.append(iiif_request(params, meta, limits_of(settings), version)[0])
    return out


def deepzoom_tiles(meta: ImageMeta, level: int, settings: Settings, formats: tuple[OutputFormat, ...]
                   ) -> list[TileRequest]:
    top = dz_max_level(meta.width, meta.height)
    if not 0 <= level <= top:
        return []
    lay = deepzoom.layout(meta, settings)
    cols, rows = grid(scaled_size(meta.width, meta.height, level), lay.tile)
    return [deepzoom.to_tile_request(deepzoom.DziTile(meta.ident, top - level, c, r, OutputFormat.JPEG), meta, lay)
            for r in range(rows) for c in range(cols)]


def zoomify_tiles(meta: ImageMeta, level: int, settings: Settings, formats: tuple[OutputFormat, ...]
                  ) -> list[TileRequest]:
    floor = settings.zoomify_rounding == "down"
    tiers = zoomify_tiers(meta.width, meta.height, floor=floor)
    if not 0 <= level < len(tiers):
        return []
    tier = len(tiers) - 1 - level
    cols, rows = grid(tiers[tier], ZOOMIFY_TILE)
    return [zoomify.to_tile_request(zoomify.ZoomifyTile(meta.ident, 0, tier, c, r), meta, floor)
            for r in range(rows) for c in range(cols)]


WARMERS: dict[str, Warmer] = {"iip": iip_tiles, "iiif": iiif_tiles, "deepzoom": deepzoom_tiles,
                              "zoomify": zoomify_tiles}


def count(meta: ImageMeta, protocol: str, level: int, settings: Settings) -> int:
    """How many tiles `protocol` has at `level` (without making them: a request's size is checked first)."""
    if protocol in ("iip", "iiif"):
        if not 0 <= level < len(meta.levels):
            return 0
        lv = meta.levels[level]
        if protocol == "iip":
            return lv.columns() * lv.rows()
        scale = max(round(lv.factor), 1)
        return -(-meta.width // (lv.tile_width * scale)) * -(-meta.height // (lv.tile_height * scale))
    if protocol == "deepzoom":
        if not 0 <= level <= dz_max_level(meta.width, meta.height):
            return 0
        cols, rows = grid(scaled_size(meta.width, meta.height, level), deepzoom.layout(meta, settings).tile)
        return cols * rows
    tiers = zoomify_tiers(meta.width, meta.height, floor=settings.zoomify_rounding == "down")
    if not 0 <= level < len(tiers):
        return 0
    cols, rows = grid(tiers[len(tiers) - 1 - level], ZOOMIFY_TILE)
    return cols * rows


def tile_requests(meta: ImageMeta, protocols: list[str], levels: list[int], settings: Settings,
                  formats: tuple[OutputFormat, ...]) -> list[TileRequest]:
    """Every tile of `levels` in `protocols`, each request once (protocols that agree share a render)."""
    found: dict[TileRequest, None] = {}
    for protocol in protocols:
        for level in levels:
            found.update(dict.fromkeys(WARMERS[protocol](meta, level, settings, formats)))
    return list(found)
