"""The async core: `TileService.info(ident)` and `TileService.render(request)`.

It knows no protocol. It owns the metadata cache (re-checking file mtimes at most every
`stat_interval` seconds), the encoded-tile cache (bounded in bytes, keyed by the frozen request,
the file's mtime and the image's purge generation), and the admission control (admission.py): the thread
pools in which the synchronous reader and encoder run, so the event loop never blocks on pyvips or the file
system. A render that misses the tile cache is placed in the tile lane or the large lane by its estimated
cost; cached tiles (and responses replayed before routing, web/replay.py) never pass admission.

With `cache_url` a shared second-level cache (cache/shared.py) stands behind the in-process ones: image
metadata and encoded tiles, keyed by the image's version (size, mtime, store ETag), its purge generation and
the request, so a replica answers an info request and a cached tile without opening a file another replica
opened (an image known from shared metadata is opened only when a tile must be rendered here), and a tile
missed by several replicas at once is rendered by one (a lease). Purges (`purge`, the cache API) bump a
generation that every replica re-reads within `cache_generation_ttl`; an entry made under an older one is made
anew, which retires what was derived from it (translations, documents, recorded responses).

With an access policy (access/; `self.access`, None without one) `info` answers the image as the request's viewer
may see it and `render` maps requests back to the image with the tier's overlays: see "access tiers" below.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import secrets
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from . import __version__
from .access.policy import Access, Policy, Tier
from .access.tokens import current_viewer
from .access.view import View, to_real, view_of
from .admission import Admission, Lane, estimate, lane_for
from .cache import codec
from .cache.memory import ByteLRU, CountLRU
from .cache.shared import SharedCache, entry_key
from .errors import Busy, Forbidden, NotFound, TileServerError, Unauthorized, echo
from .imaging import overlay
from .imaging.encode import available_formats
from .imaging.isolate import Children, Location
from .imaging.render import render, samples, stored_now
from .models import (
    ImageMeta,
    OutputFormat,
    Overlays,
    Rendered,
    Samples,
    Sequence,
    TileRequest,
    Watermark,
    fast_init,
)
from .settings import Settings
from .sources import vfs
from .sources.base import Selector, SourceImage, split_selector
from .sources.configured import Sources
from .sources.passthrough import Located
from .sources.pyramid import configure_vips

T = TypeVar("T")
TileKey = tuple[TileRequest, float, str]  # the request, the file's mtime, the image's purge generation
TRANSLATIONS = 8192  # remembered URL translations per process
LOCATED = 65536  # stored tiles remembered by where they are, per process (about 25 MB at most)
CACHE_TIMING = "cache;desc=local"  # Server-Timing of a tile cache hit
# the settings a shared-cache entry depends on besides the image and the request: replicas that differ in one
# of them do not share entries
OUTPUT_SETTINGS = ("jpeg_quality", "png_compression", "webp_quality", "avif_quality", "tiff_compression",
                   "interpolation", "keep_icc", "background", "rotation_fill", "passthrough", "virtual_tile_size",
                   "derive_min_megapixels", "derive_quality", "filename_pattern", "filename_prefix", "filename_suffix")
SHARED_SCHEMA = "1"  # bumped when what the shared entries hold changes shape
PREVIEW_TIMING = 'preview;desc="from a preview while the pyramid is made"'
# the headers of a response whose content depends on the viewer (an image under an access policy that restricts it)
PRIVATE = {"Cache-Control": "private", "Vary": "Cookie, Authorization"}


@fast_init
@dataclass(frozen=True)
class Translation:
    """A protocol's translation of one URL, remembered while the image's metadata is unchanged."""

    meta: ImageMeta
    request: TileRequest
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Document:
    """An info document (info.json, .dzi, ...) remembered with its ETag while the image is unchanged."""

    meta: ImageMeta
    body: bytes
    media_type: str
    etag: str
    headers: tuple[tuple[str, str], ...] = ()


@fast_init
@dataclass(frozen=True)
class Recorded:
    """A response as first sent, kept for replay (web/replay.py) while the image is unchanged: a tile's
    request (its body is looked up in the tile cache) or a document's body, and the raw headers."""

    meta: ImageMeta
    request: TileRequest | None
    body: bytes
    length: int
    headers: tuple[tuple[bytes, bytes], ...]
    labels: tuple[str, str] = ("", "")  # the protocol and route template that answered it (metrics, logs)


@dataclass(frozen=True)
class _Found:
    """Where an identifier's image is and which version of it, before it is opened: enough to open it
    later (`TileService._opened`) and to name its shared-cache entries."""

    ident: str
    path: str
    stat: vfs.Stat
    base: str | None = None  # a selection `base;key=value`: the file's own identifier
    selector: Selector | None = None
    sequence: Sequence | None = None

    def version(self, namespace: str, generation: str) -> str:
        """What every shared entry of this image depends on, hashed into their keys."""
        seq = "" if self.sequence is None else codec.stable(self.sequence)
        st = self.stat
        return "\x00".join((namespace, self.ident, str(st.size), repr(st.mtime), st.version, seq, generation))


@dataclass(frozen=True)
class _Entry:
    """An opened image (`image`), the metadata protocols see (`meta`: the image's own, with a sequence's
    views added) and when its file was last checked. An image may replace its own `meta` (a pyramid
    derived from it became ready: sources/derived.py); the entry then no longer holds (`current`), and
    is made again from the image's new metadata, which retires every translation, document and
    recorded response made for the old one."""

    image: SourceImage | None  # None: not opened yet (its metadata came from the shared cache)
    meta: ImageMeta
    path: str
    checked: float
    own: ImageMeta  # image.meta when the entry was made
    stat: vfs.Stat | None = None  # the file's (the object's) size, mtime and version when it was opened
    found: _Found | None = None  # how to open the image when `image` is None (metadata from the shared cache)
    generation: str = ""  # the purge generation the entry was made under (cache API; part of every cache key)
    gen_checked: float = 0.0  # when `generation` was last read from the shared cache

    @classmethod
    def of(cls, image: SourceImage, path: str, checked: float, ident: str | None = None,
           sequence: Sequence | None = None, stat: vfs.Stat | None = None, found: _Found | None = None) -> _Entry:
        """The entry of `image`, its metadata under `ident` and with a sequence's views when given."""
        own = image.meta
        changes: dict[str, object] = {}
        if ident is not None and ident != own.ident:
            changes["ident"] = ident
        if sequence is not None:
            changes["sequence"] = sequence
        return cls(image, replace(own, **changes) if changes else own, path, checked, own,  # type: ignore[arg-type]
                   stat, found)

    @property
    def current(self) -> bool:
        return self.image is None or self.image.meta is self.own

    def rechecked(self, now: float) -> _Entry:
        """The entry after its file was found unchanged at `now`."""
        if self.current or self.image is None:
            return replace(self, checked=now)
        made = _Entry.of(self.image, self.path, now, self.meta.ident, self.meta.sequence, self.stat)
        return replace(made, found=self.found, generation=self.generation, gen_checked=self.gen_checked)


class TileService:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.sources = Sources.of(settings)
        self.budget, self.source, self.reader = self.sources.budget, self.sources.source, self.sources.reader
        self.slides, self.derivatives, self.jp2 = self.sources.slides, self.sources.derivatives, self.sources.jp2
        self.formats = self.sources.formats
        # small values derived from a whole image (render's histograms), kept while its file is unchanged
        self.derived: ByteLRU[Hashable, object] = ByteLRU(8 << 20)
        self.metadata: CountLRU[str, _Entry] = CountLRU(settings.metadata_cache_size)
        self.tiles: ByteLRU[TileKey, Rendered] = ByteLRU(settings.tile_cache_bytes)
        # stored tiles read from the page cache, by where their bytes are (a few hundred bytes each): a repeat that
        # the tile cache no longer holds (a working set larger than it) reads them again from there (`_cached`)
        self.located: CountLRU[TileKey, tuple[Located, Rendered]] = CountLRU(
            LOCATED if settings.tile_cache_bytes else 0)
        self.translations: CountLRU[str, Translation] = CountLRU(TRANSLATIONS)
        self.documents: CountLRU[str, Document] = CountLRU(TRANSLATIONS)
        self.recorded: CountLRU[Hashable, Recorded] = CountLRU(TRANSLATIONS)
        self.replayed = 0  # responses answered by replay
        self._loading: dict[str, asyncio.Future[_Entry]] = {}
        self._opening: dict[str, asyncio.Future[_Entry]] = {}
        self.admission = Admission(settings)
        self.children = Children(settings) if settings.admission_large_processes else None
        self._started = False
        self._formats: tuple[OutputFormat, ...] | None = None
        # the shared second-level cache of a cluster (cache/shared.py), and what its entries depend on
        self.shared = None if settings.cache_url is None else SharedCache.from_url(
            settings.cache_url, timeout=settings.cache_timeout, pause=settings.cache_breaker_seconds,
            ttl=settings.cache_ttl, max_entry=settings.cache_max_entry_bytes, lease_ms=settings.cache_lease_ms)
        self.namespace = "\x00".join([SHARED_SCHEMA, __version__, str(settings.derive_dir is not None),  # not where
                                      *(str(getattr(settings, n)) for n in OUTPUT_SETTINGS)])
        self._generations: dict[str, str] = {}  # purges without a shared cache: image name ("" for all) -> token
        # the configured watermark (iipsrv WATERMARK), laid over every image response with no overlays of its own;
        # an unreadable one stops the server here, with its reason
        self.overlays = None if settings.watermark is None else Overlays(watermark=Watermark(
            settings.watermark, settings.watermark_opacity, settings.watermark_probability,
            blend=settings.watermark_blend))
        if self.overlays is not None:
            overlay.check(self.overlays)
        # access tiers (access/): None when no policy restricts anything (every request as before); a tier's
        # unreadable watermark stops the server here too
        self.access = Policy.from_settings(settings.access_policy, str(settings.root) if settings.root_url is None
                                           else None, settings.access_sidecars, settings.access_hook,
                                           settings.stat_interval)
        for tier in () if self.access is None else self.access.tiers():
            if tier.overlays:
                overlay.check(tier.overlays)
        self._views: CountLRU[tuple[str, str], View] = CountLRU(TRANSLATIONS)

    # -- lifecycle (called from the app's lifespan) ----------------------------------------------
    def start(self) -> None:
        configure_vips()
        self.admission.start()
        self._started = True

    def stop(self) -> None:
        self.sources.close()
        self.admission.stop()
        if self.children is not None:
            self.children.stop()
        self._started = False

    async def aclose(self) -> None:
        """Finish the shared cache's background writes (briefly) and close its connections."""
        if self.shared is not None:
            await self.shared.close()

    # -- purges (the cache API, protocols/cacheapi.py) --------------------------------------------------
    async def purge(self, ident: str | None = None) -> bool:
        """Forget every tile, document, translation, recorded response and metadata entry of image `ident`
        (with its selections: `doc.tif` purges `doc.tif;page=2`), or of every image (None): in this process at
        once, and on every replica through a new generation in the shared cache, which each re-reads within
        `cache_generation_ttl`. Whether the cluster was told (False: the shared cache did not answer)."""
        name = None if ident is None else generation_name(ident)
        self._generations[name or ""] = secrets.token_hex(8)
        if name is None:
            vfs.forget()  # the objects are asked again: one replaced just before the purge is seen
            for lru in (self.tiles, self.located, self.metadata, self.translations, self.documents, self.recorded,
                        self.derived):
                lru.clear()
        else:
            for key in self.metadata.snapshot():
                if generation_name(key) == name:
                    entry = self.metadata.peek(key)
                    if entry is not None:
                        vfs.forget(entry.path)
                    self.metadata.discard(key)  # reloaded under the new generation; what it made retires with it
        return True if self.shared is None else await self.shared.bump(name)

    def _local_generation(self, ident: str) -> str:
        return f"{self._generations.get('', '')}/{self._generations.get(generation_name(ident), '')}"

    async def ready(self, timeout: float) -> dict[str, bool]:
        """Readiness: whether the thread pool runs a trivial job within `timeout` seconds (`pool`; never started
        here: a stopped pool is not ready) and, in that job, whether the image root is a readable folder (`root`)."""
        pool = self.admission.small.pool  # the tile lane's threads
        if pool is None:
            return {"pool": False, "root": False}
        try:
            job = asyncio.get_running_loop().run_in_executor(pool, self.source.readable)
            root = await asyncio.wait_for(job, timeout)
        except (TimeoutError, RuntimeError):  # RuntimeError: the pool was shut down
            return {"pool": False, "root": False}
        return {"pool": True, "root": root}

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        """Run a blocking function (a metadata load, a folder listing) in the tile lane, without a deadline."""
        self._ensure_started()
        return await self.admission.run(Lane.SMALL, fn, *args, deadline=False)

    def _ensure_started(self) -> None:
        if not self._started:  # used without the app's lifespan (tests, scripts)
            self.start()

    # -- metadata ---------------------------------------------------------------------------------
    async def info(self, ident: str) -> ImageMeta:
        """The image's metadata as the viewer of this request may see it (a capped tier's view: access/view.py)."""
        entry = await self._entry(ident)
        return entry.meta if self.access is None else (await self._view(entry))[1].meta

    def _fresh(self, ident: str, miss: bool = True) -> _Entry | None:
        """The cached entry for `ident` if its file was checked within `stat_interval` (and, with a shared cache,
        its purge generation within `cache_generation_ttl`) and its image still has the metadata the entry was
        made from. An entry whose file check alone is due, checked within twice `stat_interval`, is answered
        from as it is while the check runs in the background (`_load_of`): one request starts it, none waits for
        it (every request for a busy image used to wait for the pool each `stat_interval`, 18 ms here with the
        event loop busy). `miss`: whether a miss is counted (`ByteLRU.get`)."""
        entry = self.metadata.get(ident, miss)
        if entry is None or not entry.current:
            return None
        now = time.monotonic()
        if self.shared is not None and now - entry.gen_checked >= self.settings.cache_generation_ttl:
            return None
        age = now - entry.checked
        if age >= self.settings.stat_interval:
            if age >= 2 * self.settings.stat_interval:
                return None
            self._load_of(ident, entry, now)
        return entry

    async def _entry(self, ident: str) -> _Entry:
        fresh = self._fresh(ident)
        if fresh is not None:
            return fresh
        now = time.monotonic()
        entry = self.metadata.get(ident)  # stale or missing: reloaded below
        return await asyncio.shield(self._load_of(ident, entry, now))

    def _load_of(self, ident: str, entry: _Entry | None, now: float) -> asyncio.Future[_Entry]:
        """The load of `ident`'s entry in flight, else one started now: one per image at a time, however many
        requests wait for it."""
        loading = self._loading.get(ident)
        if loading is None:
            loading = self._loading[ident] = asyncio.ensure_future(self._reload(ident, entry, now))
            loading.add_done_callback(lambda done: self._finished(ident, done, self._loading))
        return loading

    async def _reload(self, ident: str, old: _Entry | None, now: float) -> _Entry:
        try:
            if self.shared is None:
                entry = await self.run(self._load, ident, old, now)
                if self._generations:  # purged through the cache API: entries carry the generation into tile keys
                    entry = replace(entry, generation=self._local_generation(ident))
            else:
                entry = await self._reload_shared(self.shared, ident, old, now)
        except BaseException:
            if old is not None and self.metadata.peek(ident) is old:  # not answered from again (`_fresh`): the
                self.metadata.discard(ident)  # next request loads it anew and meets what this one met
            raise
        self.metadata.put(ident, entry)
        return entry

    async def _reload_shared(self, shared: SharedCache, ident: str, old: _Entry | None, now: float) -> _Entry:
        """`_reload` with a shared cache: the image's purge generation first (an entry of an older one is not
        used again), then the file's version; then its metadata from the shared cache, or from the file."""
        generation = await shared.generation(generation_name(ident))
        if generation is None:  # the shared cache is unavailable: keep what was last read
            generation = old.generation if old is not None else ""
        if old is not None and old.generation != generation:
            vfs.forget(old.path)  # purged through another replica, maybe just after its object was replaced
            old = None  # made anew
        if old is not None and now - old.checked < self.settings.stat_interval and old.current:
            return replace(old, gen_checked=now)  # only the generation was due
        found = await self.run(self._locate, ident, old, now)
        if isinstance(found, _Entry):
            made = found.found
            if old is not None and found.meta is not old.meta and not found.meta.provisional and made is not None:
                shared.put_meta(entry_key("m", made.version(self.namespace, generation)), found.meta)  # its pyramid
            return replace(found, generation=generation, gen_checked=now)
        key = entry_key("m", found.version(self.namespace, generation))
        meta = await shared.meta(key)
        if meta is not None and not meta.provisional and meta.ident == ident:
            self.budget.check(meta)
            return _Entry(None, meta, found.path, now, meta, found.stat, found, generation, now)
        entry = await self.run(self._opened, found, now)
        if not entry.meta.provisional:
            shared.put_meta(key, entry.meta)
        return replace(entry, generation=generation, gen_checked=now)

    @staticmethod
    def _finished(ident: str, done: asyncio.Future[_Entry], flights: dict[str, asyncio.Future[_Entry]]) -> None:
        if flights.get(ident) is done:
            del flights[ident]
        if not done.cancelled():
            done.exception()  # retrieved here too: every waiter may have gone (client disconnects)

    def _load(self, ident: str, old: _Entry | None, now: float) -> _Entry:
        found = self._locate(ident, old, now)
        return found if isinstance(found, _Entry) else self._opened(found, now)

    def _locate(self, ident: str, old: _Entry | None, now: float) -> _Entry | _Found:
        """`old` re-checked when its file is unchanged, else where the image is and its version."""
        try:
            path = self.source.resolve(ident)
        except NotFound:
            selected = split_selector(ident)
            if selected is None:
                return self._locate_sequence(ident, old, now)  # no such file: maybe an image sequence
            return self._locate_selection(ident, *selected, old, now)
        if old is not None and old.path == path and old.meta.sequence is None and self._unchanged(path, old):
            return old.rechecked(now)
        return _Found(ident, path, self._stat(path, ident))

    def _locate_selection(self, ident: str, base: str, selector: Selector, old: _Entry | None, now: float
                          ) -> _Entry | _Found:
        """`base;key=value...`: what the selectors pick out of `base`'s image (`SourceImage.select`).
        Protocols see it under the identifier as asked (`;page=01` too)."""
        path = self.source.resolve(base)
        if old is not None and old.path == path and self._unchanged(path, old):
            return old.rechecked(now)
        return _Found(ident, path, self._stat(path, base), base, selector)

    def _locate_sequence(self, ident: str, old: _Entry | None, now: float) -> _Entry | _Found:
        """An image sequence's metadata: its first view's (000_090, as iipsrv 1.3) with its views. Kept
        while the first view's file and the list of views are unchanged; each view is an identifier of
        its own (`Sequence.member`), cached and checked as any file."""
        seq = self.source.sequence(ident)
        path = self.source.resolve(seq.member(0, 90))
        if old is not None and old.path == path and old.meta.sequence == seq and self._unchanged(path, old):
            return old.rechecked(now)
        return _Found(ident, path, self._stat(path, ident), sequence=seq)

    def _opened(self, found: _Found, now: float) -> _Entry:
        """The entry of `found`'s image, opened (in a pool thread). A selection is made from its base's own
        entry when that is loaded and unchanged (a document's pages are asked for one after another)."""
        if found.selector is None:
            image = self.sources.admitted(self.formats.open(found.path, found.ident))
            return _Entry.of(image, found.path, now, sequence=found.sequence, stat=found.stat, found=found)
        assert found.base is not None
        whole = self.metadata.get(found.base)
        if (whole is not None and whole.image is not None and whole.path == found.path and whole.meta.sequence is None
                and self._unchanged(found.path, whole)):
            image = whole.image.select(found.selector)
        else:
            image = self.sources.admitted(self.formats.open(found.path, found.base)).select(found.selector)
        return _Entry.of(self.sources.admitted(image), found.path, now, ident=found.ident, stat=found.stat, found=found)

    async def _image(self, entry: _Entry) -> SourceImage:
        """The entry's image, opened now (once, however many renders wait) when its metadata came from the
        shared cache. If the file opens with other metadata than the shared entry said, the entry is made
        anew from the file (translations made for the old metadata retire with it)."""
        if entry.image is not None:
            return entry.image
        ident = entry.meta.ident
        now = self.metadata.peek(ident)  # opened meanwhile by another render of this image
        if now is not None and now.image is not None and now.found == entry.found:
            return now.image
        opening = self._opening.get(ident)
        if opening is None:
            opening = self._opening[ident] = asyncio.ensure_future(self._open_entry(entry))
            opening.add_done_callback(lambda done: self._finished(ident, done, self._opening))
        image = (await asyncio.shield(opening)).image
        assert image is not None
        return image

    async def _open_entry(self, entry: _Entry) -> _Entry:
        assert entry.found is not None
        opened = await self.run(self._opened, entry.found, entry.checked)
        if opened.meta == entry.meta:  # the same object stays: translations and recorded responses hold
            opened = replace(entry, image=opened.image, own=opened.own)
        else:
            opened = replace(opened, generation=entry.generation, gen_checked=entry.gen_checked)
        if self.metadata.peek(entry.meta.ident) is entry:
            self.metadata.put(entry.meta.ident, opened)
        return opened

    @staticmethod
    def _stat(path: str, ident: str) -> vfs.Stat:
        try:
            return vfs.stat(path)
        except (OSError, NotFound) as exc:
            raise NotFound(f"image not found: {ident}") from exc

    @classmethod
    def _unchanged(cls, path: str, old: _Entry) -> bool:
        """Whether the file (the object: its ETag too) is as it was when `old` was made."""
        st = cls._stat(path, old.meta.ident)
        if old.stat is not None:
            return st == old.stat
        return st.mtime == old.meta.mtime and st.size == old.meta.file_size

    # -- hot path: protocols may skip parsing a URL they have seen before ---------------------------
    async def recall(self, key: str) -> Translation | None:
        """The translation remembered under `key` (a protocol's own URL key), if the image it was made
        for is unchanged: its metadata is still the very object the translation was made from."""
        hit = self.translations.get(self._scoped(key))
        return hit if hit is not None and await self._current(hit.meta) else None

    def remember(self, key: str, meta: ImageMeta, req: TileRequest, headers: dict[str, str] | None = None) -> None:
        self.translations.put(self._scoped(key), Translation(meta, req, tuple((headers or {}).items())))

    async def recall_document(self, key: str) -> Document | None:
        hit = self.documents.get(self._scoped(key))
        return hit if hit is not None and await self._current(hit.meta) else None

    async def _current(self, meta: ImageMeta) -> bool:
        """True while `meta` is still the image's metadata (the file has not changed since, nor was it purged) and,
        under an access policy, still what the request's viewer may see (401/403 once it is denied)."""
        if self.access is not None:
            return await self._current_view(meta) is not None
        return await self._current_entry(meta) is not None

    async def _current_entry(self, meta: ImageMeta) -> _Entry | None:
        fresh = self._fresh(meta.ident)
        if fresh is not None:
            return fresh if fresh.meta is meta else None  # checked recently: no await, the hot path of every repeat
        entry = await self._entry(meta.ident)
        return entry if entry.meta is meta else None

    def remember_document(self, key: str, meta: ImageMeta, body: bytes, media_type: str,
                          headers: dict[str, str] | None = None) -> Document:
        doc = Document(meta, body, media_type, etag_for(meta, key + "\n" + body.hex()),
                       tuple((headers or {}).items()))
        self.documents.put(self._scoped(key), doc)
        return doc

    # -- replay: whole responses for URLs answered before (see web/replay.py) -----------------------
    def record(self, key: Hashable, meta: ImageMeta, request: TileRequest | None, body: bytes,
               headers: tuple[tuple[bytes, bytes], ...], labels: tuple[str, str] = ("", "")) -> None:
        """Keep a response just sent: for a tile, its request (the body stays in the tile cache only)."""
        self.recorded.put(key, Recorded(meta, request, b"" if request else body, len(body), headers, labels))

    async def replay(self, key: Hashable) -> tuple[bytes, Recorded] | None:
        """The body and the record (raw headers, labels) of the response recorded under `key`, if the image is
        unchanged and, for a tile, the tile is still cached; else None (the full stack answers, and records
        again)."""
        hit = self.recorded.get(key)
        current = self._current_entry if self.access is None else self._current_view
        entry = None if hit is None else await current(hit.meta)
        if hit is None or entry is None:
            return None
        req, tier = None, ""
        if hit.request is not None and self.access is not None:  # the tile as the viewer's tier renders it
            req, tier = await self._as_tier(entry, self.overlaid(hit.request))
        return self._replayed(hit, entry, req, tier)

    def _replayed(self, hit: Recorded, entry: _Entry, req: TileRequest | None = None, tier: str = "",
                  miss: bool = True) -> tuple[bytes, Recorded] | None:
        """`replay`'s answer for a current record: a tile's body from the tile cache (`req`, `tier`: as the
        viewer's tier renders it), a document's as recorded."""
        body = hit.body
        if hit.request is not None:
            req = self.overlaid(hit.request) if req is None else req
            tile = self._cached((req, hit.meta.mtime, entry.generation + tier), miss)
            if tile is None or len(tile.body) != hit.length:
                return None
            body = tile.body
        self.replayed += 1
        return body, hit

    # -- now: answers that need no waiting, for the front (web/front.py) ---------------------------
    # Each is None where its async counterpart would wait (metadata not checked within `stat_interval`, a tile
    # neither cached nor readable without waiting) and under an access policy (its views are looked up in the
    # pool). A miss is not counted here (the full stack looks again and counts it), a hit is.
    def info_now(self, ident: str) -> ImageMeta | None:
        """`info(ident)` when the image's metadata is fresh."""
        entry = None if self.access is not None else self._fresh(ident, miss=False)
        return None if entry is None else entry.meta

    def recall_now(self, key: str) -> Translation | None:
        """`recall(key)` when the image's metadata is fresh."""
        hit = None if self.access is not None else self.translations.get(key, miss=False)
        if hit is None:
            return None
        fresh = self._fresh(hit.meta.ident, miss=False)
        return hit if fresh is not None and fresh.meta is hit.meta else None

    def remember_now(self, key: str, meta: ImageMeta, req: TileRequest, headers: dict[str, str]) -> None:
        """`remember`, after a `recall_now` that found nothing: the miss counted now."""
        self.translations.missed()
        self.remember(key, meta, req, headers)

    def replay_now(self, key: Hashable) -> tuple[bytes, Recorded] | None:
        """`replay(key)` when the image's metadata is fresh."""
        hit = None if self.access is not None else self.recorded.get(key, miss=False)
        if hit is None:
            return None
        entry = self._fresh(hit.meta.ident, miss=False)
        return None if entry is None or entry.meta is not hit.meta else self._replayed(hit, entry, miss=False)

    def render_now(self, req: TileRequest) -> Rendered | None:
        """`render(req)` when it needs no waiting: the tile cache's, or a stored tile read on the event loop
        (`_stored_now`)."""
        entry = None if self.access is not None else self._fresh(req.ident, miss=False)
        if entry is None:
            return None
        req = self.overlaid(req)
        return self._at_hand(entry, req, (req, entry.meta.mtime, entry.generation), miss=False)

    # -- pixels -----------------------------------------------------------------------------------
    async def render(self, req: TileRequest, *, background: bool = False) -> Rendered:
        """The encoded image of `req`: from this process's tile cache, else the shared cache, else rendered here
        (once per cluster at a time, through the shared cache's lease). `background` renders (warm-ups) run in
        the large lane, whose threads are niced, so tiles asked for by clients go first."""
        req = self.overlaid(req)  # before any key is made: the overlays are part of every cache key and ETag
        entry = await self._entry(req.ident)
        tier = ""  # a restricted tier's key: its responses share no cache entry and no ETag with another tier's
        if self.access is not None:
            req, tier = await self._as_tier(entry, req)
        key = (req, entry.meta.mtime, entry.generation + tier)
        hit = self._at_hand(entry, req, key)
        if hit is not None:
            return hit
        if self.shared is None or entry.meta.provisional or entry.found is None:
            return await self._render_here(entry, req, key, background)
        skey = entry_key("t", entry.found.version(self.namespace, entry.generation), request_text(req) + tier)
        out, shared = await self.shared.tile_or_render(skey, lambda: self._render_here(entry, req, key, background))
        if not shared:
            return out
        out = replace(out, etag=etag_for(entry.meta, repr(req) + tier))
        self.tiles.put(key, replace(out, source="cache", timing=CACHE_TIMING), len(out.body) + 200)
        return out

    def overlaid(self, req: TileRequest) -> TileRequest:
        """`req` with the configured watermark when it has no overlays of its own (None: an access tier's
        overlays, even empty ones, are what it gets)."""
        return req if req.overlays is not None or self.overlays is None else replace(req, overlays=self.overlays)

    def _stored_now(self, entry: _Entry, req: TileRequest, key: TileKey) -> Rendered | None:
        """A stored tile's own bytes read here on the event loop, when they can be without waiting (the file's
        directories are known and the tile is in the page cache: `vfs.NowReader`), cached as a render is; else
        None (not a stored tile, or it would wait: the pool reads it). No thread hop and no admission: a read
        of a few microseconds, like a cache hit. Before the shared cache: a local file is nearer."""
        image = entry.image
        if image is None or not self.settings.passthrough or entry.meta.provisional or image.meta.provisional:
            return None
        try:
            found = stored_now(image, req, self.settings, recode_now=self.shared is None)
        except vfs.WouldBlock:
            return None
        if found is None:
            return None
        out, at = found
        etag = etag_for(entry.meta, repr(req) + key[2].removeprefix(entry.generation))  # as in _render_here
        body, media_type, width, height = out.body, out.media_type, out.width, out.height
        cached = Rendered(b"" if at is not None else body, media_type, width, height, etag, source="cache",
                          timing=CACHE_TIMING)
        if at is not None:  # where its bytes are (`_cached` reads them again): the page cache holds them, not a copy
            self.located.put(key, (at, cached))
        else:  # made here (an edge tile's crop)
            self.tiles.put(key, cached, len(body) + 200)
        return Rendered(body, media_type, width, height, etag, source=out.source, timing=out.timing)

    def _at_hand(self, entry: _Entry, req: TileRequest, key: TileKey, miss: bool = True) -> Rendered | None:
        """The tile of `key` when it needs no waiting: cached (`_cached`), else a stored tile read now (`_stored_now`);
        None when it must be made. `miss` False: misses are counted only when it is found (`render_now`)."""
        hit = self._cached(key, miss)
        if hit is not None:
            return hit
        made = self._stored_now(entry, req, key)
        if made is not None and not miss:  # the caches' misses before it was read
            self.tiles.missed()
            self.located.missed()
        return made

    def _cached(self, key: TileKey, miss: bool = True) -> Rendered | None:
        """The tile of `key` from the tile cache, or a stored tile read again from where it was found (the page
        cache, without waiting); None when neither has it. `miss`: whether misses are counted."""
        hit = self.tiles.get(key, miss)
        if hit is not None:
            return hit
        found = self.located.get(key, miss)
        if found is None:
            return None
        if not miss:  # answered from where it is: the tile cache's miss counts
            self.tiles.missed()
        at, head = found
        try:
            body = at.read_now()
        except (vfs.WouldBlock, OSError):  # left the page cache (or the file changed under it): read it anew
            self.located.discard(key)
            return None
        return Rendered(body, head.media_type, head.width, head.height, head.etag, source=head.source,
                        timing=head.timing)

    async def _render_here(self, entry: _Entry, req: TileRequest, key: TileKey, background: bool = False
                           ) -> Rendered:
        image = entry.image if entry.image is not None else await self._image(entry)
        cost = estimate(entry.meta, req)
        self._ensure_started()
        lane = Lane.LARGE if background else lane_for(cost, self.settings)
        found = entry.found
        if lane is Lane.LARGE and self.children is not None and found is not None and not image.meta.provisional:
            where = Location(found.path, found.base or found.ident, found.stat, found.base, found.selector)
            out = await self.admission.run(lane, self.children.render, where, req, cost=cost)
        else:
            out = await self.admission.run(lane, render, image, req, self.settings, self.derived, cost=cost)
        tier = key[2].removeprefix(entry.generation)  # the key's generation part carries a restricted tier's key
        out = replace(out, etag=etag_for(entry.meta, repr(req) + tier))
        if entry.meta.provisional or image.meta.provisional:  # from a preview: never cached, and marked so
            return replace(out, provisional=True, timing=f"{out.timing}, {PREVIEW_TIMING}")
        # the cached copy says where later answers come from (Server-Timing), not how this one was made
        self.tiles.put(key, replace(out, source="cache", timing=CACHE_TIMING), len(out.body) + 200)
        return out

    async def samples(self, ident: str, level: int, box: tuple[int, int, int, int], page: int = 0) -> Samples:
        """The source sample values of `box` at `level` (of stack page `page`), at full depth; not cached
        (profiles and points are a few pixels, and their documents are answered with an ETag)."""
        entry = await self._entry(ident)
        if self.access is not None:
            level = await self._tier_level(entry, level)
        if entry.meta.provisional:  # a preview's samples are not the file's
            raise Busy(f"{ident} is being prepared; its samples can be read in a moment")
        image = await self._image(entry)
        self._ensure_started()
        return await self.admission.run(Lane.SMALL, samples, image, level, box, page)

    # -- access tiers (access/): what the viewer of the request being answered may see -------------------
    # Only with a policy (`self.access`). `info` answers a capped tier's view, `render` maps a request made against
    # it back to the image and adds the tier's overlays, `samples` reads the view's levels; translations and
    # documents are remembered per viewer class (`_scoped`), replayed responses too (web/replay.py).
    async def _tier(self, entry: _Entry) -> Tier:
        """The tier of the request's viewer for `entry`'s image; 401 (anonymous) or 403 when it is denied."""
        access = await self._access(entry)
        viewer = current_viewer()
        tier = access.tier(viewer.authorised)
        if tier.denied:
            refused = Forbidden if viewer.authorised else Unauthorized
            raise refused(f"access to {echo(entry.meta.ident)} is not granted")
        return tier

    async def _view(self, entry: _Entry) -> tuple[Tier, View]:
        tier = await self._tier(entry)
        if not tier.capped:
            return tier, View(entry.meta, entry.meta)
        key = (entry.meta.ident, tier.key)
        view = self._views.get(key)
        if view is None or view.real is not entry.meta:
            view = view_of(entry.meta, tier)
            self._views.put(key, view)
        return tier, view

    async def _as_tier(self, entry: _Entry, req: TileRequest) -> tuple[TileRequest, str]:
        """`req` (made against the viewer's view) in the image's pixels with the tier's overlays, and the tier's
        key ("" for the full tier: its requests are the same as with no policy)."""
        tier, view = await self._view(entry)
        if tier.full:
            return req, ""
        real = to_real(req, view)
        if tier.overlays:
            real = replace(real, overlays=tier.overlays)
        return real, f"\x00tier:{tier.key}"

    async def _tier_level(self, entry: _Entry, level: int) -> int:
        tier, view = await self._view(entry)
        if tier.full:
            return level
        if tier.overlays:
            raise Forbidden("sample values are not offered in this access tier")
        if not 0 <= level < len(view.meta.levels):
            raise NotFound(f"level {level} is not in this access tier")
        return level + view.shift

    async def _current_view(self, meta: ImageMeta) -> _Entry | None:
        """The image's entry while `meta` is what the viewer may see of it (its tier's view, the same object while
        the file and the tier are unchanged)."""
        entry = await self._entry(meta.ident)
        return entry if (await self._view(entry))[1].meta is meta else None

    async def access_of(self, ident: str) -> Access | None:
        """The image's two tiers, whoever asks (None without a policy; 404 for an unknown image): what the IIIF
        Auth probes and service descriptions tell a viewer."""
        if self.access is None:
            return None
        return await self._access(await self._entry(ident))

    async def _access(self, entry: _Entry) -> Access:
        """`entry`'s image's two tiers: remembered, else looked up in the pool (sidecars, the hook)."""
        assert self.access is not None
        name = generation_name(entry.meta.ident)
        found = self.access.cached(name, entry.path)
        return found if found is not None else await self.run(self.access.lookup, name, entry.path)

    def _scoped(self, key: str) -> str:
        """A protocol's URL key as remembered for the viewer's class (the same URL differs by tier)."""
        return key if self.access is None else f"{current_viewer().key}\x00{key}"

    def access_headers(self, ident: str) -> dict[str, str] | None:
        """The headers of a response about `ident` whose content may differ by viewer (the image's tiers differ
        from full for all): `Cache-Control: private` and `Vary` on the credentials; None for a public one."""
        if self.access is None:
            return None
        entry = self.metadata.peek(ident)
        found = None if entry is None else self.access.peek(generation_name(ident), entry.path)
        return PRIVATE if found is None or found.restricted else None

    async def output_formats(self) -> tuple[OutputFormat, ...]:
        """The formats the installed libvips can write (probed once, in the pool), for protocols
        that advertise them (IIIF info.json) without importing the encoder."""
        if self._formats is None:
            self._formats = await self.run(available_formats)
        return self._formats

    def formats_now(self) -> tuple[OutputFormat, ...] | None:
        """`output_formats()` once they have been probed, else None."""
        return self._formats

    def cache_stats(self) -> dict[str, dict[str, int]]:
        """Hits, misses, entries and bytes of every cache of this process that counts them (metrics.Sampler):
        encoded tiles, stored tiles remembered by where they are (`located`), metadata, URL translations, info
        documents, replay (a hit is a replayed response), per-image histograms, decoded levels (libvips sources,
        slides), JPEG 2000 units (this process, and the folder the workers share) and derived pyramids (a hit is one
        reused, a miss one converted)."""
        replay = self.recorded.hits + self.recorded.misses
        out = {"tile": self.tiles.stats(), "stored_tile": _lookups(self.located), "metadata": _lookups(self.metadata),
               "translation": _lookups(self.translations), "document": _lookups(self.documents),
               "replay": {"hits": self.replayed, "misses": replay - self.replayed, "entries": len(self.recorded)},
               "histogram": self.derived.stats(), "decoded_level": self.reader.decoded_stats(),
               "slide_level": self.slides.decoded.stats(), "jp2": self.jp2.units.cache.stats()}
        shared = self.jp2.units.shared
        if shared is not None:
            out["jp2_shared"] = {"hits": shared.hits, "misses": shared.misses}
        if self.derivatives is not None:
            d = self.derivatives.stats()
            out["derived"] = {"hits": d["reused"], "misses": d["converted"] + d["failed"], "bytes": d["bytes"]}
        if self.shared is not None:
            c = self.shared.counters
            out["shared_tile"] = {"hits": c.hits["tile"], "misses": c.misses["tile"]}
            out["shared_metadata"] = {"hits": c.hits["metadata"], "misses": c.misses["metadata"]}
        return out

    def stats(self) -> dict[str, dict[str, Any]]:
        out = {"tile_cache": self.tiles.stats(), "metadata_cache": self.metadata.stats(),
               "replay": {**self.recorded.stats(), "replayed": self.replayed}, "admission": self.admission.stats()}
        if self.children is not None:  # the large lane's render processes running now (imaging/isolate.py)
            out["admission"]["large_processes"] = self.children.running()
        if self.derivatives is not None:
            out["derivatives"] = self.derivatives.stats()
        if self.settings.remote:
            out["stores"] = vfs.counters()
        if self.shared is not None:
            out["shared_cache"] = self.shared.stats()
        return out


def _lookups(lru: CountLRU[Any, Any]) -> dict[str, int]:
    """A count-bounded cache's counters (its `bytes` is its entry count, left out)."""
    return {"hits": lru.hits, "misses": lru.misses, "entries": len(lru)}


@functools.lru_cache(maxsize=8192)
def request_text(req: TileRequest) -> str:
    """The stable text of a request (cache/codec.py), hashed into its shared-cache key; kept for the hot ones."""
    return codec.stable(req)


@functools.lru_cache(maxsize=8192)
def generation_name(ident: str) -> str:
    """The name an image is purged by: its file's identifier (`doc.tif` for `doc.tif;page=2`)."""
    try:
        selected = split_selector(ident)
    except TileServerError:
        return ident
    return ident if selected is None else selected[0]


@functools.lru_cache(maxsize=8192)
def surrogate_key(ident: str) -> str:
    """The token naming an image in `Surrogate-Key` and `Cache-Tag` (a CDN purges by it): stable across
    replicas and releases, plain hex (safe in any header), the same for an image's selections."""
    return "img-" + hashlib.blake2b(generation_name(ident).encode(), digest_size=10).hexdigest()


def etag_for(meta: ImageMeta, key: str) -> str:
    """The ETag of `key`'s response for the image `meta`: it changes with the image's file, its identifier
    (two files may share mtime and size: a sequence's views often do) and a sequence's list of views."""
    views = f":{meta.views}" if meta.views is not None else ""
    h = hashlib.blake2b(f"{meta.mtime}:{meta.file_size}:{meta.ident}{views}:{key}".encode(), digest_size=10)
    return f'"{h.hexdigest()}"'
