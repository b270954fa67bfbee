"""The built-in pages in chromium: the index shows the image's thumbnail and leads to the viewer,
and the viewer's DeepZoom / IIIF 3 / IIIF 2 / Zoomify switch reopens the image from each source."""

from __future__ import annotations

import re
from typing import Any

from .conftest import IMAGE, SIZE
from .harness import TileLog


async def test_index_shows_the_image_and_links_the_viewer(page: Any, live_server: str) -> None:
    await page.goto(f"{live_server}/")
    thumb = page.locator(f"img[alt='{IMAGE}']")
    await thumb.wait_for()
    await page.wait_for_function(f"document.querySelector(\"img[alt='{IMAGE}']\").naturalWidth > 0")
    assert await thumb.evaluate("i => i.naturalHeight") == 160
    await page.click("text=viewer")
    await page.wait_for_url(re.compile(rf"/viewer/{re.escape(IMAGE)}"))
    await page.wait_for_selector("#viewer .openseadragon-canvas")


async def test_viewer_switch_reopens_from_each_source(page: Any, live_server: str) -> None:
    log = TileLog(*SIZE)
    urls: list[str] = []
    page.on("response", log.responded)
    page.on("response", lambda r: urls.append(r.url))
    await page.goto(f"{live_server}/viewer/{IMAGE}?source=dzi&drawer=canvas")
    for value, prefix, path in (("dzi", "dzi", "/deepzoom/"), ("iiif2", "iiif", "/iiif/2/"),
                                ("zoomify", "zoomify", "/zoomify/"), ("iiif3", "iiif", "/iiif/3/")):
        if value != "dzi":
            log.levels.clear()
            urls.clear()
            async with page.expect_response(lambda r: "/iiif/" in r.url or "/zoomify/" in r.url or ".dzi" in r.url):
                await page.check(f"input[value={value}]")
        await page.wait_for_function(
            "window.viewer.world.getItemCount() === 1 && window.viewer.world.getItemAt(0).getFullyLoaded()")
        assert log.levels and all(k.startswith(prefix) for k in log.levels), (value, dict(log.levels))
        assert any(path in u for u in urls) and f"source={value}" in page.url
    assert not log.failures
