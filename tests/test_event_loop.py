"""The event loop never blocks: every pyvips and file-system entry point runs in the service's thread
pool, but for the reads that never wait (a stored tile from the page cache, `vfs.NowReader`), which the loop does
itself. Checked two ways: each blocking entry point records the thread it ran on (none may be the loop's, a stored
tile read on the loop only without waiting), and asyncio's debug mode reports any loop step that took longer than a
generous bound."""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tileserver import core
from tileserver.app import create_app
from tileserver.settings import Settings
from tileserver.sources.local import Source
from tileserver.sources.passthrough import StoredTiles
from tileserver.sources.pyramid import PyramidReader

from .conftest import GREY16_TIF, PLAIN_JPG, RGB_TIF, STRIPED_TIF

BLOCKING: list[tuple[Any, str]] = [
    (PyramidReader, "info"), (PyramidReader, "read"), (PyramidReader, "level_image"),
    (StoredTiles, "read"), (Source, "resolve"), (Source, "listing"), (core, "render"),
    (core, "available_formats"),
]
URLS = [f"/iip?FIF={RGB_TIF}&{q}" for q in ("OBJ=IIP,1.0&OBJ=Max-size", "JTL=2,5", "JTL=2,11", "JTL=2,3",
                                          "QLT=60&JTL=2,6", "WID=900&CVT=jpeg", "WID=300&ROT=45&CVT=png", "TIL=1,0-3")]
URLS += [f"/iip?FIF={GREY16_TIF}&CMP=jet&JTL=2,1", f"/iip?FIF={STRIPED_TIF}&WID=800&CVT=webp",
         f"/iip?FIF={PLAIN_JPG}&JTL=1,0", "/", "/health"]


def recording(fn: Callable[..., Any], seen: list[tuple[str, int]]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        now = "(now)" if kwargs.get("now") else ""  # StoredTiles.read(..., now=True): without waiting
        seen.append((fn.__qualname__ + now, threading.get_ident()))
        return fn(*args, **kwargs)

    return wrapper


async def test_blocking_work_runs_off_the_loop(
    image_root: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[tuple[str, int]] = []
    for owner, name in BLOCKING:
        monkeypatch.setattr(owner, name, recording(getattr(owner, name), seen))
    loop = asyncio.get_running_loop()
    app = create_app(Settings(root=image_root, tile_cache_mb=0, decoded_cache_mb=0))
    app.state.service.start()
    debug, slow = loop.get_debug(), loop.slow_callback_duration
    loop.set_debug(True)
    loop.slow_callback_duration = 0.25
    await asyncio.sleep(0)  # debug timing applies from the next loop step on
    try:
        with caplog.at_level(logging.WARNING, logger="asyncio"):
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
                for url in URLS:
                    assert (await c.get(url)).status_code == 200, url
    finally:
        loop.set_debug(debug)
        loop.slow_callback_duration = slow
        app.state.service.stop()
    loop_thread = threading.get_ident()
    assert {name for name, _ in seen} >= {"PyramidReader.info", "PyramidReader.read", "Source.resolve", "render"}
    on_loop = [name for name, thread in seen if thread == loop_thread]
    assert [name for name in on_loop if name != "StoredTiles.read(now)"] == []
    assert "StoredTiles.read(now)" in on_loop  # the stored tiles in the page cache took no thread
    assert [r.getMessage() for r in caplog.records if "took" in r.getMessage()] == []
