"""`/health` (the full state), `/health/live` (the process answers) and `/health/ready` (the pool runs a job in
time and the image root is readable; 503 otherwise)."""

from __future__ import annotations

import asyncio
import shutil
import threading
from pathlib import Path

import httpx
import pytest

from tileserver.app import create_app
from tileserver.settings import Settings

from ..conftest import RGB_TIF


def client_of(app: object) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")  # type: ignore[arg-type]


async def test_live_ready_and_full_health(tmp_path: Path, image_root: Path) -> None:
    shutil.copy(image_root / RGB_TIF, tmp_path / "a.tif")
    app = create_app(Settings(root=tmp_path))
    async with app.router.lifespan_context(app), client_of(app) as c:
        live, ready, full = [await c.get(p) for p in ("/health/live", "/health/ready", "/health")]
        assert (live.status_code, live.json()) == (200, {"status": "ok"})
        assert (ready.status_code, ready.json()) == (200, {"status": "ok", "pool": True, "root": True})
        assert full.status_code == 200 and "tile_cache" in full.json() and "libvips" in full.json()
        assert all(r.headers["cache-control"] == "no-cache" for r in (live, ready, full))


@pytest.mark.parametrize("broken", ["pool-stopped", "pool-busy", "root-gone"])
async def test_not_ready_is_503_while_alive(tmp_path: Path, image_root: Path, broken: str) -> None:
    root = tmp_path / "root"
    root.mkdir()
    shutil.copy(image_root / RGB_TIF, root / "a.tif")
    app = create_app(Settings(root=root, threads=1, ready_timeout=0.3))
    service = app.state.service
    release = threading.Event()
    async with app.router.lifespan_context(app), client_of(app) as c:
        assert (await c.get("/health/ready")).status_code == 200
        blocker = None
        if broken == "pool-stopped":
            service.stop()
        elif broken == "pool-busy":  # the one thread holds a job that does not end in time
            blocker = asyncio.ensure_future(service.run(release.wait, 10))
            await asyncio.sleep(0.05)
        else:
            shutil.rmtree(root)
        try:
            ready = await c.get("/health/ready")
            live = await c.get("/health/live")
        finally:
            release.set()
            if blocker is not None:
                await blocker
        assert ready.status_code == 503 and ready.json()["status"] == "unavailable"
        failed = {k for k in ("pool", "root") if not ready.json()[k]}
        assert failed == ({"root"} if broken == "root-gone" else {"pool", "root"})
        assert live.status_code == 200
        if broken == "pool-busy":  # the job done, ready again
            assert (await c.get("/health/ready")).status_code == 200
