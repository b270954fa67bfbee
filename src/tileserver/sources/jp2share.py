"""Decoded JPEG 2000 units shared by the worker processes of one server, so that each codestream tile is
decoded once per server rather than once per worker (a shuffled cold pass over the issue's file
otherwise decodes nearly every full-resolution tile in both workers).

A unit is one file in a folder (`tileserver serve --workers N` makes one in /dev/shm per run, passes it
to the workers as `jp2_share` and removes it at exit): a 32-byte header (magic, sample type, height,
width, bands, origin) and the samples, mapped read-only by every process that uses it, so the pages are
held once in memory. A process that misses takes `<unit>.lock` (O_EXCL) and decodes; the others wait
for the unit to appear (single flight across processes), and decode themselves if the lock's owner
fails, dies (a lock older than `STALE` seconds is taken over) or takes longer than `WAIT`. The folder
is bounded in bytes: a writer that has written an eighth of the bound since its last look lists the
folder and removes the least recently used units (a reader touches a unit's mtime). Any file-system
error (a full /dev/shm, a removed folder) makes that one unit a private decode, never a failed request.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import mmap
import os
import struct
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .openjpeg import Decoded

log = logging.getLogger("tileserver.sources.jp2share")

HEADER = struct.Struct("<4sIIIIii4x")  # magic, sample type, height, width, bands, x0, y0
MAGIC = b"TSJ2"
DTYPES = (np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.int8), np.dtype(np.int16))
STALE = 60.0  # seconds after which a lock (or a temporary file) is taken for a dead writer's
WAIT = 60.0  # longest wait for another process's decode
POLL = 0.002


class SharedUnits:
    def __init__(self, folder: Path, max_bytes: int) -> None:
        self.folder = folder
        self.max_bytes = max_bytes
        self._since_scan = 0
        self._warned = False
        self.hits = self.misses = 0  # lookups found in the folder, and not (metrics; not locked: approximate)

    def get(self, key: tuple[object, ...], make: Callable[[], Decoded]) -> Decoded:
        """The unit `key` from the folder, else made by `make` (in this process or another) and kept there."""
        path = self.folder / (hashlib.blake2b(repr(key).encode(), digest_size=16).hexdigest() + ".u")
        found = self._load(path)
        if found is not None:
            self.hits += 1
            return found
        self.misses += 1  # decoded here, or by another process while this one waits
        lock = path.with_suffix(".lock")
        deadline = time.monotonic() + WAIT
        while True:
            try:
                fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
            except FileExistsError:
                if _age(lock) > STALE:
                    with contextlib.suppress(OSError):
                        lock.unlink()
                    continue
                time.sleep(POLL)
                found = self._load(path)
                if found is not None:
                    return found
                if time.monotonic() > deadline:
                    return make()
                continue
            except OSError as exc:
                self._warn(exc)
                return make()
            try:
                found = self._load(path)  # written between the miss and the lock
                return found if found is not None else self._store(path, make())
            finally:
                os.close(fd)
                with contextlib.suppress(OSError):
                    lock.unlink()

    def _load(self, path: Path) -> Decoded | None:
        try:
            with open(path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                if size < HEADER.size:
                    return None
                mm = mmap.mmap(f.fileno(), size, access=mmap.ACCESS_READ)
        except (OSError, ValueError):
            return None
        magic, kind, h, w, bands, x0, y0 = HEADER.unpack_from(mm, 0)
        dtype = DTYPES[kind] if kind < len(DTYPES) else None
        if magic != MAGIC or dtype is None or size != HEADER.size + h * w * bands * dtype.itemsize:
            return None
        with contextlib.suppress(OSError):
            os.utime(path)  # recently used: evicted last
        pixels = np.frombuffer(mm, dtype, h * w * bands, HEADER.size).reshape(h, w, bands)
        return Decoded(pixels, x0, y0, dtype.itemsize * 8, dtype.kind == "i", (False,) * bands, "", False)

    def _store(self, path: Path, d: Decoded) -> Decoded:
        px = np.ascontiguousarray(d.pixels)
        tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp")
        try:
            with open(tmp, "wb") as f:
                h, w, bands = px.shape
                f.write(HEADER.pack(MAGIC, DTYPES.index(px.dtype), h, w, bands, d.x0, d.y0))
                f.write(px.data)
            os.replace(tmp, path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            self._warn(exc)
            return d
        self._since_scan += px.nbytes
        if self._since_scan > self.max_bytes // 8:
            self.evict()
        shared = self._load(path)  # the mapped copy: this process then holds no private one
        return shared if shared is not None else d

    def evict(self) -> None:
        """Remove the least recently used units until the folder is within its bound, and what dead
        writers left (temporary files, locks)."""
        self._since_scan = 0
        units = []
        try:
            entries = list(os.scandir(self.folder))
        except OSError:
            return
        now = time.time()
        for entry in entries:
            with contextlib.suppress(OSError):
                st = entry.stat()
                if entry.name.endswith(".u"):
                    units.append((st.st_mtime, st.st_size, entry.path))
                elif now - st.st_mtime > STALE:
                    os.unlink(entry.path)
        total = sum(size for _, size, _ in units)
        for _, size, name in sorted(units):
            if total <= self.max_bytes * 0.9:
                break
            with contextlib.suppress(OSError):
                os.unlink(name)
                total -= size

    def _warn(self, exc: OSError) -> None:
        if not self._warned:
            self._warned = True
            log.warning("decoded JPEG 2000 tiles are not shared between processes (%s): each decodes its own", exc)


def _age(path: Path) -> float:
    try:
        return time.time() - path.stat().st_mtime
    except OSError:
        return 0.0


def share_folder(base: Path | None = None, kind: str = "jp2") -> Path:
    """A new folder for what the processes of one server share (`kind`: `jp2` units, `metrics`): in /dev/shm
    when there is one (memory, not disk), named by user and server process; folders of servers that are gone
    are removed first."""
    root = base or (Path("/dev/shm") if os.access("/dev/shm", os.W_OK) else Path(os.environ.get("TMPDIR", "/tmp")))
    prefix = f"tileserver-{kind}-{os.getuid()}-"
    for old in root.glob(prefix + "*"):
        pid = old.name[len(prefix):]
        if pid.isdigit() and not _alive(int(pid)):
            remove_folder(old)
    folder = root / f"{prefix}{os.getpid()}"
    folder.mkdir(mode=0o700, exist_ok=True)
    return folder


def remove_folder(folder: Path) -> None:
    with contextlib.suppress(OSError):
        for entry in os.scandir(folder):
            with contextlib.suppress(OSError):
                os.unlink(entry.path)
        folder.rmdir()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
