"""Identifier -> file path, strictly inside the image root.

An identifier is a relative, `/`-separated path under the root (already percent-decoded once by the
protocol). Refused: NUL bytes, backslashes, absolute paths, `.` / `..` / empty segments, over-long
names, and anything whose real path (symlinks resolved) leaves the root. Every refusal and every
missing file raises with the client's identifier only: no server path ever reaches a response.
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import BadRequest, NotFound


class Source:
    def __init__(self, root: Path, prefix: str = "", suffix: str = "", max_length: int = 1024) -> None:
        self.root = os.path.realpath(root)
        self.prefix = prefix
        self.suffix = suffix
        self.max_length = max_length

    def resolve(self, ident: str) -> str:
        """Return the real path of `ident`'s file; raise BadRequest/NotFound otherwise."""
        self.check(ident)
        head, _, name = ident.rpartition("/")
        rel = (head + "/" if head else "") + self.prefix + name + self.suffix
        path = os.path.realpath(os.path.join(self.root, rel))
        if os.path.commonpath([self.root, path]) != self.root or path == self.root:
            raise NotFound(f"image not found: {ident}")
        if not os.path.isfile(path):
            raise NotFound(f"image not found: {ident}")
        return path

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
