"""`tileserver convert SRC DST.tif`: write a tiled, pyramidal TIFF (the fastest source for this server)
from anything libvips reads, with JPEG, WebP, deflate or zstd tiles.

The file is written next to DST under a temporary name and renamed when complete, so a failed or
interrupted conversion never leaves a half-written DST; an existing DST is replaced only with
`force`. Codecs the local libtiff lacks are refused up front (`supported()`; the `pyvips-binary`
wheel has no zstd). JPEG cannot hold an alpha channel, so JPEG output is flattened onto white;
data deeper than 8 bits is kept for deflate and zstd and scaled to 8 bits for JPEG and WebP; grey
becomes RGB for WebP (libtiff's WebP codec takes 3 or 4 bands). Large images are written as BigTIFF.
Pyramid levels are made by libvips, which halves with floor (225 -> 112 px).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Literal, TextIO

import pyvips

Compression = Literal["jpeg", "webp", "deflate", "zstd"]
COMPRESSIONS: tuple[Compression, ...] = ("jpeg", "webp", "deflate", "zstd")
LOSSY = ("jpeg", "webp")
BIGTIFF_BYTES = 3 << 30  # uncompressed size above which BigTIFF is used (a pyramid adds a third)


class ConvertError(Exception):
    """A conversion that cannot be done; the message is for the user."""


@dataclass(frozen=True)
class ConvertOptions:
    compression: Compression = "jpeg"
    tile_size: int = 256
    quality: int = 90
    force: bool = False


@cache
def supported(compression: Compression) -> bool:
    """Whether this libvips' libtiff writes `compression` (the `pyvips-binary` wheel has no zstd)."""
    try:
        pyvips.Image.black(16, 16, bands=3).tiffsave_buffer(tile=True, compression=compression)
    except pyvips.Error:
        return False
    return True


def reason(exc: pyvips.Error) -> str:
    lines = [line.strip() for line in (exc.detail or "").splitlines() if line.strip()]
    return next((line for line in lines if "Unknown tag" not in line), exc.message.strip())


def check_paths(src: Path, dst: Path, force: bool) -> None:
    if not src.is_file():
        raise ConvertError(f"{src} is not a file")
    if dst.exists() and dst.resolve() == src.resolve():
        raise ConvertError("the destination is the source")
    if dst.exists() and not force:
        raise ConvertError(f"{dst} exists (use --force to replace it)")
    if not dst.parent.is_dir():
        raise ConvertError(f"the folder {dst.parent} does not exist")


def prepare(image: Any, compression: Compression) -> Any:
    """Make the image fit the codec: 8 bits for JPEG/WebP, RGB(A) for WebP, no alpha for JPEG."""
    if compression in LOSSY and image.format != "uchar":
        grey = image.interpretation in ("b-w", "grey16")
        image = image.colourspace("b-w" if grey else "srgb")
        if image.format != "uchar":
            image = image.cast("uchar")
    if compression == "webp" and image.bands < 3:  # libtiff's WebP codec takes RGB or RGBA only
        image = image.colourspace("srgb")
    if compression == "jpeg" and image.hasalpha():
        image = image.flatten(background=[255] * (image.bands - 1))
    return image


def save_options(image: Any, opts: ConvertOptions) -> dict[str, Any]:
    out: dict[str, Any] = {"tile": True, "pyramid": True, "tile_width": opts.tile_size,
                           "tile_height": opts.tile_size, "compression": opts.compression,
                           "bigtiff": image.width * image.height * image.bands * 4 > BIGTIFF_BYTES}
    if opts.compression in LOSSY:
        out["Q"] = opts.quality
    else:
        out["predictor"] = "horizontal"
    return out


def convert(src: Path, dst: Path, opts: ConvertOptions, progress: Callable[[int], None] | None = None) -> Any:
    """Convert `src` to a pyramidal TIFF at `dst`; `progress` gets the percentage done (0-100).
    Returns the written image's header (pyvips image of the first page)."""
    if opts.compression not in COMPRESSIONS:
        raise ConvertError(f"compression must be one of {', '.join(COMPRESSIONS)}")
    if not supported(opts.compression):
        raise ConvertError(f"this libvips cannot write {opts.compression} TIFF tiles")
    check_paths(src, dst, opts.force)
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.part")
    try:
        image = prepare(pyvips.Image.new_from_file(str(src), access="sequential"), opts.compression)
        if progress is not None:
            image.set_progress(True)
            image.signal_connect("eval", lambda _img, p: progress(int(p.percent)))
        image.tiffsave(str(tmp), **save_options(image, opts))
        os.replace(tmp, dst)
    except pyvips.Error as exc:
        raise ConvertError(f"could not convert {src}: {reason(exc)}") from exc
    finally:
        tmp.unlink(missing_ok=True)
    if progress is not None:
        progress(100)
    return pyvips.Image.new_from_file(str(dst))


class ProgressBar:
    """A one-line text progress bar, redrawn only when the percentage changes."""

    def __init__(self, stream: TextIO = sys.stderr, width: int = 40) -> None:
        self.stream, self.width, self.last = stream, width, -1

    def __call__(self, percent: int) -> None:
        percent = max(0, min(100, percent))
        if percent == self.last:
            return
        self.last = percent
        done = self.width * percent // 100
        self.stream.write(f"\r[{'#' * done}{' ' * (self.width - done)}] {percent:3d}%")
        if percent == 100:
            self.stream.write("\n")
        self.stream.flush()
