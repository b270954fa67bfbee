"""The async core: `TileService.info(ident)` and `TileService.render(request)`.

It knows no protocol. It owns the metadata cache (re-checking file mtimes at most every
`stat_interval` seconds), the encoded-tile cache (bounded in bytes, keyed by the frozen request and
the file's mtime), and the admission control (admission.py): the thread pools in which the synchronous
reader and encoder run, so the event loop never blocks on pyvips or the file system. A render that
misses the tile cache is placed in the tile lane or the large lane by its estimated cost; cached tiles
(and responses replayed before routing, web/replay.py) never pass admission.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from .admission import Admission, Lane, estimate, lane_for
from .cache.disk import DiskStore
from .cache.memory import ByteLRU, CountLRU
from .errors import Busy, NotFound
from .imaging.encode import available_formats
from .imaging.render import render, samples
from .models import ImageMeta, OutputFormat, Rendered, Samples, Sequence, TileRequest
from .settings import Settings
from .sources import vfs
from .sources.base import Format, Selector, SourceImage, split_selector
from .sources.budget import PixelBudget
from .sources.derived import DerivedFormat, DeriveOptions
from .sources.jp2 import Jp2Format
from .sources.local import Source
from .sources.ome import OmeFormat
from .sources.pyramid import PyramidReader, PyvipsFormat, configure_vips
from .sources.registry import Registry
from .sources.resolve import Resolver
from .sources.slide import SlideFormat, SlideReader
from .sources.stores import RemoteSource, options_of

T = TypeVar("T")
TRANSLATIONS = 8192  # remembered URL translations per process
CACHE_TIMING = "cache;desc=local"  # Server-Timing of a tile cache hit
PREVIEW_TIMING = 'preview;desc="from a preview while the pyramid is made"'


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
class _Entry:
    """An opened image (`image`), the metadata protocols see (`meta`: the image's own, with a sequence's
    views added) and when its file was last checked. An image may replace its own `meta` (a pyramid
    derived from it became ready: sources/derived.py); the entry then no longer holds (`current`), and
    is made again from the image's new metadata, which retires every translation, document and
    recorded response made for the old one."""

    image: SourceImage
    meta: ImageMeta
    path: str
    checked: float
    own: ImageMeta  # image.meta when the entry was made
    stat: vfs.Stat | None = None  # the file's (the object's) size, mtime and version when it was opened

    @classmethod
    def of(cls, image: SourceImage, path: str, checked: float, ident: str | None = None,
           sequence: Sequence | None = None, stat: vfs.Stat | None = None) -> _Entry:
        """The entry of `image`, its metadata under `ident` and with a sequence's views when given."""
        own = image.meta
        changes: dict[str, object] = {}
        if ident is not None and ident != own.ident:
            changes["ident"] = ident
        if sequence is not None:
            changes["sequence"] = sequence
        return cls(image, replace(own, **changes) if changes else own, path, checked, own,  # type: ignore[arg-type]
                   stat)

    @property
    def current(self) -> bool:
        return self.image.meta is self.own

    def rechecked(self, now: float) -> _Entry:
        """The entry after its file was found unchanged at `now`."""
        if self.current:
            return replace(self, checked=now)
        return _Entry.of(self.image, self.path, now, self.meta.ident, self.meta.sequence, self.stat)


class TileService:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.budget = PixelBudget.of(settings)
        self.source = self._source(settings)
        self.reader = PyramidReader(settings.virtual_tile_size, settings.open_images,
                                     int(settings.decoded_cache_mb * 1024 * 1024))
        self.slides = SlideReader(settings.virtual_tile_size, int(settings.slide_cache_mb * 1024 * 1024),
                                  int(settings.decoded_cache_mb * 1024 * 1024), self.budget)
        self.derivatives = self._derivatives(settings)
        libvips: Format = self.derivatives or PyvipsFormat(self.reader)
        jp2_bytes = int(settings.jp2_cache_mb * 1024 * 1024)  # the shared folder holds every worker's share
        self.jp2 = Jp2Format(jp2_bytes, settings.virtual_tile_size, settings.jp2_threads, share=settings.jp2_share,
                             share_bytes=jp2_bytes * settings.workers, budget=self.budget)
        self.formats = Registry([self.jp2, OmeFormat(self.reader), SlideFormat(self.slides), libvips])
        # small values derived from a whole image (render's histograms), kept while its file is unchanged
        self.derived: ByteLRU[Hashable, object] = ByteLRU(8 << 20)
        self.metadata: CountLRU[str, _Entry] = CountLRU(settings.metadata_cache_size)
        self.tiles: ByteLRU[tuple[TileRequest, float], Rendered] = ByteLRU(settings.tile_cache_bytes)
        self.translations: CountLRU[str, Translation] = CountLRU(TRANSLATIONS)
        self.documents: CountLRU[str, Document] = CountLRU(TRANSLATIONS)
        self.recorded: CountLRU[Hashable, Recorded] = CountLRU(TRANSLATIONS)
        self.replayed = 0  # responses answered by replay
        self._loading: dict[str, asyncio.Future[_Entry]] = {}
        self.admission = Admission(settings)
        self._started = False
        self._formats: tuple[OutputFormat, ...] | None = None

    @staticmethod
    def _source(settings: Settings) -> Source | RemoteSource | Resolver:
        """The image root: a folder, or a store URL (`root_url`: objects read by byte range, sources/vfs.py);
        behind the resolvers' templates and hook when there are any (sources/resolve.py)."""
        vfs.configure(int(settings.store_block_cache_mb * 1024 * 1024))
        vfs.configure_cache(settings.source_cache_dir, int(settings.source_cache_mb * 1024 * 1024))
        options = options_of(settings)
        base: Source | RemoteSource
        if settings.root_url is None:
            base = Source(settings.root, settings.filename_prefix, settings.filename_suffix,
                          settings.max_identifier_length, settings.filename_pattern)
        else:
            base = RemoteSource(settings.root_url, options, settings.filename_prefix, settings.filename_suffix,
                                settings.max_identifier_length)
        if not settings.resolvers and settings.resolver_hook is None:
            return base
        return Resolver(base, settings.resolvers, settings.resolver_hook, settings.resolver_roots, options)

    def _derivatives(self, settings: Settings) -> DerivedFormat | None:
        """Pyramids of large untiled images, when a derivative folder is configured."""
        if settings.derive_dir is None:
            return None
        store = DiskStore(settings.derive_dir, settings.derive_cache_bytes)
        options = DeriveOptions(int(settings.derive_min_megapixels * 1e6), settings.derive_quality,
                                settings.derive_preview_size, settings.derive_jobs)
        return DerivedFormat(PyvipsFormat(self.reader), store, options, self.budget)

    # -- lifecycle (called from the app's lifespan) ----------------------------------------------
    def start(self) -> None:
        configure_vips()
        self.admission.start()
        self._started = True

    def stop(self) -> None:
        if self.derivatives is not None:
            self.derivatives.close()
        self.admission.stop()
        self._started = False

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
        return (await self._entry(ident)).meta

    def _fresh(self, ident: str) -> _Entry | None:
        """The cached entry for `ident` if its file was checked within `stat_interval` and its image
        still has the metadata the entry was made from."""
        entry = self.metadata.get(ident)
        if entry is None or time.monotonic() - entry.checked >= self.settings.stat_interval or not entry.current:
            return None
        return entry

    async def _entry(self, ident: str) -> _Entry:
        fresh = self._fresh(ident)
        if fresh is not None:
            return fresh
        now = time.monotonic()
        entry = self.metadata.get(ident)  # stale or missing: reloaded below
        loading = self._loading.get(ident)
        if loading is None:  # one load per image at a time, however many requests wait for it
            loading = self._loading[ident] = asyncio.ensure_future(self._reload(ident, entry, now))
            loading.add_done_callback(lambda done: self._finished(ident, done))
        return await asyncio.shield(loading)

    async def _reload(self, ident: str, old: _Entry | None, now: float) -> _Entry:
        entry = await self.run(self._load, ident, old, now)
        self.metadata.put(ident, entry)
        return entry

    def _finished(self, ident: str, done: asyncio.Future[_Entry]) -> None:
        if self._loading.get(ident) is done:
            del self._loading[ident]
        if not done.cancelled():
            done.exception()  # retrieved here too: every waiter may have gone (client disconnects)

    def _load(self, ident: str, old: _Entry | None, now: float) -> _Entry:
        try:
            path = self.source.resolve(ident)
        except NotFound:
            selected = split_selector(ident)
            if selected is None:
                return self._load_sequence(ident, old, now)  # no such file: maybe an image sequence
            return self._load_selection(ident, *selected, old, now)
        if old is not None and old.path == path and old.meta.sequence is None and self._unchanged(path, old):
            return old.rechecked(now)
        stat = self._stat(path, ident)
        image = self._admitted(self.formats.open(path, ident))
        return _Entry.of(image, path, now, stat=stat)

    def _load_selection(self, ident: str, base: str, selector: Selector, old: _Entry | None, now: float
                        ) -> _Entry:
        """`base;key=value...`: what the selectors pick out of `base`'s image (`SourceImage.select`),
        from `base`'s own entry when it is loaded and unchanged (a document's pages are asked for one
        after another). Protocols see it under the identifier as asked (`;page=01` too)."""
        path = self.source.resolve(base)
        if old is not None and old.path == path and self._unchanged(path, old):
            return old.rechecked(now)
        whole = self.metadata.get(base)
        stat = self._stat(path, base)
        if whole is not None and whole.path == path and whole.meta.sequence is None and self._unchanged(path, whole):
            image = whole.image.select(selector)
        else:
            image = self._admitted(self.formats.open(path, base)).select(selector)
        return _Entry.of(self._admitted(image), path, now, ident=ident, stat=stat)

    def _load_sequence(self, ident: str, old: _Entry | None, now: float) -> _Entry:
        """An image sequence's metadata: its first view's (000_090, as iipsrv 1.3) with its views. Kept
        while the first view's file and the list of views are unchanged; each view is an identifier of
        its own (`Sequence.member`), cached and checked as any file."""
        seq = self.source.sequence(ident)
        path = self.source.resolve(seq.member(0, 90))
        if old is not None and old.path == path and old.meta.sequence == seq and self._unchanged(path, old):
            return old.rechecked(now)
        stat = self._stat(path, ident)
        image = self._admitted(self.formats.open(path, ident))
        return _Entry.of(image, path, now, sequence=seq, stat=stat)

    def _admitted(self, image: SourceImage) -> SourceImage:
        """`image` when it is within the pixel budget (sources/budget.py), else SourceTooLarge. An image
        answered from a preview while its pyramid is made (`provisional`) was checked by its format, by
        what the conversion holds."""
        if not image.meta.provisional:
            self.budget.check(image.meta)
        return image

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
        hit = self.translations.get(key)
        return hit if hit is not None and await self._current(hit.meta) else None

    def remember(self, key: str, meta: ImageMeta, req: TileRequest, headers: dict[str, str] | None = None) -> None:
        self.translations.put(key, Translation(meta, req, tuple((headers or {}).items())))

    async def recall_document(self, key: str) -> Document | None:
        hit = self.documents.get(key)
        return hit if hit is not None and await self._current(hit.meta) else None

    async def _current(self, meta: ImageMeta) -> bool:
        """True while `meta` is still the image's metadata (the file has not changed since)."""
        fresh = self._fresh(meta.ident)
        if fresh is not None:
            return fresh.meta is meta  # checked recently: no await, the hot path of every repeat
        return await self.info(meta.ident) is meta

    def remember_document(self, key: str, meta: ImageMeta, body: bytes, media_type: str,
                          headers: dict[str, str] | None = None) -> Document:
        doc = Document(meta, body, media_type, etag_for(meta, key + "\n" + body.hex()),
                       tuple((headers or {}).items()))
        self.documents.put(key, doc)
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
        if hit is None or not await self._current(hit.meta):
            return None
        body = hit.body
        if hit.request is not None:
            tile = self.tiles.get((hit.request, hit.meta.mtime))
            if tile is None or len(tile.body) != hit.length:
                return None
            body = tile.body
        self.replayed += 1
        return body, hit

    # -- pixels -----------------------------------------------------------------------------------
    async def render(self, req: TileRequest) -> Rendered:
        entry = await self._entry(req.ident)
        key = (req, entry.meta.mtime)
        hit = self.tiles.get(key)
        if hit is not None:
            return hit
        cost = estimate(entry.meta, req)
        self._ensure_started()
        out = await self.admission.run(lane_for(cost, self.settings), render, entry.image, req, self.settings,
                                       self.derived, cost=cost)
        out = replace(out, etag=etag_for(entry.meta, repr(req)))
        if entry.meta.provisional:  # made from a preview: never cached, and marked so HTTP does not either
            return replace(out, provisional=True, timing=f"{out.timing}, {PREVIEW_TIMING}")
        # the cached copy says where later answers come from (Server-Timing), not how this one was made
        self.tiles.put(key, replace(out, source="cache", timing=CACHE_TIMING), len(out.body) + 200)
        return out

    async def samples(self, ident: str, level: int, box: tuple[int, int, int, int], page: int = 0) -> Samples:
        """The source sample values of `box` at `level` (of stack page `page`), at full depth; not cached
        (profiles and points are a few pixels, and their documents are answered with an ETag)."""
        entry = await self._entry(ident)
        if entry.meta.provisional:  # a preview's samples are not the file's
            raise Busy(f"{ident} is being prepared; its samples can be read in a moment")
        self._ensure_started()
        return await self.admission.run(Lane.SMALL, samples, entry.image, level, box, page)

    async def output_formats(self) -> tuple[OutputFormat, ...]:
        """The formats the installed libvips can write (probed once, in the pool), for protocols
        that advertise them (IIIF info.json) without importing the encoder."""
        if self._formats is None:
            self._formats = await self.run(available_formats)
        return self._formats

    def cache_stats(self) -> dict[str, dict[str, int]]:
        """Hits, misses, entries and bytes of every cache of this process that counts them (metrics.Sampler):
        encoded tiles, metadata, URL translations, info documents, replay (a hit is a replayed response),
        per-image histograms, decoded levels (libvips sources, slides), JPEG 2000 units (this process, and
        the folder the workers share) and derived pyramids (a hit is one reused, a miss one converted)."""
        replay = self.recorded.hits + self.recorded.misses
        out = {"tile": self.tiles.stats(), "metadata": _lookups(self.metadata),
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
        return out

    def stats(self) -> dict[str, dict[str, int]]:
        out = {"tile_cache": self.tiles.stats(), "metadata_cache": self.metadata.stats(),
               "replay": {**self.recorded.stats(), "replayed": self.replayed}, "admission": self.admission.stats()}
        if self.derivatives is not None:
            out["derivatives"] = self.derivatives.stats()
        if self.settings.remote:
            out["stores"] = vfs.counters()
        return out


def _lookups(lru: CountLRU[Any, Any]) -> dict[str, int]:
    """A count-bounded cache's counters (its `bytes` is its entry count, left out)."""
    return {"hits": lru.hits, "misses": lru.misses, "entries": len(lru)}


def etag_for(meta: ImageMeta, key: str) -> str:
    """The ETag of `key`'s response for the image `meta`: it changes with the image's file, its identifier
    (two files may share mtime and size: a sequence's views often do) and a sequence's list of views."""
    views = f":{meta.views}" if meta.views is not None else ""
    h = hashlib.blake2b(f"{meta.mtime}:{meta.file_size}:{meta.ident}{views}:{key}".encode(), digest_size=10)
    return f'"{h.hexdigest()}"'
