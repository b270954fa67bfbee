"""Decoded JPEG 2000 units shared between processes (sources/jp2share.py): one decode per unit across
processes, the same pixels, a bounded folder, stale and slow locks, damaged and unwritable folders,
and `tileserver serve --workers 2` making the folder and removing it at exit."""

from __future__ import annotations

import contextlib
import os
import random
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import httpx
import numpy as np
import pytest

from tileserver.sources import jp2share
from tileserver.sources.jp2 import Jp2Format
from tileserver.sources.jp2share import SharedUnits, remove_folder, share_folder
from tileserver.sources.openjpeg import Decoded

from ..jp2_images import BY_NAME, TILED_RGB, UNTILED_RGB, source
from ..live import clean_env, live_tileserver


def read_all_tiles(path: str, folder: str, seed: int) -> int:
    """In a process of its own: every 256-px tile of full resolution, shuffled; the decodes it made."""
    fmt = Jp2Format(64 << 20, share=Path(folder))
    image = fmt.open(path, "x")
    lv = image.meta.levels[0]
    boxes = [(c * 256, t * 256, min(256, lv.width - c * 256), min(256, lv.height - t * 256))
             for t in range(lv.rows()) for c in range(lv.columns())]
    random.Random(seed).shuffle(boxes)
    want = source(BY_NAME[TILED_RGB])
    for x, y, w, h in boxes:
        px = np.asarray(image.read(0, (x, y, w, h)).numpy()).reshape(h, w, 3)
        assert np.array_equal(px, want[y: y + h, x: x + w])
    return fmt.units.decodes


def test_processes_decode_each_unit_once(image_root: Path, tmp_path: Path) -> None:
    with ProcessPoolExecutor(3, mp_context=get_context("spawn")) as pool:
        counts = list(pool.map(read_all_tiles, [str(image_root / TILED_RGB)] * 3, [str(tmp_path)] * 3, [1, 2, 3]))
    assert sum(counts) == 9  # 3 x 3 codestream tiles, whoever decoded them
    assert len(list(tmp_path.glob("*.u"))) == 9 and not list(tmp_path.glob("*.lock"))


def unit(n: int, value: int = 7) -> Decoded:
    return Decoded(np.full((n, n, 3), value, np.uint8), 5, 9, 8, False, (False,) * 3, "srgb", False)


def test_a_unit_comes_back_as_written(tmp_path: Path) -> None:
    a, b = SharedUnits(tmp_path, 1 << 20), SharedUnits(tmp_path, 1 << 20)
    made = a.get(("k", 1), lambda: unit(10))
    found = b.get(("k", 1), lambda: pytest.fail("decoded again"))  # type: ignore[arg-type, return-value]
    assert np.array_equal(found.pixels, made.pixels) and (found.x0, found.y0) == (5, 9)
    assert not found.pixels.flags.writeable  # mapped read-only: shared pages


def test_the_folder_stays_within_its_bound(tmp_path: Path) -> None:
    shared = SharedUnits(tmp_path, 100_000)  # room for ~13 units of 7.5 KB
    for i in range(60):
        shared.get(("k", i), lambda: unit(50))
        time.sleep(0.002)  # distinct mtimes: the oldest go first
    shared.evict()
    sizes = [p.stat().st_size for p in tmp_path.glob("*.u")]
    assert 0 < sum(sizes) <= 100_000
    assert shared.get(("k", 59), lambda: unit(50, 1)).pixels[0, 0, 0] == 7  # the newest were kept


def test_a_stale_lock_is_taken_over(tmp_path: Path) -> None:
    shared = SharedUnits(tmp_path, 1 << 20)
    shared.get(("k", 0), lambda: unit(4))
    lock = next(tmp_path.glob("*.u")).with_suffix(".lock")
    next(tmp_path.glob("*.u")).unlink()
    lock.write_bytes(b"")
    old = time.time() - 2 * jp2share.STALE
    os.utime(lock, (old, old))
    t0 = time.monotonic()
    assert shared.get(("k", 0), lambda: unit(4, 3)).pixels[0, 0, 0] == 3
    assert time.monotonic() - t0 < 1.0


def test_a_slow_owner_is_not_waited_for_forever(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(jp2share, "WAIT", 0.2)
    shared = SharedUnits(tmp_path, 1 << 20)
    shared.get(("k", 0), lambda: unit(4))
    path = next(tmp_path.glob("*.u"))
    path.unlink()
    path.with_suffix(".lock").write_bytes(b"")  # a live owner that never finishes
    assert shared.get(("k", 0), lambda: unit(4, 2)).pixels[0, 0, 0] == 2


@pytest.mark.parametrize("damage", ["truncated", "foreign"])
def test_a_damaged_unit_is_decoded_again(tmp_path: Path, damage: str) -> None:
    shared = SharedUnits(tmp_path, 1 << 20)
    shared.get(("k", 0), lambda: unit(8))
    path = next(tmp_path.glob("*.u"))
    data = path.read_bytes()
    path.write_bytes(data[:40] if damage == "truncated" else b"XXXX" + data[4:])
    assert shared.get(("k", 0), lambda: unit(8, 4)).pixels[0, 0, 0] == 4


def test_without_a_folder_every_unit_is_private(image_root: Path, tmp_path: Path) -> None:
    gone = tmp_path / "gone"
    fmt = Jp2Format(1 << 24, share=gone)  # never created: each decode stays in this process
    image = fmt.open(str(image_root / UNTILED_RGB), "x")
    px = np.asarray(image.read(0, (0, 0, 100, 50)).numpy()).reshape(50, 100, 3)
    assert np.array_equal(px, source(BY_NAME[UNTILED_RGB])[:50, :100])


def test_share_folder_is_private_and_clears_dead_servers(tmp_path: Path) -> None:
    dead = tmp_path / f"tileserver-jp2-{os.getuid()}-999999999"
    dead.mkdir()
    (dead / "x.u").write_bytes(b"old")
    folder = share_folder(tmp_path)
    assert folder.name == f"tileserver-jp2-{os.getuid()}-{os.getpid()}"
    assert folder.stat().st_mode & 0o777 == 0o700 and not dead.exists()
    remove_folder(folder)
    assert not folder.exists()


def server_pid(port: str) -> int:
    """The `tileserver serve ... --port PORT` process (the workers' parent)."""
    for entry in Path("/proc").iterdir():
        with contextlib.suppress(OSError):
            args = (entry / "cmdline").read_bytes().split(b"\0")
            if entry.name.isdigit() and b"serve" in args and args[args.index(b"--port") + 1] == port.encode():
                return int(entry.name)
    raise AssertionError("no server process")


@pytest.mark.server
def test_serve_with_workers_shares_and_cleans_up(image_root: Path, tmp_path: Path) -> None:
    shm = Path("/dev/shm") if os.access("/dev/shm", os.W_OK) else Path(os.environ.get("TMPDIR", "/tmp"))
    with live_tileserver(image_root, tmp_path / "log", workers=2, env=clean_env()) as base:
        folder = shm / f"tileserver-jp2-{os.getuid()}-{server_pid(base.rsplit(':', 1)[1])}"
        for n in range(6):
            assert httpx.get(f"{base}/iip?FIF={TILED_RGB}&JTL=2,{n}", timeout=30).status_code == 200
        assert folder.is_dir() and list(folder.glob("*.u"))
    assert not folder.exists()
