"""The pages of a multi-page TIFF: which top-level directories are pages of their own and which are
reduced-resolution copies of a page (its stored levels), and whether the pages are an image stack.
Pure: reads only parsed directories (`tiff.py`).

A document (a scanned book, a fax) is a chain of top-level directories, one per page, each page with
or without reductions: in its SubIFDs (OME-TIFF style, as libvips writes `subifd=True`), or as the
directories that follow it (classic pyramid TIFF). A top-level directory after the first is
- a stored level of the last tiled page before it when it is tiled, smaller than that page's last
  level, that page keeps no SubIFDs, and it says it is a reduction (NewSubfileType bit 0), or says
  nothing (neither bit 0 nor bit 1) and has the page's aspect ratio (each side within a pixel of the
  same scale, as pyramid writers round); a stored level is at most as large as the one before it;
- skipped when it says it is a reduction but is not such a level (a thumbnail, a label, a mask);
- a page of its own otherwise (NewSubfileType bit 1, a striped page, another size or shape).
Striped pages are levels of nobody (so a pyramid's striped thumbnail after its first page, as
Aperio writes, is a page and the tiled levels after it are still the first page's).
A striped page has one stored level, itself; its other levels are made by halving.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from ..levels import level_factor
from ..models import Level, StackItem
from .tiff import (
    DOCUMENT_NAME,
    MULTI_PAGE,
    NEW_SUBFILE_TYPE,
    PAGE_NAME,
    REDUCED_IMAGE,
    STONITS,
    TILE_LENGTH,
    TILE_WIDTH,
    Ifd,
    TiffFile,
)

log = logging.getLogger("tileserver.sources.documents")


@dataclass(frozen=True)
class DocPage:
    """One page: the top-level directory (libvips' `page`) holding it, and its stored levels, full
    resolution first (`Level.page` / `Level.subifd` name the directory of each)."""

    page: int
    levels: tuple[Level, ...]
    label: str = ""

    @property
    def size(self) -> tuple[int, int]:
        return self.levels[0].width, self.levels[0].height


def document_pages(tf: TiffFile, tile: int) -> tuple[DocPage, ...]:
    """The pages of `tf` in file order (at least one: the first directory). `tile` is the tile size
    given to striped pages, which have no tiles of their own."""
    pages: list[list[Level]] = []
    owners: list[int] = []  # the top-level directory of each page
    tiled: int | None = None  # the last tiled page (an index into `pages`)
    for p, ifd in enumerate(tf.pages):
        kind = ifd.num(NEW_SUBFILE_TYPE)
        if p and tiled is not None and _reduces(ifd, kind, pages[tiled], tf.subifds[owners[tiled]]):
            lv = pages[tiled][0]
            pages[tiled].append(_level(ifd, (lv.width, lv.height), p, -1))
        elif not p or not kind & REDUCED_IMAGE:
            owners.append(p)
            pages.append(_page_levels(ifd, tf.subifds[p], p, tile))
            tiled = len(pages) - 1 if ifd.tiled else tiled
    return tuple(DocPage(p, tuple(levels), page_label(tf.pages[p])) for p, levels in zip(owners, pages, strict=True))


def _reduces(ifd: Ifd, kind: int, levels: list[Level], subifds: list[Ifd]) -> bool:
    """Whether top-level directory `ifd` is the next stored level of the page with `levels`."""
    if subifds or not ifd.tiled or (kind & MULTI_PAGE and not kind & REDUCED_IMAGE):
        return False
    w, h = ifd.size
    last, full = levels[-1], levels[0]
    if not (0 < w < last.width and 0 < h <= last.height):
        return False
    return bool(kind & REDUCED_IMAGE) or same_shape((full.width, full.height), (w, h))


def same_shape(full: tuple[int, int], size: tuple[int, int]) -> bool:
    """`size` is `full` scaled by one factor, each side rounded either way: `w / W == h / H` to
    within a pixel on each side, i.e. `|w * H - h * W| <= W + H`."""
    (fw, fh), (w, h) = full, size
    return abs(w * fh - h * fw) <= fw + fh


def _page_levels(ifd: Ifd, subifds: list[Ifd], page: int, tile: int) -> list[Level]:
    """A page's own levels: itself, then the tiled SubIFDs that get smaller (thumbnails skipped)."""
    full = ifd.size
    if not ifd.tiled:
        return [Level(full[0], full[1], tile, tile, 1.0, True, page, -1)]
    levels = [_level(ifd, full, page, -1)]
    for j, sub in enumerate(subifds):
        w, h = sub.size
        if sub.tiled and 0 < w < levels[-1].width and 0 < h <= levels[-1].height:
            levels.append(_level(sub, full, page, j))
    return levels


def _level(ifd: Ifd, full: tuple[int, int], page: int, subifd: int) -> Level:
    w, h = ifd.size
    return Level(w, h, ifd.num(TILE_WIDTH), ifd.num(TILE_LENGTH), level_factor(full, (w, h)), True, page, subifd)


def page_label(ifd: Ifd) -> str:
    """A page's name: its PageName, else its DocumentName (an image stack's page names), else ""."""
    for tag in (PAGE_NAME, DOCUMENT_NAME):
        v = ifd.values.get(tag)
        if isinstance(v, bytes):
            text = v.split(b"\0", 1)[0].decode("utf-8", "replace").strip()
            if text:
                return text
    return ""


def stack_items(tf: TiffFile, stored: list[Level], ident: str) -> tuple[StackItem, ...]:
    """The images of a stack, as iipsrv 1.3 finds them: top-level pages marked multi-page
    (NewSubfileType 2), named by DocumentName and scaled by StoNits, in file order; page n is the
    n-th top-level directory. Only when page 0's reductions are SubIFDs (OME-TIFF style) or page 1
    has page 0's size (images too small to need reductions). Unlike iipsrv, every page must share
    page 0's geometry (size, tiling, SubIFD sizes), since one set of levels describes them all;
    otherwise the file is a document (`documents.py`), its pages addressed as `;page=N` only."""
    pages = tf.pages
    same_size = len(pages) > 1 and pages[1].tiled and pages[1].size == pages[0].size
    if not (tf.subifds[0] and len(stored) > 1) and not same_size:
        return ()
    items = [_stack_item(ifd) for ifd in pages if ifd.num(NEW_SUBFILE_TYPE) & MULTI_PAGE]
    shape = _geometry(pages[0], tf.subifds[0])
    if any(_geometry(pages[p], tf.subifds[p]) != shape for p in range(len(items))):
        log.info("%s: stack pages differ in size or tiling; read as a document", ident)
        return ()
    return tuple(items)


def _stack_item(ifd: Ifd) -> StackItem:
    name = ifd.values.get(DOCUMENT_NAME)
    scale = ifd.values.get(STONITS)
    return StackItem(
        name.split(b"\0", 1)[0].decode("utf-8", "replace") if isinstance(name, bytes) else "",
        float(scale[0]) if isinstance(scale, tuple) and scale else 1.0,
    )


def _geometry(page: Ifd, subifds: list[Ifd]) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    return [(ifd.size, (ifd.num(TILE_WIDTH), ifd.num(TILE_LENGTH))) for ifd in (page, *subifds)]
