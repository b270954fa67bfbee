"""IIP request grammar (iipsrv's query protocol), parsed into a frozen `IIPQuery` with no I/O.

A request is `cmd=arg&cmd=arg...`, split on `&` and then on the first `=`, percent-decoded, with
command names case-insensitive. Commands run in order, as in iipsrv: `FIF` names the image,
modifiers (WID, HEI, RGN, QLT, CNT, ...) set up the view, and the first output command (JTL, TIL,
CVT, PFL, SPECTRA, or a protocol entry such as `IIIF=`) ends the request; anything after it is ignored. `OBJ`
queries accumulate. Unlike iipsrv, malformed arguments are errors (`Error/..:2 1 CMD=arg`), never
silently read as 0. Protocol reference: https://iipimage.sourceforge.io/documentation/protocol/
The query's values live in `query.py`, the pixel modifiers' parsers in `modifiers.py`; this module holds
the other commands, the command table and `parse`.

Example: `FIF=a.tif&WID=400&RGN=0,0,0.5,0.5&CVT=jpeg` ->
`IIPQuery(fif="a.tif", width=400, region=(0, 0, 0.5, 0.5), output=Cvt(OutputFormat.JPEG))`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from urllib.parse import parse_qsl

from ...models import OutputFormat
from .modifiers import KERNELS, MODIFIERS
from .query import (
    CvtOut,
    EntryOut,
    IIPError,
    IIPQuery,
    ProfileOut,
    SpectraOut,
    TileOut,
    TilesOut,
    evolve,
    float_arg,
    int_arg,
    ints_arg,
    malformed,
)

__all__ = ["KERNELS", "CvtOut", "EntryOut", "IIPError", "IIPQuery", "ProfileOut", "SpectraOut", "TileOut",
           "TilesOut", "parse", "split_query"]

TILE_FORMATS = {"jtl": OutputFormat.JPEG, "ptl": OutputFormat.PNG, "wtl": OutputFormat.WEBP,
                "atl": OutputFormat.AVIF, "ttl": OutputFormat.TIFF}
CVT_FORMATS = {"jpeg": OutputFormat.JPEG, "jpg": OutputFormat.JPEG, "png": OutputFormat.PNG,
               "webp": OutputFormat.WEBP, "avif": OutputFormat.AVIF, "tiff": OutputFormat.TIFF,
               "tif": OutputFormat.TIFF, "jp2": OutputFormat.JP2}
TIFF_CODECS = {"none", "lzw", "deflate", "jpeg", "webp", "zstd"}
ENTRY_COMMANDS = {"iiif", "deepzoom", "zoomify"}  # handed to other protocols (issues #3, #4)


# -- one function per command: (query so far, argument) -> query ---------------------------------
def _fif(q: IIPQuery, arg: str) -> IIPQuery:
    return evolve(q, fif=arg)


def _obj(q: IIPQuery, arg: str) -> IIPQuery:
    return evolve(q, objs=(*q.objs, arg.lower()))


def _wid(q: IIPQuery, arg: str) -> IIPQuery:
    n = int_arg("wid", arg)
    if n < 1:
        raise malformed("wid", arg, "width must be at least 1")
    return evolve(q, width=n)


def _hei(q: IIPQuery, arg: str) -> IIPQuery:
    n = int_arg("hei", arg)
    if n < 1:
        raise malformed("hei", arg, "height must be at least 1")
    return evolve(q, height=n)


def _rgn(q: IIPQuery, arg: str) -> IIPQuery:
    parts = arg.split(",")
    if len(parts) != 4:
        raise malformed("rgn", arg, "expected x,y,w,h as fractions of the image")
    x, y, w, h = (float_arg("rgn", p.strip()) for p in parts)
    if w <= 0 or h <= 0:
        raise malformed("rgn", arg, "width and height must be positive")
    return evolve(q, region=(x, y, w, h))


def _qlt(q: IIPQuery, arg: str) -> IIPQuery:
    codec, _, value = arg.rpartition(":")
    codec = codec.lower()
    if codec and codec not in TIFF_CODECS:
        raise malformed("qlt", arg, f"unknown TIFF codec {codec}")
    if not re.fullmatch(r"-?\d{1,3}", value) or not -1 <= int(value) <= 100:
        raise malformed("qlt", arg, "quality must be -1..100")
    return evolve(q, encoder_quality=int(value), tiff_codec=codec or q.tiff_codec)


def _sds(q: IIPQuery, arg: str) -> IIPQuery:
    """`SDS=x[,y]`: the view, x the horizontal (a stack's page, a sequence's horizontal angle), y the
    vertical angle. `SDS=x` alone sets y to 0, as iipsrv 1.3 does (Task.cc SDS::run), not to the
    default 90: e.g. `SDS=2` -> (2, 0), `SDS=2,90` -> (2, 90)."""
    parts = arg.split(",")
    if len(parts) > 2:
        raise malformed("sds", arg, "expected x[,y]")
    x = int_arg("sds", parts[0].strip())
    y = int_arg("sds", parts[1].strip()) if len(parts) == 2 else 0
    return evolve(q, view=(x, y))


def _rot(q: IIPQuery, arg: str) -> IIPQuery:
    mirror = arg.startswith("!")
    angle = float_arg("rot", arg[1:] if mirror else arg)
    if not 0 <= angle <= 360:
        raise malformed("rot", arg, "angle must be 0..360")
    return evolve(q, rotation=angle % 360, mirror=mirror)


def _lyr(q: IIPQuery, arg: str) -> IIPQuery:
    """`LYR=n`: JPEG 2000 quality layers to decode, 1..256 (1.3 logs a value outside and uses it)."""
    n = int_arg("lyr", arg.strip())
    if not 1 <= n <= 256:
        raise malformed("lyr", arg, "quality layers must be 1..256")
    return evolve(q, layers=n)


def _icc(q: IIPQuery, arg: str) -> IIPQuery:
    """`ICC=...`: accepted and ignored, as in iipsrv 1.3 (its ICC command is compiled out)."""
    return q


def _jtls(q: IIPQuery, arg: str) -> IIPQuery:
    """`JTLS=x,r,n,y`, iipsrv's legacy tile command: view x,y (as `SDS=x,y`) then `JTL=r,n`."""
    x, r, n, y = ints_arg("jtls", arg, 4)
    return evolve(q, view=(x, y), output=TileOut(r, n, OutputFormat.JPEG))


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
        return evolve(q, output=ProfileOut(r, x1, y1, 1, 1))
    if y2 == y1 and x2 > x1:
        return evolve(q, output=ProfileOut(r, x1, y1, x2 - x1, 1))
    if x2 == x1 and y2 > y1:
        return evolve(q, output=ProfileOut(r, x1, y1, 1, y2 - y1))
    raise malformed("pfl", arg, "a profile runs left to right along a row or top to bottom down a column")


def _spectra(q: IIPQuery, arg: str) -> IIPQuery:
    """`SPECTRA=r,t,x,y`: the values at pixel x,y of tile t of resolution r, e.g. `SPECTRA=2,0,10,10`."""
    r, t, x, y = ints_arg("spectra", arg, 4)
    return evolve(q, output=SpectraOut(r, t, x, y))


def _tile(cmd: str) -> Callable[[IIPQuery, str], IIPQuery]:
    def handler(q: IIPQuery, arg: str) -> IIPQuery:
        r, n = ints_arg(cmd, arg, 2)
        return evolve(q, output=TileOut(r, n, TILE_FORMATS[cmd]))

    return handler


def _til(q: IIPQuery, arg: str) -> IIPQuery:
    m = re.fullmatch(r"(\d{1,9}),(\d{1,9})(?:-(\d{1,9}))?", arg)
    if not m:
        raise malformed("til", arg, "expected resolution,start[-end]")
    start = int(m[2])
    end = int(m[3]) if m[3] else start
    return evolve(q, output=TilesOut(int(m[1]), start, max(start, end)))


def _cvt(q: IIPQuery, arg: str) -> IIPQuery:
    fmt = CVT_FORMATS.get(arg.lower())
    if fmt is None:
        raise malformed("cvt", arg, f"format must be one of {', '.join(sorted(CVT_FORMATS))}")
    return evolve(q, output=CvtOut(fmt))


COMMANDS: dict[str, Callable[[IIPQuery, str], IIPQuery]] = {
    "fif": _fif, "obj": _obj, "wid": _wid, "hei": _hei, "rgn": _rgn, "qlt": _qlt, "sds": _sds, "rot": _rot,
    "til": _til, "cvt": _cvt, **{c: _tile(c) for c in TILE_FORMATS}, **MODIFIERS,
    "lyr": _lyr, "icc": _icc, "jtls": _jtls, "pfl": _pfl, "spectra": _spectra,
}


def split_query(query: str) -> list[tuple[str, str]]:
    """Ordered (command, argument) pairs. iipsrv drops pairs with an empty argument; a bare `INV`
    is kept as a flag."""
    if "%" in query or "+" in query:
        pairs = parse_qsl(query, keep_blank_values=True)
    else:  # nothing to unquote: parse_qsl's pairs without its work per pair
        pairs = [(k, v) for k, _, v in (p.partition("=") for p in query.split("&") if p)]
    return [(k, v) for k, v in pairs if v != "" or k.lower() == "inv"]


def parse(pairs: Sequence[tuple[str, str]], raw: str = "") -> IIPQuery:
    q = IIPQuery(raw=raw)
    for cmd, arg in pairs:
        name = cmd.strip().lower()
        if name in ENTRY_COMMANDS:
            return evolve(q, output=EntryOut(name, arg))
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
