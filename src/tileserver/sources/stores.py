"""Identifier -> location in a store: the image root as a URL (`s3://bucket/prefix`, `gs://...`,
`az://...`, `https://host/prefix/`), the remote counterpart of `local.Source`.

An identifier is checked as a local one is (no empty, `.` or `..` segment, no NUL or backslash,
bounded length), then becomes `<root><prefix><identifier><suffix>`: a key under the root, read
through its mount (`vfs.mount`), so no identifier reaches anything outside it. Listing (the index page,
collections) asks the store for the keys under a prefix; plain HTTP servers cannot list, so their
listing is empty. Image sequences (iipsrv's `_pyr_XXX_YYY` files) are local only.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from ..errors import NotFound, TileServerError
from ..models import Sequence
from . import vfs
from .local import IMAGE_SUFFIXES, Source

log = logging.getLogger(__name__)


def is_url(root: str) -> bool:
    return root.startswith(vfs.SCHEMES)


class RemoteSource:
    """The identifiers under one store root."""

    def __init__(self, root: str, options: vfs.StoreOptions, prefix: str = "", suffix: str = "",
                 max_length: int = 1024) -> None:
        self.mount = vfs.mount(root, options)
        self.root = self.mount.root
        self.prefix, self.suffix = prefix, suffix
        self._check = Source(Path(os.sep), max_length=max_length).check  # the local rules for identifiers

    def check(self, ident: str) -> None:
        self._check(ident)

    def location(self, ident: str) -> str:
        self.check(ident)
        head, _, name = ident.rpartition("/")
        return self.root + (head + "/" if head else "") + self.prefix + name + self.suffix

    def resolve(self, ident: str) -> str:
        """The location of `ident`'s object; NotFound when the store has none."""
        loc = self.location(ident)
        try:
            vfs.stat(loc)
        except NotFound as exc:
            raise NotFound(f"image not found: {ident}") from exc
        return loc

    def sequence(self, ident: str) -> Sequence:
        raise NotFound(f"image not found: {ident}")

    def readable(self) -> bool:
        """Whether the store answers: a listing of one key, or (HTTP) a HEAD of the root answered at all
        (an HTTP server may well refuse a folder: 401, 403, 404, 405 still say it is there)."""
        import obstore

        m = self.mount
        try:
            if m.can_list:
                self._keys("", 1, quiet=True)
            else:
                key = m.key(self.root)
                vfs.call(m, "HEAD", key, lambda: obstore.head(m.store, key), quiet=True)
        except NotFound:
            return True
        except TileServerError as exc:
            return not m.can_list and getattr(exc, "store_status", 0) in (401, 403, 404, 405)
        return True

    def listing(self, folder: str = "", limit: int = 10_000) -> list[str]:
        """Identifiers of the image objects under `folder`, sorted (empty where the store cannot list)."""
        if folder:
            self.check(folder)
        if not self.mount.can_list:
            return []
        found: list[str] = []
        for key in self._keys(folder.rstrip("/") + "/" if folder else "", limit * 4):
            name = key.rsplit("/", 1)[-1]
            if name.startswith(".") or not name.startswith(self.prefix) or not name.endswith(self.suffix):
                continue
            if os.path.splitext(name)[1].lower() not in IMAGE_SUFFIXES:
                continue
            head = key[: len(key) - len(name)]
            stem = name[len(self.prefix) : len(name) - len(self.suffix) if self.suffix else None]
            found.append(head + stem)
            if len(found) >= limit:
                break
        return sorted(found)

    def resolve_dir(self, folder: str) -> str:
        self.check(folder)
        if not self.listing(folder, 1):
            raise NotFound(f"folder not found: {folder}")
        return self.root + folder

    def _keys(self, under: str, limit: int, quiet: bool = False) -> list[str]:
        """Keys (relative to the root) of the objects under `under`, at most `limit`."""
        import obstore

        m = self.mount
        base = m.key(self.root)
        prefix = base + under
        out: list[str] = []

        def run() -> list[str]:
            for batch in obstore.list(m.store, prefix=prefix or None, chunk_size=1000):
                for item in batch:
                    out.append(str(item["path"])[len(base):])
                    if len(out) >= limit:
                        return out
            return out

        result: list[str] = vfs.call(m, "LIST", prefix, run, quiet)
        vfs.count("LIST", 0)
        return result


def options_of(settings: Any) -> vfs.StoreOptions:
    """The store options the settings give (credentials, endpoint, region, timeouts)."""
    config: dict[str, str] = {}
    for key, value in (("endpoint", settings.store_endpoint), ("region", settings.store_region),
                       ("access_key_id", settings.store_access_key_id)):
        if value:
            config[key] = value
    if settings.store_secret_access_key is not None:
        config["secret_access_key"] = settings.store_secret_access_key.get_secret_value()
    if settings.store_virtual_hosted:
        config["virtual_hosted_style_request"] = "true"
    return vfs.StoreOptions(tuple(config.items()), tuple(settings.store_options.items()), settings.store_timeout,
                            settings.store_connect_timeout, settings.store_retries, settings.store_retry_timeout,
                            settings.store_allow_http)
