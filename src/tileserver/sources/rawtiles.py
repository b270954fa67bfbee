"""Tile-sized reads of uncompressed and deflate-compressed TIFF levels without libvips: the stored
tiles a box covers are located from the directory (`tiff.TiffFile`), read by offset (`vfs.Reader`: a
file, or byte ranges of an object in a store, the tiles of one box in one coalesced request), inflated
with libdeflate (the `deflate` binding), un-differenced (Predictor 2) with numpy and cropped, giving
the box's samples as a numpy array.

What makes an OME-TIFF composite tile cheap (`sources/ome.py`): four 16-bit channel tiles cost four
libvips tile decodes and region fetches through the libvips path, and about a third of that here.
Only the simple layouts are read this way: tiled, compression none, deflate or Adobe deflate,
predictor none or horizontal (integers), chunky samples (or one sample), 8 to 64 bits per sample,
fill order 1; `plan` returns None for anything else (LZW, JPEG, zstd, floating-point predictor,
planar separate, ...) and the caller reads through libvips. So does a tile that does not inflate to
its size: libvips then reports the damage as it does for any file.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import deflate
import numpy as np

from . import vfs
from .tiff import (
    BITS,
    COMPRESSION,
    SAMPLE_FORMAT,
    SAMPLES,
    TILE_BYTECOUNTS,
    TILE_LENGTH,
    TILE_OFFSETS,
    TILE_WIDTH,
    Ifd,
    TiffFile,
)

PREDICTOR, PLANAR_CONFIG, FILL_ORDER = 317, 284, 266
NONE, ADOBE_DEFLATE, DEFLATE = 1, 8, 32946
KINDS = {1: "u", 2: "i", 3: "f"}  # SampleFormat -> numpy kind
MAX_TILES = 16  # a read covering more stored tiles than this goes through libvips


@dataclass(frozen=True)
class Plan:
    """How the tiles of one directory are stored: tile size, samples, file dtype, codec, predictor."""

    tile_width: int
    tile_height: int
    samples: int
    dtype: np.dtype[Any]
    compressed: bool
    predictor: bool
    columns: int
    rows: int


def plan(tf: TiffFile, ifd: Ifd) -> Plan | None:
    """The plan for reading `ifd`'s tiles here, or None when it is stored in a way left to libvips."""
    if not ifd.tiled or TILE_OFFSETS not in ifd.tags or TILE_BYTECOUNTS not in ifd.tags:
        return None
    compression, predictor = ifd.num(COMPRESSION, 1), ifd.num(PREDICTOR, 1)
    samples = ifd.num(SAMPLES, 1)
    bits = set(ifd.ints(BITS) or (1,))
    kinds = set(ifd.ints(SAMPLE_FORMAT) or (1,))
    if compression not in (NONE, DEFLATE, ADOBE_DEFLATE) or predictor not in (1, 2) or len(bits) != 1 \
            or len(kinds) != 1 or ifd.num(FILL_ORDER, 1) != 1 or (samples > 1 and ifd.num(PLANAR_CONFIG, 1) != 1):
        return None
    (bit,), (kind,) = bits, kinds
    if kind not in KINDS or bit not in (8, 16, 32, 64) or (kind == 3 and (bit < 32 or predictor == 2)):
        return None
    tw, th = ifd.num(TILE_WIDTH), ifd.num(TILE_LENGTH)
    w, h = ifd.size
    if tw <= 0 or th <= 0 or w <= 0 or h <= 0:
        return None
    dtype = np.dtype(f"{tf.e}{KINDS[kind]}{bit // 8}")
    return Plan(tw, th, samples, dtype, compression != NONE, predictor == 2, -(-w // tw), -(-h // th))


def read_box(path: str, tf: TiffFile, ifd: Ifd, p: Plan, box: tuple[int, int, int, int]) -> np.ndarray | None:
    """The samples of `box` (x, y, w, h, inside the directory's image) as a (h, w, samples) array in
    native byte order (a read-only view when the box lies in one tile), or None when the box covers
    more than `MAX_TILES` tiles or a tile is damaged (short, or not inflating to its size)."""
    return read_boxes(path, tf, [(ifd, p)], box)[0]


def read_boxes(path: str, tf: TiffFile, dirs: list[tuple[Ifd, Plan]], box: tuple[int, int, int, int]
               ) -> list[np.ndarray | None]:
    """`read_box` of the same box in several directories (the channels of a multi-channel image), their
    stored tiles read at once: one request for all of them from a store when they lie close together."""
    x, y, w, h = box
    jobs: list[tuple[Ifd, Plan, list[tuple[int, int]]] | None] = []
    for ifd, p in dirs:
        if w <= 0 or h <= 0 or x < 0 or y < 0 or x + w > ifd.size[0] or y + h > ifd.size[1]:
            jobs.append(None)
            continue
        c0, c1 = x // p.tile_width, (x + w - 1) // p.tile_width
        r0, r1 = y // p.tile_height, (y + h - 1) // p.tile_height
        if (c1 - c0 + 1) * (r1 - r0 + 1) > MAX_TILES or c1 >= p.columns or r1 >= p.rows:
            jobs.append(None)
            continue
        jobs.append((ifd, p, [(r, c) for r in range(r0, r1 + 1) for c in range(c0, c1 + 1)]))
    if all(job is None for job in jobs):
        return [None] * len(jobs)
    with vfs.reader(path) as f:
        where = [[tf.tile_location(f.pread, ifd, r * p.columns + c) for r, c in cells]
                 for ifd, p, cells in (job for job in jobs if job is not None)]
        flat = [loc for locs in where for loc in locs]
        stored = iter(f.pread_many(flat) if len(flat) > 1 else [f.pread(flat[0][1], flat[0][0])])
    located = iter(where)
    out: list[np.ndarray | None] = []
    for job in jobs:
        if job is None:
            out.append(None)
            continue
        locs = next(located)
        out.append(_assemble(job[1], job[2], locs, [next(stored) for _ in locs], box))
    return out


def _assemble(p: Plan, cells: list[tuple[int, int]], where: list[tuple[int, int]], stored: list[bytes],
              box: tuple[int, int, int, int]) -> np.ndarray | None:
    x, y, w, h = box
    size = p.tile_width * p.tile_height * p.samples * p.dtype.itemsize
    if len(cells) == 1:  # within one tile (what a tile request reads): a view of it, no copy
        (r, c), = cells
        tile = _tile(stored[0], where[0][1], p, size)
        tx, ty = c * p.tile_width, r * p.tile_height
        return None if tile is None else tile[y - ty : y - ty + h, x - tx : x - tx + w]
    out = np.empty((h, w, p.samples), p.dtype.newbyteorder("="))
    for (r, c), data, (_, count) in zip(cells, stored, where, strict=True):
        tile = _tile(data, count, p, size)
        if tile is None:
            return None
        tx, ty = c * p.tile_width, r * p.tile_height
        ax, ay = max(x, tx), max(y, ty)
        bx, by = min(x + w, tx + p.tile_width), min(y + h, ty + p.tile_height)
        out[ay - y : by - y, ax - x : bx - x] = tile[ay - ty : by - ty, ax - tx : bx - tx]
    return out


def _tile(data: bytes | bytearray, count: int, p: Plan, size: int) -> np.ndarray | None:
    """One whole stored tile (its `count` stored bytes `data`), decoded, as (tile height, tile width,
    samples) in native byte order."""
    if len(data) != count:
        return None
    if p.compressed:
        try:
            data = deflate.zlib_decompress(data, size)
        except deflate.DeflateError:
            return None
    if len(data) != size:
        return None
    tile = np.frombuffer(data, p.dtype).reshape(p.tile_height, p.tile_width, p.samples)
    if not p.dtype.isnative:
        tile = tile.astype(p.dtype.newbyteorder("="))
    if p.predictor:  # each sample is the difference to the one left of it, modulo its width
        tile = np.cumsum(tile, axis=1, dtype=tile.dtype)
    return tile


class TiffTiles:
    """The directories of one TIFF file and the plans of those read so far (shared between threads)."""

    def __init__(self, path: str, tf: TiffFile) -> None:
        self.path, self.tf = path, tf
        self._plans: dict[tuple[int, int], Plan | None] = {}
        self._lock = threading.Lock()

    def read(self, page: int, subifd: int, box: tuple[int, int, int, int]) -> np.ndarray | None:
        """`box` of top-level directory `page` (its SubIFD `subifd`, -1 for the directory itself), as
        `read_box` gives it; None when that directory is not one read here."""
        key = (page, subifd)
        with self._lock:
            known = key in self._plans
            p = self._plans.get(key)
        if not known:
            ifd = self._ifd(page, subifd)
            p = plan(self.tf, ifd) if ifd is not None else None
            with self._lock:
                self._plans[key] = p
        if p is None:
            return None
        ifd = self._ifd(page, subifd)
        assert ifd is not None
        return read_box(self.path, self.tf, ifd, p, box)

    def read_many(self, dirs: list[tuple[int, int]], box: tuple[int, int, int, int]) -> list[np.ndarray | None]:
        """`read` of `box` in each (page, subifd) of `dirs`, their tiles fetched together (`read_boxes`)."""
        planned: list[tuple[Ifd, Plan] | None] = []
        for page, subifd in dirs:
            key = (page, subifd)
            with self._lock:
                known = key in self._plans
                p = self._plans.get(key)
            ifd = self._ifd(page, subifd)
            if not known:
                p = plan(self.tf, ifd) if ifd is not None else None
                with self._lock:
                    self._plans[key] = p
            planned.append((ifd, p) if ifd is not None and p is not None else None)
        wanted = [d for d in planned if d is not None]
        got = iter(read_boxes(self.path, self.tf, wanted, box) if wanted else [])
        return [next(got) if d is not None else None for d in planned]

    def _ifd(self, page: int, subifd: int) -> Ifd | None:
        if not 0 <= page < len(self.tf.pages):
            return None
        if subifd < 0:
            return self.tf.pages[page]
        subs = self.tf.subifds[page]
        return subs[subifd] if subifd < len(subs) else None
