"""IIIF Image API request grammar, shared by 2.1 and 3.0, with no I/O.

An image request is `{region}/{size}/{rotation}/{quality}.{format}`
(https://iiif.io/api/image/3.0/#4-image-requests, https://iiif.io/api/image/2.1/#image-request-parameters).
Every value has a parser (`parse`, raising `BadRequest` for every malformed form, never `ValueError`)
and a canonical printer (https://iiif.io/api/image/3.0/#47-canonical-uri-syntax, 2.1 §4.7), so that
`parse(canonical(x))` resolves to the same pixels as `x`. The canonical forms build the cache key:
`full/max/0/default.jpg` and `0,0,W,H/max/0/default.jpg` give the same `TileRequest`.

Version differences handled here: size `full` exists only in 2.1 (3.0 answers 400), `max` in both;
the `^` (upscaling) prefix only in 3.0, where a size above the region without `^` is a 400; in 2.1
sizes above the region are allowed when the server upscales (`sizeAboveFull`). Canonical size is
`max` / `w,h` / `^w,h` in 3.0, and `full` / `w,` / `w,h` in 2.1.
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Literal

from ...errors import BadRequest, ImageTooLarge, NotImplementedFeature, UnsupportedFormat
from ...levels import c_round, fit_inside, fit_rotated, rotated_size
from ...models import Box, OutputFormat, Quality, fast_init

Version = Literal[2, 3]
INT = r"\d{1,9}"
DECIMAL = r"(?:\d{1,9}(?:\.\d{0,12})?|\.\d{1,12})"  # §4.7: digits and `.` only; no sign, no exponent
_INT = re.compile(INT)
_DEC = re.compile(DECIMAL)
_PX4 = re.compile(rf"({INT}),({INT}),({INT}),({INT})")
_PCT4 = re.compile(rf"pct:({DECIMAL}),({DECIMAL}),({DECIMAL}),({DECIMAL})")
_ROT = re.compile(rf"(!?)({DECIMAL})")

FORMATS: dict[str, OutputFormat] = {f.suffix: f for f in OutputFormat}  # jpg png webp avif tif gif
IIIF_ONLY_FORMATS = {"pdf"}  # valid IIIF formats this server cannot write
QUALITIES: dict[str, Quality] = {q.value: q for q in Quality}  # default color gray bitonal


def number(x: float) -> str:
    """A decimal as §4.7 wants it: an integer when whole, else plain digits without trailing zeros.
    `number(90.0) == "90"`, `number(22.5) == "22.5"`, `number(1e-05) == "0.00001"`."""
    if x == int(x):
        return str(int(x))
    return format(Decimal(repr(x)), "f").rstrip("0").rstrip(".")


def _decimal(text: str, what: str) -> float:
    if not _DEC.fullmatch(text):
        raise BadRequest(f"invalid {what}: {text!r}")
    return float(text)


# -- region -----------------------------------------------------------------------------------------
@fast_init
@dataclass(frozen=True)
class Region:
    """A region: `full`, `square`, `x,y,w,h` (pixels) or `pct:x,y,w,h` (percent of the full image).

    Spec: https://iiif.io/api/image/3.0/#41-region (2.1 §4.1 is the same; `square` is optional there).
    `Region.parse("pct:10,20,50,50").box(1000, 700) == Box(100, 140, 500, 350)`.
    """

    kind: Literal["full", "square", "pixels", "percent"]
    x: float = 0.0
    y: float = 0.0
    w: float = 0.0
    h: float = 0.0

    @classmethod
    def parse(cls, text: str) -> Region:
        """`"full"`, `"square"`, `"0,0,256,256"`, `"pct:0,0,50.5,50"`; anything else is a 400."""
        if text in ("full", "square"):
            return cls("full" if text == "full" else "square")
        kind: Literal["pixels", "percent"] = "pixels"
        m = _PX4.fullmatch(text)
        if m is None:
            m, kind = _PCT4.fullmatch(text), "percent"
        if m is None:
            raise BadRequest(f"invalid region: {text!r}")
        x, y, w, h = (float(g) for g in m.groups())
        if w <= 0 or h <= 0:
            raise BadRequest(f"region {text!r} has zero width or height")
        return cls(kind, x, y, w, h)

    def box(self, width: int, height: int) -> Box:
        """Full-resolution pixels, cropped at the image edge (§4.1). A region starting at or past
        the right or bottom edge is a 400; a tiny percent region is at least one pixel."""
        if self.kind == "full":
            return Box(0, 0, width, height)
        if self.kind == "square":
            side = min(width, height)
            return Box((width - side) // 2, (height - side) // 2, side, side)
        if self.kind == "pixels":
            x, y, w, h = int(self.x), int(self.y), int(self.w), int(self.h)
        else:
            x, y = c_round(self.x * width / 100), c_round(self.y * height / 100)
            w = max(c_round((self.x + self.w) * width / 100) - x, 1)
            h = max(c_round((self.y + self.h) * height / 100) - y, 1)
        if x >= width or y >= height:
            raise BadRequest(f"region lies outside the {width}x{height} image")
        return Box(x, y, min(w, width - x), min(h, height - y))

    def canonical(self, width: int, height: int) -> str:
        """`full` when the whole image is asked for, else `x,y,w,h` (both versions)."""
        return canonical_region(self.box(width, height), width, height)


def canonical_region(box: Box, width: int, height: int) -> str:
    if (box.x, box.y, box.w, box.h) == (0, 0, width, height):
        return "full"
    return f"{box.x},{box.y},{box.w},{box.h}"


# -- size -------------------------------------------------------------------------------------------
@fast_init
@dataclass(frozen=True)
class Limits:
    """Server limits on output size (info.json `maxWidth`/`maxHeight`/`maxArea`) and upscaling."""

    max_size: int | None = None  # maxWidth == maxHeight
    max_area: int | None = None
    upscaling: bool = True

    def within(self, w: int, h: int) -> bool:
        return (self.max_size is None or max(w, h) <= self.max_size) and (
            self.max_area is None or w * h <= self.max_area)

    def cap(self, w: int, h: int) -> tuple[int, int]:
        """The largest size of a `w` x `h` region within the limits (IIIF implementation notes,
        "Image size limits": area first, truncating; then width/height, rounding)."""
        if self.max_area is not None and w * h > self.max_area:
            s = math.sqrt(self.max_area / (w * h))
            w, h = max(int(w * s), 1), max(int(h * s), 1)
        if self.max_size is not None and max(w, h) > self.max_size:
            if w >= h:
                w, h = self.max_size, max(c_round(h * self.max_size / w), 1)
            else:
                w, h = max(c_round(w * self.max_size / h), 1), self.max_size
        return w, h


SizeKind = Literal["max", "full", "w", "h", "pct", "wh", "confined"]
_SIZE_FORMS: list[tuple[SizeKind, re.Pattern[str]]] = [
    ("w", re.compile(rf"({INT}),")),
    ("h", re.compile(rf",({INT})")),
    ("wh", re.compile(rf"({INT}),({INT})")),
    ("confined", re.compile(rf"!({INT}),({INT})")),
    ("pct", re.compile(rf"pct:({DECIMAL})")),
]


@fast_init
@dataclass(frozen=True)
class Size:
    """A size: `max`, `full` (2.1), `w,`, `,h`, `pct:n`, `w,h`, `!w,h`, each with `^` in 3.0.

    Spec: https://iiif.io/api/image/3.0/#42-size, https://iiif.io/api/image/2.1/#size.
    `Size.parse("^!2000,500", 3).resolve((1000, 1000), Limits(5000)) == (500, 500)`.
    """

    kind: SizeKind
    upscale: bool = False
    w: int = 0
    h: int = 0
    pct: float = 0.0

    @classmethod
    def parse(cls, text: str, version: Version) -> Size:
        """`"max"`, `"256,"`, `",256"`, `"pct:50"`, `"256,200"`, `"!256,256"`; 3.0 also `"^max"`,
        `"^1200,"`...; 2.1 also `"full"`. Anything else is a 400."""
        up = text.startswith("^")
        body = text[1:] if up else text
        if up and version == 2:
            raise BadRequest(f"invalid size {text!r}: `^` is IIIF 3.0 syntax")
        if body == "max":
            return cls("max", up)
        if body == "full" and version == 2:
            return cls("full")
        for kind, pattern in _SIZE_FORMS:
            if m := pattern.fullmatch(body):
                if kind == "pct":
                    return cls(kind, up, pct=_decimal(m.group(1), "size percentage"))
                nums = [int(g) for g in m.groups()]
                w, h = (nums[0], nums[1]) if len(nums) == 2 else (
                    (nums[0], 0) if kind == "w" else (0, nums[0]))
                return cls(kind, up, w, h)
        raise BadRequest(f"invalid size: {text!r}")

    def resolve(self, region: tuple[int, int], limits: Limits, version: Version) -> tuple[int, int]:
        """Output pixels for a region of `region` size. `max`/`^max` give the region capped by the
        limits (`^max` never grows past the region: upscaling needs an explicit size). Errors:
        under 1 px or above the region without `^` (3.0): 400; upscaling when the server does not:
        501; explicit sizes past the limits: 403 (refused, never silently capped)."""
        rw, rh = region
        if self.kind == "max":
            return limits.cap(rw, rh)
        w, h = self._target(rw, rh)
        if w < 1 or h < 1:
            raise BadRequest("the requested size is under one pixel")
        if w > rw or h > rh:
            if version == 3 and not self.upscale:
                raise BadRequest(f"size {w}x{h} is larger than the {rw}x{rh} region: use the ^ prefix")
            if not limits.upscaling:
                raise NotImplementedFeature("upscaling is not enabled on this server")
        if not limits.within(w, h):
            raise ImageTooLarge(f"size {w}x{h} is beyond this server's limits")
        return w, h

    def rotated(self, size: tuple[int, int], degrees: float, limits: Limits) -> tuple[int, int]:
        """`size` (from `resolve`) when its canvas rotated by `degrees` is within the limits too; the
        rotation grows the canvas and never rescales the content (3.0 section 4.3), so an explicit size
        whose canvas is past them is refused (403, as any size past them), and `max` shrinks until its
        canvas fits: the largest output the server gives."""
        canvas = rotated_size(size, degrees)
        if limits.within(*canvas):
            return size
        if self.kind == "max":
            return fit_rotated(size, degrees, limits.max_size, limits.max_area)
        raise ImageTooLarge(f"size {size[0]}x{size[1]} rotated by {number(degrees)} degrees makes a "
                            f"{canvas[0]}x{canvas[1]} image, beyond this server's limits")

    def _target(self, rw: int, rh: int) -> tuple[int, int]:
        if self.kind == "full":
            return rw, rh
        if self.kind == "pct":
            return c_round(rw * self.pct / 100), c_round(rh * self.pct / 100)
        if self.kind == "wh":
            return self.w, self.h
        if self.kind == "confined":
            return fit_inside(rw, rh, self.w, self.h)
        if self.w == 0 and self.h == 0:
            return 0, 0
        return fit_inside(rw, rh, self.w or None, self.h or None)

    def canonical(self, region: tuple[int, int], limits: Limits, version: Version) -> str:
        return canonical_size(self.resolve(region, limits, version), region, limits, version)


def canonical_size(size: tuple[int, int], region: tuple[int, int], limits: Limits, version: Version) -> str:
    """3.0: `max` when the size is the region's maximum, else `w,h` (`^w,h` when upscaled).
    2.1: `full` for the region's own size, `w,` when the aspect ratio is kept, else `w,h`."""
    w, h = size
    rw, rh = region
    if version == 3:
        if size == limits.cap(rw, rh):
            return "max"
        return f"{'^' if w > rw or h > rh else ''}{w},{h}"
    if size == region:
        return "full"
    if fit_inside(rw, rh, w, None) == size:
        return f"{w},"
    return f"{w},{h}"


# -- rotation, quality, format -----------------------------------------------------------------------
@fast_init
@dataclass(frozen=True)
class Rotation:
    """`n` or `!n` (mirror, then rotate) with 0 <= n <= 360, any decimal angle.

    Spec: https://iiif.io/api/image/3.0/#43-rotation. `Rotation.parse("!22.50") == Rotation(22.5, True)`.
    """

    degrees: float = 0.0
    mirror: bool = False

    @classmethod
    def parse(cls, text: str) -> Rotation:
        """`"0"`, `"90"`, `"!180"`, `"22.5"`; signs, exponents and angles over 360 are a 400."""
        m = _ROT.fullmatch(text)
        if not m:
            raise BadRequest(f"invalid rotation: {text!r}")
        degrees = float(m.group(2))
        if degrees > 360:
            raise BadRequest(f"rotation {text!r} is outside 0..360")
        return cls(degrees, m.group(1) == "!")

    @property
    def angle(self) -> float:
        """Clockwise degrees in [0, 360): 360 draws the same pixels as 0."""
        return self.degrees % 360

    def canonical(self) -> str:
        return ("!" if self.mirror else "") + number(self.angle)


def parse_quality(text: str) -> Quality:
    """`default`, `color`, `gray` or `bitonal` (§4.4); e.g. `parse_quality("gray") is Quality.GRAY`."""
    quality = QUALITIES.get(text)
    if quality is None:
        raise BadRequest(f"invalid quality: {text!r}")
    return quality


def parse_format(text: str, available: tuple[OutputFormat, ...]) -> OutputFormat:
    """`jpg`, `png`, `webp`, `gif`, `tif`, `avif`, `jp2` when this server writes it (§4.5). A valid IIIF
    format this server cannot write (`pdf`, `avif` without libheif) and garbage are both 400.
    `parse_format("png", (OutputFormat.PNG,)) is OutputFormat.PNG`."""
    fmt = FORMATS.get(text)
    if fmt is not None and fmt in available:
        return fmt
    if fmt is not None or text in IIIF_ONLY_FORMATS:
        raise UnsupportedFormat(f"output format {text} is not available on this server")
    raise BadRequest(f"invalid format: {text!r}")


@fast_init
@dataclass(frozen=True)
class ImageParams:
    """The four path segments of an image request after the identifier, parsed.

    `ImageParams.parse("full", "max", "0", "default.jpg", 3, (OutputFormat.JPEG,))`.
    """

    region: Region
    size: Size
    rotation: Rotation
    quality: Quality
    fmt: OutputFormat

    @classmethod
    def parse(cls, region: str, size: str, rotation: str, filename: str, version: Version,
              available: tuple[OutputFormat, ...]) -> ImageParams:
        """Checks in the spec's order (region, size, rotation, quality, format): the first bad value
        decides the 400 message."""
        r, s, rot = Region.parse(region), _size(size, version), _rotation(rotation)
        quality, dot, fmt = filename.rpartition(".")
        if not dot:
            raise BadRequest(f"invalid quality and format: {filename!r} (expected quality.format)")
        return cls(r, s, rot, parse_quality(quality), parse_format(fmt, available))


# a viewer's tiles share a few sizes and rotations (`256,`, `0`): each parsed once (a bad one raises every time)
@functools.lru_cache(maxsize=256)
def _size(text: str, version: Version) -> Size:
    return Size.parse(text, version)


@functools.lru_cache(maxsize=64)
def _rotation(text: str) -> Rotation:
    return Rotation.parse(text)
