"""The formats in the order they are tried, and the file opener that picks one by content.

Formats are tried in order, each probing the file's first bytes; the first that claims it opens it.
The pyvips reader comes last and claims everything else (libvips probes by content too, and a file it
cannot read is a 415). The format is never chosen by file extension.

A remote location (an object in a store, `vfs.py`) is read by byte range when it is a tiled TIFF
and the format that claims it reads through `vfs` (`ranged`: the libvips reader, OME-TIFF); anything
else (JPEG 2000, slides, untiled images) is first copied whole into the source cache and opened from
there, as its libraries read only files.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Sequence

from ..errors import NotFound, SourceError
from . import vfs
from .base import HEAD_BYTES, Format, SourceImage
from .tiff import TiffFile

log = logging.getLogger(__name__)


class Registry:
    def __init__(self, formats: Sequence[Format]) -> None:
        self.formats = tuple(formats)

    def open(self, path: str, ident: str) -> SourceImage:
        """Open `path` (an identifier's resolved file) with the first format that claims it."""
        try:
            head = vfs.head(path, HEAD_BYTES)
            if vfs.remote(path) and not tiled_tiff(path, head):
                path = vfs.local_file(path)
        except (FileNotFoundError, NotFound) as exc:
            raise NotFound(f"image not found: {ident}") from exc
        except OSError as exc:
            log.error("cannot read %s: %s", ident, exc)
            raise SourceError("the image could not be read") from exc
        for fmt in self.formats:
            if fmt.probe(path, head):
                if vfs.remote(path) and not fmt.ranged:
                    path = vfs.local_file(path)
                return fmt.open(path, ident)
        raise SourceError("not an image format this server reads")

    def names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.formats)


def tiled_tiff(path: str, head: bytes) -> bool:
    """Whether `path` is a TIFF whose first directory is tiled (what is read by byte range)."""
    if head[:4] not in (b"II*\0", b"MM\0*", b"II+\0", b"MM\0+"):
        return False
    try:
        with vfs.open_binary(path) as f:
            tf = TiffFile(f, max_ifds=1)
    except (ValueError, struct.error):
        return False
    return bool(tf.pages) and tf.pages[0].tiled
