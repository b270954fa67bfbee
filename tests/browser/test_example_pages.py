"""The non-viewer example pages in chromium: the responsive `<img srcset>` picks the candidate that
fits the layout (decoded size checked), and the IIP form's POST downloads an export of the asked
width."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import pyvips

from .conftest import IMAGE, REPO, SIZE

EXAMPLES = REPO / "examples"


@pytest.mark.parametrize(("viewport", "width"), [(400, 640), (1000, 1024), (1700, 1600)])
async def test_srcset_picks_the_fitting_size(page: Any, live_server: str, viewport: int, width: int) -> None:
    failures: list[str] = []
    page.on("requestfailed", lambda r: failures.append(r.url))
    page.on("response", lambda r: failures.append(f"{r.status} {r.url}") if r.status >= 400 else None)
    await page.set_viewport_size({"width": viewport, "height": 800})
    await page.goto(f"{(EXAMPLES / 'responsive-srcset.html').as_uri()}?server={live_server}&image={IMAGE}")
    async with httpx.AsyncClient(timeout=10) as client:
        for img_id, expected in (("iiif", f"/full/{width},/0/default.jpg"), ("iip", f"&WID={width}&CVT=jpeg")):
            await page.wait_for_function(f"document.getElementById('{img_id}').complete")
            src = await page.evaluate(f"document.getElementById('{img_id}').currentSrc")
            assert src.endswith(expected), (img_id, src)
            # naturalWidth is density-corrected for srcset candidates: decode what the URL returns instead
            img = pyvips.Image.new_from_buffer((await client.get(src)).content, "")
            assert (img.width, img.height) == (width, round(width * SIZE[1] / SIZE[0]))
    assert not failures


async def test_iip_form_downloads_the_export(page: Any, live_server: str) -> None:
    await page.goto(f"{(EXAMPLES / 'iip-form.html').as_uri()}?server={live_server}&image={IMAGE}")
    await page.fill("input[name=WID]", "640")
    async with page.expect_download() as info:
        await page.click("button[type=submit]")
    download = await info.value
    img = pyvips.Image.new_from_file(str(await download.path()))
    assert (img.width, img.height) == (640, round(640 * SIZE[1] / SIZE[0]))
    assert download.suggested_filename.endswith(".jpg")
