"""Stored tiles read on the event loop without waiting (`vfs.NowReader`: preadv with RWF_NOWAIT), and the core's
use of it: no thread hop for a stored tile in the page cache, the pool for everything else, the same answer."""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
import shutil
import time
from pathlib import Path
from typing import Any

import pytest
import tifffile

from tileserver.admission import Admission
from tileserver.core import TileService
from tileserver.imaging import turbojpeg
from tileserver.imaging.render import stored_now
from tileserver.models import Box, OutputFormat, Overlays, Redaction, Tile, TileRequest
from tileserver.settings import Settings
from tileserver.sources import vfs

from ..conftest import RGB_TIF, decode, max_diff

pytestmark = pytest.mark.skipif(not hasattr(os, "RWF_NOWAIT"), reason="no RWF_NOWAIT on this platform")


@pytest.fixture
def root(image_root: Path, tmp_path: Path) -> Path:
    shutil.copy(image_root / RGB_TIF, tmp_path / "rgb.tif")
    return tmp_path


@pytest.fixture
def pool_runs(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the functions every TileService ran in its pools from now on."""
    ran: list[str] = []
    real = Admission.run

    async def counted(self: Admission, lane: Any, fn: Any, *args: Any, **kw: Any) -> Any:
        ran.append(getattr(fn, "__name__", repr(fn)))
        return await real(self, lane, fn, *args, **kw)

    monkeypatch.setattr(Admission, "run", counted)
    return ran


def service(root: Path, **overrides: Any) -> TileService:
    svc = TileService(Settings(root=root, tile_cache_mb=0, **overrides))
    svc.start()
    return svc


TILES = [Tile(0, c, r) for r in range(2) for c in range(3)] + [Tile(1, 0, 0)]  # the interior tiles


async def test_stored_tiles_in_the_page_cache_take_no_thread(root: Path, pool_runs: list[str]) -> None:
    svc = service(root)
    await svc.info("rgb.tif")  # opened in the pool, its directories parsed there too
    pool_runs.clear()
    first = await svc.render(TileRequest("rgb.tif", tile=Tile(0, 0, 0)))  # the very first tile, on the loop
    for tile in TILES:
        out = await svc.render(TileRequest("rgb.tif", tile=tile))
        assert out.source == "passthrough" and out.timing.startswith("passthrough;dur=")
    # IIIF, DeepZoom and Zoomify ask for a stored tile as its full-resolution region
    region = await svc.render(TileRequest("rgb.tif", region=Box(0, 0, 512, 512), size=(256, 256)))
    assert pool_runs == []
    assert region.body == (await svc.render(TileRequest("rgb.tif", tile=Tile(1, 0, 0)))).body
    assert first.source == "passthrough"


async def test_the_answer_is_the_pools(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Byte for byte, with the same ETag and media type, whichever way it was read."""
    now = service(root)
    await now.render(TileRequest("rgb.tif", tile=Tile(0, 0, 0)))
    fast = [await now.render(TileRequest("rgb.tif", tile=t)) for t in TILES]
    monkeypatch.setattr(vfs, "_nowait", False)  # as on a kernel without the flag: every read in the pool
    slow = [await service(root).render(TileRequest("rgb.tif", tile=t)) for t in TILES]
    for a, b in zip(fast, slow, strict=True):
        assert (a.body, a.etag, a.media_type, a.width, a.height) == (b.body, b.etag, b.media_type, b.width, b.height)


def resident_pages(fd: int, offset: int, length: int) -> int:
    """How many pages of [offset, offset + length) the page cache holds, asked with mincore(2), which reads nothing
    (a read with RWF_NOWAIT that misses starts the kernel's readahead: it would fill what it probes)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p]
    first = offset - offset % mmap.PAGESIZE
    span = offset + length - first
    addr = libc.mmap(None, span, mmap.PROT_READ, mmap.MAP_SHARED, fd, first)
    assert addr not in (None, ctypes.c_void_p(-1).value), os.strerror(ctypes.get_errno())
    try:
        vec = ctypes.create_string_buffer(-(-span // mmap.PAGESIZE))
        assert libc.mincore(addr, span, vec) == 0, os.strerror(ctypes.get_errno())
        return sum(b & 1 for b in vec.raw)
    finally:
        libc.munmap(addr, span)


def dropped_from_the_page_cache(path: Path, offset: int, length: int) -> bool:
    """Drops the file's clean pages until none of [offset, offset + length) is left (a page being read or written
    back is kept): False if some never go (tmpfs keeps every page)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        for _ in range(20):
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            if resident_pages(fd, offset, length) == 0:
                return True
            time.sleep(0.05)
        return False
    finally:
        os.close(fd)


async def test_a_tile_not_in_the_page_cache_is_read_in_the_pool(root: Path, pool_runs: list[str],
                                                               image_root: Path) -> None:
    svc = service(root, stat_interval=3600)  # no re-check of the file in the pool, however long the drop takes
    await svc.render(TileRequest("rgb.tif", tile=Tile(0, 0, 0)))
    with tifffile.TiffFile(root / "rgb.tif") as tf:  # where tile (0, 2, 1) is stored: the full-resolution page
        page = tf.pages.first
        index = 1 * -(-page.imagewidth // page.tilewidth) + 2
        offset, length = page.dataoffsets[index], page.databytecounts[index]
    if not dropped_from_the_page_cache(root / "rgb.tif", offset, length):
        pytest.skip("this file system keeps the file's pages (tmpfs)")
    pool_runs.clear()
    out = await svc.render(TileRequest("rgb.tif", tile=Tile(0, 2, 1)))
    assert pool_runs == ["render"]  # the loop did not wait for the disc: the pool did
    expected = await service(image_root).render(TileRequest(RGB_TIF, tile=Tile(0, 2, 1)))
    assert out.body == expected.body


def test_now_reader_reads_only_what_the_page_cache_holds(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = str(root / "rgb.tif")
    version = (os.stat(path).st_mtime, os.stat(path).st_size, "")
    data = Path(path).read_bytes()
    r = vfs.NowReader(path, version)
    assert r.pread(1000, 100) == data[100:1100]
    with pytest.raises(vfs.WouldBlock):
        r.pread(1000, len(data) - 10)  # a short read (here past the end): the pool's read says what it is

    def blocking(*_: object) -> int:
        raise BlockingIOError(errno.EAGAIN, "would block")

    monkeypatch.setattr(os, "preadv", blocking)
    with pytest.raises(vfs.WouldBlock):
        r.pread(1000, 100)


def test_an_unsupported_flag_turns_reads_without_waiting_off(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refused(*_: object) -> int:
        raise OSError(errno.EOPNOTSUPP, "not supported")

    monkeypatch.setattr(vfs, "_nowait", True)
    monkeypatch.setattr(os, "preadv", refused)
    path = str(root / "rgb.tif")
    with pytest.raises(vfs.WouldBlock):
        vfs.NowReader(path, (0.0, 0, "a")).pread(10, 0)
    assert vfs._nowait is False
    with pytest.raises(vfs.WouldBlock):
        vfs.NowReader(path, (0.0, 0, "b"))  # from then on, at once


def test_other_read_errors_are_raised(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def failing(*_: object) -> int:
        raise OSError(errno.EIO, "I/O error")

    r = vfs.NowReader(str(root / "rgb.tif"), (1.0, 1, ""))
    monkeypatch.setattr(os, "preadv", failing)
    with pytest.raises(OSError, match="I/O error"):
        r.pread(10, 0)


def test_remote_objects_and_missing_files_are_left_to_the_pool(root: Path) -> None:
    with pytest.raises(vfs.WouldBlock):
        vfs.NowReader("s3://bucket/a.tif", (0.0, 0, "etag"))
    with pytest.raises(vfs.WouldBlock):
        vfs.NowReader(str(root / "missing.tif"), (0.0, 0, ""))


def test_a_replaced_file_is_opened_anew(tmp_path: Path) -> None:
    path = tmp_path / "a.bin"
    path.write_bytes(b"A" * 100)
    old = vfs.NowReader(str(path), (1.0, 100, ""))
    assert old.pread(4, 0) == b"AAAA"
    fresh = tmp_path / "b.bin"
    fresh.write_bytes(b"B" * 100)
    fresh.replace(path)  # a new file under the old name: a new version (mtime)
    assert vfs.NowReader(str(path), (1.0, 100, "")).pread(4, 0) == b"AAAA"  # the old version: the old inode
    assert vfs.NowReader(str(path), (2.0, 100, "")).pread(4, 0) == b"BBBB"
    vfs.close_now_files()
    assert vfs.NowReader(str(path), (1.0, 100, "")).pread(4, 0) == b"BBBB"  # closed: the name opened again


def test_open_files_are_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(vfs, "NOWAIT_FILES", 3)
    vfs.close_now_files()
    path = tmp_path / "a.bin"
    path.write_bytes(b"x" * 10)
    before = len(os.listdir("/proc/self/fd"))
    for i in range(10):
        vfs.NowReader(str(path), (float(i), 10, "")).pread(1, 0)
    assert len(os.listdir("/proc/self/fd")) <= before + 3
    vfs.close_now_files()
    assert len(os.listdir("/proc/self/fd")) <= before


async def test_directories_not_parsed_yet_are_parsed_in_the_pool(root: Path) -> None:
    svc = service(root)
    await svc.info("rgb.tif")
    entry = await svc._entry("rgb.tif")
    assert entry.image is not None
    svc.reader._stored._dirs.clear()  # as for a file whose directories were not read when it was opened
    with pytest.raises(vfs.WouldBlock):
        stored_now(entry.image, TileRequest("rgb.tif", tile=Tile(0, 0, 0)), svc.settings)
    edge = TileRequest("rgb.tif", tile=Tile(0, 3, 2))
    if turbojpeg.library() is None:
        assert stored_now(entry.image, edge, svc.settings) is None  # decoded and re-encoded in the pool
    else:
        with pytest.raises(vfs.WouldBlock):  # cropped from its stored tile, which waits for the directories too
            stored_now(entry.image, edge, svc.settings)
    out = await svc.render(TileRequest("rgb.tif", tile=Tile(0, 0, 0)))
    found = stored_now(entry.image, TileRequest("rgb.tif", tile=Tile(0, 0, 0)), svc.settings)
    assert found is not None
    now, at = found
    assert now.body == out.body and at is not None and at.read_now() == out.body
    assert max_diff(decode(now.body), decode(out.body)) == 0
    if turbojpeg.library() is not None:  # a crop is made again from the page cache, not remembered by where it is
        cropped = stored_now(entry.image, edge, svc.settings)
        assert cropped is not None and cropped[0].source == "crop" and cropped[1] is None


async def test_overlays_never_take_the_loop(root: Path, pool_runs: list[str]) -> None:
    svc = service(root)
    await svc.render(TileRequest("rgb.tif", tile=Tile(0, 0, 0)))
    entry = await svc._entry("rgb.tif")
    req = TileRequest("rgb.tif", tile=Tile(0, 1, 0), overlays=Overlays(redactions=(Redaction(0, 0, 10, 10),)))
    assert entry.image is not None and stored_now(entry.image, req, svc.settings) is None
    pool_runs.clear()
    await svc.render(req)
    assert pool_runs == ["render"]


@pytest.mark.parametrize("now", [True, False], ids=["on-the-loop", "in-the-pool"])
async def test_a_hostile_byte_count_is_never_read(root: Path, monkeypatch: pytest.MonkeyPatch, now: bool) -> None:
    """A tile whose directory claims 4 GB (a damaged or hostile file) is not allocated, nor passed through."""
    from tileserver.sources.tiff import TiffFile

    svc = service(root)
    await svc.info("rgb.tif")
    entry = await svc._entry("rgb.tif")
    assert entry.image is not None
    monkeypatch.setattr(TiffFile, "tile_location", lambda self, pread, ifd, index: (0, 4 << 30))
    reads: list[int] = []
    for reader in (vfs.NowReader, vfs.Reader):
        real = reader.pread
        monkeypatch.setattr(reader, "pread", lambda self, n, o, real=real: reads.append(n) or real(self, n, o))
    assert entry.image.stored_tile(0, 0, 0, OutputFormat.JPEG, 0, now) is None
    assert reads == []
