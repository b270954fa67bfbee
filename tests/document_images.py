"""Multi-page documents for the tests, written with tifffile (JPEG through imagecodecs): pages of
different odd sizes, each stored its own way, so a page read from the wrong directory cannot pass.

`DOC_TIF` holds, as top-level directories in this order:
0. page 0, 1003x701 RGB, JPEG tiles of 256, PageName "cover";
1, 2. its reductions 501x350 and 250x175 as following directories marked reduced (NewSubfileType 1);
3. page 1, 640x900 RGB, JPEG tiles of 128, DocumentName "plate", its reductions 320x450 and 160x225
   in SubIFDs;
4. page 2, 300x211 grey, deflate strips of 64 rows, no name.
`GIF_PAGES` is an animated GIF of three frames (libvips' `n-pages`), each frame one flat colour.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyvips

DOC_TIF = "doc-3pages-1003x701-640x900-300x211.tif"
DOC_SIZES = ((1003, 701), (640, 900), (300, 211))
DOC_LABELS = ("cover", "plate", "")
DOC_BANDS = (3, 3, 1)
DOC_TILES = (256, 128, 256)  # a striped page is read in tiles of the reader's size (256)
# (top-level directory, SubIFD or -1) of every stored level of each page, full resolution first
DOC_LEVELS = (((0, -1), (1, -1), (2, -1)), ((3, -1), (3, 0), (3, 1)), ((4, -1),))
DOC_STORED_SIZES = (((1003, 701), (501, 350), (250, 175)), ((640, 900), (320, 450), (160, 225)), ((300, 211),))
GIF_PAGES = "anim-3pages-97x61.gif"
GIF_COLOURS = ((250, 20, 20), (20, 250, 20), (20, 20, 250))


def doc_page(page: int) -> np.ndarray[Any, Any]:
    """Page `page`'s pixels (height x width x bands, uint8): the test texture, bands rotated by page."""
    from .conftest import pattern

    width, height = DOC_SIZES[page]
    texture = pattern(width, height, seed=40 + page)
    bands = [texture[(page + b) % 3] for b in range(3)]
    img = texture[2] if DOC_BANDS[page] == 1 else bands[0].bandjoin(bands[1:])
    return np.ndarray(buffer=img.write_to_memory(), dtype=np.uint8, shape=(height, width, img.bands))


def halve(a: np.ndarray[Any, Any], times: int) -> np.ndarray[Any, Any]:
    """Box-filter halvings, rounding the size down (as libvips makes pyramids)."""
    for _ in range(times):
        h, w = a.shape[0] // 2, a.shape[1] // 2
        a = a[: 2 * h, : 2 * w].reshape(h, 2, w, 2, -1).mean(axis=(1, 3)).round().astype(np.uint8)
    return a


def write_document(path: Path) -> None:
    import tifffile

    jpeg: dict[str, Any] = {"compression": "jpeg", "compressionargs": {"level": 90}, "photometric": "rgb",
                            "metadata": None}
    p0, p1 = doc_page(0), doc_page(1)
    with tifffile.TiffWriter(path) as tif:
        tif.write(p0, tile=(256, 256), extratags=[(285, "s", 0, DOC_LABELS[0], True)], **jpeg)
        for k in (1, 2):
            tif.write(halve(p0, k), tile=(256, 256), subfiletype=1, **jpeg)
        tif.write(p1, tile=(128, 128), subifds=2, extratags=[(269, "s", 0, DOC_LABELS[1], True)], **jpeg)
        for k in (1, 2):
            tif.write(halve(p1, k), tile=(128, 128), subfiletype=1, **jpeg)
        tif.write(doc_page(2)[:, :, 0], compression="zlib", rowsperstrip=64, photometric="minisblack",
                  metadata=None)


def stored_level(path: Path, page: int, level: int) -> np.ndarray[Any, Any]:
    """Stored level `level` of document page `page` as tifffile decodes it (height x width x bands)."""
    import tifffile

    ifd, sub = DOC_LEVELS[page][level]
    with tifffile.TiffFile(path) as tif:
        top = tif.pages[ifd]
        if sub < 0:
            a = top.asarray()
        else:
            tif.filehandle.seek(top.subifds[sub])
            a = tifffile.TiffPage(tif, index=0).asarray()
    return a if a.ndim == 3 else a[:, :, None]


def write_gif(path: Path) -> None:
    frames = [pyvips.Image.black(97, 61, bands=3).new_from_image(list(c)).cast("uchar") for c in GIF_COLOURS]
    anim = pyvips.Image.arrayjoin(frames, across=1).copy(interpretation="srgb")
    anim.set_type(pyvips.GValue.gint_type, "page-height", 61)
    anim.gifsave(str(path))


def make_documents(root: Path) -> None:
    write_document(root / DOC_TIF)
    write_gif(root / GIF_PAGES)
