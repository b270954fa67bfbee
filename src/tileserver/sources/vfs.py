"""Where an image's bytes come from: a local file, or an object in a store read by byte range.

A *location* is a string: a local path, or the URL of an object (`s3://bucket/key`, `gs://...`,
`az://...`, `http(s)://host/path`), the way GDAL's virtual file systems name files. The formats read
through the functions here and never ask which kind they hold: `stat` (size, modification time,
version), `reader` (exact reads at an offset, several at once coalesced into few requests),
`open_binary` (a seekable file for directory parsers), `tiffload` (libvips reading a TIFF through a
custom source) and `local_file` (a path on this machine, for libraries that need one: remote objects
are copied once into the bounded source cache, `SourceCache`).

Remote objects are read only under the roots mounted here (`mount`, one per configured store): a
location under no mounted root is never fetched (404), so nothing outside the configured stores is
read, whatever an identifier or a resolver hook makes of it. Reads go through obstore (the Rust
`object_store` crate), which retries idempotent requests with backoff; what still fails is logged once
with the store and key (never the credentials) and raised as a 502/503/504 (`errors.StoreFailure`).

Small reads (directory entries, tag values: under `SMALL` bytes) are served from 4 KiB blocks kept in
a bounded cache, so parsing a TIFF's directories, and libvips re-reading them, costs a few requests once
per object version; larger reads (tiles) are fetched exactly and not kept (the tile cache keeps
results).
"""

from __future__ import annotations

import errno
import hashlib
import io
import logging
import os
import re
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import urlsplit

import pyvips

from .. import metrics
from ..cache.memory import ByteLRU
from ..errors import NotFound, SourceTooLarge, StoreBusy, StoreFailure, StoreTimeout, TileServerError, status_for
from ..settings import STORE_SCHEMES

log = logging.getLogger("tileserver.sources.vfs")

SCHEMES = STORE_SCHEMES
BLOCK = 4096  # bytes of one cached block
SMALL = 16 * 1024  # reads shorter than this are served from cached blocks
COALESCE = 16 * 1024  # ranges closer than this are read in one request (the gap is read too); obstore
# fetches the requests of one call concurrently, so far-apart tiles (an OME image's channels) cost no more time
STAT_TTL = 1.0  # seconds a remote object's stat is reused (one HEAD per load, not three)
COPY_CHUNK = 8 << 20


def remote(loc: str) -> bool:
    """Whether `loc` names an object in a store (else a local path)."""
    return loc.startswith(SCHEMES)


@dataclass(frozen=True)
class Stat:
    """What says an object changed: size, modification time (seconds since the epoch) and, for a
    remote object, its ETag (or version); local files have no version."""

    size: int
    mtime: float
    version: str = ""


@dataclass(frozen=True)
class StoreOptions:
    """How to reach the stores: obstore's configuration keys (`endpoint`, `region`, `access_key_id`,
    `secret_access_key`, `virtual_hosted_style_request`, ...) on top of what the standard environment
    variables say (AWS_*, GOOGLE_*, AZURE_*), and the request limits."""

    config: tuple[tuple[str, str], ...] = ()  # the S3 settings (endpoint, region, credentials, addressing)
    extra: tuple[tuple[str, str], ...] = ()  # any store's own keys (settings `store_options`)
    timeout: float = 10.0
    connect_timeout: float = 3.0
    retries: int = 3
    retry_timeout: float = 15.0
    allow_http: bool = False


class Mount:
    """One store root (`s3://bucket/prefix/`, `https://host/prefix/`): the obstore client for its
    bucket or host, and the root every key read through it must lie under."""

    def __init__(self, root: str, options: StoreOptions) -> None:
        self.root = root if root.endswith("/") else root + "/"
        parts = urlsplit(self.root)
        if not parts.scheme or not parts.netloc:
            raise ValueError(f"not a store URL: {root}")
        self.base = f"{parts.scheme}://{parts.netloc}/"  # keys are paths under this
        self.name = self.root  # for logs: the URL holds no credentials
        self.store = _make_store(self.base, options)
        self.can_list = parts.scheme not in ("http", "https")

    def key(self, loc: str) -> str:
        return loc[len(self.base):]


def _make_store(base: str, options: StoreOptions) -> Any:
    from obstore.store import from_url

    parts = urlsplit(base)
    config = {**dict(options.extra), **(dict(options.config) if parts.scheme == "s3" else {})}
    client: dict[str, Any] = {"timeout": f"{options.timeout}s", "connect_timeout": f"{options.connect_timeout}s"}
    endpoint = config.get("endpoint") or os.environ.get("AWS_ENDPOINT_URL") or os.environ.get("AWS_ENDPOINT") or ""
    if (options.allow_http or parts.scheme == "http" or endpoint.startswith("http://")
            or os.environ.get("AWS_ALLOW_HTTP", "").lower() in ("1", "true", "yes")):
        client["allow_http"] = True
    retry = {"max_retries": options.retries, "retry_timeout": timedelta(seconds=options.retry_timeout),
             "backoff": {"init_backoff": timedelta(milliseconds=100), "max_backoff": timedelta(seconds=2),
                         "base": 2.0}}
    make: Any = from_url  # the typed overloads want literal config dicts
    if parts.scheme in ("http", "https"):
        return make(base, client_options=client, retry_config=retry)
    if parts.scheme == "s3":
        config.setdefault("virtual_hosted_style_request", "false")  # path style: MinIO, Ceph, moto
    return make(base, config=config, client_options=client, retry_config=retry)


_mounts: dict[str, Mount] = {}
_mounts_lock = threading.Lock()


def mount(root: str, options: StoreOptions | None = None) -> Mount:
    """Make the objects under `root` readable (a server's configured store roots, at start)."""
    m = Mount(root, options or StoreOptions())
    with _mounts_lock:
        _mounts[m.root] = m
    return m


def _mount_of(loc: str) -> Mount:
    """The mount `loc` lies under (the longest root), or NotFound: nothing else is ever fetched."""
    best: Mount | None = None
    for root, m in list(_mounts.items()):
        if loc.startswith(root) and (best is None or len(root) > len(best.root)):
            best = m
    if best is None or any(seg in ("", ".", "..") for seg in loc[len(best.root):].split("/")):
        raise NotFound("image not found")
    return best


_counters = {"requests": 0, "bytes": 0, "failures": 0, "copies": 0}
_counters_lock = threading.Lock()


def count(op: str, nbytes: int, requests: int = 1) -> None:
    with _counters_lock:
        _counters["requests"] += requests
        _counters["bytes"] += nbytes
    metrics.store_read(op, nbytes, requests)


def configure(block_cache_bytes: int) -> None:
    """Size the cache of small-read blocks (settings `store_block_cache_mb`)."""
    global _blocks
    if block_cache_bytes != _blocks.max_bytes:
        _blocks = ByteLRU(block_cache_bytes)


# -- failures -----------------------------------------------------------------------------------
_STATUS = re.compile(r"status code: (\d{3})|\b(\d{3}) (?:Service Unavailable|Too Many Requests|Internal Server)")


def _failure(m: Mount, op: str, key: str, exc: Exception, quiet: bool = False) -> TileServerError:
    """A store error as the client sees it (the detail only in the log, once)."""
    if isinstance(exc, FileNotFoundError) or type(exc).__name__ == "NotFoundError":
        metrics.store_failed(404)
        return NotFound("image not found")
    text = str(exc)
    first = text.split("\n", 1)[0][:300]
    name = type(exc).__name__
    status = next((int(a or b) for a, b in _STATUS.findall(text)), 0)
    if name in ("PermissionDeniedError", "UnauthenticatedError") or status in (401, 403):
        err: TileServerError = StoreFailure("the image store refused this server's credentials")
    elif ("timed out" in text or "TimedOut" in text or "kind: Timeout" in text or "Timeout" in name
          or status == 504):
        err = StoreTimeout("the image store did not answer in time")
    elif status in (429, 503) or "onnection refused" in text:
        err = StoreBusy("the image store is unavailable; try again later")
    elif name == "NotSupportedError":
        err = StoreFailure("the image store does not support this request")
    else:
        err = StoreFailure("the image store failed")
    err.store_status = status  # type: ignore[attr-defined]
    if quiet:
        return err
    log.error("store %s: %s %s failed: %s: %s", m.name, op, key, name, first)
    metrics.store_failed(status_for(err))
    with _counters_lock:
        _counters["failures"] += 1
    return err


def call(m: Mount, op: str, key: str, fn: Callable[[], Any], quiet: bool = False) -> Any:
    """`fn()`, a request to the store of `m`, its failure as a client sees it (`quiet`: not logged or
    counted: a readiness probe)."""
    try:
        return fn()
    except TileServerError:
        raise
    except Exception as exc:  # obstore raises its own classes, OSError subclasses and builtins
        raise _failure(m, op, key, exc, quiet) from exc


# -- stat ---------------------------------------------------------------------------------------
_stats: dict[str, tuple[float, Stat]] = {}
_stats_lock = threading.Lock()


def stat(loc: str) -> Stat:
    """The object's size, mtime and version. NotFound when it is gone (or not under a mount)."""
    if not remote(loc):
        try:
            local = os.stat(loc)
        except FileNotFoundError as exc:
            raise NotFound("image not found") from exc
        return Stat(local.st_size, local.st_mtime)
    now = time.monotonic()
    with _stats_lock:
        found = _stats.get(loc)
    if found is not None and now - found[0] < STAT_TTL:
        return found[1]
    import obstore

    m = _mount_of(loc)
    key = m.key(loc)
    meta = call(m, "HEAD", key, lambda: obstore.head(m.store, key))
    count("HEAD", 0)
    modified = meta.get("last_modified")
    st = Stat(int(meta["size"]), modified.timestamp() if modified is not None else 0.0,
              str(meta.get("e_tag") or meta.get("version") or ""))
    with _stats_lock:
        if len(_stats) > 10_000:
            _stats.clear()
        _stats[loc] = (now, st)
    return st


Version = tuple[float, int, str]


def version_of(loc: str, mtime: float, size: int) -> Version:
    """What tells one version of a file from another in a cache key: mtime and size, and an object's ETag
    (S3's Last-Modified has whole seconds: an object replaced within the second it was written would
    otherwise keep the handles and directories read from the old one)."""
    return mtime, size, known_stat(loc).version if remote(loc) else ""


def known_stat(loc: str) -> Stat:
    """The last stat taken of `loc` (a HEAD only when there is none): what reads go by. Whether an object
    changed is the core's question, asked every `stat_interval` through `stat`, which renews this."""
    with _stats_lock:
        found = _stats.get(loc)
    return found[1] if found is not None else stat(loc)


def forget(loc: str | None = None) -> None:
    """Drop the remembered stat of `loc` (of every object: None), so that the next `stat` asks the store: after
    a read found the object changed, and at a purge (an object replaced a moment before it must be seen)."""
    with _stats_lock:
        if loc is None:
            _stats.clear()
        else:
            _stats.pop(loc, None)


# -- reads --------------------------------------------------------------------------------------
_blocks: ByteLRU[tuple[str, str, int], bytes] = ByteLRU(64 << 20)
def counters() -> dict[str, int]:
    """Requests and bytes read from stores by this process (metrics, /health)."""
    with _counters_lock:
        return dict(_counters, block_cache_bytes=_blocks.bytes)


class Reader:
    """Exact reads of one location: `pread(count, offset)` as `os.pread`, `pread_many` for several
    ranges at once (coalesced into as few requests as their gaps allow)."""

    def __init__(self, loc: str) -> None:
        self.loc = loc
        self._fd = -1
        self._mount: Mount | None = None
        if remote(loc):
            self._mount = _mount_of(loc)
            self._key = self._mount.key(loc)
            self._stat = known_stat(loc)
        else:
            try:
                self._fd = os.open(loc, os.O_RDONLY)
            except FileNotFoundError as exc:
                raise NotFound("image not found") from exc

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> Reader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def size(self) -> int:
        return self._stat.size if self._mount is not None else os.fstat(self._fd).st_size

    def pread(self, count: int, offset: int) -> bytes:
        """Exactly these bytes (fewer at the end of the object): one request for a remote object."""
        if self._mount is None:
            return os.pread(self._fd, count, offset)
        count = self._clip(count, offset)
        return self._get([(offset, count)])[0] if count else b""

    def pread_cached(self, count: int, offset: int) -> bytes:
        """As `pread`; for a remote object, a read shorter than `SMALL` comes from (and fills) the
        cache of 4 KiB blocks: the many small reads of a directory parser cost a few requests."""
        if self._mount is None:
            return os.pread(self._fd, count, offset)
        count = self._clip(count, offset)
        if not count:
            return b""
        if count < SMALL:
            return self.pread_many_cached([(offset, count)])[0]
        return self._get([(offset, count)])[0]

    def pread_known(self, count: int, offset: int) -> bytes:
        """As `pread`, from the block cache when every block of the range is there (what a directory
        parse read before), else fetched exactly: libvips' reads, whose tile reads must cost no more
        than the tile."""
        if self._mount is None:
            return os.pread(self._fd, count, offset)
        count = self._clip(count, offset)
        return self._from_blocks(count, offset) if count else b""

    def _clip(self, count: int, offset: int) -> int:
        """`count` cut to what the object holds from `offset` (0: nothing)."""
        return max(0, min(count, self._stat.size - offset))

    def pread_many_cached(self, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        """The bytes of each (offset, count), fetched as whole blocks (one request for ranges close
        together) and kept in the block cache: a directory's tile tables, which libvips reads again."""
        if self._mount is None:
            return self.pread_many(ranges)
        size = self._stat.size
        ver = self._version
        spans = sorted({(o // BLOCK, (min(o + c, size) - 1) // BLOCK) for o, c in ranges if c > 0 and o < size})
        wanted: list[tuple[int, int]] = []
        for b0, b1 in spans:
            if any(_blocks.get((self.loc, ver, b)) is None for b in range(b0, b1 + 1)):
                wanted.append((b0 * BLOCK, min((b1 + 1) * BLOCK, size) - b0 * BLOCK))
        if wanted:
            for (start, n), data in zip(wanted, self._get(wanted), strict=True):
                for b in range(start // BLOCK, (start + n - 1) // BLOCK + 1):
                    chunk = data[b * BLOCK - start : (b + 1) * BLOCK - start]
                    _blocks.put((self.loc, ver, b), chunk, len(chunk) + 64)
        out = []
        for o, c in ranges:
            c = self._clip(c, o)
            out.append(self._from_blocks(c, o) if c else b"")
        return out

    def _from_blocks(self, count: int, offset: int) -> bytes:
        """The range from the block cache, or fetched exactly when a block of it is not there."""
        first, last = offset // BLOCK, (offset + count - 1) // BLOCK
        parts = []
        for b in range(first, last + 1):
            got = _blocks.get((self.loc, self._version, b))
            if got is None:  # evicted meanwhile: read it exactly
                return self._get([(offset, count)])[0]
            parts.append(got)
        start = offset - first * BLOCK
        return b"".join(parts)[start : start + count]

    @property
    def _version(self) -> str:
        return self._stat.version or str(self._stat.mtime)

    def pread_many(self, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        """The bytes of each (offset, count) in `ranges`."""
        if self._mount is None:
            return [os.pread(self._fd, count, offset) for offset, count in ranges]
        clipped = [(o, self._clip(c, o)) for o, c in ranges]
        wanted = [(o, c) for o, c in clipped if c > 0]
        got = iter(self._get(wanted)) if wanted else iter(())
        return [next(got) if c > 0 else b"" for _, c in clipped]

    def _get(self, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        import obstore

        m = self._mount
        assert m is not None
        key = self._key
        starts = [o for o, _ in ranges]
        ends = [o + c for o, c in ranges]
        if len(ranges) == 1:
            data = [bytes(call(m, "GET", key, lambda: obstore.get_range(m.store, key, start=starts[0],
                                                                          end=ends[0])))]
        else:
            data = [bytes(b) for b in call(m, "GET", key,
                                            lambda: obstore.get_ranges(m.store, key, starts=starts, ends=ends,
                                                                       coalesce=COALESCE))]
        count("GET", sum(len(d) for d in data), _requests(ranges) if len(ranges) > 1 else 1)
        for (_, c), d in zip(ranges, data, strict=True):
            if len(d) != c:
                forget(self.loc)
                raise StoreFailure("the image store returned a short read")
        return data

def _requests(ranges: Sequence[tuple[int, int]]) -> int:
    """The GETs obstore makes of `ranges` (it merges ranges less than `COALESCE` bytes apart)."""
    spans = sorted(ranges)
    n, end = 0, -1
    for o, c in spans:
        if n == 0 or o - end > COALESCE:
            n += 1
        end = max(end, o + c)
    return n


def reader(loc: str) -> Reader:
    return Reader(loc)


# -- reads that never wait (on the event loop) ------------------------------------------------------------
class WouldBlock(Exception):
    """A read asked for without waiting (`NowReader`) would have to wait: for the disc (the bytes are not all in
    the page cache), for a store (a remote object), or for what is not known yet. The caller does it in the pool."""


NOWAIT_FILES = 64  # files kept open per thread for `NowReader`
_nowait = hasattr(os, "preadv") and hasattr(os, "RWF_NOWAIT")  # False once the kernel refuses the flag
_now_files = threading.local()  # each thread's own files: only the thread that opened a descriptor closes it


class NowReader:
    """`Reader.pread` of a local file that returns at once or raises `WouldBlock`: `preadv` with `RWF_NOWAIT`,
    which reads what the page cache holds and never waits for the disc (Linux 4.14+). What a server answers
    on its event loop with no thread hop: the stored tile a viewer asks for again after a restart, or one
    another process read moments ago, is in the page cache. The file stays open (per thread, by version, at
    most `NOWAIT_FILES`): a file replaced by another has another version and is opened anew."""

    def __init__(self, loc: str, version: Version) -> None:
        if not _nowait or remote(loc):
            raise WouldBlock(loc)
        files: OrderedDict[tuple[str, Version], int] | None = getattr(_now_files, "fds", None)
        if files is None:
            files = _now_files.fds = OrderedDict()
        key = (loc, version)
        fd = files.get(key)
        if fd is None:
            try:  # a file the pool opened moments ago (its directories are known): its inode is in memory
                fd = os.open(loc, os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                raise WouldBlock(loc) from None  # the pool's read says why
            files[key] = fd
            while len(files) > NOWAIT_FILES:
                os.close(files.popitem(last=False)[1])
        else:
            files.move_to_end(key)
        self._fd = fd

    def __enter__(self) -> NowReader:
        return self

    def __exit__(self, *exc: object) -> None:
        """Nothing to close: the file stays open for the next read (`close_now_files`)."""

    def pread(self, count: int, offset: int) -> bytearray:
        """Exactly `count` bytes at `offset`, if the page cache holds them all; else `WouldBlock`. The buffer
        read into, not a copy of it (a tile is copied once more, into the response: passthrough.py)."""
        global _nowait
        buf = bytearray(count)
        try:
            n = os.preadv(self._fd, [buf], offset, os.RWF_NOWAIT)
        except BlockingIOError:
            raise WouldBlock("not in the page cache") from None
        except OSError as exc:
            if exc.errno in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):  # an older kernel, another file system
                _nowait = False
                log.info("reads without waiting are not supported here (%s): stored tiles are read in the pool",
                         os.strerror(exc.errno))
                raise WouldBlock("not supported") from None
            raise
        if n != count:  # partly in the page cache, or past the end of the file: the pool's read says which
            raise WouldBlock("short read")
        return buf


def close_now_files() -> None:
    """Close the calling thread's `NowReader` files (the service's stop, on the event loop that used them)."""
    files: OrderedDict[tuple[str, Version], int] | None = getattr(_now_files, "fds", None)
    while files:
        os.close(files.popitem()[1])


class RangeFile(io.RawIOBase):
    """A read-only, seekable file over a `Reader`. `fill`: small reads come from and fill the block cache
    (the TIFF directory parser); else reads come from it only when it holds them whole, and are fetched
    exactly otherwise (libvips, whose tile reads go here)."""

    def __init__(self, r: Reader, fill: bool = True) -> None:
        self.r = r
        self.pos = 0
        self._read = r.pread_cached if fill else r.pread_known

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        self.pos = offset if whence == 0 else self.pos + offset if whence == 1 else self.r.size + offset
        return self.pos

    def tell(self) -> int:
        return self.pos

    def readinto(self, buf: Any) -> int:
        data = self._read(len(buf), self.pos)
        buf[: len(data)] = data
        self.pos += len(data)
        return len(data)

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            size = self.r.size - self.pos
        data = self._read(size, self.pos)
        self.pos += len(data)
        return data


@contextmanager
def open_binary(loc: str) -> Iterator[BinaryIO]:
    """`loc` as a binary file (a local file, or ranged reads of an object)."""
    if not remote(loc):
        with open(loc, "rb") as f:
            yield f
        return
    r = Reader(loc)
    yield io.BufferedReader(RangeFile(r), buffer_size=BLOCK)


def head(loc: str, count: int) -> bytes:
    """The first `count` bytes of `loc`."""
    with reader(loc) as r:
        return r.pread(count, 0)


_recent: tuple[float, TileServerError] | None = None
FAILURE_WINDOW = 5.0  # seconds a store failure met inside libvips explains libvips' errors


def _note_failure(exc: TileServerError) -> None:
    global _recent
    _recent = (time.monotonic(), exc)


def recent_failure() -> TileServerError | None:
    """The store failure (or vanished object) met in the last seconds by a libvips read through a custom
    source, which libvips reports only as a broken file: the answer to give instead of a 415."""
    found = _recent
    if found is None or time.monotonic() - found[0] > FAILURE_WINDOW:
        return None
    return found[1]


# -- libvips over a store -------------------------------------------------------------------------
_sources: list[Any] = []  # custom sources libvips may still read from (see `_keep`)
_sources_lock = threading.Lock()


def _keep(src: Any) -> None:
    """Keep `src` (its Python callbacks) alive while libvips holds it: pyvips ties a custom source's
    callbacks to the Python object, so it must outlive every image read from it. Sources that only we
    still hold (GObject reference count 1) are dropped here."""
    with _sources_lock:
        _sources[:] = [s for s in _sources if pyvips.ffi.cast("GObject *", s.pointer).ref_count > 1]
        _sources.append(src)


def tiffload(loc: str, fill: bool = False, **options: Any) -> Any:
    """libvips' TIFF loader on `loc` (a local file, or an object read by range through a custom source;
    `fill`: its small reads fill the block cache, for a first look at an object's directories)."""
    if not remote(loc):
        return pyvips.Image.tiffload(loc, **options)
    r = Reader(loc)
    f = RangeFile(r, fill=fill)
    src = pyvips.SourceCustom()

    def read(n: int) -> bytes:
        try:
            return f.read(n)
        except TileServerError as exc:  # libvips sees a short read; its caller answers with this (`recent_failure`)
            _note_failure(exc)
            return b""

    src.on_read(read)
    src.on_seek(lambda offset, whence: f.seek(offset, whence))
    img = pyvips.Image.tiffload_source(src, **options)
    _keep(src)
    return img


def header(loc: str) -> Any:
    """libvips' header of `loc` (pixels are decoded on demand)."""
    if not remote(loc):
        return pyvips.Image.new_from_file(loc)
    return tiffload(loc, fill=True)  # the directory reads fill blocks (libvips reads IFD fields one by one)


# -- local copies ---------------------------------------------------------------------------------
class SourceCache:
    """Remote objects copied whole into a folder, for libraries that read only files (OpenSlide, the
    JPEG 2000 decoders, libvips' untiled loaders): one copy per object version, least recently used
    copies removed past `max_bytes`. A copy being made is a temporary file renamed when complete, so
    worker processes sharing the folder never read a partial one."""

    def __init__(self, folder: Path | None, max_bytes: int) -> None:
        self.folder = folder
        self.max_bytes = max_bytes
        self._locks: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()

    def _dir(self) -> Path:
        folder = self.folder or Path(tempfile.gettempdir()) / f"tileserver-sources-{os.getuid()}"
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        return folder

    def path(self, loc: str) -> str:
        st = stat(loc)
        if st.size > self.max_bytes:
            raise SourceTooLarge("the image is larger than this server's source cache")
        digest = hashlib.sha256(f"{loc}\0{st.version}\0{st.mtime}\0{st.size}".encode()).hexdigest()[:32]
        ext = os.path.splitext(urlsplit(loc).path)[1][:16]
        dst = self._dir() / f"{digest}{ext}"
        if dst.exists():
            os.utime(dst)
            return str(dst)
        with self._lock:
            lock = self._locks.setdefault(digest, threading.Lock())
        with lock:
            if not dst.exists():
                self._evict(st.size)
                self._copy(loc, dst)
        with self._lock:
            self._locks.pop(digest, None)
        return str(dst)

    def _copy(self, loc: str, dst: Path) -> None:
        import obstore

        m = _mount_of(loc)
        key = m.key(loc)
        fd, tmp = tempfile.mkstemp(dir=dst.parent, prefix=".part-")
        try:
            with os.fdopen(fd, "wb") as out:
                n = 0
                try:
                    for chunk in obstore.get(m.store, key).stream(min_chunk_size=COPY_CHUNK):
                        out.write(chunk)
                        n += len(chunk)
                except Exception as exc:  # obstore's errors, as in `_call`
                    raise _failure(m, "GET", key, exc) from exc
            count("GET", n)
            with _counters_lock:
                _counters["copies"] += 1
            os.replace(tmp, dst)
        except BaseException:
            with suppress(OSError):
                os.unlink(tmp)
            raise

    def _evict(self, incoming: int) -> None:
        folder = self._dir()
        files = []
        for entry in os.scandir(folder):
            if entry.is_file() and not entry.name.startswith(".part-"):
                st = entry.stat()
                files.append((st.st_mtime, st.st_size, entry.path))
        total = sum(s for _, s, _ in files) + incoming
        for _, size, path in sorted(files):
            if total <= self.max_bytes:
                break
            with suppress(OSError):
                os.unlink(path)  # readers holding it open keep reading it
            total -= size


_cache = SourceCache(None, 10 << 30)


def configure_cache(folder: Path | None, max_bytes: int) -> None:
    global _cache
    _cache = SourceCache(folder, max_bytes)


def local_file(loc: str) -> str:
    """A local path holding `loc`'s bytes: `loc` itself, or its copy in the source cache."""
    return _cache.path(loc) if remote(loc) else loc
