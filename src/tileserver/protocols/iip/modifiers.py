"""IIP pixel modifiers, one parser each: `CNT`, `GAM`, `INV`, `CMP`, `CTW`, `COL`, `MINMAX`, `CNV`, `SHD`.
Each reads its argument into the query's `Processing` (or quality) and raises `2 1 CMD=arg` when it is
malformed; the pixels are changed later, in `imaging/process.py`."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import replace

from ...models import Quality
from .query import FLOAT, NUM, IIPQuery, evolve, float_arg, malformed

COLORMAPS = {"hot", "cold", "jet", "blue", "green", "red"}
KERNELS: dict[str, tuple[float, ...]] = {  # iipsrv 1.3's named CNV kernels (Task.cc CNV::run), row-major
    "sobel": (-1, 0, 1, -2, 0, 2, -1, 0, 1), "prewitt": (1, 0, -1, 1, 0, -1, 1, 0, -1),
    "scharr": (-3, 0, 3, -10, 0, 10, -3, 0, 3), "laplace": (-1, -1, -1, -1, 8, -1, -1, -1, -1),
    "gaussian": (1, 2, 1, 2, 4, 2, 1, 2, 1), "sharpen": (0, -1, 0, -1, 5, -1, 0, -1, 0),
    "emboss": (-2, -1, 0, -1, 1, 1, 0, 1, 2),
}


def _proc(q: IIPQuery, **changes: object) -> IIPQuery:
    return evolve(q, processing=replace(q.processing, **changes))  # type: ignore[arg-type]


def _cnt(q: IIPQuery, arg: str) -> IIPQuery:
    low = arg.lower()
    if low in ("eq", "equalization", "equalisation"):
        return _proc(q, equalize=True)
    if low in ("st", "stretch"):
        return _proc(q, stretch=True)
    return _proc(q, contrast=float_arg("cnt", arg))


def _gam(q: IIPQuery, arg: str) -> IIPQuery:
    if arg.lower() in ("log", "logarithm"):
        return _proc(q, log=True)
    g = float_arg("gam", arg)
    if g <= 0:
        raise malformed("gam", arg, "gamma must be positive")
    return _proc(q, gamma=g)


def _inv(q: IIPQuery, arg: str) -> IIPQuery:
    return _proc(q, invert=True)


def _cmp(q: IIPQuery, arg: str) -> IIPQuery:
    if arg.lower() not in COLORMAPS:
        raise malformed("cmp", arg, f"colour map must be one of {', '.join(sorted(COLORMAPS))}")
    return _proc(q, colormap=arg.lower())


def _ctw(q: IIPQuery, arg: str) -> IIPQuery:
    body = arg.strip()
    if body.startswith("[") and body.endswith("]"):
        body = body[1:-1]
    matrix = tuple(tuple(float_arg("ctw", v.strip()) for v in r.split(",")) for r in body.split(";"))
    if not matrix or len({len(r) for r in matrix}) != 1 or len(matrix) > 4 or len(matrix[0]) > 16:
        raise malformed("ctw", arg, "expected [a,b,c;d,e,f;...] with equal row lengths")
    return _proc(q, twist=matrix)


def _col(q: IIPQuery, arg: str) -> IIPQuery:
    low = arg.lower()
    if low in ("grey", "gray"):
        return evolve(q, quality=Quality.GRAY)
    if low == "binary":
        return evolve(q, quality=Quality.BITONAL)
    if low in ("color", "colour"):
        return evolve(q, quality=Quality.COLOR)
    raise malformed("col", arg, "expected grey, gray or binary")


def _minmax(q: IIPQuery, arg: str) -> IIPQuery:
    m = re.fullmatch(rf"(-|\d{{1,3}}):({FLOAT}),({FLOAT})", arg.strip())
    if not m:
        raise malformed("minmax", arg, "expected channel:min,max")
    ch = -1 if m[1] == "-" else int(m[1])
    lo, hi = float(m[2]), float(m[3])
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        raise malformed("minmax", arg, "max must be greater than min")
    return _proc(q, minmax=(*q.processing.minmax, (ch, lo, hi)))


def _cnv(q: IIPQuery, arg: str) -> IIPQuery:
    """`CNV=name` (sobel, prewitt, scharr, laplace, gaussian, sharpen, emboss) or `CNV=[k,k,...]`, a
    square kernel of odd side up to 5 (1, 9 or 25 numbers, row-major; brackets optional, as in 1.3):
    `CNV=[0,-1,0,-1,5,-1,0,-1,0]` is `sharpen`. iipsrv 1.3 silently ignores a kernel of another size
    and reads an unknown name as the 1x1 kernel [0] (a black image); both are 400 here."""
    body = arg.strip()
    if body.startswith("[") and body.endswith("]"):
        body = body[1:-1].strip()
    named = KERNELS.get(body.lower())
    if named is not None:
        return _proc(q, convolution=named)
    values = [v.strip() for v in body.split(",")]
    if not all(NUM.fullmatch(v) and math.isfinite(float(v)) for v in values):
        raise malformed("cnv", arg, f"expected one of {', '.join(KERNELS)} or [k,k,...] of numbers")
    if len(values) not in (1, 9, 25):
        raise malformed("cnv", arg, "a kernel is 1x1, 3x3 or 5x5: 1, 9 or 25 numbers")
    return _proc(q, convolution=tuple(float(v) for v in values))


def _shd(q: IIPQuery, arg: str) -> IIPQuery:
    """`SHD=h,v`: hill shading lit from h degrees clockwise from 12 o'clock (0..360), v degrees
    downwards from the horizontal (-90..90), integers as in 1.3 (which reads them with atoi)."""
    m = re.fullmatch(r"(\d{1,3}),([-+]?\d{1,2})", arg.replace(" ", ""))
    if not m or int(m[1]) > 360 or abs(int(m[2])) > 90:
        raise malformed("shd", arg, "expected h,v: integer degrees, h 0..360, v -90..90")
    return _proc(q, shade=(int(m[1]), int(m[2])))


MODIFIERS: dict[str, Callable[[IIPQuery, str], IIPQuery]] = {
    "cnt": _cnt, "gam": _gam, "inv": _inv, "cmp": _cmp, "ctw": _ctw, "col": _col, "minmax": _minmax,
    "cnv": _cnv, "shd": _shd,
}
