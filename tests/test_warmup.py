"""A worker's warm-up at start (warmup.py): every URL it asks is answered, it leaves the server's own caches as
they were, it reads no environment, and a failure in it never stops the server."""

from __future__ import annotations

import logging
from pathlib import Path

import httpx
import pytest

from tileserver import warmup
from tileserver.app import create_app
from tileserver.settings import Settings

PROTOCOL_SETS = [("iip",), ("iiif",), ("deepzoom",), ("zoomify",), ("iip", "iiif", "deepzoom", "zoomify")]


@pytest.mark.parametrize("protocols", PROTOCOL_SETS, ids="+".join)
async def test_every_warm_up_url_is_answered(tmp_path: Path, protocols: tuple[str, ...]) -> None:
    settings = Settings(root=tmp_path / "none", protocols=protocols, warm_up=False)
    warmup.write_image(tmp_path / warmup.IMAGE)
    app = create_app(warmup.warm_settings(settings, tmp_path))
    app.state.service.start()
    try:
        urls = list(warmup.urls(settings))
        assert urls
        assert {u.split("/")[1].split("?")[0] for u in urls} <= {"iip", "iiif", "deepzoom", "zoomify"}
        for url in urls:
            assert await warmup.get(app, url) == 200, url
    finally:
        app.state.service.stop()


async def test_the_warm_up_leaves_the_server_as_it_was(image_root: Path, caplog: pytest.LogCaptureFixture) -> None:
    app = create_app(Settings(root=image_root, warm_up=True))
    caplog.set_level(logging.INFO, "tileserver.warmup")
    async with app.router.lifespan_context(app):
        service = app.state.service
        assert len(service.tiles) == 0 and len(service.metadata) == 0 and len(service.recorded) == 0
        assert service._formats is not None  # the output formats were probed (the first IIIF request's cost)
        assert any("warmed up in" in r.getMessage() for r in caplog.records)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            r = await client.get("/iiif/3/warm.tif/info.json")
            assert r.status_code == 404  # the warm-up's image was never one of the server's


async def test_a_failed_warm_up_is_logged_and_the_server_serves(image_root: Path, monkeypatch: pytest.MonkeyPatch,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    def broken(path: Path) -> None:
        raise OSError("disc full")

    monkeypatch.setattr(warmup, "write_image", broken)
    app = create_app(Settings(root=image_root, warm_up=True))
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")
    async with app.router.lifespan_context(app), client:
        assert (await client.get("/iip?FIF=rgb-3lvl-1003x701-tiled-jpeg.tif&JTL=2,0")).status_code == 200
    assert any("warm-up failed" in r.getMessage() for r in caplog.records)


def test_the_warm_app_reads_no_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TILESERVER_CACHE_URL", "redis://127.0.0.1:1")
    monkeypatch.setenv("TILESERVER_ACCESS_LOG", "json")
    monkeypatch.setenv("TILESERVER_METRICS", "1")
    settings = Settings(root=tmp_path, jpeg_quality=61, protocols=("iiif",), iiif_version=2)
    warm = warmup.warm_settings(settings, tmp_path / "warm")
    assert settings.cache_url is not None  # the server's own settings did read it
    assert warm.cache_url is None and warm.access_log == "off" and warm.metrics is False and warm.warm_up is False
    assert warm.access_policy is None and warm.derive_dir is None and warm.tile_cache_mb == 0
    assert (warm.jpeg_quality, warm.protocols, warm.iiif_version) == (61, ("iiif",), 2)  # what shapes a response
    assert warm.root == tmp_path / "warm"


def test_tests_run_without_warm_up() -> None:
    """conftest.py turns it off for the apps and servers of the tests; the default is on."""
    assert Settings().warm_up is False
    assert Settings.model_fields["warm_up"].default is True


async def test_metrics_are_recorded_after_the_warm_up(image_root: Path) -> None:
    """Metrics are process-wide: the warm app (no metrics) must not leave them off for the server."""
    from tileserver import metrics

    app = create_app(Settings(root=image_root, warm_up=True, metrics=True))
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")
    async with app.router.lifespan_context(app), client:
        assert metrics._state.families is not None
        assert (await client.get("/iip?FIF=rgb-3lvl-1003x701-tiled-jpeg.tif&JTL=2,1")).status_code == 200
        text = (await client.get("/metrics")).text
    counted = [line for line in text.splitlines() if line.startswith("tileserver_tiles_rendered_total")]
    assert counted and sum(float(line.rsplit(" ", 1)[1]) for line in counted) >= 1, counted
