"""The image as a capped tier presents it, and requests made against that view mapped back to the image.

A capped tier shows the image as if its full resolution were its largest level within the cap (`view_of`): the
view's `ImageMeta` has that level's size, the levels from it down (factors relative to it), and sizes, pages
and physical scales to match. Every protocol builds its documents (info.json, OBJ, .dzi, ImageProperties.xml) and
its levels from that view, so none can name a larger level. The core maps a request made against the view back
to the image's own pixels (`to_real`): a tile of view level j is the image's tile of level j + shift, a region is
scaled to full-resolution pixels, and an output larger than the region's pixels in the view (an upscale, which
would otherwise be drawn from the image's larger levels) is brought down to them: the capped result, never more.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from ..errors import Forbidden, TileNotFound
from ..models import Box, ImageMeta, Page, Tile, TileRequest
from .policy import Tier

MPP_KEYS = ("openslide.mpp-x", "openslide.mpp-y")


@dataclass(frozen=True)
class View:
    meta: ImageMeta  # what protocols see
    real: ImageMeta  # the image's own metadata
    shift: int = 0  # view level j is the image's level j + shift

    @property
    def identity(self) -> bool:
        return self.meta is self.real


def largest_within(real: ImageMeta, tier: Tier) -> int:
    """The index of the image's largest level within the tier's cap; Forbidden when none is."""
    for k, lv in enumerate(real.levels):
        if tier.fits(lv.width, lv.height):
            return k
    raise Forbidden(f"no size of {real.ident[:64]} is within this access tier")


def view_of(real: ImageMeta, tier: Tier) -> View:
    if not tier.capped:
        return View(real, real)
    k = largest_within(real, tier)
    if k == 0:
        return View(real, real)
    top = real.levels[k]
    base = top.factor if top.factor > 0 else real.width / top.width
    levels = tuple(replace(lv, factor=lv.factor / base) for lv in real.levels[k:])
    changes: dict[str, object] = {"width": top.width, "height": top.height, "levels": levels}
    if real.dpi is not None:
        changes["dpi"] = (real.dpi[0] / base, real.dpi[1] / base)
    if real.resolution is not None:
        x, y, unit = real.resolution
        changes["resolution"] = (x / base, y / base, unit)
    if real.properties:
        changes["properties"] = tuple((n, _scaled(v, base) if n in MPP_KEYS else v) for n, v in real.properties)
    if real.pages:
        changes["pages"] = tuple(_page_within(p, tier) for p in real.pages)
    if real.decode_pixels:
        changes["decode_pixels"] = min(real.decode_pixels, top.width * top.height)
    return View(replace(real, **changes), real, k)  # type: ignore[arg-type]


def _scaled(value: str, factor: float) -> str:
    try:
        return repr(float(value) * factor)
    except ValueError:
        return value


def _page_within(page: Page, tier: Tier) -> Page:
    """A document page's size as its own capped view shows it (its levels halve)."""
    w, h = page.width, page.height
    while not tier.fits(w, h) and (w > 1 or h > 1):
        w, h = -(-w // 2), -(-h // 2)
    return replace(page, width=w, height=h)


def to_real(req: TileRequest, view: View) -> TileRequest:
    """`req`, made against `view.meta`, in the image's own levels and pixels."""
    if view.identity:
        return req
    if req.tile is not None:
        t = req.tile
        if not 0 <= t.level < len(view.meta.levels):
            raise TileNotFound(f"level {t.level} is not in this access tier")
        return replace(req, tile=Tile(t.level + view.shift, t.col, t.row))
    box, size = req.region, req.size
    assert box is not None and size is not None
    vw, vh = view.meta.width, view.meta.height
    x0, y0 = max(box.x, 0), max(box.y, 0)
    x1, y1 = min(box.x + box.w, vw), min(box.y + box.h, vh)
    if x1 <= x0 or y1 <= y0:
        raise TileNotFound("the region is outside the image")
    sx, sy = view.real.width / vw, view.real.height / vh
    rx0, ry0 = min(round(x0 * sx), view.real.width - 1), min(round(y0 * sy), view.real.height - 1)
    rx1 = view.real.width if x1 == vw else max(min(round(x1 * sx), view.real.width), rx0 + 1)
    ry1 = view.real.height if y1 == vh else max(min(round(y1 * sy), view.real.height), ry0 + 1)
    return replace(req, region=Box(rx0, ry0, rx1 - rx0, ry1 - ry0), size=within(size, (x1 - x0, y1 - y0)))


def within(size: tuple[int, int], most: tuple[int, int]) -> tuple[int, int]:
    """`size`, brought down (keeping its aspect) to fit `most` when it is larger in either side."""
    w, h = size
    if w <= most[0] and h <= most[1]:
        return size
    scale = min(most[0] / w, most[1] / h)
    return max(1, min(most[0], round(w * scale))), max(1, min(most[1], round(h * scale)))
