"""Image stacks for the tests, as iipsrv 1.3 reads them: multi-page TIFFs whose pages are images of
one scene (NewSubfileType 2), named by DocumentName and scaled by StoNits. libvips writes the pages
(`page-height`) and their SubIFD pyramids, but neither tag; `tag_pages` adds them afterwards by
appending a rewritten copy of each top-level directory to the file (classic little-endian TIFF)."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import pyvips

DOCUMENT_NAME, STONITS = 269, 37439
ASCII, DOUBLE = 2, 12

STACK_TIF = "stack-3pages-451x331-subifd-jpeg.tif"
FLAT_STACK_TIF = "stack-3pages-200x150-flat-jpeg.tif"
STACK_NAMES = ("visible", "infrared", "ultraviolet")
STACK_SCALES = (1.0, 2.5, 0.125)


def stack_page(width: int, height: int, page: int) -> Any:
    """Page `page` of a test stack: the bands of a gradient-and-noise texture rotated by `page`, so
    each page's pixels differ strongly from every other page's (a wrong page cannot pass)."""
    from .conftest import pattern

    img = pattern(width, height, seed=20 + page)
    bands = [img[(b + page) % 3] for b in range(3)]
    return bands[0].bandjoin(bands[1:]).copy(interpretation="srgb")


def write_stack(path: Path, width: int, height: int, pages: int, pyramid: bool) -> None:
    """`pages` pages of `width` x `height`, tiled 128 x 128, JPEG Q90; with `pyramid`, each page has
    its reductions in SubIFDs (OME-TIFF style)."""
    joined = pyvips.Image.arrayjoin([stack_page(width, height, p) for p in range(pages)], across=1).copy()
    joined.set_type(pyvips.GValue.gint_type, "page-height", height)
    joined.tiffsave(str(path), compression="jpeg", Q=90, tile=True, tile_width=128, tile_height=128,
                    pyramid=pyramid, subifd=pyramid)
    tag_pages(path, STACK_NAMES[:pages], STACK_SCALES[:pages])


def tag_pages(path: Path, names: tuple[str, ...], scales: tuple[float, ...]) -> None:
    """Give top-level page n the DocumentName `names[n]` and the StoNits `scales[n]`."""
    data = bytearray(path.read_bytes())
    if data[:4] != b"II*\0":
        raise ValueError("tag_pages handles classic little-endian TIFF only")
    pointer, offset, page = 4, struct.unpack_from("<I", data, 4)[0], 0
    while offset and page < len(names):
        (n,) = struct.unpack_from("<H", data, offset)
        entries = {struct.unpack_from("<H", data, offset + 2 + 12 * i)[0]: bytes(data[offset + 2 + 12 * i:
                                                                                    offset + 14 + 12 * i])
                   for i in range(n)}
        (following,) = struct.unpack_from("<I", data, offset + 2 + 12 * n)
        text = names[page].encode() + b"\0"
        entries[DOCUMENT_NAME] = struct.pack("<HHII", DOCUMENT_NAME, ASCII, len(text), _append(data, text))
        entries[STONITS] = struct.pack("<HHII", STONITS, DOUBLE, 1, _append(data, struct.pack("<d", scales[page])))
        ifd = struct.pack("<H", len(entries)) + b"".join(entries[t] for t in sorted(entries)) + b"\0\0\0\0"
        start = _append(data, ifd)
        struct.pack_into("<I", data, pointer, start)
        struct.pack_into("<I", data, start + len(ifd) - 4, following)
        pointer, offset, page = start + len(ifd) - 4, following, page + 1
    path.write_bytes(bytes(data))


def _append(data: bytearray, chunk: bytes) -> int:
    """Append `chunk` at a word boundary; its offset."""
    if len(data) % 2:
        data.append(0)
    start = len(data)
    data.extend(chunk)
    return start


def make_stacks(root: Path) -> None:
    write_stack(root / STACK_TIF, 451, 331, 3, pyramid=True)
    write_stack(root / FLAT_STACK_TIF, 200, 150, 3, pyramid=False)
