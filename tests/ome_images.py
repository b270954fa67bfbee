"""OME-TIFF fixtures written with tifffile at test time (never committed): 16-bit channels of odd sizes,
tiled 256 with partial edge tiles, pyramids in SubIFDs (OME-TIFF 6, as tifffile and raw2ometiff write
them), with and without channel names and colours, an interleaved variant, an 8-bit RGB brightfield,
a Z/T series, and a plain (not OME) multi-sample 16-bit TIFF.

Each channel has its own range and texture (gradients, rings and blurred noise, a few saturated
pixels), so data windows, colours and channel order all show in the pixels."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

# OME Color values (signed 32-bit RGBA): red, green, blue, white, magenta
OME_COLOURS = (-16776961, 16711935, 65535, -1, -16711681)
RGB_COLOURS = ((255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255), (255, 0, 255))
NAMES = ("DAPI", "FITC", "TRITC", "Cy5", "Cy7")


@dataclass(frozen=True)
class OmeFixture:
    name: str
    width: int
    height: int
    channels: int
    levels: int = 1  # stored levels: full resolution plus SubIFD reductions
    colours: bool = True
    interleaved: bool = False
    z: int = 1
    t: int = 1
    ome: bool = True
    extra: dict[str, Any] = field(default_factory=dict)


FOUR = OmeFixture("ome-4ch-3lvl-1003x701-subifd.ome.tif", 1003, 701, 4, levels=3)
THREE = OmeFixture("ome-3ch-1lvl-517x389-nocolour.ome.tif", 517, 389, 3, colours=False)
FIVE = OmeFixture("ome-5ch-2lvl-777x555-subifd.ome.tif", 777, 555, 5, levels=2)
INTERLEAVED = OmeFixture("ome-3s-2lvl-641x433-interleaved.ome.tif", 641, 433, 3, levels=2, colours=False,
                         interleaved=True)
ZT = OmeFixture("ome-2ch-z3-t2-301x203.ome.tif", 301, 203, 2, z=3, t=2)
PLAIN = OmeFixture("plain-4s-2lvl-613x419-grey16.tif", 613, 419, 4, levels=2, colours=False, interleaved=True,
                   ome=False)
RGB8 = "ome-rgb8-1lvl-333x222.ome.tif"
ALL = (FOUR, THREE, FIVE, INTERLEAVED, ZT, PLAIN)


def channel_data(width: int, height: int, channels: int, seed: int = 0) -> np.ndarray:
    """(channels, height, width) uint16: channel c spans about 200 * (c + 1) .. 3000 * (c + 1) with its
    own texture, a few pixels at 65535 (saturated) and a few at 0."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    out = np.empty((channels, height, width), np.uint16)
    for c in range(channels):
        lo, hi = 200.0 * (c + 1), 3000.0 * (c + 1)
        rings = 0.5 + 0.5 * np.sin(np.hypot(x - width * (0.2 + 0.15 * c), y - height * 0.5) / (7.0 + 3 * c))
        ramp = (x / width) if c % 2 == 0 else (y / height)
        noise = rng.normal(0.0, 0.08, (height, width))
        v = lo + (hi - lo) * np.clip(0.45 * rings + 0.45 * ramp + noise, 0.0, 1.0)
        plane = v.astype(np.uint16)
        plane[rng.integers(0, height, 40), rng.integers(0, width, 40)] = 65535
        plane[rng.integers(0, height, 40), rng.integers(0, width, 40)] = 0
        out[c] = plane
    return out


def levels_of(data: np.ndarray, count: int) -> list[np.ndarray]:
    """Full resolution and `count - 1` halvings (every other pixel, as a reference pyramid needs no filter)."""
    return [data[..., :: 2**k, :: 2**k].copy() for k in range(count)]


def write(root: Path, f: OmeFixture) -> None:
    import tifffile

    data = channel_data(f.width, f.height, f.channels * f.z * f.t, seed=len(f.name))
    if f.interleaved:
        array = np.moveaxis(data, 0, -1).copy()  # (Y, X, S)
        axes = "YXS"
    elif f.z * f.t > 1:
        array = data.reshape(f.t, f.z, f.channels, f.height, f.width)
        axes = "TZCYX"
    else:
        array, axes = data, "CYX"
    meta: dict[str, Any] = {"axes": axes}
    if f.colours:
        meta["Channel"] = {"Name": list(NAMES[: f.channels]), "Color": list(OME_COLOURS[: f.channels])}
    meta["PhysicalSizeX"], meta["PhysicalSizeY"] = 0.325, 0.325
    meta["PhysicalSizeXUnit"] = meta["PhysicalSizeYUnit"] = "µm"
    opts: dict[str, Any] = {"tile": (256, 256), "compression": "zlib", "photometric": "minisblack"}
    if f.interleaved:
        opts["planarconfig"] = "contig"
    pyramid = levels_of(array if not f.interleaved else np.moveaxis(array, -1, 0), f.levels)
    if f.interleaved:
        pyramid = [np.moveaxis(p, 0, -1).copy() for p in pyramid]
    with tifffile.TiffWriter(root / f.name, ome=f.ome) as tif:
        tif.write(pyramid[0], subifds=f.levels - 1, metadata=meta if f.ome else None, **opts)
        for level in pyramid[1:]:
            tif.write(level, subfiletype=1, metadata=None, **opts)


def write_rgb8(root: Path) -> None:
    import tifffile

    data = (channel_data(333, 222, 3, seed=5) >> 6).clip(0, 255).astype(np.uint8)
    tifffile.imwrite(root / RGB8, np.moveaxis(data, 0, -1).copy(), ome=True, tile=(256, 256), photometric="rgb",
                     compression="zlib")


def make_ome_images(root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for f in ALL:
        write(root, f)
    write_rgb8(root)


def reference(root: Path, f: OmeFixture, level: int = 0, plane: int = 0) -> np.ndarray:
    """tifffile's own read of a fixture: (bands, height, width) of stored `level`, Z/T plane `plane`."""
    import tifffile

    with tifffile.TiffFile(root / f.name) as tif:
        series = tif.series[0]
        arr = series.levels[level].asarray() if level < len(series.levels) else None
    if arr is None:
        raise ValueError(f"{f.name} has no stored level {level}")
    if f.interleaved:
        return np.moveaxis(arr, -1, 0)
    if f.z * f.t > 1:
        t, z = divmod(plane, f.z)
        return np.asarray(arr[t, z])
    return np.asarray(arr)


def composite_reference(data: np.ndarray, colours: Any, windows: Any) -> np.ndarray:
    """The composite formula in numpy, (height, width, 3) uint8 (or (height, width) for one grey channel):
    out_k = floor(clip(sum_c clip(x_c * s_c - low_c * s_c, 0, 1) * colour_c,k + 0.5, 0, 255)), with
    s_c = 1 / (high_c - low_c), in double precision, summed over the channels in order."""
    grey = len(colours) == 1 and tuple(colours[0]) == (255, 255, 255)
    out = np.zeros(data.shape[1:] + ((1,) if grey else (3,)), np.float64)
    for c in range(data.shape[0]):
        low, high = windows[c]
        scale = 1.0 / (high - low)
        v = np.clip(data[c].astype(np.float64) * scale + (-low * scale), 0.0, 1.0)
        out += v[..., None] * np.array([255.0] if grey else [float(k) for k in colours[c]])
    result = np.floor(np.clip(out + 0.5, 0.0, 255.0)).astype(np.uint8)
    return result[..., 0] if grey else result


def percentile_windows(data: np.ndarray) -> list[tuple[float, float]]:
    """Each channel's (0.1 %, 99.9 %) percentiles (numpy's linear interpolation)."""
    out = []
    for plane in data:
        low, high = (float(v) for v in np.percentile(plane.astype(np.float64), (0.1, 99.9)))
        out.append((low, high) if high > low else (low, low + 1.0))
    return out


def same_composite(got: np.ndarray, expected: np.ndarray) -> bool:
    """Whether `got` is the composite `expected` (from `composite_reference`) as a tile gives it: within 1
    everywhere, and exactly but for a few pixels (tiles are composited in single precision, where a sum
    lying within float32's rounding of a half rounds the other way)."""
    if got.shape != expected.shape:
        return False
    diff = np.abs(got.astype(int) - expected.astype(int))
    return bool(diff.max(initial=0) <= 1 and np.count_nonzero(diff) <= max(diff.size // 200, 1))
