"""A bounded folder of derived files (pyramids made from large untiled images), shared by every worker
process of a server, and safe when several of them use it at once.

Files are named by a key the caller makes (a hash of the source file's identity, `key_for`), never by a
client's string, and nothing outside the folder is touched. In it:

- `<key>.tif`: a complete derivative. Written under a temporary name and renamed when complete, so a
  reader never sees half a file. A process serving one holds a shared `flock` on it (a `Lease`) for as
  long as it uses it, and its mtime is its last use: eviction deletes the least recently used first
  and never one that is leased (it takes an exclusive lock, without waiting, before deleting).
- `<key>.lock`: exists while one process writes `<key>.tif` (exclusive `flock`; the others wait on
  it, then find the result). It holds the bytes reserved for the file being written, so that writers
  in several processes stay under the cap together. Removed by its holder when done.
- `<key>.tif.<pid>.<token>.tmp` and `<key>.<pid>.<token>.scratch/`: the file being written and the
  writer's private temporary folder; left-overs of a writer that died are deleted when seen.
- `<key>.failed`: why a conversion failed, so that no process tries that file version again.
- `.evict.lock`: one process evicts at a time.

Everything else in the folder is ignored, never counted and never deleted.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import logging
import os
import re
import secrets
import shutil
import weakref
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)

KEY = r"[0-9a-f]{32}"
DONE = re.compile(rf"({KEY})\.tif")
FAILED = re.compile(rf"({KEY})\.failed")
LOCK = re.compile(rf"({KEY})\.lock")
TEMP = re.compile(rf"({KEY})\.tif\.[0-9]+\.[0-9a-f]+\.tmp")
SCRATCH = re.compile(rf"({KEY})\.[0-9]+\.[0-9a-f]+\.scratch")
MARKER_BYTES = 4096  # what a failure marker is counted as (one file system block)


def key_for(*identity: object) -> str:
    """The key of a derivative: a hash of what identifies its source (real path, mtime, size, the
    conversion's options), so a changed file or option gets a new key."""
    return hashlib.blake2b(repr(identity).encode(), digest_size=16).hexdigest()


class Lease:
    """A derivative held open with a shared lock: it is not evicted while this object lives. Releasing
    it (or its garbage collection) marks the file as just used and drops the lock."""

    def __init__(self, fd: int, path: str) -> None:
        self.path = path
        self._release = weakref.finalize(self, _release, fd)

    def release(self) -> None:
        self._release()


def _release(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.utime(fd)  # last use, for LRU
    os.close(fd)


def _same_file(fd: int, path: str) -> bool:
    """Whether `path` still names the file open as `fd` (not deleted, not replaced, since it was opened)."""
    try:
        st = os.stat(path, follow_symlinks=False)
    except OSError:
        return False
    own = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (own.st_dev, own.st_ino)


def _try_lock(path: str, exclusive: bool = True) -> int | None:
    """An fd of `path` locked without waiting, or None when it is locked elsewhere or gone."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.EAGAIN, errno.EACCES):
            return None
        raise
    if not _same_file(fd, path):
        os.close(fd)
        return None
    return fd


class Writer:
    """What the one process converting a key may do while it holds the key's lock (`DiskStore.writing`)."""

    def __init__(self, store: DiskStore, key: str, lock_fd: int) -> None:
        self.store = store
        self.key = key
        self._fd = lock_fd
        token = f"{os.getpid()}.{secrets.token_hex(4)}"
        self.temp = str(store.folder / f"{key}.tif.{token}.tmp")
        self._scratch = store.folder / f"{key}.{token}.scratch"

    def scratch(self) -> str:
        """A private temporary folder inside the store (a converter's TMPDIR), deleted with the lock."""
        self._scratch.mkdir(mode=0o700, exist_ok=True)
        return str(self._scratch)

    def reserve(self, nbytes: int) -> bool:
        """Make room for a file of about `nbytes`, evicting the least recently used derivatives; False
        when it cannot fit beside the ones in use (or the cap is smaller)."""
        os.ftruncate(self._fd, 0)
        if nbytes > self.store.max_bytes:
            return False
        with self.store.evicting():
            fits = self.store.evict(self.store.max_bytes - nbytes)
            if fits:
                os.pwrite(self._fd, str(nbytes).encode(), 0)
        return fits

    def commit(self) -> None:
        """The temporary file becomes the derivative (atomically: a rename in one folder)."""
        os.replace(self.temp, self.store.path(self.key))
        os.ftruncate(self._fd, 0)  # the file now counts itself: no reservation beside it

    def _clean(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.temp)
        shutil.rmtree(self._scratch, ignore_errors=True)


class DiskStore:
    def __init__(self, folder: Path, max_bytes: int) -> None:
        self.folder = Path(folder)
        self.max_bytes = max_bytes
        self.seen = 0  # bytes held when last counted (by an eviction): a figure to show without disk work

    def path(self, key: str) -> str:
        return str(self.folder / f"{key}.tif")

    # -- readers ----------------------------------------------------------------------------------
    def lease(self, key: str) -> Lease | None:
        """The complete derivative of `key`, held against eviction, or None when there is none."""
        path = self.path(key)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        fcntl.flock(fd, fcntl.LOCK_SH)  # waits only while an evictor deletes it (microseconds)
        if not _same_file(fd, path):  # deleted meanwhile
            os.close(fd)
            return None
        os.utime(fd)
        return Lease(fd, path)

    def failure(self, key: str) -> str | None:
        """Why `key`'s conversion failed, if it did."""
        try:
            return (self.folder / f"{key}.failed").read_text("utf-8", "replace").strip() or "failed"
        except FileNotFoundError:
            return None

    def fail(self, key: str, reason: str) -> None:
        """Record that `key` cannot be converted (any content, even cut short, means failed)."""
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        (self.folder / f"{key}.failed").write_text(reason, "utf-8")

    # -- the writer of a key ----------------------------------------------------------------------
    @contextlib.contextmanager
    def writing(self, key: str) -> Iterator[Writer]:
        """Hold `key`'s lock, waiting while another process holds it (it is converting that file: the
        caller then finds its result). Temporary files are deleted and the lock removed on exit."""
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        path = str(self.folder / f"{key}.lock")
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            fcntl.flock(fd, fcntl.LOCK_EX)
            if _same_file(fd, path):
                break
            os.close(fd)  # its holder removed it while we waited: lock the one there now
        writer = Writer(self, key, fd)
        try:
            yield writer
        finally:
            writer._clean()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)  # while still locked: waiters see it is gone and retry
            os.close(fd)

    # -- size -------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def evicting(self) -> Iterator[None]:
        """One evictor at a time, across processes."""
        fd = os.open(self.folder / ".evict.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def trim(self) -> None:
        """Evict down to the cap (after a derivative was added)."""
        if self.folder.is_dir():
            with self.evicting():
                self.evict(self.max_bytes)

    def usage(self) -> int:
        """Bytes the store holds: derivatives, failure markers, and what writers reserved or wrote."""
        entries, pending = self._entries()
        self.seen = pending + sum(size for _, size, _ in entries)
        return self.seen

    def evict(self, target: int) -> bool:
        """Delete least recently used derivatives and markers until the store holds at most `target`
        bytes; never a leased one. Call inside `evicting()`. Returns whether the target was reached."""
        entries, pending = self._entries()
        total = pending + sum(size for _, size, _ in entries)
        for path, size, _ in sorted(entries, key=lambda e: e[2]):
            if total <= target:
                break
            if self._delete(path):
                total -= size
        self.seen = total
        return total <= target

    def _delete(self, path: str) -> bool:
        if path.endswith(".failed"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            return True
        fd = _try_lock(path)
        if fd is None:
            return False  # leased: in use
        try:
            os.unlink(path)
        finally:
            os.close(fd)
        log.info("derivative evicted: %s", os.path.basename(path))
        return True

    def _entries(self) -> tuple[list[tuple[str, int, float]], int]:
        """(derivatives and markers as (path, bytes, last use), bytes that writers have under way);
        a dead writer's left-overs are deleted here."""
        try:
            names = os.listdir(self.folder)
        except FileNotFoundError:
            return [], 0
        entries: list[tuple[str, int, float]] = []
        writing: dict[str, int] = {}  # key -> bytes reserved or written so far
        held = {m[1] for n in names if (m := LOCK.fullmatch(n)) and self._held(m[1])}
        for name in names:
            path = str(self.folder / name)
            if (m := DONE.fullmatch(name) or FAILED.fullmatch(name)) is not None:
                with contextlib.suppress(FileNotFoundError):
                    st = os.stat(path, follow_symlinks=False)
                    size = st.st_size if name.endswith(".tif") else MARKER_BYTES
                    entries.append((path, size, st.st_mtime))
            elif (m := TEMP.fullmatch(name) or SCRATCH.fullmatch(name)) is not None:
                if m[1] not in held:
                    self._remove_dead(path)
                elif name.endswith(".tmp"):
                    with contextlib.suppress(FileNotFoundError):
                        writing[m[1]] = writing.get(m[1], 0) + os.stat(path).st_size
        pending = 0
        for key in held:
            pending += max(writing.get(key, 0), self._reserved(key))
        return entries, pending

    def _held(self, key: str) -> bool:
        """Whether a live process holds `key`'s lock; a lock file left by a dead one is removed."""
        path = str(self.folder / f"{key}.lock")
        fd = _try_lock(path)
        if fd is None:
            return os.path.exists(path)
        try:
            os.unlink(path)  # nobody holds it: its writer died (the lock went with the process)
        finally:
            os.close(fd)
        return False

    def _reserved(self, key: str) -> int:
        try:
            text = (self.folder / f"{key}.lock").read_text().strip()
        except FileNotFoundError:
            return 0
        return int(text) if text.isdigit() else 0

    @staticmethod
    def _remove_dead(path: str) -> None:
        log.warning("removing the left-over of a conversion that did not finish: %s", os.path.basename(path))
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
