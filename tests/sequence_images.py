"""Image sequences for the tests, as iipsrv 1.3 reads them: one tiled pyramid TIFF per view, named
`<name>_pyr_XXX_YYY.tif` (XXX the horizontal angle, YYY the vertical angle, 3 digits; `_pyr_` is 1.3's
default FILENAME_PATTERN). Every view's pixels differ strongly from every other view's, so a server
answering the wrong file cannot pass.

`seq` has horizontal views 0 10 20 (at vertical 90), vertical views 0 45 90 (at horizontal 0) and one
view on neither axis, 10,45 (listed by neither OBJ, but there for `SDS=10,45`). `dup` has its first
view in two formats, which 1.3 refuses."""

from __future__ import annotations

from pathlib import Path
from typing import Any

SEQ = "seq"
SEQ_SIZE = (301, 203)  # levels 301x203, 150x101, 75x50 in 128-pixel tiles: 6, 2 and 1 tiles
SEQ_VIEWS = ((0, 90), (10, 90), (20, 90), (0, 45), (0, 0), (10, 45))
HORIZONTAL, VERTICAL = (0, 10, 20), (0, 45, 90)
DUP = "dup"  # dup_pyr_000_090.tif and dup_pyr_000_090.jpg


def member_name(name: str, x: int, y: int, ext: str = "tif", pattern: str = "_pyr_") -> str:
    return f"{name}{pattern}{x:03d}_{y:03d}.{ext}"


def view_pixels(width: int, height: int, number: int) -> Any:
    """View `number` of a test sequence: a gradient-and-noise texture with its bands rotated by `number`,
    inverted from number 3 on, so no two of the first six views are alike."""
    from .conftest import pattern

    img = pattern(width, height, seed=40 + number)
    bands = [img[(b + number) % 3] for b in range(3)]
    joined = bands[0].bandjoin(bands[1:])
    if number >= 3:
        joined = (255 - joined).cast("uchar")
    return joined.copy(interpretation="srgb")


def write_view(path: Path, width: int, height: int, number: int) -> None:
    view_pixels(width, height, number).tiffsave(str(path), compression="jpeg", Q=90, tile=True, pyramid=True,
                                                tile_width=128, tile_height=128)


def write_sequence(folder: Path, name: str, views: tuple[tuple[int, int], ...], size: tuple[int, int],
                   pattern: str = "_pyr_") -> None:
    """One file per view, view n of `views` with the pixels of `view_pixels(..., n)`."""
    for number, (x, y) in enumerate(views):
        write_view(folder / member_name(name, x, y, pattern=pattern), *size, number)


def make_sequences(root: Path) -> None:
    write_sequence(root, SEQ, SEQ_VIEWS, SEQ_SIZE)
    write_view(root / member_name(DUP, 0, 90), 97, 61, 0)
    view_pixels(97, 61, 1).jpegsave(str(root / member_name(DUP, 0, 90, "jpg")), Q=90)
