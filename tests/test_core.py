"""The async core: metadata and tile caches, mtime invalidation, ETags."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest

from tileserver.core import TileService
from tileserver.errors import NotFound
from tileserver.models import Box, ImageMeta, OutputFormat, Tile, TileRequest
from tileserver.settings import Settings

from .conftest import RGB_TIF, STRIPED_TIF, decode


@pytest.fixture
def service(tmp_path: Path, image_root: Path) -> TileService:
    shutil.copy(image_root / RGB_TIF, tmp_path / "a.tif")
    svc = TileService(Settings(root=tmp_path, stat_interval=0))
    svc.start()
    return svc


async def test_tile_cache_hits(service: TileService) -> None:
    req = TileRequest(ident="a.tif", tile=Tile(1, 0, 0), encoder_quality=60)  # re-encoded
    first = await service.render(req)
    second = await service.render(req)
    third = await service.render(req)
    assert second.body is first.body and second is third  # the cached copy, with its body shared
    assert (first.source, second.source, second.timing) == ("recode", "cache", "cache;desc=local")
    assert service.tiles.hits == 2 and service.tiles.misses == 1
    assert first.etag and decode(first.body).width == 256


async def test_stored_tiles_are_remembered_by_where_they_are(service: TileService) -> None:
    """A stored tile passed through is remembered by where its bytes are, not copied into the tile cache (the page
    cache holds them): a repeat reads it again from there, without waiting. One read in the pool (not in the page
    cache yet, or read there) is kept in the tile cache as a render is."""
    req = TileRequest(ident="a.tif", tile=Tile(1, 0, 0))
    await service.info("a.tif")
    first = await service.render(req)
    again = await service.render(req)
    assert first.source == "passthrough" and (again.source, again.timing) == ("cache", "cache;desc=local")
    assert again.body == first.body and again.etag == first.etag and again.media_type == first.media_type
    assert len(service.tiles) == 0 and len(service.located) == 1 and service.located.hits == 1
    assert service.cache_stats()["stored_tile"] == {"hits": 1, "misses": 1, "entries": 1}  # the first: not yet
    assert service.tiles.misses == 2  # both looked in the tile cache first


async def test_region_and_tile_requests_decode_alike(service: TileService) -> None:
    tile = await service.render(TileRequest(ident="a.tif", tile=Tile(1, 1, 0), fmt=OutputFormat.PNG))
    region = await service.render(TileRequest(ident="a.tif", region=Box(512, 0, 490, 512), size=(245, 256),
                                              fmt=OutputFormat.PNG))
    assert tile.body == region.body


async def test_changed_file_is_reloaded(service: TileService, tmp_path: Path, image_root: Path) -> None:
    meta = await service.info("a.tif")
    req = TileRequest(ident="a.tif", tile=Tile(0, 0, 0))
    before = await service.render(req)
    shutil.copy(image_root / "rgb-3lvl-1000x700-tiled-jpeg.tif", tmp_path / "a.tif")
    os.utime(tmp_path / "a.tif", (meta.mtime + 10, meta.mtime + 10))
    assert (await service.info("a.tif")).width == 1000
    after = await service.render(req)
    assert after.etag != before.etag


async def test_concurrent_requests_load_metadata_once(service: TileService) -> None:
    """A burst of requests for an image not yet seen (a worker's first second) waits for one load."""
    loads = []
    real = service.reader.info

    def counted(path: str, ident: str) -> ImageMeta:
        loads.append(ident)
        return real(path, ident)

    service.reader.info = counted  # type: ignore[method-assign]
    metas = await asyncio.gather(*(service.info("a.tif") for _ in range(16)))
    assert loads == ["a.tif"] and all(m is metas[0] for m in metas)
    errors = await asyncio.gather(*(service.info("missing.tif") for _ in range(8)), return_exceptions=True)
    assert all(isinstance(e, NotFound) for e in errors) and not service._loading


async def test_a_cancelled_waiter_does_not_cancel_the_load(service: TileService) -> None:
    first = asyncio.ensure_future(service.info("a.tif"))
    second = asyncio.ensure_future(service.info("a.tif"))
    await asyncio.sleep(0)
    first.cancel()
    assert (await second).width == 1003


async def test_deleted_file_is_not_found(service: TileService, tmp_path: Path) -> None:
    await service.info("a.tif")
    (tmp_path / "a.tif").unlink()
    with pytest.raises(NotFound):
        await service.info("a.tif")


async def test_metadata_cache_is_bounded(tmp_path: Path, image_root: Path) -> None:
    for i in range(3):
        shutil.copy(image_root / RGB_TIF, tmp_path / f"{i}.tif")
    svc = TileService(Settings(root=tmp_path, metadata_cache_size=2))
    svc.start()
    for i in range(3):
        await svc.info(f"{i}.tif")
    assert len(svc.metadata) == 2


async def test_remembered_translations_expire_with_the_file(
    service: TileService, tmp_path: Path, image_root: Path
) -> None:
    meta = await service.info("a.tif")
    req = TileRequest(ident="a.tif", tile=Tile(0, 0, 0))
    service.remember("k", meta, req, {"X": "1"})
    hit = await service.recall("k")
    assert hit is not None and hit.request == req and dict(hit.headers) == {"X": "1"}
    assert await service.recall("other") is None
    shutil.copy(image_root / "rgb-3lvl-1000x700-tiled-jpeg.tif", tmp_path / "a.tif")
    os.utime(tmp_path / "a.tif", (meta.mtime + 10, meta.mtime + 10))
    assert await service.recall("k") is None


async def test_remembered_documents_expire_with_the_file(
    service: TileService, tmp_path: Path, image_root: Path
) -> None:
    meta = await service.info("a.tif")
    doc = service.remember_document("d", meta, b"{}", "application/json", {"Vary": "Accept"})
    assert doc.etag and await service.recall_document("d") is doc
    shutil.copy(image_root / "rgb-3lvl-1000x700-tiled-jpeg.tif", tmp_path / "a.tif")
    os.utime(tmp_path / "a.tif", (meta.mtime + 10, meta.mtime + 10))
    assert await service.recall_document("d") is None


async def test_a_due_file_check_runs_while_the_entry_answers(tmp_path: Path, image_root: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Past `stat_interval` (but within twice it) the file's check runs in the pool while requests are answered from
    the entry as it was: none waits for it. The file's change is seen once the check is done; past twice the
    interval requests wait for the check again; a check that fails drops the entry."""
    shutil.copy(image_root / RGB_TIF, tmp_path / "a.tif")
    svc = TileService(Settings(root=tmp_path, stat_interval=30))
    svc.start()
    before = await svc.info("a.tif")
    gate = threading.Event()
    load = svc._load

    def held(*args: object) -> object:
        assert gate.wait(30)
        return load(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(svc, "_load", held)

    def checked_ago(seconds: float) -> None:
        entry = svc.metadata.peek("a.tif")
        assert entry is not None
        svc.metadata.put("a.tif", replace(entry, checked=time.monotonic() - seconds))

    checked_ago(40)  # due: between one and two intervals
    shutil.copy(image_root / STRIPED_TIF, tmp_path / "a.tif")  # another image under the name
    assert await asyncio.wait_for(svc.info("a.tif"), 5) is before  # answered now, from the entry
    assert await asyncio.wait_for(svc.info("a.tif"), 5) is before  # the check in flight: one, not one per request
    assert set(svc._loading) == {"a.tif"}
    gate.set()
    await svc._loading["a.tif"]
    after = await svc.info("a.tif")
    assert (after.width, after.height) == (900, 517) and (before.width, before.height) == (1003, 701)

    gate.clear()
    checked_ago(61)  # past twice the interval: the request waits for the check
    waiting = asyncio.ensure_future(svc.info("a.tif"))
    await asyncio.sleep(0.2)
    assert not waiting.done()
    gate.set()
    assert (await waiting) is not before

    checked_ago(40)
    (tmp_path / "a.tif").unlink()
    assert (await svc.info("a.tif")).width == 900  # the last answer from the entry as it was...
    with contextlib.suppress(NotFound):
        await svc._loading["a.tif"]
    assert svc.metadata.peek("a.tif") is None  # ...whose check found no file: dropped
    with pytest.raises(NotFound):
        await svc.info("a.tif")
