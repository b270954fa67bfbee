"""IIP request grammar (iipsrv's query protocol), parsed into a frozen `IIPQuery` with no I/O.

A request is `cmd=arg&cmd=arg...`, split on `&` and then on the first `=`, percent-decoded, with
command names case-insensitive. Commands run in order, as in iipsrv: `FIF` names the image,
modifiers (WID, HEI, RGN, QLT, CNT, ...) set up the view, and the first output command (JTL, TIL,
CVT, PFL, SPECTRA, or a protocol entry such as `IIIF=`) ends the request; anything after it is ignored. `OBJ`
queries accumulate. Unlike iipsrv, malformed arguments are errors (`Error/..:2 1 CMD=arg`), never
silently read as 0. Protocol reference: https://iipimage.sourceforge.io/documentation/protocol/

Example: `FIF=a.tif&WID=400&RGN=0,0,0.5,0.5&CVT=jpeg` ->
`IIPQuery(fif="a.tif", width=400, region=(0, 0, 0.5, 0.5), output=Cvt(OutputFormat.JPEG))`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from urllib.parse import parse_qsl

from ...errors import BadRequest
from ...models import OutputFormat, Processing, Quality

INT = re.compile(r"\d{1,9}")
FLOAT = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
NUM = re.compile(FLOAT)
TILE_FORMATS = {"jtl": OutputFormat.JPEG, "ptl": OutputFormat.PNG, "wtl": OutputFormat.WEBP,
                "atl": OutputFormat.AVIF, "ttl": OutputFormat.TIFF}
CVT_FORMATS = {"jpeg": OutputFormat.JPEG, "jpg": OutputFormat.JPEG, "png": OutputFormat.PNG,
               "webp": OutputFormat.WEBP, "avif": OutputFormat.AVIF, "tiff": OutputFormat.TIFF,
               "tif": OutputFormat.TIFF}
TIFF_CODECS = {"none", "lzw", "deflate", "jpeg", "webp", "zstd"}
COLORMAPS = {"hot", "cold", "jet", "blue", "green", "red"}
KERNELS: dict[str, tuple[float, ...]] = {  # iipsrv 1.3's named CNV kernels (Task.cc CNV::run), row-major
    "sobel": (-1, 0, 1, -2, 0, 2, -1, 0, 1), "prewitt": (1, 0, -1, 1, 0, -1, 1, 0, -1),
    "scharr": (-3, 0, 3, -10, 0, 10, -3, 0, 3), "laplace": (-1, -1, -1, -1, 8, -1, -1, -1, -1),
    "gaussian": (1, 2, 1, 2, 4, 2, 1, 2, 1), "sharpen": (0, -1, 0, -1, 5, -1, 0, -1, 0),
    "emboss": (-2, -1, 0, -1, 1, 1, 0, 1, 2),
}
ENTRY_COMMANDS = {"iiif", "deepzoom", "zoomify"}  # handed to other protocols (issues #3, #4)


class IIPError(BadRequest):
    """An IIP protocol error, answered as `Error/<len>:<class> <number> <arg>` (400)."""

    def __init__(self, code: str, arg: str, message: str = "") -> None:
        super().__init__(message or f"IIP error {code} {arg}")
        self.code = code
        self.arg = arg

    @property
    def body(self) -> str:
        text = f"{self.code} {self.arg}"
        return f"Error/{len(text)}:{text}\r\n"


def malformed(cmd: str, arg: str, why: str) -> IIPError:
    return IIPError("2 1", f"{cmd.upper()}={arg}", f"malformed {cmd.upper()}: {why}")


@dataclass(frozen=True)
class TileOut:
    resolution: int
    index: int
    fmt: OutputFormat


@dataclass(frozen=True)
class TilesOut:
    resolution: int
    start: int
    end: int


@dataclass(frozen=True)
class CvtOut:
    fmt: OutputFormat


@dataclass(frozen=True)
class EntryOut:
    """`IIIF=`, `DeepZoom=` or `Zoomify=`: served by that protocol's query handler."""

    protocol: str
    arg: str


@dataclass(frozen=True)
class ProfileOut:
    """`PFL=r:x1,y1-x2,y2`: sample values along a row or column of resolution r, end excluded."""

    resolution: int
    x: int
    y: int
    width: int
    height: int


@dataclass(frozen=True)
class SpectraOut:
    """`SPECTRA=r,t,x,y`: every view's (and band's) value at pixel x,y of tile t of resolution r."""

    resolution: int
    tile: int
    x: int
    y: int


Output = TileOut | TilesOut | CvtOut | EntryOut | ProfileOut | SpectraOut


@dataclass(frozen=True)
class IIPQuery:
    fif: str | None = None
    objs: tuple[str, ...] = ()
    output: Output | None = None
    width: int | None = None
    height: int | None = None
    region: tuple[float, float, float, float] | None = None
    encoder_quality: int | None = None
    tiff_codec: str | None = None
    view: tuple[int, int] = (0, 90)
    rotation: float = 0.0
    mirror: bool = False
    quality: Quality = Quality.DEFAULT
    processing: Processing = field(default_factory=Processing)
    layers: int | None = None
    raw: str = ""


def _int(cmd: str, arg: str) -> int:
    if not INT.fullmatch(arg):
        raise malformed(cmd, arg, "expected a non-negative integer")
    return int(arg)


def _float(cmd: str, arg: str) -> float:
    if not NUM.fullmatch(arg):
        raise malformed(cmd, arg, "expected a number")
    value = float(arg)
    if not math.isfinite(value):
        raise malformed(cmd, arg, "expected a finite number")
    return value


def _ints(cmd: str, arg: str, n: int) -> list[int]:
    parts = arg.split(",")
    if len(parts) != n:
        raise malformed(cmd, arg, f"expected {n} comma-separated integers")
    return [_int(cmd, p.strip()) for p in parts]


# -- one function per command: (query so far, argument) -> query ---------------------------------
def _fif(q: IIPQuery, arg: str) -> IIPQuery:
    return replace(q, fif=arg)


def _obj(q: IIPQuery, arg: str) -> IIPQuery:
    return replace(q, objs=(*q.objs, arg.lower()))


def _wid(q: IIPQuery, arg: str) -> IIPQuery:
    n = _int("wid", arg)
    if n < 1:
        raise malformed("wid", arg, "width must be at least 1")
    return replace(q, width=n)


def _hei(q: IIPQuery, arg: str) -> IIPQuery:
    n = _int("hei", arg)
    if n < 1:
        raise malformed("hei", arg, "height must be at least 1")
    return replace(q, height=n)


def _rgn(q: IIPQuery, arg: str) -> IIPQuery:
    parts = arg.split(",")
    if len(parts) != 4:
        raise malformed("rgn", arg, "expected x,y,w,h as fractions of the image")
    x, y, w, h = (_float("rgn", p.strip()) for p in parts)
    if w <= 0 or h <= 0:
        raise malformed("rgn", arg, "width and height must be positive")
    return replace(q, region=(x, y, w, h))


def _qlt(q: IIPQuery, arg: str) -> IIPQuery:
    codec, _, value = arg.rpartition(":")
    codec = codec.lower()
    if codec and codec not in TIFF_CODECS:
        raise malformed("qlt", arg, f"unknown TIFF codec {codec}")
    if not re.fullmatch(r"-?\d{1,3}", value) or not -1 <= int(value) <= 100:
        raise malformed("qlt", arg, "quality must be -1..100")
    return replace(q, encoder_quality=int(value), tiff_codec=codec or q.tiff_codec)


def _sds(q: IIPQuery, arg: str) -> IIPQuery:
    """`SDS=x[,y]`: the view, x the horizontal (a stack's page, a sequence's horizontal angle), y the
    vertical angle. `SDS=x` alone sets y to 0, as iipsrv 1.3 does (Task.cc SDS::run), not to the
    default 90: e.g. `SDS=2` -> (2, 0), `SDS=2,90` -> (2, 90)."""
    parts = arg.split(",")
    if len(parts) > 2:
        raise malformed("sds", arg, "expected x[,y]")
    x = _int("sds", parts[0].strip())
    y = _int("sds", parts[1].strip()) if len(parts) == 2 else 0
    return replace(q, view=(x, y))


def _proc(q: IIPQuery, **changes: object) -> IIPQuery:
    return replace(q, processing=replace(q.processing, **changes))  # type: ignore[arg-type]


def _cnt(q: IIPQuery, arg: str) -> IIPQuery:
    low = arg.lower()
    if low in ("eq", "equalization", "equalisation"):
        return _proc(q, equalize=True)
    if low in ("st", "stretch"):
        return _proc(q, stretch=True)
    return _proc(q, contrast=_float("cnt", arg))


def _gam(q: IIPQuery, arg: str) -> IIPQuery:
    if arg.lower() in ("log", "logarithm"):
        return _proc(q, log=True)
    g = _float("gam", arg)
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
    matrix = tuple(tuple(_float("ctw", v.strip()) for v in r.split(",")) for r in body.split(";"))
    if not matrix or len({len(r) for r in matrix}) != 1 or len(matrix) > 4 or len(matrix[0]) > 16:
        raise malformed("ctw", arg, "expected [a,b,c;d,e,f;...] with equal row lengths")
    return _proc(q, twist=matrix)


def _col(q: IIPQuery, arg: str) -> IIPQuery:
    low = arg.lower()
    if low in ("grey", "gray"):
        return replace(q, quality=Quality.GRAY)
    if low == "binary":
        return replace(q, quality=Quality.BITONAL)
    if low in ("color", "colour"):
        return replace(q, quality=Quality.COLOR)
    raise malformed("col", arg, "expected grey, gray or binary")


def _rot(q: IIPQuery, arg: str) -> IIPQuery:
    mirror = arg.startswith("!")
    angle = _float("rot", arg[1:] if mirror else arg)
    if not 0 <= angle <= 360:
        raise malformed("rot", arg, "angle must be 0..360")
    return replace(q, rotation=angle % 360, mirror=mirror)


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


def _lyr(q: IIPQuery, arg: str) -> IIPQuery:
    """`LYR=n`: JPEG 2000 quality layers to decode, 1..256 (1.3 logs a value outside and uses it)."""
    n = _int("lyr", arg.strip())
    if not 1 <= n <= 256:
        raise malformed("lyr", arg, "quality layers must be 1..256")
    return replace(q, layers=n)


def _icc(q: IIPQuery, arg: str) -> IIPQuery:
    """`ICC=...`: accepted and ignored, as in iipsrv 1.3 (its ICC command is compiled out)."""
    return q


def _jtls(q: IIPQuery, arg: str) -> IIPQuery:
    """`JTLS=x,r,n,y`, iipsrv's legacy tile command: view x,y (as `SDS=x,y`) then `JTL=r,n`."""
    x, r, n, y = _ints("jtls", arg, 4)
    return replace(q, view=(x, y), output=TileOut(r, n, OutputFormat.JPEG))


def _pfl(q: IIPQuery, arg: str) -> IIPQuery:
    """`PFL=r:x1,y1-x2,y2` (or `r:x,y`, one pixel): a profile along a row (y2 = y1, x2 > x1) or a
    column (x2 = x1, y2 > y1) of resolution r, in that level's pixels, x2/y2 excluded as in 1.3:
    `PFL=2:10,10-13,10` is pixels 10..12 of row 10. 1.3 reads any other line as a row from x1 (or a
    point) and unparsable numbers as 0; both are 400 here."""
    m = re.fullmatch(r"(\d{1,9}):(\d{1,9}),(\d{1,9})(?:-(\d{1,9}),(\d{1,9}))?", arg.replace(" ", ""))
    if not m:
        raise malformed("pfl", arg, "expected resolution:x1,y1-x2,y2 or resolution:x,y")
    r, x1, y1 = int(m[1]), int(m[2]), int(m[3])
    x2, y2 = (int(m[4]), int(m[5])) if m[4] else (x1, y1)
    if (x2, y2) == (x1, y1):
        return replace(q, output=ProfileOut(r, x1, y1, 1, 1))
    if y2 == y1 and x2 > x1:
        return replace(q, output=ProfileOut(r, x1, y1, x2 - x1, 1))
    if x2 == x1 and y2 > y1:
        return replace(q, output=ProfileOut(r, x1, y1, 1, y2 - y1))
    raise malformed("pfl", arg, "a profile runs left to right along a row or top to bottom down a column")


def _spectra(q: IIPQuery, arg: str) -> IIPQuery:
    """`SPECTRA=r,t,x,y`: the values at pixel x,y of tile t of resolution r, e.g. `SPECTRA=2,0,10,10`."""
    r, t, x, y = _ints("spectra", arg, 4)
    return replace(q, output=SpectraOut(r, t, x, y))


def _tile(cmd: str) -> Callable[[IIPQuery, str], IIPQuery]:
    def handler(q: IIPQuery, arg: str) -> IIPQuery:
        r, n = _ints(cmd, arg, 2)
        return replace(q, output=TileOut(r, n, TILE_FORMATS[cmd]))

    return handler


def _til(q: IIPQuery, arg: str) -> IIPQuery:
    m = re.fullmatch(r"(\d{1,9}),(\d{1,9})(?:-(\d{1,9}))?", arg)
    if not m:
        raise malformed("til", arg, "expected resolution,start[-end]")
    start = int(m[2])
    end = int(m[3]) if m[3] else start
    return replace(q, output=TilesOut(int(m[1]), start, max(start, end)))


def _cvt(q: IIPQuery, arg: str) -> IIPQuery:
    fmt = CVT_FORMATS.get(arg.lower())
    if fmt is None:
        raise malformed("cvt", arg, f"format must be one of {', '.join(sorted(CVT_FORMATS))}")
    return replace(q, output=CvtOut(fmt))


COMMANDS: dict[str, Callable[[IIPQuery, str], IIPQuery]] = {
    "fif": _fif, "obj": _obj, "wid": _wid, "hei": _hei, "rgn": _rgn, "qlt": _qlt, "sds": _sds,
    "cnt": _cnt, "gam": _gam, "inv": _inv, "cmp": _cmp, "ctw": _ctw, "col": _col, "rot": _rot,
    "minmax": _minmax, "til": _til, "cvt": _cvt, **{c: _tile(c) for c in TILE_FORMATS},
    "cnv": _cnv, "shd": _shd, "lyr": _lyr, "icc": _icc, "jtls": _jtls, "pfl": _pfl, "spectra": _spectra,
}


def split_query(query: str) -> list[tuple[str, str]]:
    """Ordered (command, argument) pairs. iipsrv drops pairs with an empty argument; a bare `INV`
    is kept as a flag."""
    pairs = parse_qsl(query, keep_blank_values=True)
    return [(k, v) for k, v in pairs if v != "" or k.lower() == "inv"]


def parse(pairs: Sequence[tuple[str, str]], raw: str = "") -> IIPQuery:
    q = IIPQuery(raw=raw)
    for cmd, arg in pairs:
        name = cmd.strip().lower()
        if name in ENTRY_COMMANDS:
            return replace(q, output=EntryOut(name, arg))
        handler = COMMANDS.get(name)
        if handler is None:
            raise IIPError("2 2", cmd, f"unsupported command {cmd}")
        q = handler(q, arg)
        if q.output is not None:
            break  # the first output command answers; iipsrv streams it and the rest has no effect
    if q.output is None and not q.objs:
        raise IIPError("2 1", raw, "the request produces no output (add OBJ, JTL or CVT)")
    if q.output is not None and q.objs:
        raise IIPError("2 1", raw, "OBJ cannot be combined with an image output")
    if q.fif is None and q.output is not None and not isinstance(q.output, EntryOut):
        raise IIPError("1 3", "", "no image given: FIF must come first")
    return q
