"""Every supported viewer against a live `tileserver serve`, in headless chromium, on a pyramid TIFF, on
the same scene as a whole-slide image (an Aperio SVS read through OpenSlide) and as a JPEG 2000 (read
through OpenJPEG): the page loads, is zoomed in with the mouse wheel until full-resolution tiles arrive,
and panned by dragging. Every
request is recorded: none may fail, tiles of at least three levels must arrive, and the drawn image
must match the source's colour statistics (home view) and not be blank (zoomed in). Screenshots go
to test-artifacts/, tile counts per level to test-artifacts/browser-summary.txt."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from .conftest import ARTIFACTS, IMAGE, JP2, REPO, SIZE, SLIDE
from .harness import TileLog, blank_share, compare_with_source, deepest, rgb

EXAMPLES = REPO / "examples"
QUIET = 0.5  # seconds without an open request
# viewer controls drawn over the image are hidden for the colour comparison (they stay clickable)
HIDE_CONTROLS = ".leaflet-control-container, .ol-overlaycontainer-stopevent, .navigator {visibility: hidden}"
# name -> (page: "example:<file>?<query>" or a server path, protocol, element to zoom/screenshot)
VIEWERS = {
    "osd-dzi": ("example:openseadragon-dzi.html?", "dzi", "#viewer"),
    "osd-iiif3": ("example:openseadragon-iiif.html?version=3", "iiif", "#viewer"),
    "osd-iiif2": ("example:openseadragon-iiif.html?version=2", "iiif", "#viewer"),
    "osd-zoomify": ("example:openseadragon-zoomify.html?", "zoomify", "#viewer"),
    "mirador": ("example:mirador.html?", "iiif", ".openseadragon-container"),
    "leaflet-iiif": ("example:leaflet-iiif.html?", "iiif", "#map"),
    "openlayers-zoomify": ("example:openlayers-zoomify.html?", "zoomify", "#map"),
    "builtin-viewer-dzi": ("/viewer/{image}?source=dzi", "dzi", "#viewer"),
    "builtin-viewer-iiif3": ("/viewer/{image}?source=iiif3", "iiif", "#viewer"),
    "builtin-viewer-zoomify": ("/viewer/{image}?source=zoomify", "zoomify", "#viewer"),
    "builtin-mirador": ("/mirador/{image}", "iiif", ".openseadragon-container"),
}
IMAGES = {"tiff": IMAGE, "slide": SLIDE, "jp2": JP2}  # the same scene, the same size


def page_url(spec: str, server: str, image: str = IMAGE) -> str:
    if spec.startswith("example:"):
        name, _, query = spec.removeprefix("example:").partition("?")
        extra = "&".join(q for q in (query, f"server={server}", f"image={image}", "assets=local", "drawer=canvas") if q)
        return f"{(EXAMPLES / name).as_uri()}?{extra}"
    spec = spec.format(image=image)
    return f"{server}{spec}{'&' if '?' in spec else '?'}drawer=canvas"


async def wait_quiet(page: Any, log: TileLog, timeout: float = 30.0) -> None:
    """Until no request has been open for QUIET seconds (events are delivered while waiting)."""
    deadline = time.monotonic() + timeout
    quiet_since = time.monotonic()
    while time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        if log.pending:
            quiet_since = time.monotonic()
        elif time.monotonic() - quiet_since >= QUIET:
            return
    raise AssertionError(f"requests still open after {timeout} s: {[r.url for r in log.pending][:5]}")


async def zoom_out(page: Any, log: TileLog, box: dict[str, float]) -> None:
    """Two wheel steps out from the initial view, so that the levels below the initial one are
    fetched too (OpenLayers starts two levels below full resolution)."""
    await page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    for _ in range(2):
        await page.mouse.wheel(0, 300)
        await page.wait_for_timeout(250)
        await wait_quiet(page, log)


async def zoom_to_full_resolution(page: Any, log: TileLog, box: dict[str, float], target: str) -> int:
    """Wheel steps in until full-resolution tiles for the view arrive (a few may come earlier:
    OpenLayers fetches one at load), then one more step."""
    before = log.levels[target]
    await page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    for step in range(1, 41):
        await page.mouse.wheel(0, -300)
        await page.wait_for_timeout(250)
        await wait_quiet(page, log)
        if log.levels[target] >= before + 4:
            # one more step: the viewer settles on the deepest level rather than blending into it
            await page.mouse.wheel(0, -300)
            await wait_quiet(page, log)
            return step
    raise AssertionError(f"no {target} tiles after 40 wheel steps: {dict(log.levels)}")


async def pan(page: Any, log: TileLog, box: dict[str, float]) -> None:
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    await page.mouse.move(x, y)
    await page.mouse.down()
    await page.mouse.move(x - 350, y - 250, steps=12)
    await page.mouse.up()
    await page.wait_for_timeout(300)
    await wait_quiet(page, log)


def check_home_view(shot_png: bytes, source: Any, name: str) -> None:
    stats = compare_with_source(rgb(shot_png), source)
    assert 0.9 < stats["aspect"] < 1.1, f"{name}: drawn area {stats['drawn']} has the wrong shape"
    for band, ((m1, s1), (m2, s2)) in enumerate(zip(stats["shot"], stats["source"], strict=True)):
        assert abs(m1 - m2) < 12, f"{name}: band {band} mean {m1:.1f} vs source {m2:.1f}"
        assert abs(s1 - s2) < 0.25 * s2 + 5, f"{name}: band {band} deviation {s1:.1f} vs source {s2:.1f}"


@pytest.mark.parametrize("kind", list(IMAGES))
@pytest.mark.parametrize("viewer", list(VIEWERS))
async def test_viewer_zooms_without_failed_tiles(viewer: str, kind: str, page: Any, live_server: str,
                                                 source_image: Any, timings: dict[str, Any]) -> None:
    spec, protocol, selector = VIEWERS[viewer]
    name = viewer if kind == "tiff" else f"{viewer}-{kind}"
    log = TileLog(*SIZE)
    page.on("request", log.started)
    page.on("response", log.responded)
    page.on("requestfinished", log.finished)
    page.on("requestfailed", log.failed)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    start = time.monotonic()
    await page.goto(page_url(spec, live_server, IMAGES[kind]))
    element = await page.wait_for_selector(selector, state="visible", timeout=30_000)
    await page.wait_for_timeout(250)
    await wait_quiet(page, log)
    assert sum(log.levels.values()) > 0, f"{name}: no tiles requested"
    ARTIFACTS.mkdir(exist_ok=True)
    await page.add_style_tag(content=HIDE_CONTROLS)
    home = await element.screenshot(path=str(ARTIFACTS / f"{name}-home.png"))
    check_home_view(home, source_image, name)
    box = await element.bounding_box()
    await zoom_out(page, log, box)

    target = deepest(protocol, *SIZE)
    await zoom_to_full_resolution(page, log, box, target)
    await pan(page, log, box)
    deep = await element.screenshot(path=str(ARTIFACTS / f"{name}.png"))
    seconds = time.monotonic() - start

    assert not errors, f"{name}: page errors {errors}"
    assert not log.failures, f"{name}: failed requests {log.failures[:10]}"
    assert len(log.levels) >= 3, f"{name}: tiles of {dict(log.levels)}"
    assert log.levels[target] > 0
    assert blank_share(rgb(deep)) < 0.5, f"{name}: the zoomed-in view is mostly one colour"
    timings[name] = {"levels": sorted(log.levels.items(), key=lambda kv: level_key(kv[0])),
                     "total": sum(log.levels.values()), "aborted": len(log.aborted), "seconds": seconds}


def level_key(label: str) -> tuple[str, float]:
    proto, _, level = label.partition(" ")
    return proto, (1 / float(level.split("/")[1])) if "/" in level else float(level)

