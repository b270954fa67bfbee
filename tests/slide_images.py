"""Synthetic Aperio SVS slides, written the way Aperio's own library writes them, so that OpenSlide reads
them as `aperio`: a tiled JPEG level 0 whose ImageDescription starts `Aperio Image Library`, a stripped
thumbnail as the second directory, tiled reduced levels, then a label (NewSubfileType 1) and a macro
image (NewSubfileType 9).

The JPEG tiles are Aperio's kind: RGB samples (no YCbCr transform, Photometric RGB), component ids
0, 1, 2, no JFIF or Adobe marker, 4:4:4, with the quantisation and Huffman tables in the JPEGTables
tag and abbreviated streams in the tiles. A JPEG decoder given such a stream guesses YCbCr from the
component ids, so these tiles show whether a pass-through says "RGB" (passthrough.py adds the Adobe
marker). Tiles are encoded with Pillow (`keep_rgb`) and rewritten into that form here; the TIFF is
written with tifffile from the encoded tiles (no codec needed). `jp2k=True` writes JPEG 2000 tiles
(Aperio's compression 33005, RGB with the codestream's colour transform) instead, through imagecodecs.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

APERIO = "Aperio Image Library v12.0.15"
JPEG_TABLES, JPEG, JP2K_RGB = 347, 7, 33005

TileSource = Callable[[int, int, int, int, int], Any]  # (level, x, y, w, h) -> uint8 (h, w, 3)


def _segments(data: bytes) -> list[tuple[int, bytes]]:
    """(marker, whole segment) of a JPEG stream, up to and including SOS (the entropy data follows it)."""
    out, at = [], 2
    while at < len(data):
        marker = data[at + 1]
        length = int.from_bytes(data[at + 2 : at + 4], "big")
        out.append((marker, data[at : at + 2 + length]))
        at += 2 + length
        if marker == 0xDA:
            out.append((0, data[at:]))  # entropy-coded data and EOI
            break
    return out


def _renumber(segment: bytes, first: int, count: int, step: int) -> bytes:
    """Component ids 0, 1, 2 in a SOF (`first` = offset of the first id, entries `step` bytes apart) or SOS."""
    b = bytearray(segment)
    for i in range(count):
        b[first + i * step] = i
    return bytes(b)


def aperio_jpeg(pixels: Any, quality: int) -> tuple[bytes, bytes]:
    """(tables, abbreviated tile stream) of an RGB tile, as Aperio writes them."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels), "RGB").save(buf, "JPEG", quality=quality, keep_rgb=True,
                                                              subsampling=0)
    tables, tile = [b"\xff\xd8"], [b"\xff\xd8"]
    for marker, seg in _segments(buf.getvalue()):
        if marker in (0xDB, 0xC4):
            tables.append(seg)
        elif marker == 0xC0:
            tile.append(_renumber(seg, 10, seg[9], 3))
        elif marker == 0xDA:
            tile.append(_renumber(seg, 5, seg[4], 2))
        elif marker == 0:
            tile.append(seg)
    return b"".join([*tables, b"\xff\xd9"]), b"".join(tile)


def _tiles(source: TileSource, level: int, size: tuple[int, int], tile: int, quality: int, jp2k: bool,
           tables: bytes) -> Iterator[bytes]:
    w, h = size
    for y in range(0, h, tile):
        for x in range(0, w, tile):
            px = np.zeros((tile, tile, 3), np.uint8)  # edge tiles padded, as libtiff writes them
            part = source(level, x, y, min(tile, w - x), min(tile, h - y))
            px[: part.shape[0], : part.shape[1]] = part
            if jp2k:
                import imagecodecs

                yield imagecodecs.jpeg2k_encode(px, level=quality, codecformat="j2k", mct=True)
                continue
            t, data = aperio_jpeg(px, quality)
            assert t == tables, "all tiles share one set of tables (Pillow's fixed tables at one quality)"
            yield data


def level_sizes(width: int, height: int, count: int) -> list[tuple[int, int]]:
    """Aperio's levels: each a quarter of level 0's size per step, rounded down."""
    return [(width // 4**i, height // 4**i) for i in range(count)]


def write_svs(path: Path, width: int, height: int, source: TileSource, *, levels: int = 3, tile: int = 256,
              quality: int = 80, mpp: float = 0.25, mag: int = 40, jp2k: bool = False,
              label: Any = None, macro: Any = None, thumbnail: Any = None, aperio: bool = True
              ) -> list[tuple[int, int]]:
    """Write an Aperio SVS of `levels` levels from `source`; returns the level sizes. `aperio=False`:
    the same TIFF without Aperio's ImageDescription (OpenSlide then calls it a generic TIFF)."""
    import tifffile

    sizes = level_sizes(width, height, levels)
    codec = f"{'J2K' if jp2k else 'JPEG'}/RGB Q={quality}"
    info = f"|AppMag = {mag}|StripeWidth = 2040|ScanScope ID = SS0001|Filename = synthetic|Date = 01/02/26" \
           f"|Time = 10:11:12|MPP = {mpp}|Left = 25.0|Top = 23.0|User = tileserver tests"
    with tifffile.TiffWriter(path, bigtiff=False) as tw:
        for i, (w, h) in enumerate(sizes):
            head = f"{width}x{height} [0,0 {width}x{height}] ({tile}x{tile})" if i == 0 else \
                f"{width}x{height} -> {w}x{h} - ({tile}x{tile})"
            tables = b"" if jp2k else aperio_jpeg(np.zeros((tile, tile, 3), np.uint8), quality)[0]
            tiles = _tiles(source, i, (w, h), tile, quality, jp2k, tables)  # streamed: a big slide fits
            extra = [(JPEG_TABLES, 7, len(tables), tables, True)] if tables else []
            tw.write(tiles, shape=(h, w, 3), dtype=np.uint8, tile=(tile, tile), photometric="rgb",
                     compression=JP2K_RGB if jp2k else JPEG, subsampling=None if jp2k else (1, 1),
                     compressionargs=None if jp2k else {"outcolorspace": "RGB"},
                     description=f"{APERIO}\r\n{head} {codec}{info}" if aperio else "RGB JPEG tiles",
                     subfiletype=0 if i == 0 or aperio else 1, extratags=extra,
                     metadata=None, software=False)
            if i == 0 and thumbnail is not None:
                th, tw_ = thumbnail.shape[:2]
                tw.write(thumbnail, photometric="rgb", compression="zlib", rowsperstrip=16, metadata=None,
                         description=f"{APERIO}\r\n{width}x{height} -> {tw_}x{th} - |AppMag = {mag}|MPP = {mpp}",
                         software=False)
        for name, image, kind in (("label", label, 1), ("macro", macro, 9)):
            if image is not None:
                tw.write(image, photometric="rgb", compression="zlib", rowsperstrip=16, subfiletype=kind,
                         description=f"{APERIO}\r\n{name} {image.shape[1]}x{image.shape[0]}", metadata=None,
                         software=False)
    return sizes


def texture(width: int, height: int, seed: int = 1) -> Any:
    """An H&E-like RGB test pattern: smooth gradients plus blurred noise (so JPEG is stable)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (height // 4 + 2, width // 4 + 2, 3), dtype=np.uint8)
    noise = np.repeat(np.repeat(small, 4, axis=0), 4, axis=1)[:height, :width].astype(np.float32)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack([200 - 80 * xx / width, 120 + 60 * yy / height, 190 + 40 * (xx + yy) / (width + height)], -1)
    return np.clip(0.6 * base + 0.4 * noise, 0, 255).astype(np.uint8)


def box_shrink(px: Any, factor: int) -> Any:
    """Mean of `factor` x `factor` blocks, edges cut (Aperio's levels round their size down)."""
    h, w = px.shape[0] // factor, px.shape[1] // factor
    blocks = px[: h * factor, : w * factor].reshape(h, factor, w, factor, 3).astype(np.uint32)
    return ((blocks.sum(axis=(1, 3)) + factor * factor // 2) // (factor * factor)).astype(np.uint8)


def array_source(full: Any, levels: int) -> TileSource:
    """A `TileSource` for a whole image in memory, its levels made by 4 x 4 box averaging."""
    pyramid = [full]
    for _ in range(1, levels):
        pyramid.append(box_shrink(pyramid[-1], 4))

    def source(level: int, x: int, y: int, w: int, h: int) -> Any:
        return pyramid[level][y : y + h, x : x + w]

    return source


def make_svs(path: Path, width: int, height: int, levels: int = 3, seed: int = 1, **kw: Any) -> list[tuple[int, int]]:
    """A small synthetic SVS with label, macro and thumbnail (see `write_svs`)."""
    full = texture(width, height, seed)
    label = texture(301, 207, seed + 1)
    label[40:80, 30:270] = (20, 20, 20)  # a "barcode" bar
    macro = texture(613, 247, seed + 2)
    thumb = box_shrink(full, 8)
    return write_svs(path, width, height, array_source(full, levels), levels=levels, label=label, macro=macro,
                     thumbnail=thumb, **kw)
