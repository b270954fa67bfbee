"""Identifier -> file path, strictly inside the image root.

An identifier is a relative, `/`-separated path under the root (already percent-decoded once by the
protocol). Refused: NUL bytes, backslashes, absolute paths, `.` / `..` / empty segments, over-long
names, and anything whose real path (symlinks resolved) leaves the root. Every refusal and every
missing file raises with the client's identifier only: no server path ever reaches a response.

An identifier that names no file may name an image sequence (iipsrv 1.3): the files
`<prefix><name><pattern>XXX_YYY.<ext><suffix>` beside it, one per view (XXX, YYY the horizontal and
vertical angles, 3 digits). Each member is an ordinary identifier (`seq_pyr_010_090.tif`), resolved as
above; the listing globs one folder inside the root, with the name escaped and the count bounded.
"""

from __future__ import annotations

import glob
import logging
import os
import re
from itertools import islice
from pathlib import Path

from ..errors import BadRequest, NotFound, SourceError, TileServerError
from ..models import Sequence

log = logging.getLogger(__name__)
MAX_SEQUENCE_FILES = 100_000  # files listed for one sequence (a 360 x 181 grid of views is 65160)
ANGLES = re.compile(r"([0-9]{3,})_([0-9]{3,})\.([^.]+)")
FIRST_VIEW = (0, 90)


class Source:
    def __init__(self, root: Path, prefix: str = "", suffix: str = "", max_length: int = 1024,
                 pattern: str = "_pyr_", max_sequence_files: int = MAX_SEQUENCE_FILES) -> None:
        self.root = os.path.realpath(root)
        self.prefix = prefix
        self.suffix = suffix
        self.max_length = max_length
        self.pattern = pattern
        self.max_sequence_files = max_sequence_files

    def readable(self) -> bool:
        """Whether the root is a folder this process can list (readiness: a gone or unreadable mount is not)."""
        try:
            with os.scandir(self.root) as entries:
                next(entries, None)
        except OSError:
            return False
        return True

    def resolve(self, ident: str) -> str:
        """Return the real path of `ident`'s file; raise BadRequest/NotFound otherwise."""
        self.check(ident)
        head, _, name = ident.rpartition("/")
        rel = (head + "/" if head else "") + self.prefix + name + self.suffix
        path = os.path.realpath(os.path.join(self.root, rel))
        if os.path.commonpath([self.root, path]) != self.root or path == self.root:
            raise NotFound(f"image not found: {ident}")
        if not os.path.isfile(path):
            if os.path.splitext(path)[1].lower() in IMAGE_SUFFIXES and os.path.exists(path):
                raise SourceError("not an image file")  # a folder (or a pipe) named like one: never opened
            raise NotFound(f"image not found: {ident}")
        return path

    def sequence(self, ident: str) -> Sequence:
        """The image sequence `ident` names: where `ident`'s own file would be, the files
        `<name><pattern>XXX_YYY.<ext>` (with prefix and suffix), exactly one `<ext>` holding the first view
        000_090 (iipsrv 1.3 IIPImage::testImageType). Only angles written as 1.3 writes them (3 digits at
        least, no extra leading zero) and files inside the root count. NotFound when there is no sequence."""
        self.check(ident)
        head, _, name = ident.rpartition("/")
        folder_rel, _, start = ((head + "/" if head else "") + self.prefix + name + self.pattern).rpartition("/")
        folder = os.path.realpath(os.path.join(self.root, folder_rel))
        if os.path.commonpath([self.root, folder]) != self.root or not self._has_first_view(folder, start):
            raise NotFound(f"image not found: {ident}")
        names = list(islice(glob.iglob(glob.escape(start) + "*", root_dir=folder), self.max_sequence_files + 1))
        if len(names) > self.max_sequence_files:
            log.error("image sequence %s: more than %d files", ident, self.max_sequence_files)
            raise TileServerError(f"image sequence {ident} has too many files")
        views = self._views(folder, start, names)
        firsts = sorted(ext for ext, found in views.items() if FIRST_VIEW in found)
        if not firsts:
            raise NotFound(f"image not found: {ident}")
        if len(firsts) > 1:
            raise NotFound(f"image sequence {ident} has its first view (000_090) in more than one format")
        found = views[firsts[0]]
        return Sequence(stem=(head + "/" if head else "") + name + self.pattern, ext=firsts[0],
                        horizontal=tuple(sorted(x for x, y in found if y == FIRST_VIEW[1])),
                        vertical=tuple(sorted(y for x, y in found if x == FIRST_VIEW[0])))

    def _has_first_view(self, folder: str, start: str) -> bool:
        """Whether a first view 000_090 may be there, by a few stats (image extensions in lower and upper
        case), so that an unknown identifier costs no scan of its folder."""
        base = os.path.join(folder, start + "000_090")
        return any(os.path.lexists(base + spelling + self.suffix)
                   for ext in IMAGE_SUFFIXES for spelling in {ext, ext.upper()})

    def _views(self, folder: str, start: str, names: list[str]) -> dict[str, set[tuple[int, int]]]:
        """{extension: {(x, y)}} of the files `start` + `XXX_YYY.ext` + suffix among `names`: image
        files only, on an axis of the views (x 0 or y 90), real paths inside the root."""
        views: dict[str, set[tuple[int, int]]] = {}
        for fname in names:
            if self.suffix and not fname.endswith(self.suffix):
                continue
            m = ANGLES.fullmatch(fname, len(start), len(fname) - len(self.suffix))
            if m is None or "." + m[3].lower() not in IMAGE_SUFFIXES:
                continue
            x, y = int(m[1]), int(m[2])
            if (m[1], m[2]) != (f"{x:03d}", f"{y:03d}") or (x != FIRST_VIEW[0] and y != FIRST_VIEW[1]):
                continue  # not 1.3's spelling of the angles, or off both axes
            path = os.path.realpath(os.path.join(folder, fname))
            if os.path.commonpath([self.root, path]) == self.root and os.path.isfile(path):
                views.setdefault(m[3], set()).add((x, y))
        return views

    def check(self, ident: str) -> None:
        if not ident:
            raise BadRequest("empty identifier")
        if len(ident) > self.max_length:
            raise BadRequest("identifier too long")
        if "\x00" in ident or "\\" in ident:
            raise BadRequest("invalid character in identifier")
        if ident.startswith("/"):
            raise NotFound(f"image not found: {ident}")
        if any(seg in ("", ".", "..") for seg in ident.split("/")):
            raise NotFound(f"image not found: {ident}")

    def listing(self, folder: str = "", limit: int = 10_000) -> list[str]:
        """Identifiers of the image files under `folder` (recursively), sorted, root-relative."""
        base = self.root if not folder else self.resolve_dir(folder)
        found: list[str] = []
        for dirpath, dirnames, filenames in os.walk(base, followlinks=False):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in sorted(filenames):
                if name.startswith(".") or not name.startswith(self.prefix):
                    continue
                if self.suffix and not name.endswith(self.suffix):
                    continue
                if os.path.splitext(name)[1].lower() not in IMAGE_SUFFIXES:
                    continue
                stem = name[len(self.prefix) : len(name) - len(self.suffix) if self.suffix else None]
                rel = os.path.relpath(os.path.join(dirpath, stem), self.root)
                found.append(rel.replace(os.sep, "/"))
                if len(found) >= limit:
                    return sorted(found)
        return sorted(found)

    def resolve_dir(self, folder: str) -> str:
        self.check(folder)
        path = os.path.realpath(os.path.join(self.root, folder))
        if os.path.commonpath([self.root, path]) != self.root or not os.path.isdir(path):
            raise NotFound(f"folder not found: {folder}")
        return path


IMAGE_SUFFIXES = {
    ".tif", ".tiff", ".ptif", ".jpg", ".jpeg", ".png", ".webp", ".gif", ".avif", ".heic", ".jp2", ".svg",
}
