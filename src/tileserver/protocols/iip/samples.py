"""IIP's two sample-value commands, as pure functions around one core read (`TileService.samples`):
`PFL` (a line profile, JSON) and `SPECTRA` (the values at one pixel, XML), both of the source's own
samples at full depth (16-bit stays 16-bit), every band, for every view of the image: each page of
an image stack; each horizontal angle of an image sequence (its spectral bands in 1.3), file
`XXX_YYY` with YYY the vertical angle of `SDS` (90 without SDS, 0 for `SDS=x` alone), named by the
angle (`"10"`) as 1.3 prints it; or the image's one view, named "0".

Wire formats, from iipsrv 1.3's PFL.cc and SPECTRA.cc, checked against 1.3 itself:

- `PFL=2:10,10-13,10` -> `{"profile": [r,g,b, r,g,b, r,g,b]}` (bands interleaved per pixel); for a
  stack `{"profile": {"<page name>": [...], ...}}`, each value times the page's scale (StoNits).
  Integers stay integers, floats have 9 decimals, as 1.3 prints them. Where 1.3's bytes are not
  what it means we write what it means: from the second page on 1.3 emits `pages x` too many values
  (it multiplies its length by the band count once per page) and prints NaN as `nan` (not JSON).
- `SPECTRA=2,0,10,10` -> `<spectra><point><wavelength>0</wavelength><reflectance>0.482353</reflectance>
  </point></spectra>` (tab-indented as 1.3): one point per view, the value divided by 255 (8-bit) or
  65535 (16-bit), `%f`. 1.3 reads sample y * tile_width + x of the tile's interleaved buffer, which
  is the pixel's value only for one-band images away from edge tiles; we read pixel x,y itself and,
  for multi-band images, give one point per band, named `<view>:<band>` (`0:0`, `0:1`, `0:2`).
- A sequence member missing at the vertical angle asked (1.3 lists the horizontal angles at 90) is
  our 404; 1.3's PFL is a 404 too, its SPECTRA a 200 whose XML breaks off into its 404 text.
"""

from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET
from typing import NamedTuple

from ...errors import BadRequest, TileNotFound
from ...levels import c_float, iip_resolution_to_level, tile_box, tile_index
from ...models import ImageMeta, Samples
from .grammar import ProfileOut, SpectraOut

JSON = "application/json"
XML = "application/xml"


class View(NamedTuple):
    ident: str  # the image read: the image itself, or a sequence's member file
    page: int  # a stack's page
    name: str
    scale: float


def views(meta: ImageMeta, vertical: int = 90) -> list[View]:
    """The views PFL and SPECTRA report: a sequence's horizontal angles at `vertical` (as 1.3 loops over
    `getHorizontalViewsList()` with the session's vertical angle; a member that is not there is the
    caller's 404), a stack's pages (named by DocumentName, else their number, scaled by StoNits), or
    the image's single view 0."""
    if meta.sequence is not None:
        if vertical < 0:
            raise TileNotFound(f"view angle {vertical} does not exist in the image sequence {meta.ident}")
        return [View(meta.sequence.member(x, vertical), 0, str(x), 1.0) for x in meta.sequence.horizontal]
    if not meta.stack:
        return [View(meta.ident, 0, "0", 1.0)]
    return [View(meta.ident, i, item.name or str(i), item.scale) for i, item in enumerate(meta.stack)]


def profile_box(meta: ImageMeta, out: ProfileOut) -> tuple[int, tuple[int, int, int, int]]:
    """(level, box in that level's pixels) of a profile; a line leaving the level -> 404 (1.3 allows
    a start one past the edge and reads whatever lies there)."""
    level = iip_resolution_to_level(meta, out.resolution)
    lv = meta.levels[level]
    if out.x + out.width > lv.width or out.y + out.height > lv.height:
        raise TileNotFound(f"the profile leaves the {lv.width}x{lv.height} image at resolution {out.resolution}")
    return level, (out.x, out.y, out.width, out.height)


def spectra_box(meta: ImageMeta, out: SpectraOut) -> tuple[int, tuple[int, int, int, int]]:
    """(level, 1x1 box) of pixel x,y of tile t. A tile past the grid -> 404; x,y outside the tile
    -> 400, as 1.3 answers (an edge tile's missing part included, where 1.3 sends no points)."""
    level = iip_resolution_to_level(meta, out.resolution)
    lv = meta.levels[level]
    x0, y0, w, h = tile_box(lv, *tile_index(lv, out.tile))
    if out.x >= w or out.y >= h:
        raise BadRequest(f"SPECTRA: x,y coordinates outside of tile {out.tile} ({w}x{h})")
    return level, (x0 + out.x, y0 + out.y, 1, 1)


def sample_box(meta: ImageMeta, out: ProfileOut | SpectraOut) -> tuple[int, tuple[int, int, int, int]]:
    return profile_box(meta, out) if isinstance(out, ProfileOut) else spectra_box(meta, out)


def _profile_value(v: float, scale: float, floating: bool) -> float | int | None:
    """A sample as 1.3 prints it: integers bare, floats to 9 decimals; NaN/infinity as null."""
    v = v * scale
    if not math.isfinite(v):
        return None
    if not floating and v == int(v):
        return int(v)
    return round(v, 9)


def render_profile(found: list[tuple[View, Samples]]) -> bytes:
    """1.3's layout (`{\n\t"profile": [...]\n}`, pages one per line), every value and name
    written by json.dumps."""
    lists = [(view.name, json.dumps([_profile_value(v, view.scale, s.floating) for v in s.values],
                                    separators=(",", ":")))
             for view, s in found]
    if len(lists) == 1:
        return f'{{\n\t"profile": {lists[0][1]}\n}}'.encode()
    pages = ",\n".join(f"\t\t{json.dumps(name)}: {values}" for name, values in lists)
    return f'{{\n\t"profile": {{\n{pages}\n\t}}\n}}'.encode()


def _reflectance(v: float, bits: int, floating: bool) -> str:
    if not floating and bits in (8, 16):
        v = v / (255.0 if bits == 8 else 65535.0)
    return f"{c_float(v):f}"  # a C float, as 1.3 computes it


def render_spectra(found: list[tuple[View, Samples]]) -> bytes:
    root = ET.Element("spectra")
    for view, s in found:
        for band, v in enumerate(s.values[: s.bands]):
            point = ET.SubElement(root, "point")
            ET.SubElement(point, "wavelength").text = view.name if s.bands == 1 else f"{view.name}:{band}"
            ET.SubElement(point, "reflectance").text = _reflectance(v, s.bits, s.floating)
    ET.indent(root, space="\t")
    text: str = ET.tostring(root, encoding="unicode")
    return ('<?xml version="1.0" encoding="UTF-8"?>\n' + text).encode()
