"""Synchronous pixel operations on pyvips images, as iipsrv 1.3 (JTL.cc, CVT.cc, Transforms.cc) computes
them: bit-depth reduction, the floating-point chain (min/max or contrast-stretch normalisation, hill
shading, colour twist, gamma/log, invert, colour map, convolution, contrast and truncation to 8 bits),
then greyscale or binary output, then histogram equalisation; then mirroring and rotation. Stretch,
binary thresholding and equalisation read one histogram per image (`Histogram`, from its smallest
level), so tiles of one image share one mapping."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyvips

from ..errors import BadRequest
from ..models import NO_PROCESSING, ImageMeta, Processing, Quality

COLORMAPS = ("hot", "cold", "jet", "blue", "green", "red")
LEVELS = 256  # the per-image histogram has 8-bit bins, as 1.3's Transform::histogram
GREY_WEIGHTS = (1254097, 2462056, 478151)  # 1.3's fixed-point 0.299 R + 0.587 G + 0.114 B, over 2^22
GREY_SHIFT = 1 << 22
GREY_MATRIX = [[w / GREY_SHIFT for w in GREY_WEIGHTS]]


@dataclass(frozen=True)
class Histogram:
    """One 256-bin histogram per image, as iipsrv 1.3 keeps it (JTL.cc/CVT.cc compute it once per
    image from its smallest resolution's first tile, then reuse it): the mean of each pixel's colour
    bands, rounded, of 8-bit samples (wider samples first scaled to 8 bits through the image's sample
    range and truncated). Contrast stretch, binary thresholding and equalisation all read it, so
    every tile and export of an image gets the same mapping (no seams between tiles)."""

    counts: tuple[int, ...]

    def bounds(self) -> tuple[int, int]:
        """The first and last non-empty bins."""
        used = [i for i, n in enumerate(self.counts) if n]
        return used[0], used[-1]

    def otsu(self) -> int:
        """Otsu's threshold (the bin maximising the between-class variance; the first of equals), in
        single precision as 1.3's Transform::threshold; binary output is 0 below it, 255 from it."""
        f32 = np.float32
        total = sum(self.counts)
        weighted = f32(sum(f32(i) * f32(n) for i, n in enumerate(self.counts)))
        wb = sumb = best = f32(0.0)
        threshold = 0
        for i, n in enumerate(self.counts):
            wb = f32(wb + f32(n))
            if wb == 0:
                continue
            wf = f32(f32(total) - wb)
            if wf == 0:
                break
            sumb = f32(sumb + f32(i) * f32(n))
            mb, mf = f32(sumb / wb), f32((weighted - sumb) / wf)
            between = f32(wb * wf * (mb - mf) * (mb - mf))
            if between > best:
                threshold, best = i, between
        return threshold

    def equalisation_lut(self) -> list[int]:
        """round(255 * cdf(v) / total), in single precision as 1.3's Transform::equalize. 1.3 also
        subtracts cdf(first used bin) / (pixels of the tile being equalised) before rounding: a count
        divided by another image's size, under 1/256 of a level for any tile of 256 pixels or more; we
        leave it out, so the mapping is the image's alone."""
        scale = np.float32(LEVELS - 1) / np.float32(sum(self.counts))
        cdf = np.cumsum(np.asarray(self.counts, dtype=np.float64)).astype(np.float32)
        return [math.floor(float(v) + 0.5) for v in (scale * cdf).astype(np.float32)]


def histogram(thumb: Any, meta: ImageMeta) -> Histogram:
    """The image's Histogram from `thumb`, its smallest level (1.3 reads that level's tile 0; our
    smallest level always fits in one tile). Alpha is left out of the band mean (1.3 averages it in,
    which would count transparent pixels as dark)."""
    if meta.colorspace in ("lab", "cmyk", "xyz"):
        thumb = thumb.colourspace("srgb")
        bits = 8
    else:
        bits = meta.bits
    colour, _ = _split_alpha(thumb, meta)
    if bits > 8 or colour.format != "uchar":
        colour = (_normalise(colour, (meta.min_values, meta.max_values), NO_PROCESSING) * 255).cast("uchar")
    mean = colour if colour.bands == 1 else (colour.cast("float").bandmean() + 0.5).floor().cast("uchar")
    return Histogram(tuple(int(n) for n in mean.hist_find().tolist()[0]))


def needs_histogram(p: Processing, quality: Quality) -> bool:
    return p.equalize or p.stretch or quality is Quality.BITONAL


def process(img: Any, meta: ImageMeta, p: Processing, quality: Quality, hist: Histogram | None = None) -> Any:
    """iipsrv 1.3's order (JTL.cc, CVT.cc): the floating-point chain to 8 bits, then greyscale or
    binary output, then histogram equalisation. `hist` is the image's Histogram, needed when
    `needs_histogram`."""
    out = apply_quality(to_8bit(img, meta, p, hist), quality, hist)
    return equalise(out, hist) if p.equalize else out


# 1.3's colour maps (Transform::cmap) as pieces: (upper bound, (r, g, b)), the first bound above v
# wins, each band a constant or (a, b) for a * v + b; from the last bound up, `top`. Zero at or below
# 0 (below 0 for jet). The bounds are single-precision thirds and eighths, as 1.3 compares them.
Ramp = float | tuple[float, float]
THIRD, EIGHTH = float(np.float32(1 / 3)), 0.125
PIECES: dict[str, tuple[list[tuple[float, tuple[Ramp, Ramp, Ramp]]], tuple[float, float, float]]] = {
    "hot": ([(THIRD, ((3, 0), 0, 0)), (2 * THIRD, (1, (3, -1), 0)), (1.0, (1, 1, (3, -2)))], (1, 1, 1)),
    "cold": ([(THIRD, (0, 0, (3, 0))), (2 * THIRD, (0, (3, -1), 1)), (1.0, ((3, -2), 1, 1))], (1, 1, 1)),
    "jet": ([(EIGHTH, (0, 0, (4, 0.5))), (3 * EIGHTH, (0, (4, -0.5), 1)),
             (5 * EIGHTH, ((4, -1.5), 1, (-4, 2.5))), (7 * EIGHTH, (1, (-4, 3.5), 0)),
             (1.0, ((-4, 4.5), 0, 0))], (0.5, 0, 0)),
}


def _colormap(x: Any, name: str) -> Any:
    """The named colour map of the first band: a multi-band image is mapped from its first band (red),
    not from a mean of its bands, as 1.3 does. In floating point, before the final 8-bit truncation."""
    v = x if x.bands == 1 else x.extract_band(0)
    zero = v * 0
    if name in ("red", "green", "blue"):
        return {"red": v.bandjoin([zero, zero]), "green": zero.bandjoin([v, zero]),
                "blue": zero.bandjoin([zero, v])}[name]
    pieces, top = PIECES[name]
    out = zero + list(top)
    wide = v.cast("double")  # 1.3 evaluates a * v + b in double precision (3. * v - 2. cancels)
    for bound, rgb in reversed(pieces):
        bands = [zero + c if isinstance(c, (int, float)) else wide.linear(c[0], c[1]).cast("float") for c in rgb]
        out = (v < bound).ifthenelse(bands[0].bandjoin(bands[1:]), out)
    black = (v < 0) if name == "jet" else (v <= 0)
    return black.ifthenelse([0, 0, 0], out)


def _split_alpha(img: Any, meta: ImageMeta) -> tuple[Any, Any | None]:
    if meta.has_alpha and img.bands in (2, 4):
        return img.extract_band(0, n=img.bands - 1), img.extract_band(img.bands - 1)
    return img, None


def float_processing(p: Processing) -> bool:
    """Whether 1.3 runs its floating-point chain (View::floatProcessing): equalisation and greyscale
    or binary output alone work on the plain 8-bit pixels."""
    return bool(p.minmax or p.shade or p.twist or p.log or p.invert or p.colormap or p.convolution or p.stretch
                or p.gamma not in (None, 1.0) or p.contrast not in (None, 1.0))


def to_8bit(img: Any, meta: ImageMeta, p: Processing, hist: Histogram | None = None) -> Any:
    """Normalise to 0..1 using the sample range (MINMAX, or the histogram's range for a contrast
    stretch), run the processing chain, return uchar. Without float processing 8-bit pixels pass
    through untouched and full-range wider ones keep their top 8 bits (1.3's scale_to_8bit); 1.3
    shifts a narrower declared range (SMaxSampleValue 4095 in 16 bits) too, leaving it dark unless
    processed: we scale it through its range."""
    if meta.colorspace in ("lab", "cmyk", "xyz"):
        img = img.colourspace("srgb")
        meta_bits, fmt_range = 8, None
    else:
        meta_bits, fmt_range = meta.bits, (meta.min_values, meta.max_values)
    if meta.sample_format == "uint" and not float_processing(p):
        if img.format == "uchar":
            return img
        if _full_range(meta, fmt_range):
            return _with_interpretation((img >> (meta_bits - 8)).cast("uchar"))
    colour, alpha = _split_alpha(img, meta)
    if p.stretch:
        fmt_range = _stretch_range(hist, meta, meta_bits, colour.bands)
    x = _chain(_normalise(colour, fmt_range, p), p)
    # 1.3's Transform::contrast: v * (255 * contrast) in single precision, truncated to 0..255
    cmax = single(255.0 * single(1.0 if p.contrast is None else p.contrast))
    out = (x * cmax).cast("uchar")
    if alpha is not None:
        alpha = alpha if alpha.format == "uchar" else (alpha * (255.0 / _top(meta))).cast("uchar")
        out = out.bandjoin(alpha)
    return _with_interpretation(out)


def single(x: float) -> float:
    """`x` in single precision, as 1.3 computes it: past the float range it is infinite, as a C
    float becomes (`CNT=1e300`, `MINMAX=1:0,1e-300`), without numpy's overflow warning."""
    with np.errstate(over="ignore"):
        return float(np.float32(x))


def _with_interpretation(out: Any) -> Any:
    return out.copy(interpretation="b-w" if out.bands <= 2 else "srgb")


def _full_range(meta: ImageMeta, ranges: tuple[tuple[float, ...], tuple[float, ...]] | None) -> bool:
    top = float((1 << meta.bits) - 1)
    return ranges is not None and all(v == 0 for v in ranges[0]) and all(v == top for v in ranges[1])


def _stretch_range(hist: Histogram | None, meta: ImageMeta, bits: int, bands: int
                   ) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """CNT=st: every band's range becomes the histogram's used bins (replacing MINMAX), in sample
    values: 8-bit bins as they are; wider integers lo + bin * (hi - lo + 1) / 256 (1.3's bin << (bits
    - 8) for a full-range image); floats lo + bin * (hi - lo) / 256 (1.3 uses the bin number itself, a
    bug: the histogram was scaled through the sample range). 1.3 fills `bits` entries rather than one
    per band (past the end for an image with more bands than bits); every band is what it means."""
    if hist is None:
        raise ValueError("a contrast stretch needs the image's histogram")
    n0, n1 = hist.bounds()
    if bits <= 8 and meta.sample_format == "uint":
        lo, hi = float(n0), float(n1)
    else:
        rlo, rhi = (meta.min_values or (0.0,))[0], (meta.max_values or (255.0,))[0]
        step = (rhi - rlo + (1 if meta.sample_format != "float" else 0)) / LEVELS
        lo, hi = rlo + n0 * step, rlo + n1 * step
    return (lo,) * bands, (hi,) * bands


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
    if not p.stretch:
        for channel, cmin, cmax in p.minmax:
            targets = range(n) if channel < 0 else [channel]
            for c in targets:
                if c >= n:
                    raise BadRequest(f"MINMAX channel {c} does not exist")
                lo[c], hi[c] = cmin, cmax
    # (v - lo) * (1 / (hi - lo)), the factor in single precision, as 1.3's Transform::normalize; a flat
    # range maps its value to 0 and anything above it to white (1.3's 1e30 for 1 / 0)
    scale = [single(1.0 / (h - lo_)) if h != lo_ else 1e30 for lo_, h in zip(lo, hi, strict=True)]
    return img.cast("float").linear([1.0] * n, [-v for v in lo]).linear(scale, [0.0] * n)


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
        # 1.3's Transform::log: log(1 + 255 v) / log(256). Below 0 it takes the log of a negative
        # number and its NaN turns white; we clip at 0 (black), as 1.3 does for -1/255 < v < 0.
        x = ((x > 0).ifthenelse(x, 0) * 255 + 1).log() * (1.0 / math.log(256.0))
    if p.invert:
        x = x * -1 + 1
    if p.colormap:
        x = _colormap(x, p.colormap)
    if p.convolution:
        x = convolve(x, p.convolution)
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


def apply_quality(img: Any, quality: Quality, hist: Histogram | None = None) -> Any:
    """Greyscale (1.3's Transform::greyscale) or binary output: grey, then 0 below the image's Otsu
    threshold (from `hist`; 128 without one) and 255 from it (1.3's threshold and binary)."""
    if quality is Quality.GRAY:
        return _grey(img)
    if quality is Quality.BITONAL:
        grey = _grey(img)
        grey = grey.extract_band(0) if grey.bands > 1 else grey
        threshold = hist.otsu() if hist is not None else 128
        return (grey >= threshold).copy(interpretation="b-w")
    if quality is Quality.COLOR and img.bands < 3:
        return img.colourspace("srgb")
    return img


def _grey(img: Any) -> Any:
    """(1254097 R + 2462056 G + 478151 B) >> 22 of the 8-bit bands, as 1.3 (the Rec. 601 weights on
    the stored, gamma-encoded values; exact in double precision); alpha is kept (1.3 leaves a 4-band
    image in colour, which is not what greyscale means)."""
    if img.bands < 3:
        return img
    # one recombination in double precision: each product and the sum are exact (below 2 ** 30, weights
    # divided by a power of two), and the cast to uchar truncates, which is the shift
    colour = img if img.bands == 3 else img.extract_band(0, n=3)
    grey = colour.cast("double").recomb(GREY_MATRIX).cast("uchar")
    if img.bands > 3:
        grey = grey.bandjoin(img.extract_band(3, n=img.bands - 3))
    return grey.copy(interpretation="b-w")


def equalise(img: Any, hist: Histogram | None) -> Any:
    """Every colour band through the image's equalisation LUT (1.3 maps alpha as well; we do not)."""
    if hist is None:
        raise ValueError("equalisation needs the image's histogram")
    lut = pyvips.Image.new_from_memory(bytes(hist.equalisation_lut()), LEVELS, 1, 1, "uchar")
    colour_bands = img.bands - 1 if img.bands in (2, 4) and img.hasalpha() else img.bands
    out = img.extract_band(0, n=colour_bands).maplut(lut)
    if colour_bands < img.bands:
        out = out.bandjoin(img.extract_band(colour_bands, n=img.bands - colour_bands))
    return out.copy(interpretation=img.interpretation)


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
    top = 65535.0 if img.format == "ushort" else 255.0  # 16-bit output keeps its samples (channels.py)
    if transparent:
        if not alpha:
            img = img.bandjoin_const([top])
        fill = [0.0] * img.bands
    else:
        colour = [c * top / 255.0 for c in corner_fill] if colours >= 3 else [corner_fill[0] * top / 255.0] * colours
        fill = colour[:colours] + [0.0] * (colours - len(colour)) + ([top] if alpha else [])
    return img.rotate(angle, background=fill)
