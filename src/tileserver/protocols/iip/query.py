"""The values of an IIP request: the frozen `IIPQuery` that `grammar.parse` builds, its output
commands, the IIP error (`Error/<len>:<class> <number> <arg>`), and the guarded number readers every
command parser uses (a malformed number is `2 1 CMD=arg`, never a silent 0 as in iipsrv's atoi)."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, fields
from typing import Any

from ...errors import BadRequest, echo
from ...models import NO_PROCESSING, OutputFormat, Processing, Quality

INT = re.compile(r"\d{1,9}")
FLOAT = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
NUM = re.compile(FLOAT)


class IIPError(BadRequest):
    """An IIP protocol error, answered as `Error/<len>:<class> <number> <arg>` (400). iipsrv repeats the
    argument whole; here at most its first `errors.ECHO_LIMIT` characters (`errors.echo`)."""

    def __init__(self, code: str, arg: str, message: str = "") -> None:
        super().__init__(message or f"IIP error {code} {arg}")
        self.code = code
        self.arg = arg

    @property
    def body(self) -> str:
        text = f"{self.code} {echo(self.arg)}"
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
    processing: Processing = NO_PROCESSING
    layers: int | None = None
    raw: str = ""


QUERY_FIELDS = frozenset(f.name for f in fields(IIPQuery))


def evolve(q: IIPQuery, **changes: Any) -> IIPQuery:
    """`dataclasses.replace(q, **changes)` for the parser's many small steps, several times faster (a query has no
    `__post_init__` to run); an unknown field is a TypeError as there."""
    if not changes.keys() <= QUERY_FIELDS:
        raise TypeError(f"IIPQuery has no field {sorted(changes.keys() - QUERY_FIELDS)}")
    made = object.__new__(IIPQuery)
    made.__dict__.update(q.__dict__, **changes)
    return made


def int_arg(cmd: str, arg: str) -> int:
    if not INT.fullmatch(arg):
        raise malformed(cmd, arg, "expected a non-negative integer")
    return int(arg)


def float_arg(cmd: str, arg: str) -> float:
    if not NUM.fullmatch(arg):
        raise malformed(cmd, arg, "expected a number")
    value = float(arg)
    if not math.isfinite(value):
        raise malformed(cmd, arg, "expected a finite number")
    return value


def ints_arg(cmd: str, arg: str, n: int) -> list[int]:
    parts = arg.split(",")
    if len(parts) != n:
        raise malformed(cmd, arg, f"expected {n} comma-separated integers")
    return [int_arg(cmd, p.strip()) for p in parts]
