"""Identifier -> location, for what one image root cannot say: a location template per identifier
prefix, and a Python hook, tried before the image root.

- `resolvers` (settings): `{"slides/": "s3://pathology/scans/{id}.svs", "maps/": "/data/maps/{id}.tif"}`.
  An identifier starting with a prefix (the longest wins) becomes its template with `{id}` the rest of
  the identifier (`{ident}`: the whole identifier). The template's fixed part up to its last `/` before
  the first placeholder is its root: the location must stay under it.
- `resolver_hook` (settings): `module:function`, called with the identifier (in a pool thread, as
  Cantaloupe's delegate scripts and SIPI's pre-flight are used), returning a location (a path or a store
  URL) or None to go on with the templates and the image root. It may raise tileserver's errors
  (`NotFound`, `Forbidden`, ...) to answer with their status.

Whatever a template or the hook gives must lie under a configured root: the image root (folder or
URL), a template's root, or one of `resolver_roots`; anything else is a 404 (and a log line), so no
identifier and no hook result can make this server read outside its stores. Identifiers are checked as
the image root checks them (no `..`, NUL, backslash) before any of this.
"""

from __future__ import annotations

import importlib
import logging
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from ..errors import NotFound, TileServerError
from ..models import Sequence
from . import vfs
from .local import Source
from .stores import RemoteSource

log = logging.getLogger("tileserver.sources.resolve")
PLACEHOLDER = re.compile(r"\{(id|ident)\}")


def template_root(template: str) -> str:
    """The part of `template` every location it makes starts with: up to the last `/` before its
    first placeholder. `template_root("s3://b/scans/{id}.svs") == "s3://b/scans/"`."""
    m = PLACEHOLDER.search(template)
    if m is None:
        raise ValueError(f"resolver template {template!r} has no {{id}}")
    fixed = template[: m.start()]
    return fixed[: fixed.rfind("/") + 1]


@dataclass(frozen=True)
class Roots:
    """The roots locations may lie under: store URL prefixes and local folders (real paths)."""

    urls: tuple[str, ...]
    folders: tuple[str, ...]

    @classmethod
    def of(cls, roots: Iterable[str]) -> Roots:
        urls, folders = [], []
        for root in roots:
            if vfs.remote(root):
                urls.append(root if root.endswith("/") else root + "/")
            else:
                folders.append(os.path.realpath(root))
        return cls(tuple(urls), tuple(folders))

    def admit(self, loc: str) -> str | None:
        """`loc` (a local path made real) when it lies under a root, else None."""
        if vfs.remote(loc):
            rest = next((loc[len(u):] for u in self.urls if loc.startswith(u)), None)
            if rest is None or any(seg in ("", ".", "..") for seg in rest.split("/")):
                return None
            return loc
        real = os.path.realpath(loc)
        for folder in self.folders:
            if os.path.commonpath([folder, real]) == folder and real != folder:
                return real
        return None


class Resolver:
    """The image root (`base`: a folder or a store), with templates and a hook in front of it."""

    def __init__(self, base: Source | RemoteSource, templates: dict[str, str], hook: str | None,
                 extra_roots: Iterable[str], options: vfs.StoreOptions) -> None:
        self.base = base
        self.templates = sorted(templates.items(), key=lambda kv: -len(kv[0]))
        self.hook = load_hook(hook) if hook else None
        own = [t for _, t in self.templates]
        roots = [template_root(t) for t in own] + list(extra_roots)
        for root in roots:
            if vfs.remote(root):
                vfs.mount(root, options)
        self.roots = Roots.of([base.root, *roots])

    # the image root's own services
    @property
    def root(self) -> str:
        return self.base.root

    def readable(self) -> bool:
        return self.base.readable()

    def check(self, ident: str) -> None:
        self.base.check(ident)

    def sequence(self, ident: str) -> Sequence:
        return self.base.sequence(ident)

    def listing(self, folder: str = "", limit: int = 10_000) -> list[str]:
        return self.base.listing(folder, limit)

    def resolve_dir(self, folder: str) -> str:
        return self.base.resolve_dir(folder)

    def resolve(self, ident: str) -> str:
        """The location of `ident`: the hook's answer, else a template's, else the image root's."""
        self.base.check(ident)
        if self.hook is not None:
            found = self._hooked(ident)
            if found is not None:
                return self._existing(self._admitted(found, ident), ident)
        for prefix, template in self.templates:
            if ident.startswith(prefix) and len(ident) > len(prefix):
                loc = fill(template, ident, ident[len(prefix):])
                return self._existing(self._admitted(loc, ident), ident)
        return self.base.resolve(ident)

    def _hooked(self, ident: str) -> str | None:
        assert self.hook is not None
        try:
            found = self.hook(ident)
        except TileServerError:
            raise
        except Exception as exc:
            log.error("resolver hook failed for %s: %s: %s", ident[:64], type(exc).__name__, exc)
            raise TileServerError("the identifier could not be resolved") from exc
        if found is not None and not isinstance(found, str | os.PathLike):
            log.error("resolver hook returned %s for %s: not a location", type(found).__name__, ident[:64])
            raise TileServerError("the identifier could not be resolved")
        return None if found is None else os.fspath(found)

    def _admitted(self, loc: str, ident: str) -> str:
        found = self.roots.admit(loc)
        if found is None:
            log.warning("identifier %s resolved outside the configured roots: refused", ident[:64])
            raise NotFound(f"image not found: {ident}")
        return found

    @staticmethod
    def _existing(loc: str, ident: str) -> str:
        try:
            vfs.stat(loc)
        except (NotFound, OSError) as exc:
            raise NotFound(f"image not found: {ident}") from exc
        if not vfs.remote(loc) and not os.path.isfile(loc):
            raise NotFound(f"image not found: {ident}")
        return loc


def fill(template: str, ident: str, rest: str) -> str:
    """`template` with `{id}` as `rest` and `{ident}` as `ident`."""
    return PLACEHOLDER.sub(lambda m: rest if m[1] == "id" else ident, template)


def load_hook(spec: str) -> Callable[[str], object]:
    """The function `module:function` names (at start: a wrong name is a configuration error)."""
    module, sep, name = spec.partition(":")
    if not sep or not module or not name:
        raise ValueError(f"resolver_hook {spec!r} is not module:function")
    fn = getattr(importlib.import_module(module), name, None)
    if not callable(fn):
        raise ValueError(f"resolver_hook {spec!r}: no function {name} in {module}")
    return fn  # type: ignore[no-any-return]
