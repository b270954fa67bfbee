"""The formats in the order they are tried, and the file opener that picks one by content.

Formats are tried in order, each probing the file's first bytes; the first that claims it opens it.
The pyvips reader comes last and claims everything else (libvips probes by content too, and a file it
cannot read is a 415). The format is never chosen by file extension.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from ..errors import NotFound, SourceError
from .base import HEAD_BYTES, Format, SourceImage

log = logging.getLogger(__name__)


class Registry:
    def __init__(self, formats: Sequence[Format]) -> None:
        self.formats = tuple(formats)

    def open(self, path: str, ident: str) -> SourceImage:
        """Open `path` (an identifier's resolved file) with the first format that claims it."""
        try:
            with open(path, "rb") as f:
                head = f.read(HEAD_BYTES)
        except FileNotFoundError as exc:
            raise NotFound(f"image not found: {ident}") from exc
        except OSError as exc:
            log.error("cannot read %s: %s", ident, exc)
            raise SourceError("the image could not be read") from exc
        for fmt in self.formats:
            if fmt.probe(path, head):
                return fmt.open(path, ident)
        raise SourceError("not an image format this server reads")

    def names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.formats)
