"""What is laid over an image response (`models.Overlays`): redaction rectangles, a watermark image and a
line of text, applied in the libvips pipeline of imaging/render.py (a request with overlays is never passed
through nor recoded).

Redactions are painted twice. First on the pixels as read from the source level, before any resize, over
every level pixel that holds any part of a rectangle (rounded outwards, and one pixel more on a reduced
level, whose pixels were averaged from finer ones): no sample of the rectangle reaches the resize, the
processing or the encoder, so nothing of it bleeds into the pixels around it. Then on the output pixels
(after resize and processing, before mirroring and rotation, which carry it along), over every output pixel
the rectangle touches, so the rectangle is the solid colour at every size.

The watermark and the text are laid over the final (mirrored, rotated) output, as iipsrv 1.3 does. A
watermark at position `random` is placed as iipsrv places it (Watermark.cc): a tile gets one at a random
place within it; a larger output (a region, a CVT export) is cut into blocks of twice the tile size, each
getting one at a random place within it; with `probability` p each tile or block gets one with probability p.
The random numbers are drawn from a generator seeded with the request, so a response is the same bytes every
time (caches, ETags). `a` is the mark's own alpha (255 without one) / 255 times `opacity`; blending is
`Watermark.blend`: "over", `out = base * (1 - a) + mark * a`, or "add", iipsrv's: `out = min(top, base +
mark * a)`, so an iipsrv watermark drawn on black (no alpha band) only brightens what lies under its marks.
"""

from __future__ import annotations

import hashlib
import html
import logging
import math
import random
import time
from typing import Any

import numpy as np
import pyvips

from ..cache.memory import CountLRU
from ..errors import TileServerError
from ..models import ImageMeta, Overlays, Redaction, TextOverlay, TileRequest, Watermark
from ..sources import vfs

log = logging.getLogger(__name__)
BLENDS = ("over", "add")
POSITIONS = ("random", "center", "top-left", "top-right", "bottom-left", "bottom-right", "repeat")
WATERMARKS = 8  # watermark images kept decoded (by location, version and scale)
WATERMARK_PIXELS = 4096 * 4096  # the largest watermark accepted (after `scale`)
RECHECK_SECONDS = 10.0  # a watermark file is stat'ed again at most this often, and reloaded when it changed
TEXTS = 64  # text masks kept rendered (by text and size)
SMALL_PIXELS = 4 << 20  # outputs up to this size are blended in numpy, in memory (as render.py TIMED_PIXELS)
LUMA = (0.2126, 0.7152, 0.0722)  # Rec. 709 weights: a colour's grey for a grey output

Rect = tuple[int, int, int, int]  # x, y, width, height


# -- redactions -------------------------------------------------------------------------------------------
def redact_source(img: Any, meta: ImageMeta, level: int, box: Rect, redactions: tuple[Redaction, ...]) -> Any:
    """`img` (`box` of `level`, as read, not resized) with every level pixel that holds any part of a
    redaction painted (outwards rounded; one pixel more on a reduced level)."""
    if not redactions:
        return img
    lv = meta.levels[level]
    sx, sy = lv.width / meta.width, lv.height / meta.height
    pad = 0 if level == 0 and (sx, sy) == (1.0, 1.0) else 1
    for r in redactions:
        rect = _covering((r.x * sx - box[0], r.y * sy - box[1], (r.x + r.width) * sx - box[0],
                          (r.y + r.height) * sy - box[1]), pad, img.width, img.height)
        if rect is not None:
            img = paint(img, rect, r.colour)
    return img


def redact_output(img: Any, meta: ImageMeta, level: int, box: Rect, redactions: tuple[Redaction, ...]) -> Any:
    """`img` (`box` of `level` resized to `img`'s size, processed, not yet mirrored or rotated) with every
    output pixel a redaction touches painted in its colour."""
    if not redactions:
        return img
    lv = meta.levels[level]
    sx, sy = lv.width / meta.width, lv.height / meta.height
    ox, oy = img.width / box[2], img.height / box[3]
    pad = 0 if (ox, oy) == (1.0, 1.0) else 1  # the resize kernel spreads the painted border by a pixel
    for r in redactions:
        rect = _covering(((r.x * sx - box[0]) * ox, (r.y * sy - box[1]) * oy, ((r.x + r.width) * sx - box[0]) * ox,
                          ((r.y + r.height) * sy - box[1]) * oy), pad, img.width, img.height)
        if rect is not None:
            img = paint(img, rect, r.colour)
    return img


def _covering(edges: tuple[float, float, float, float], pad: int, width: int, height: int) -> Rect | None:
    """The whole pixels covering the box `edges` (x0, y0, x1, y1), grown by `pad`, clipped to the image;
    None when that is empty."""
    x0, y0 = max(0, math.floor(edges[0] + 1e-9) - pad), max(0, math.floor(edges[1] + 1e-9) - pad)
    x1, y1 = min(width, math.ceil(edges[2] - 1e-9) + pad), min(height, math.ceil(edges[3] - 1e-9) + pad)
    return (x0, y0, x1 - x0, y1 - y0) if x1 > x0 and y1 > y0 else None


def paint(img: Any, rect: Rect, colour: tuple[int, int, int]) -> Any:
    """`img` with `rect` filled with `colour` (8-bit RGB, scaled to 16 bits for ushort images, its luminance
    for grey ones; 0 in every band of any other image), opaque where `img` has alpha. Lazy: a constant block
    inserted, so a large output is not made in memory for it."""
    x, y, w, h = rect
    alpha = bool(img.hasalpha())
    colours = img.bands - 1 if alpha else img.bands
    top = {"uchar": 255.0, "ushort": 65535.0}.get(img.format)
    if top is None or colours not in (1, 3):
        values = [0.0] * img.bands
    else:
        rgb = list(colour) if colours == 3 else [sum(w * c for w, c in zip(LUMA, colour, strict=True))]
        values = [round(c * top / 255.0) for c in rgb] + ([top] if alpha else [])
    block = (pyvips.Image.black(w, h, bands=img.bands) + values).cast(img.format)
    return img.insert(block, x, y)


# -- watermark and text -----------------------------------------------------------------------------------
def decorate(img: Any, req: TileRequest, overlays: Overlays, block: int) -> Any:
    """The final output `img` of `req` with the watermark and the text of `overlays` laid over it; `block`:
    the side of the blocks a `random` watermark is placed in (0: the whole output, as for a tile)."""
    if overlays.watermark is not None:
        img = watermark(img, overlays.watermark, block, seed_of(req))
    if overlays.text is not None:
        img = text(img, overlays.text)
    return img


def seed_of(req: TileRequest) -> int:
    """The watermark's random seed: the request itself (the same response gets the same places)."""
    return int.from_bytes(hashlib.blake2b(repr(req).encode(), digest_size=8).digest(), "big")


def watermark(img: Any, mark: Watermark, block: int, seed: int) -> Any:
    """`img` with `mark` laid over it, at the places its `position` and `probability` give."""
    if mark.opacity <= 0 or mark.probability <= 0:
        return img
    wm = watermark_image(mark.location, mark.scale)
    mh, mw = wm.shape[:2]
    rng = random.Random(seed)
    places: list[Rect] = []  # where the mark goes, each clipped to its block
    if mark.position == "random":
        for bx, by, bw, bh in blocks(img.width, img.height, block):
            if rng.random() < mark.probability:
                x = bx + int(rng.random() * (bw - mw)) if bw > mw else bx
                y = by + int(rng.random() * (bh - mh)) if bh > mh else by
                places.append((x, y, min(mw, bw), min(mh, bh)))
    elif rng.random() < mark.probability:
        places = fixed_places(img.width, img.height, mw, mh, mark.position)
    return blend(img, wm, places, mark.opacity, add=mark.blend == "add")


def blocks(width: int, height: int, block: int) -> list[Rect]:
    """iipsrv's blocks: the whole output when `block` is 0 or the output fits in one, else a grid of
    `block`-pixel squares, the last row and column narrower (row by row)."""
    if block <= 0 or (width <= block and height <= block):
        return [(0, 0, width, height)]
    return [(x, y, min(block, width - x), min(block, height - y))
            for y in range(0, height, block) for x in range(0, width, block)]


def fixed_places(width: int, height: int, mw: int, mh: int, position: str) -> list[Rect]:
    """The places of a mark at a named position (`repeat`: side by side over the whole output, from its
    top-left corner), clipped to the output."""
    if position == "repeat":
        return [(x, y, min(mw, width - x), min(mh, height - y))
                for y in range(0, height, mh) for x in range(0, width, mw)]
    x, y = place_at(width, height, mw, mh, position, 0)
    x0, y0 = max(x, 0), max(y, 0)
    w, h = min(x + mw, width) - x0, min(y + mh, height) - y0
    return [(x0, y0, w, h)] if w > 0 and h > 0 else []


def place_at(width: int, height: int, w: int, h: int, position: str, margin: int) -> tuple[int, int]:
    """The top-left corner of a `w` x `h` thing at `position` in a `width` x `height` image."""
    if position not in POSITIONS[1:6]:
        raise ValueError(f"unknown overlay position {position!r}; choose from {', '.join(POSITIONS)}")
    if position == "center":
        return (width - w) // 2, (height - h) // 2
    x = margin if position.endswith("left") else width - w - margin
    y = margin if position.startswith("top") else height - h - margin
    return x, y


def blend(img: Any, over: Any, places: list[Rect], opacity: float, add: bool = False) -> Any:
    """`img` with the top-left `place[2:]` of `over` (a uint8 array, height x width x RGBA) composited "over" it at each
    `place[:2]`, its alpha scaled by `opacity` (`add`: its colour times that alpha added to `img`, clipped, as
    iipsrv does); `img`'s own alpha band, if any, is kept. A grey output gets the
    mark's luma (Rec. 709 weights). Outputs up to `SMALL_PIXELS` (tiles, most regions) are blended in numpy in
    one pass over the decoded pixels (a chain of libvips operations per mark cost 3 to 4 times the decode of a
    tile, measured); larger ones lazily, in bounded memory."""
    places = [p for p in places if p[2] > 0 and p[3] > 0]
    if not places:
        return img
    alpha = bool(img.hasalpha())
    colours = img.bands - 1 if alpha else img.bands
    if colours not in (1, 3) or img.format not in ("uchar", "ushort"):
        return img
    if img.width * img.height <= SMALL_PIXELS:
        return _blend_array(img, over, places, opacity, colours, add)
    for place in places:
        img = _blend_vips(img, over, place, opacity, colours, add)
    return img


def _mark_parts(over: Any, w: int, h: int, opacity: float, colours: int, top: float) -> tuple[Any, Any]:
    """(colour, alpha) of the top-left `w` x `h` of `over` as float arrays: colour scaled to `top`, in
    `colours` bands; alpha 0..1 times `opacity`."""
    px = over[:h, :w].astype(np.float32)
    a = px[:, :, -1:] * (opacity / 255.0)
    colour = px[:, :, :-1]
    if colours == 1:
        colour = colour @ np.array(LUMA, np.float32)[:, None]
    return colour * (top / 255.0), a


def _blend_array(img: Any, over: Any, places: list[Rect], opacity: float, colours: int, add: bool) -> Any:
    top = 65535.0 if img.format == "ushort" else 255.0
    px = img.numpy()
    px = (px[:, :, None] if px.ndim == 2 else px).copy()
    for x, y, w, h in places:
        colour, a = _mark_parts(over, w, h, opacity, colours, top)
        region = px[y:y + h, x:x + w, :colours].astype(np.float32)
        mixed = np.minimum(region + colour * a, top) if add else region * (1 - a) + colour * a
        px[y:y + h, x:x + w, :colours] = (mixed + 0.5).astype(px.dtype)
    return pyvips.Image.new_from_array(px, interpretation=img.interpretation)


def _blend_vips(img: Any, over: Any, place: Rect, opacity: float, colours: int, add: bool) -> Any:
    x, y, w, h = place
    part = pyvips.Image.new_from_array(np.ascontiguousarray(over[:h, :w]))
    top = 65535.0 if img.format == "ushort" else 255.0
    a = part[part.bands - 1] * (opacity / 255.0)
    colour = part.extract_band(0, n=part.bands - 1)
    if colours == 1:
        colour = colour.recomb([list(LUMA)])
    if top != 255.0:
        colour = colour * (top / 255.0)
    base = img.crop(x, y, w, h)
    base_colour = base.extract_band(0, n=colours) if base.bands != colours else base
    if add:
        summed = base_colour + colour * a
        mixed = (summed > top).ifthenelse(top, summed)
    else:
        mixed = base_colour * (1 - a) + colour * a
    mixed = (mixed + 0.5).cast(img.format)
    if base.bands != colours:
        mixed = mixed.bandjoin(base[colours])
    return img.insert(mixed.copy(interpretation=img.interpretation), x, y)


def text(img: Any, t: TextOverlay) -> Any:
    """`img` with `t` written over it: `t.size` pixels high (at most the output's height), in `t.colour` at
    `t.opacity`, at `t.position` with a margin of a quarter of its height."""
    size = max(1, min(t.size, img.height))
    mask = text_mask(t.text, size)
    if mask is None:
        return img
    mh, mw = mask.shape
    margin = max(1, size // 4)
    x, y = place_at(img.width, img.height, mw, mh, t.position, margin)
    x0, y0 = max(x, 0), max(y, 0)
    w, h = min(x + mw, img.width) - x0, min(y + mh, img.height) - y0
    if w <= 0 or h <= 0:
        return img
    over = np.empty((h, w, 4), np.uint8)
    over[:, :, :3] = t.colour
    over[:, :, 3] = mask[y0 - y : y0 - y + h, x0 - x : x0 - x + w]
    return blend(img, over, [(x0, y0, w, h)], t.opacity)


_texts: CountLRU[tuple[str, int], Any] = CountLRU(TEXTS)


def text_mask(s: str, size: int) -> Any | None:
    """`s` rendered by Pango (libvips `text`) as an 8-bit coverage mask (a height x width array) `size` pixels
    high; None for text with no ink. Kept for reuse."""
    if not s.strip():
        return None
    key = (s, size)
    found = _texts.get(key)
    if found is not None:
        return found
    # Pango reads markup: the text is escaped, so `<` and `&` are shown, not parsed
    mask = pyvips.Image.text(html.escape(s), font=f"sans {max(size, 8)}", dpi=72)
    if mask.width <= 1 or mask.max() == 0:
        return None
    if mask.height != size:
        mask = mask.resize(size / mask.height, kernel="linear")
    mask = mask.numpy()
    _texts.put(key, mask)
    return mask


class WatermarkError(TileServerError):
    """A watermark image that cannot be read or decoded: a configuration error, refused at startup (`check`);
    a response needing a watermark never loaded is a 500 with a safe message (the location is logged)."""

    def __init__(self, detail: str) -> None:
        super().__init__("the watermark of this response cannot be read")
        self.detail = detail

    def __str__(self) -> str:
        return self.detail


_marks: CountLRU[tuple[str, float], tuple[float, tuple[int, float, str], Any]] = CountLRU(WATERMARKS)


def watermark_image(location: str, scale: float = 1.0) -> Any:
    """The watermark at `location` (a local path or a store URL under a mounted root, read through vfs),
    scaled by `scale`, as 8-bit sRGB with an alpha band (a height x width x 4 uint8 array). Kept per location
    and scale; the file is checked again at most every `RECHECK_SECONDS` and reloaded when its size, mtime or
    version changed."""
    key = (location, scale)
    now = time.monotonic()
    found = _marks.get(key)
    if found is not None and now - found[0] < RECHECK_SECONDS:
        return found[2]
    try:
        version = _version(location)
        img = found[2] if found is not None and found[1] == version else load_watermark(location, scale)
    except WatermarkError as exc:
        if found is None:
            log.error("%s", exc.detail)
            raise
        log.warning("%s; the copy read before is used", exc.detail)  # gone or broken since: no 5xx for it
        version, img = found[1], found[2]
    _marks.put(key, (now, version, img))
    return img


def _version(location: str) -> tuple[int, float, str]:
    try:
        st = vfs.stat(location)
    except (OSError, TileServerError) as exc:
        raise WatermarkError(f"watermark {location}: cannot be read ({exc})") from exc
    return st.size, st.mtime, st.version


def load_watermark(location: str, scale: float = 1.0) -> Any:
    """The watermark image at `location` decoded and prepared (see `watermark_image`); WatermarkError when it
    cannot be read or decoded, or is empty or too large."""
    try:
        with vfs.open_binary(location) as f:
            data = f.read()
        img = pyvips.Image.new_from_buffer(data, "")
        if img.interpretation not in ("srgb", "b-w") or img.format != "uchar":
            img = img.colourspace("srgb").cast("uchar")
        if img.bands in (1, 2):
            img = img.colourspace("srgb")
        if not img.hasalpha():
            img = img.bandjoin_const([255])
        img = img.extract_band(0, n=4)
        if scale != 1.0:
            img = img.resize(scale)
        if img.width * img.height > WATERMARK_PIXELS:
            raise WatermarkError(f"watermark {location}: {img.width}x{img.height} is larger than "
                                 f"{WATERMARK_PIXELS} pixels")
        return np.ascontiguousarray(img.numpy())
    except WatermarkError:
        raise
    except (OSError, TileServerError, pyvips.Error) as exc:
        raise WatermarkError(f"watermark {location}: cannot be read as an image ({exc})") from exc


def check(overlays: Overlays) -> None:
    """Refuse what `overlays` cannot be applied with (an unreadable watermark, an unknown position, values out
    of range), with a clear message: called for configured overlays when the server starts."""
    mark = overlays.watermark
    if mark is not None:
        if mark.position not in POSITIONS:
            raise ValueError(f"unknown watermark position {mark.position!r}; choose from {', '.join(POSITIONS)}")
        if mark.blend not in BLENDS:
            raise ValueError(f"unknown watermark blend {mark.blend!r}; choose from {', '.join(BLENDS)}")
        if not (0 <= mark.opacity <= 1 and 0 <= mark.probability <= 1 and 0 < mark.scale <= 16):
            raise ValueError("watermark opacity and probability must be within 0..1, its scale within 0..16")
        watermark_image(mark.location, mark.scale)
    if overlays.text is not None:
        place_at(1, 1, 1, 1, overlays.text.position, 0)
