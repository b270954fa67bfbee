"""The built-in pages in chromium: the index shows the image's thumbnail and leads to the viewer,
and the viewer's DeepZoom / IIIF 3 / IIIF 2 / Zoomify switch reopens the image from each source."""

from __future__ import annotations

import re
from typing import Any

import pytest

from ..document_images import DOC_SIZES
from .conftest import DOCUMENT, IMAGE, SIZE
from .harness import TileLog


async def test_index_shows_the_image_and_links_the_viewer(page: Any, live_server: str) -> None:
    await page.goto(f"{live_server}/")
    thumb = page.locator(f"img[alt='{IMAGE}']")
    await thumb.wait_for()
    await page.wait_for_function(f"document.querySelector(\"img[alt='{IMAGE}']\").naturalWidth > 0")
    assert await thumb.evaluate("i => i.naturalHeight") == 160
    await page.click(f"a[href='viewer/{IMAGE}']")
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


LOADED = "window.viewer.world.getItemCount() === 1 && window.viewer.world.getItemAt(0).getFullyLoaded()"
SHOWN = "() => { const d = window.viewer.world.getItemAt(0).source.dimensions; return [d.x, d.y]; }"


@pytest.mark.parametrize("source", ["dzi", "iiif3", "iiif2", "zoomify"])
async def test_viewer_pages_through_a_document(page: Any, live_server: str, source: str) -> None:
    """A multi-page document opens in sequence mode at `?page=`, each page from its own tile source
    (`;page=n`) at its own size; paging on keeps the URL's page in step and asks for that page."""
    urls: list[str] = []
    page.on("response", lambda r: urls.append(r.url))
    await page.goto(f"{live_server}/viewer/{DOCUMENT}?source={source}&page=1&drawer=canvas")
    await page.wait_for_function(LOADED)
    assert await page.evaluate(SHOWN) == list(DOC_SIZES[1])
    for n in (2, 0):
        urls.clear()
        await page.evaluate(f"() => window.viewer.goToPage({n})")
        await page.wait_for_function(f"{LOADED} && window.viewer.world.getItemAt(0).source.dimensions.x === "
                                     f"{DOC_SIZES[n][0]}")
        assert await page.evaluate(SHOWN) == list(DOC_SIZES[n])
        assert f"page={n}" in page.url
        assert any(f"page%3D{n}" in u or f"page={n}" in u for u in urls)
