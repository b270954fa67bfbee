"""The derivative store (cache/disk.py): atomic files, leases that block eviction, LRU by last use, a
cap shared by writers, one writer per key across processes, and a dead writer's left-overs removed."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tileserver.cache.disk import DiskStore, key_for

KEYS = [key_for("image", n) for n in range(4)]


def put(store: DiskStore, key: str, size: int, used: float | None = None) -> str:
    """A complete derivative of `size` bytes, written as a converter writes one."""
    with store.writing(key) as writer:
        Path(writer.temp).write_bytes(b"x" * size)
        assert not os.path.exists(store.path(key))  # nothing under the final name before the rename
        writer.commit()
    if used is not None:
        os.utime(store.path(key), (used, used))
    return store.path(key)


def names(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()} - {".evict.lock"}


def test_key_depends_on_every_part() -> None:
    assert key_for("/a.jpg", 1.0, 10) == key_for("/a.jpg", 1.0, 10)
    assert len({key_for("/a.jpg", 1.0, 10), key_for("/a.jpg", 2.0, 10), key_for("/a.jpg", 1.0, 11),
                key_for("/b.jpg", 1.0, 10)}) == 4
    assert all(c in "0123456789abcdef" for c in key_for("../../etc/passwd")) and len(key_for("x")) == 32


def test_a_commit_leaves_only_the_file(tmp_path: Path) -> None:
    store = DiskStore(tmp_path / "d", 10_000)
    put(store, KEYS[0], 1000)
    assert names(tmp_path / "d") == {f"{KEYS[0]}.tif"}  # no temp, no lock, no scratch left
    assert store.usage() == 1000


def test_a_writer_that_gives_up_leaves_nothing(tmp_path: Path) -> None:
    store = DiskStore(tmp_path / "d", 10_000)
    with pytest.raises(RuntimeError), store.writing(KEYS[0]) as writer:
        Path(writer.temp).write_bytes(b"half")
        Path(writer.scratch(), "vips-1.v").write_bytes(b"scratch")
        raise RuntimeError("conversion failed")
    assert names(tmp_path / "d") == set()
    assert store.lease(KEYS[0]) is None


def test_eviction_is_least_recently_used_first(tmp_path: Path) -> None:
    store = DiskStore(tmp_path / "d", 10_000)
    now = time.time()
    for n, key in enumerate(KEYS[:3]):
        put(store, key, 1000, used=now - 100 + n)  # 0 oldest, 2 newest
    lease = store.lease(KEYS[0])  # using 0 makes it the most recent
    assert lease is not None
    lease.release()
    with store.evicting():
        assert store.evict(2000)
    assert names(tmp_path / "d") == {f"{KEYS[0]}.tif", f"{KEYS[2]}.tif"}


def test_a_leased_file_is_never_evicted(tmp_path: Path) -> None:
    store = DiskStore(tmp_path / "d", 10_000)
    put(store, KEYS[0], 3000, used=time.time() - 1000)
    put(store, KEYS[1], 3000)
    lease = store.lease(KEYS[0])
    assert lease is not None
    with store.evicting():
        assert not store.evict(0)  # 0 bytes cannot be reached: the leased file stays
    assert names(tmp_path / "d") == {f"{KEYS[0]}.tif"}
    assert Path(lease.path).read_bytes()[:3] == b"xxx"
    del lease  # garbage collection releases it too
    with store.evicting():
        assert store.evict(0)
    assert names(tmp_path / "d") == set()


def test_reserve_makes_room_or_refuses(tmp_path: Path) -> None:
    store = DiskStore(tmp_path / "d", 10_000)
    put(store, KEYS[0], 4000, used=time.time() - 10)
    put(store, KEYS[1], 4000)
    kept = store.lease(KEYS[1])
    with store.writing(KEYS[2]) as writer:
        assert not writer.reserve(20_000)  # more than the cap
        assert writer.reserve(5000)  # evicts 0, the least recently used; 1 is in use
        assert names(tmp_path / "d") >= {f"{KEYS[1]}.tif"} and f"{KEYS[0]}.tif" not in names(tmp_path / "d")
        assert store.usage() == 4000 + 5000  # the reservation counts until the file is there
        assert not writer.reserve(7000)  # beside the leased file
    assert kept is not None and store.usage() == 4000


def test_a_second_writer_waits_and_finds_the_result(tmp_path: Path) -> None:
    store = DiskStore(tmp_path / "d", 10_000)
    order: list[str] = []
    inside = threading.Event()

    def first() -> None:
        with store.writing(KEYS[0]) as writer:
            inside.set()
            time.sleep(0.3)
            Path(writer.temp).write_bytes(b"done")
            writer.commit()
            order.append("written")

    def second() -> None:
        inside.wait()
        with store.writing(KEYS[0]):  # the same process, another file handle: flock still excludes
            order.append("second has the lock")
            found = store.lease(KEYS[0])
            order.append("found" if found is not None else "missing")

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert order == ["written", "second has the lock", "found"]


HOLDER = """
import sys, time
from pathlib import Path
from tileserver.cache.disk import DiskStore
store = DiskStore(Path(sys.argv[1]), 10_000)
with store.writing(sys.argv[2]) as writer:
    assert writer.reserve(6000)
    Path(writer.temp).write_bytes(b"partial")
    Path(writer.scratch(), "vips-1.v").write_bytes(b"scratch")
    print("holding", flush=True)
    time.sleep(60)
"""


def test_writers_in_other_processes_count_and_their_leftovers_go(tmp_path: Path) -> None:
    folder = tmp_path / "d"
    store = DiskStore(folder, 10_000)
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder), KEYS[0]], stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == b"holding\n"
        assert store.usage() == 6000  # its reservation, not the 7 bytes written so far
        with store.writing(KEYS[1]) as writer:
            assert not writer.reserve(5000)  # 6000 + 5000 > 10000
            assert writer.reserve(4000)
        blocked = threading.Event()

        def take() -> None:
            with store.writing(KEYS[0]):
                blocked.set()

        waiter = threading.Thread(target=take)
        waiter.start()
        assert not blocked.wait(0.3)  # held by the other process
    finally:
        proc.kill()  # the writer dies: the kernel drops its lock
        proc.communicate()
    waiter.join(10)
    assert blocked.is_set()
    assert store.usage() == 0
    assert names(folder) == set()  # its temp file, scratch folder and lock were removed


def test_dead_writers_files_are_removed_and_foreign_files_kept(tmp_path: Path) -> None:
    folder = tmp_path / "d"
    folder.mkdir()
    (folder / f"{KEYS[0]}.tif.999.abcd.tmp").write_bytes(b"x" * 100)
    (folder / f"{KEYS[0]}.999.abcd.scratch").mkdir()
    (folder / f"{KEYS[0]}.lock").write_text("5000")
    for foreign in ("notes.txt", "photo.tif", f"{KEYS[1]}.tif.bak"):
        (folder / foreign).write_bytes(b"not ours")
    store = DiskStore(folder, 10_000)
    assert store.usage() == 0
    with store.evicting():
        assert store.evict(0)
    assert names(folder) == {"notes.txt", "photo.tif", f"{KEYS[1]}.tif.bak"}


def test_failure_markers_are_counted_and_evicted(tmp_path: Path) -> None:
    store = DiskStore(tmp_path / "d", 10_000)
    store.fail(KEYS[0], "unreadable")
    assert store.failure(KEYS[0]) == "unreadable" and store.failure(KEYS[1]) is None
    assert store.usage() == 4096
    with store.evicting():
        assert store.evict(0)
    assert store.failure(KEYS[0]) is None
