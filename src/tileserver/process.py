"""Synchronous pixel operations on pyvips images: bit-depth reduction, iipsrv's processing chain
(min/max, hill shading, colour twist, gamma/log, invert, colour map, convolution, contrast, stretch,
equalisation), output quality (colour / grey / bitonal), mirroring and rotation."""

from __future__ import annotations

import math
from typing import Any

import pyvips

from .errors import BadRequest
from .models import ImageMeta, Processing, Quality

COLORMAPS = ("hot", "cold", "jet", "blue", "green", "red")


def _colormap_lut(name: str) -> Any:
    """A 256x1, 3-band uchar LUT for the named colour map (the iipsrv set)."""
    rows: list[tuple[int, int, int]] = []
    for i in range(256):
        v = i / 255.0
        if name == "hot":
            r, g, b = min(1.0, 3 * v), min(1.0, max(0.0, 3 * v - 1)), min(1.0, max(0.0, 3 * v - 2))
        elif name == "cold":
            r, g, b = min(1.0, max(0.0, 3 * v - 2)), min(1.0, max(0.0, 3 * v - 1)), min(1.0, 3 * v)
        elif name == "jet":
            r = min(1.0, max(0.0, 1.5 - abs(4 * v - 3)))
            g = min(1.0, max(0.0, 1.5 - abs(4 * v - 2)))
            b = min(1.0, max(0.0, 1.5 - abs(4 * v - 1)))
        else:
            r, g, b = (v if name == "red" else 0.0, v if name == "green" else 0.0, v if name == "blue" else 0.0)
        rows.append((round(r * 255), round(g * 255), round(b * 255)))
    data = bytes(c for rgb in rows for c in rgb)
    return pyvips.Image.new_from_memory(data, 256, 1, 3, "uchar").copy(interpretation="srgb")


def _split_alpha(img: Any, meta: ImageMeta) -> tuple[Any, Any | None]:
    if meta.has_alpha and img.bands in (2, 4):
        return img.extract_band(0, n=img.bands - 1), img.extract_band(img.bands - 1)
    return img, None


def to_8bit(img: Any, meta: ImageMeta, p: Processing) -> Any:
    """Normalise to 0..1 using the sample range (or MINMAX), run the processing chain, return uchar.
    8-bit images with no processing pass through untouched."""
    if meta.colorspace in ("lab", "cmyk", "xyz"):
        img = img.colourspace("srgb")
        meta_bits, fmt_range = 8, None
    else:
        meta_bits, fmt_range = meta.bits, (meta.min_values, meta.max_values)
    if meta_bits == 8 and meta.sample_format == "uint" and p.is_identity and img.format == "uchar":
        return img
    colour, alpha = _split_alpha(img, meta)
    x = _normalise(colour, fmt_range, p)
    x = _chain(x, p)
    out = (x * 255).cast("uchar")
    if p.equalize:
        out = out.hist_equal()
    if alpha is not None:
        alpha = alpha if alpha.format == "uchar" else (alpha * (255.0 / _top(meta))).cast("uchar")
        out = out.bandjoin(alpha)
    interp = "b-w" if out.bands <= 2 else "srgb"
    return out.copy(interpretation=interp)


def _top(meta: ImageMeta) -> float:
    return meta.max_values[-1] if meta.max_values else 255.0


def _normalise(img: Any, ranges: tuple[tuple[float, ...], tuple[float, ...]] | None, p: Processing) -> Any:
    n = img.bands
    if ranges is None:
        lo, hi = [0.0] * n, [255.0] * n
    else:
        lo, hi = list(ranges[0][:n]) or [0.0] * n, list(ranges[1][:n]) or [255.0] * n
        lo += [lo[-1]] * (n - len(lo))
        hi += [hi[-1]] * (n - len(hi))
    for channel, cmin, cmax in p.minmax:
        targets = range(n) if channel < 0 else [channel]
        for c in targets:
            if c >= n:
                raise BadRequest(f"MINMAX channel {c} does not exist")
            lo[c], hi[c] = cmin, cmax
    scale = [1.0 / (h - lo_) if h != lo_ else 1.0 for lo_, h in zip(lo, hi, strict=True)]
    offset = [-lo_ * s for lo_, s in zip(lo, scale, strict=True)]
    return img.cast("float").linear(scale, offset)


def _chain(x: Any, p: Processing) -> Any:
    if p.shade is not None:
        x = shade(x, *p.shade)
    if p.twist:
        if any(len(row) != x.bands for row in p.twist):
            raise BadRequest(f"CTW matrix needs {x.bands} columns for this image")
        x = x.recomb(pyvips.Image.new_from_array([list(r) for r in p.twist]))
    if p.gamma is not None:
        x = (x > 0).ifthenelse(x, 0) ** p.gamma
    if p.log:
        x = (x + 1).log() / math.log(2.0)
    if p.invert:
        x = x * -1 + 1
    if p.colormap:
        grey = x if x.bands == 1 else x.bandmean()
        idx = (grey * 255).cast("uchar")
        x = idx.maplut(_colormap_lut(p.colormap)).cast("float") / 255.0
    if p.convolution:
        x = convolve(x, p.convolution)
    if p.contrast is not None:
        x = x * p.contrast
    if p.stretch:
        lo, hi = x.min(), x.max()
        x = (x - lo) / (hi - lo) if hi > lo else x
    return x


def shade(x: Any, h_angle: int, v_angle: int) -> Any:
    """Hill shading of a normal map (iipsrv 1.3 Transform::shade): each pixel's three normalised
    bands are a surface normal n = 1 - 2 * v (all-zero pixels: no normal), lit from the unit vector of
    (sin h, cos h, -sin v) (h clockwise from 12 o'clock, v downwards); out = clip(n . light / 2, 0, 1),
    one band."""
    if x.bands != 3:
        raise BadRequest(f"SHD needs a 3-band image (a normal map); this one has {x.bands}")
    h, v = math.radians(h_angle), math.radians(v_angle)
    sy = math.cos(h)
    sx = math.sqrt(max(0.0, 1.0 - sy * sy)) * (-1.0 if h_angle > 180 else 1.0)  # sin h, as 1.3 derives it
    sz = -math.sin(v)
    norm = math.sqrt(sx * sx + sy * sy + sz * sz)
    light = pyvips.Image.new_from_array([[sx / norm, sy / norm, sz / norm]])
    lit = (x * -2 + 1).recomb(light) * 0.5
    lit = (x == 0).bandand().ifthenelse(0, lit)
    return (lit < 0).ifthenelse(0, (lit > 1).ifthenelse(1, lit))


def convolve(x: Any, kernel: tuple[float, ...]) -> Any:
    """Correlate every band with a square kernel (row-major, not flipped), the image extended by
    copying its edge pixels (iipsrv 1.3 Transform::convolution, 2025-04: edge extension, not wrap),
    divided by the kernel's sum when that is positive."""
    side = math.isqrt(len(kernel))
    total = sum(kernel)
    mask = pyvips.Image.new_from_array([list(kernel[r * side:(r + 1) * side]) for r in range(side)],
                                       scale=total if total > 0 else 1.0)
    # libvips extends the edges by copying, as 1.3 does (checked in the tests). Kernels with integer
    # results come out exact; 1.3 rounds each product to a float and truncates some one level lower.
    return x.conv(mask, precision="float")


def apply_quality(img: Any, quality: Quality) -> Any:
    if quality is Quality.GRAY:
        return _grey(img)
    if quality is Quality.BITONAL:
        grey = _grey(img)
        grey = grey.extract_band(0) if grey.bands > 1 else grey
        return (grey >= 128).copy(interpretation="b-w")
    if quality is Quality.COLOR and img.bands < 3:
        return img.colourspace("srgb")
    return img


def _grey(img: Any) -> Any:
    if img.bands in (1, 2) and img.interpretation in ("b-w", "grey16"):
        return img
    return img.colourspace("b-w")


def orient(img: Any, mirror: bool, rotation: float, corner_fill: tuple[int, int, int], transparent: bool) -> Any:
    """Mirror (horizontal flip) first, then rotate clockwise. Non-right angles grow the canvas; the
    corners are transparent when `transparent` (an alpha band is added if there is none), else
    `corner_fill` (settings.rotation_fill; its first value for grey images), opaque when the image has alpha."""
    if mirror:
        img = img.fliphor()
    angle = rotation % 360
    if angle == 0:
        return img
    if angle in (90, 180, 270):
        return img.rot({90: "d90", 180: "d180", 270: "d270"}[int(angle)])
    alpha = bool(img.hasalpha())
    colours = img.bands - 1 if alpha else img.bands
    if transparent:
        if not alpha:
            img = img.bandjoin_const([255])
        fill = [0.0] * img.bands
    else:
        colour = [float(c) for c in corner_fill] if colours >= 3 else [float(corner_fill[0])] * colours
        fill = colour[:colours] + [0.0] * (colours - len(colour)) + ([255.0] if alpha else [])
    return img.rotate(angle, background=fill)
