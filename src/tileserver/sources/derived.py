"""Large untiled images made fast: a big JPEG, PNG, WebP or striped TIFF is converted once, in the
background and on first use, into a tiled pyramidal TIFF in the derivative store (`cache/disk.py`).

`DerivedFormat` wraps the libvips format. An image it opens that is untiled, single-resolution and
larger than `derive_min_megapixels` comes back as a `DerivedImage`:

1. at once, a preview (the image shrunk to `derive_preview_size` on its longest side; a JPEG shrinks
   on load, so this decodes an eighth of it) answers every level, resampled to the level's size
   (`ProvisionalImage`); its `meta` has the original's levels and `provisional=True`, so the core
   neither caches nor replays what is made from it and responses say `Cache-Control: no-store`;
2. meanwhile a conversion process (`derive_job.py`, niced; `derive_jobs` at once per process) writes
   the pyramid: JPEG tiles for 8-bit grey and RGB, deflate for 16-bit and alpha, levels halving
   rounding down as the original's virtual levels did, so every tile URL a viewer built from the
   first info.json stays valid;
3. when it is complete, the image switches to a `PyramidImage` of the derived file (stored tiles then
   pass through) and replaces its `meta`; the core sees the new metadata object at its next lookup
   and forgets what it remembered for the old one.

Worker processes share the store: the one that takes a file's lock converts it, the others wait and
use its result; a derivative in use is leased and never evicted. A file whose preview cannot be
decoded is a 415, and remembered as such (a `.failed` marker) until it changes; when a conversion
fails (or would not fit in the store) the image is read from its file as before, with virtual levels.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any

import pyvips

from ..cache.disk import DiskStore, Lease, Writer, key_for
from ..errors import NotFound, SourceError, SourceTooLarge
from ..models import ImageMeta, Level, OutputFormat
from .base import Box4, Selector, SourceImage, no_selection
from .budget import PixelBudget, TooLargeImage, streamed_pixels
from .passthrough import StoredTile
from .pyramid import PyramidImage, PyvipsFormat, check_page, libvips_version

log = logging.getLogger(__name__)

LOADERS = frozenset({"jpegload", "pngload", "tiffload", "webpload"})  # decoded whole by libvips: worth converting
LAYOUT = 1  # version of what a derivative holds: part of every key
NICE = 10  # the conversion process' priority below the server's
UNREADABLE = "unreadable"  # the failure marker of a file whose pixels cannot be decoded
# the expected size of a derivative's full level, per sample: JPEG at quality 85 measured 0.02 (smooth)
# to 0.1 (noisy photographs); deflate keeps most of the bytes (estimate() also caps it by the file size)
JPEG_BYTES_PER_SAMPLE = 0.1
DEFLATE_BYTES_PER_SAMPLE = 0.7


@dataclass(frozen=True)
class DeriveOptions:
    min_pixels: int
    quality: int
    preview_size: int
    jobs: int = 1


def geometry(levels: tuple[Level, ...]) -> list[tuple[int, int, int, int]]:
    """What a level grid looks like to a client: each level's size and tile size."""
    return [(lv.width, lv.height, lv.tile_width, lv.tile_height) for lv in levels]


def compression(meta: ImageMeta) -> str:
    """JPEG where it holds the samples as they are (8-bit grey or RGB, no alpha), else lossless deflate."""
    jpeg = meta.bits == 8 and meta.bands in (1, 3) and not meta.has_alpha and meta.colorspace in ("srgb", "grey")
    return "jpeg" if jpeg else "deflate"


def estimate(meta: ImageMeta) -> int:
    """The bytes `meta`'s pyramid is expected to take (reserved before it is written): its full level
    about the size of the file when that is compressed alike (a JPEG, a PNG for deflate), else of the
    samples at a typical ratio; the levels below add a third."""
    samples = meta.width * meta.height * meta.bands
    if compression(meta) == "jpeg":
        full = samples * JPEG_BYTES_PER_SAMPLE
    else:
        full = samples * max(meta.bits // 8, 1) * DEFLATE_BYTES_PER_SAMPLE
    return int(min(full, meta.file_size) * 4 / 3)


def make_preview(path: str, meta: ImageMeta, size: int) -> Any:
    """The image at `size` pixels on its longest side (or its own size), decoded into memory in one
    sequential pass, in the file's bands and sample format. Broken data (a truncated file, compressed
    data that does not decode) is an error here, where libvips would otherwise fill it in grey."""
    longest = max(meta.width, meta.height)
    target = min(size, longest)
    if meta.loader == "jpegload":
        shrink = 1
        while shrink < 8 and longest // (shrink * 2) >= target:
            shrink *= 2
        img = pyvips.Image.jpegload(path, shrink=shrink, access="sequential", fail_on="error")
    else:
        img = pyvips.Image.new_from_file(path, access="sequential", fail_on="error")
    scale = target / max(img.width, img.height)
    if scale < 1:
        img = img.resize(scale)
    return img.copy_memory()


def exact_size(img: Any, width: int, height: int) -> Any:
    """`img` resampled to exactly `width` x `height`."""
    if (img.width, img.height) == (width, height):
        return img
    out = img.resize(width / img.width, vscale=height / img.height)
    if (out.width, out.height) != (width, height):
        out = out.embed(0, 0, width, height, extend="copy")
    return out


class ProvisionalImage:
    """An image's levels made from its preview: right sizes, approximate pixels (upsampled above the
    preview's size). Thread-safe: the preview is in memory and only read."""

    def __init__(self, preview: Any, meta: ImageMeta) -> None:
        self.preview = preview
        self.meta = replace(meta, provisional=True)
        self._levels: dict[int, Any] = {}

    def read(self, level: int, box: Box4, page: int = 0, layers: int | None = None) -> Any:
        check_page(self.meta, page)
        img = self._levels.get(level)
        if img is None:
            lv = self.meta.levels[level]
            img = self._levels[level] = exact_size(self.preview, lv.width, lv.height)  # lazy
        return img.crop(*box)

    def stored_tile(self, level: int, col: int, row: int, fmt: OutputFormat, page: int = 0, now: bool = False
                    ) -> StoredTile | None:
        return None

    def select(self, selector: Selector) -> SourceImage:
        return no_selection(self, selector)


class DerivedImage:
    """A large untiled image: its preview until its pyramid is ready, then the pyramid (or, when that
    failed, the file itself). `meta` is replaced when it switches, which tells the core."""

    def __init__(self, original: PyramidImage, current: SourceImage, lease: Lease | None = None) -> None:
        self.original = original
        self._current = current
        self._lease = lease  # keeps the derivative from eviction while this image is in use
        self.meta = current.meta

    @property
    def path(self) -> str:
        """The file pixels come from now (the derivative once it is ready)."""
        return self._lease.path if self._lease is not None else self.original.path

    def read(self, level: int, box: Box4, page: int = 0, layers: int | None = None) -> Any:
        return self._current.read(level, box, page, layers=layers)

    def stored_tile(self, level: int, col: int, row: int, fmt: OutputFormat, page: int = 0, now: bool = False
                    ) -> StoredTile | None:
        return self._current.stored_tile(level, col, row, fmt, page, now)

    def select(self, selector: Selector) -> SourceImage:
        """A page other than the first of a multi-page file is read from the file, as before (only the
        first page is derived)."""
        if selector.page is None or (selector.page == 0 and not self.meta.pages and not self.meta.stack):
            return no_selection(self, replace(selector, page=None))
        return self.original.select(selector)

    def switch(self, image: SourceImage, lease: Lease | None) -> None:
        self._lease = lease
        self._current = image
        self.meta = image.meta  # last: whoever sees the new meta finds the new pixels behind it


class DerivedFormat:
    """The libvips format, with large untiled images converted to pyramids (see the module's doc)."""

    name = "libvips"
    ranged = True  # see registry.py

    def __init__(self, inner: PyvipsFormat, store: DiskStore, options: DeriveOptions,
                 budget: PixelBudget | None = None) -> None:
        self.inner = inner
        self.budget = budget
        self.reader = inner.reader
        self.store = store
        self.options = options
        self.counts = {"converted": 0, "reused": 0, "failed": 0, "previews": 0}
        self._lock = threading.Lock()
        self._jobs: ThreadPoolExecutor | None = None
        self._running: set[subprocess.Popen[bytes]] = set()
        self._closed = False

    def probe(self, path: str, head: bytes) -> bool:
        return self.inner.probe(path, head)

    def eligible(self, meta: ImageMeta) -> bool:
        """Untiled, one stored level, integer samples, more pixels than the threshold."""
        return (meta.loader in LOADERS and meta.compression == "" and not meta.stack
                and meta.sample_format == "uint" and meta.bits in (8, 16)
                and sum(lv.stored for lv in meta.levels) == 1
                and meta.width * meta.height > self.options.min_pixels)

    def key(self, path: str, meta: ImageMeta) -> str:
        """The derivative's name: the file's identity (real path, mtime, size) and how it is converted."""
        return key_for(LAYOUT, os.path.realpath(path), meta.mtime, meta.file_size, compression(meta),
                       self.options.quality, self.reader.tile_size, libvips_version())

    def open(self, path: str, ident: str) -> SourceImage:
        original = self.inner.open(path, ident)
        if not self.eligible(original.meta):
            return original
        if self.budget is not None:  # before the preview decodes anything
            self.budget.check(original.meta, held=streamed_pixels(path, original.meta))
        key = self.key(path, original.meta)
        try:
            found = self._existing(original, key)
        except OSError as exc:  # the store cannot be used (permissions, disk): read the file as before
            log.warning("derivative store %s not usable: %s", self.store.folder, exc)
            return original
        if found is not None:
            return found
        image = DerivedImage(original, ProvisionalImage(self._preview(original, key), original.meta))
        self._submit(image, key)
        return image

    def _existing(self, original: PyramidImage, key: str) -> SourceImage | None:
        """The image when the store already has its outcome: the derivative, or a recorded failure."""
        lease = self.store.lease(key)
        if lease is not None:
            final = self._pyramid(original, lease.path)
            if final is None:
                lease.release()
                return original
            with self._lock:
                self.counts["reused"] += 1
            return DerivedImage(original, final, lease)
        reason = self.store.failure(key)
        if reason == UNREADABLE:
            raise SourceError("the image could not be decoded")
        return self._fallback(original) if reason is not None else None

    def _fallback(self, original: PyramidImage) -> SourceImage:
        """What answers an image whose pyramid will not be made: its file, read whole as before, when
        the pixel budget allows that read; else an image whose reads are refused."""
        if self.budget is not None:
            try:
                self.budget.check(original.meta)
            except SourceTooLarge as exc:
                return TooLargeImage(original.meta, exc.message)
        return original

    def _preview(self, original: PyramidImage, key: str) -> Any:
        try:
            preview = make_preview(original.path, original.meta, self.options.preview_size)
        except pyvips.Error as exc:
            log.error("%s could not be decoded: %s", original.meta.ident, getattr(exc, "detail", exc))
            try:
                self.store.fail(key, UNREADABLE)
            except OSError as err:
                log.warning("derivative store %s not usable: %s", self.store.folder, err)
            with self._lock:
                self.counts["failed"] += 1
            raise SourceError("the image could not be decoded") from exc
        with self._lock:
            self.counts["previews"] += 1
        return preview

    def _pyramid(self, original: PyramidImage, path: str) -> PyramidImage | None:
        """The pyramid at `path` as the image: the original's description with the pyramid's levels;
        None when it cannot be read or its level grid is not the original's."""
        meta = original.meta
        try:
            derived = self.reader.info(path, meta.ident)
        except (SourceError, NotFound):
            return None
        if geometry(derived.levels) != geometry(meta.levels):
            log.error("the pyramid derived from %s has other levels than the file; not used", meta.ident)
            return None
        final = replace(meta, levels=derived.levels, compression=derived.compression, loader=derived.loader,
                        decode_pixels=derived.decode_pixels)
        return PyramidImage(self.reader, path, final)

    # -- conversion, in the background ----------------------------------------------------------
    def _submit(self, image: DerivedImage, key: str) -> None:
        with self._lock:
            if self._closed:
                return
            if self._jobs is None:
                self._jobs = ThreadPoolExecutor(self.options.jobs, thread_name_prefix="tileserver-derive")
            self._jobs.submit(self._convert, image, key)

    def _convert(self, image: DerivedImage, key: str) -> None:
        try:
            final, lease = self._produce(image.original, key)
        except Exception:  # the store failed under us (disk, permissions): serve the file as before
            log.exception("deriving a pyramid from %s failed", image.original.meta.ident)
            final, lease = self._fallback(image.original), None
        image.switch(final, lease)

    def _produce(self, original: PyramidImage, key: str) -> tuple[SourceImage, Lease | None]:
        with self.store.writing(key) as writer:  # waits while another process converts this file
            lease = self.store.lease(key)
            if lease is not None:
                with self._lock:
                    self.counts["reused"] += 1
            elif self.store.failure(key) is None:
                lease = self._write(original, key, writer)
        if lease is None:
            return self._fallback(original), None
        final = self._pyramid(original, lease.path)
        if final is None:
            lease.release()
            return self._fallback(original), None
        return final, lease

    def _write(self, original: PyramidImage, key: str, writer: Writer) -> Lease | None:
        meta = original.meta
        if not writer.reserve(estimate(meta)):
            log.warning("the pyramid of %s would not fit in the derivative store (%d MB beside those in use); "
                        "served from its file", meta.ident, self.store.max_bytes >> 20)
            return None
        outcome = self._run(original, writer)
        if outcome == "ok" and self._pyramid(original, writer.temp) is None:
            outcome = "failed"
        if outcome != "ok":
            if outcome == "failed":  # not when stopped (a shutdown): it is tried again next time
                self.store.fail(key, "conversion failed")
                with self._lock:
                    self.counts["failed"] += 1
            return None
        writer.commit()
        with self._lock:
            self.counts["converted"] += 1
        self.store.trim()
        return self.store.lease(key)

    def _run(self, original: PyramidImage, writer: Writer) -> str:
        """Run the conversion process: "ok" when it wrote `writer.temp`, "failed" when it could not (or
        took too long), "stopped" when a signal ended it (the server is stopping: not the file's fault)."""
        meta = original.meta
        cmd = [sys.executable, "-m", "tileserver.sources.derive_job", original.path, writer.temp,
               "--compression", compression(meta), "--quality", str(self.options.quality),
               "--tile", str(self.reader.tile_size), "--nice", str(NICE)]
        env = {**os.environ, "TMPDIR": writer.scratch()}  # libvips' temporary files stay in the store
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                env=env)
        with self._lock:
            self._running.add(proc)
        timed_out = False
        try:
            _, err = proc.communicate(timeout=120 + meta.width * meta.height / 1e6)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
            timed_out = True
            log.error("converting %s took too long; stopped", meta.ident)
        finally:
            with self._lock:
                self._running.discard(proc)
        if proc.returncode == 0:
            return "ok"
        if proc.returncode < 0 and not timed_out:
            log.warning("converting %s was stopped (signal %d)", meta.ident, -proc.returncode)
            return "stopped"
        log.error("converting %s failed (exit %s): %s", meta.ident, proc.returncode,
                  err.decode("utf-8", "replace").strip()[-2000:])
        return "failed"

    def stats(self) -> dict[str, int]:
        """Counters, and the store's size when last counted (no disk work: /health calls this on the loop)."""
        with self._lock:
            out = {**self.counts, "running": len(self._running)}
        return {**out, "bytes": self.store.seen, "max_bytes": self.store.max_bytes}

    def close(self) -> None:
        """Stop: conversions under way are ended (their temporary files go with their lock)."""
        with self._lock:
            self._closed = True
            jobs, self._jobs = self._jobs, None
            running = list(self._running)
        for proc in running:
            proc.terminate()
        if jobs is not None:
            jobs.shutdown(wait=False, cancel_futures=True)
