"""JPEG 2000 test files, written at test time: Pillow (OpenJPEG) for JP2 and raw codestreams, lossless
(5/3) unless named lossy; imagecodecs for HTJ2K (OpenJPH) and for more than 4 components (its own
OpenJPEG build; it writes no tiles). Each is named by its properties. Sizes are
odd and rarely fit the 256-px output tiles; most are of the form 2**k * m - 1, because Pillow's
JPEG 2000 reader (the independent decoder of the tests) sizes a reduction by rounding `w / 2**r` to
nearest, not up as OpenJPEG does, and fails when the two differ. Pillow's writer packs 16-bit
samples wrongly in tiles narrower than the image, so the 16-bit file is tiled in rows only.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Jp2Spec:
    name: str
    width: int
    height: int
    bands: int = 3
    bits: int = 8
    resolutions: int = 5
    tile: tuple[int, int] | None = None  # codestream tile size; None: one tile
    offset: tuple[int, int] = (0, 0)  # image origin on the reference grid
    rates: tuple[float, ...] = ()  # compression ratio of each quality layer; (): lossless, one layer
    ht: bool = False
    seed: int = 1
    options: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)

    @property
    def lossless(self) -> bool:
        return not self.rates

    @property
    def layers(self) -> int:
        return max(len(self.rates), 1)

    @property
    def offered(self) -> int:
        """Resolutions served: down to the first that fits one 256-px tile (as iipsrv 1.3)."""
        for r in range(self.resolutions):
            if max(self.width >> r, self.height >> r) <= 256:
                return r + 1
        return self.resolutions


SPECS = (
    Jp2Spec("jp2-rgb8-tiled384x320-1023x767.jp2", 1023, 767, tile=(384, 320)),
    Jp2Spec("jp2-rgb8-untiled-1023x767.jp2", 1023, 767, resolutions=6, seed=2),
    Jp2Spec("jp2-rgb8-untiled-2res-1003x701.jp2", 1003, 701, resolutions=2, seed=3),  # + virtual levels
    Jp2Spec("jp2-grey16-rows100-511x383.jp2", 511, 383, bands=1, bits=16, tile=(512, 100), resolutions=4, seed=4),
    Jp2Spec("jp2-grey8-tiled200x136-447x319.j2k", 447, 319, bands=1, tile=(200, 136), resolutions=3, seed=5),
    Jp2Spec("jp2-rgba8-tiled128-319x255.jp2", 319, 255, bands=4, tile=(128, 128), resolutions=3, seed=6),
    Jp2Spec("jp2-rgb8-offset-700x500.jp2", 700, 500, tile=(256, 256), offset=(33, 21), resolutions=3, seed=7),
    Jp2Spec("jp2-rgb8-lossy-3layers-767x511.jp2", 767, 511, tile=(256, 256), rates=(80.0, 20.0, 5.0), seed=8),
    Jp2Spec("jp2-rgb8-ht-tiled128-517x301.j2c", 517, 301, tile=(128, 128), ht=True, seed=9),
    Jp2Spec("jp2-grey8-ht-untiled-300x211.j2c", 300, 211, bands=1, ht=True, resolutions=3, seed=10),
    Jp2Spec("jp2-5bands16-untiled-331x223.jp2", 331, 223, bands=5, bits=16, resolutions=3, seed=11),
)
BY_NAME = {s.name: s for s in SPECS}
TILED_RGB = SPECS[0].name
UNTILED_RGB = SPECS[1].name
LAYERED = "jp2-rgb8-lossy-3layers-767x511.jp2"
IIPSRV_JP2 = TILED_RGB  # iipsrv 1.3 opens JP2 files only (its OpenJPEG codec is JP2, not raw J2K)


@cache
def source(spec: Jp2Spec) -> np.ndarray[Any, Any]:
    """The pixels a file was written from (height, width, bands): gradients plus smooth noise, so
    tiles differ and a misplaced block cannot pass."""
    rng = np.random.default_rng(spec.seed)
    y, x = np.mgrid[0: spec.height, 0: spec.width]
    top = (1 << spec.bits) - 1
    planes = []
    for b in range(spec.bands):
        noise = rng.normal(0, 1, (spec.height // 8 + 2, spec.width // 8 + 2))
        smooth = np.kron(noise, np.ones((8, 8)))[: spec.height, : spec.width]
        v = (x * (0.6 + 0.2 * b) / spec.width + y * (0.3 + 0.1 * b) / spec.height) * 0.7 + 0.15 + 0.08 * smooth
        planes.append(np.clip(v * top + rng.integers(0, max(top // 50, 2), v.shape), 0, top))
    return np.dstack(planes).astype(np.uint16 if spec.bits > 8 else np.uint8)


def write(spec: Jp2Spec, path: Path) -> None:
    px = source(spec)
    if spec.bands > 4:
        import imagecodecs

        path.write_bytes(imagecodecs.jpeg2k_encode(px, level=0, codecformat="jp2", reversible=True, mct=False,
                                                   resolutions=spec.resolutions, numthreads=1))
        return
    if spec.ht:
        import imagecodecs

        data = imagecodecs.htj2k_encode(px if spec.bands > 1 else px[:, :, 0], reversible=True,
                                        tile=spec.tile, resolutions=spec.resolutions - 1)
        path.write_bytes(data)
        return
    from PIL import Image

    mode = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}[spec.bands] if spec.bits == 8 else "I;16"
    im = Image.fromarray(px[:, :, 0] if spec.bands == 1 else px, None if spec.bits > 8 else mode)
    opts: dict[str, Any] = {"num_resolutions": spec.resolutions, "offset": spec.offset, "mct": int(spec.bands >= 3)}
    if spec.tile:
        opts["tile_size"] = spec.tile
    if spec.rates:
        opts.update(irreversible=True, quality_mode="rates", quality_layers=list(spec.rates))
    buf = io.BytesIO()
    im.save(buf, "JPEG2000", no_jp2=path.suffix == ".j2k", **opts, **spec.options)
    path.write_bytes(buf.getvalue())


def make_jp2s(root: Path) -> None:
    for spec in SPECS:
        write(spec, root / spec.name)


def pillow_level(spec: Jp2Spec, path: Path, reduce: int, layers: int = 0) -> np.ndarray[Any, Any] | None:
    """Level `reduce` decoded by Pillow (an independent OpenJPEG binding) at iipsrv's floor size, or None
    where Pillow's rounding of the reduced size differs from OpenJPEG's, or the image has an origin
    offset (Pillow then sizes every reduction wrongly, and cannot decode it)."""
    from PIL import Image

    p = 1 << reduce
    if spec.bands > 4 or spec.offset != (0, 0) or any(n % p and n % p < p // 2 for n in (spec.width, spec.height)):
        return None
    with Image.open(path) as im:
        im.reduce = reduce
        im.layers = layers
        im.load()
        a = np.asarray(im)
    a = a if a.ndim == 3 else a[:, :, None]
    return a[: spec.height >> reduce, : spec.width >> reduce]


def box(kind: bytes, content: bytes) -> bytes:
    return struct.pack(">I4s", 8 + len(content), kind) + content


def with_boxes(jp2: bytes, *, icc: bytes | None = None, ppm: tuple[float, float] | None = None,
               xmp: bytes | None = None, xml: bytes | None = None) -> bytes:
    """A JP2 file rewritten with what Pillow does not write: an ICC colour specification (method 2), a
    capture resolution box (grid points per metre), an XMP uuid box and an XML box (ISO 15444-1 I.5)."""
    out, pos = [], 0
    while pos < len(jp2):
        length, kind = struct.unpack(">I4s", jp2[pos: pos + 8])
        length = length or len(jp2) - pos
        content = jp2[pos + 8: pos + length]
        if kind == b"jp2h":
            ihdr = content[: struct.unpack(">I", content[:4])[0]]
            colr = box(b"colr", b"\x02\x00\x00" + icc) if icc else content[len(ihdr):]
            res = b""
            if ppm:
                res = box(b"res ", box(b"resc", struct.pack(">HHHHbb", round(ppm[1]), 1, round(ppm[0]), 1, 0, 0)))
            out.append(box(b"jp2h", ihdr + colr + res))
        elif kind == b"jp2c":
            if xmp:
                out.append(box(b"uuid", bytes.fromhex("be7acfcb97a942e89c71999491e3afac") + xmp))
            if xml:
                out.append(box(b"xml ", xml))
            out.append(jp2[pos: pos + length])
        else:
            out.append(jp2[pos: pos + length])
        pos += length
    return b"".join(out)
