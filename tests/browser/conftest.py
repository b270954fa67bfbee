"""Browser fixtures: headless Debian chromium driven by Playwright, a real `tileserver serve` on a
loopback port serving a generated image and the viewer packages from `.cache/viewer-node`
(`tests/browser/setup.sh` installs both). Without chromium, Playwright or the packages the tests
skip, unless `CI` is set: then they fail."""

from __future__ import annotations

import importlib.util
import os
import shutil
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from ..document_images import write_document
from ..live import clean_env, live_tileserver

REPO = Path(__file__).resolve().parents[2]
NODE_MODULES = REPO / ".cache" / "viewer-node" / "node_modules"
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
# no WebGL: OpenSeadragon's "auto" drawer (the built-in Mirador page, which has no `?drawer=`) then draws on a
# 2D canvas, as `drawer=canvas` does elsewhere, instead of WebGL in chromium's software renderer (~4x slower)
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-3d-apis", "--disable-background-networking",
                 "--disable-component-update"]
IMAGE = "sample.tif"
SLIDE = "sample.svs"  # the same scene as an Aperio SVS (tests/slide_images.py), read through OpenSlide
JP2 = "sample.jp2"  # the same scene as a JPEG 2000 (1024-px codestream tiles, lossy, RPCL), read through OpenJPEG
DOCUMENT = "document.tif"  # tests/document_images.py: three pages of different sizes
SIZE = (3001, 2003)  # odd, not near 256·2ⁿ (where OpenSeadragon's Zoomify tiers differ; README)


def missing() -> str | None:
    if not Path(CHROMIUM).exists() and shutil.which("chromium") is None:
        return "chromium is not installed (run tests/browser/setup.sh)"
    if importlib.util.find_spec("playwright") is None:
        return "playwright is not installed in this environment (run tests/browser/setup.sh)"
    if not NODE_MODULES.is_dir():
        return f"viewer packages are not installed in {NODE_MODULES} (run tests/browser/setup.sh)"
    return None


def make_pyramid_module() -> Any:
    spec = importlib.util.spec_from_file_location("make_pyramid", REPO / "examples" / "make_pyramid.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def browser_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    reason = missing()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"browser tests must run in CI: {reason}")
        pytest.skip(reason)
    root = tmp_path_factory.mktemp("browser-images")
    mp = make_pyramid_module()
    scene = mp.sample_image(*SIZE)
    mp.make_pyramid(scene, root / IMAGE, 256, 85, "jpeg")
    write_slide(scene, root / SLIDE)
    write_jp2(scene, root / JP2)
    write_document(root / DOCUMENT)
    return root


def write_jp2(scene: Any, path: Path) -> None:
    """`scene` as a JPEG 2000 the way digital libraries write their masters: 1024-px codestream tiles, 6
    resolutions, RPCL progression, irreversible wavelet at about 20:1 (Pillow's OpenJPEG writer)."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(scene.numpy()[..., :3]).save(
        buf, "JPEG2000", tile_size=(1024, 1024), num_resolutions=6, progression="RPCL", irreversible=True,
        quality_mode="rates", quality_layers=[20])
    path.write_bytes(buf.getvalue())


def write_slide(scene: Any, path: Path, levels: int = 3) -> None:
    """`scene` as an Aperio SVS of `levels` levels (1/4 apart, RGB JPEG tiles at Q85)."""
    import numpy as np

    from ..slide_images import array_source, write_svs

    pixels = np.ascontiguousarray(scene.numpy()[..., :3], dtype=np.uint8)
    write_svs(path, scene.width, scene.height, array_source(pixels, 3), levels=levels, quality=85)


@pytest.fixture(scope="session")
def source_image(browser_root: Path) -> Any:
    import pyvips

    return pyvips.Image.new_from_file(str(browser_root / IMAGE))


@pytest.fixture(scope="session")
def live_server(browser_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    log = tmp_path_factory.mktemp("browser-server") / "server.log"
    with live_tileserver(browser_root, log, env=clean_env(TILESERVER_VIEWER_ASSETS=str(NODE_MODULES))) as base:
        yield base


@pytest.fixture(scope="session")
async def browser(browser_root: Path) -> AsyncIterator[Any]:
    """Playwright's async API: its event loop is the session loop pytest-asyncio runs (the sync API
    would start a second loop in the same thread and break the async tests that follow)."""
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        chromium = await pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            await chromium.close()


@pytest.fixture
async def page(browser: Any) -> AsyncIterator[Any]:
    context = await browser.new_context(viewport={"width": 1024, "height": 700}, accept_downloads=True)
    pg = await context.new_page()
    try:
        yield pg
    finally:
        await context.close()


@pytest.fixture(scope="session")
def timings() -> Iterator[dict[str, Any]]:
    """Per-viewer tile counts and durations, printed and written to test-artifacts/browser-summary.txt."""
    start = time.monotonic()
    rows: dict[str, Any] = {}
    yield rows
    if not rows:
        return
    ARTIFACTS.mkdir(exist_ok=True)
    lines = [f"browser suite: {time.monotonic() - start:.1f} s for {len(rows)} viewers"]
    for name, row in rows.items():
        counts = ", ".join(f"{k}: {v}" for k, v in row["levels"])
        lines.append(f"{name}: {row['total']} tiles in {row['seconds']:.1f} s, aborted {row['aborted']} | {counts}")
    text = "\n".join(lines) + "\n"
    (ARTIFACTS / "browser-summary.txt").write_text(text)
    print("\n" + text)
