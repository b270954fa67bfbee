"""IIPMooViewer 2.0, IIPImage's own client, in headless chromium on every generated test image (JPEG 2000
tiled and untiled, and an Aperio SVS among them) over IIP
(at `/iip` and `/fcgi-bin/iipsrv.fcgi`), IIIF 3 and 2, Zoomify and DeepZoom. Its code is unpacked at
test time from `../shared/vendor/iipmooviewer-2.0-c2f6695.tar.gz` (GPL-3.0, never committed) next to
`examples/iipmooviewer.html`, and both are served from a second loopback port: the page's origin is
not the server's, and the server allows that origin only, so CORS (with the preflight that
IIPMooViewer's `X-Requested-With` header causes) is enforced. The viewer is zoomed in with the mouse
wheel to full resolution and dragged to both corners; every request must answer 2xx, and every tile
and thumbnail must decode to the size its protocol's grammar gives for the image's levels
(`tile_grid`). Without the tarball the test skips, unless `CI` is set: then it fails."""

from __future__ import annotations

import asyncio
import os
import shutil
import tarfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import pyvips

from ..conftest import ALPHA_PNG, GREY16_TIF, PLAIN_JPG, RGB_1000, RGB_TIF, STRIPED_TIF, SUBIFD_TIF, make_images
from ..jp2_images import TILED_RGB, UNTILED_RGB
from ..live import clean_env, live_tileserver
from .conftest import ARTIFACTS, REPO, make_pyramid_module, write_slide
from .harness import TileLog, static_origin
from .tile_grid import Expect, Grid, dzi_grid, expect, iiif_grid, iip_grid, zoomify_grid

TARBALL = REPO.parent / "shared" / "vendor" / "iipmooviewer-2.0-c2f6695.tar.gz"
SLIDE = "slide-1531x1013.svs"  # an Aperio SVS (two levels), read through OpenSlide
IMAGES = [RGB_TIF, RGB_1000, GREY16_TIF, STRIPED_TIF, PLAIN_JPG, SUBIFD_TIF, ALPHA_PNG, TILED_RGB, UNTILED_RGB, SLIDE]
# name -> the example page's query for it
PROTOCOLS = {
    "iip": "protocol=iip&path=/iip",
    "iip-fcgi": "protocol=iip&path=/fcgi-bin/iipsrv.fcgi",
    "iiif3": "protocol=iiif&version=3",
    "iiif2": "protocol=iiif&version=2",
    "zoomify": "protocol=zoomify",
    "deepzoom": "protocol=deepzoom",
}
GRIDS = {"iip": iip_grid, "iip-fcgi": iip_grid, "iiif3": iiif_grid, "iiif2": iiif_grid, "zoomify": zoomify_grid,
         "deepzoom": dzi_grid}
VIEW_SHARE = 0.55  # the window is this share of the image (at least 240 x 180): every image needs zoom and pan
QUIET = 0.2  # seconds with no open request and every tile of the view loaded (IIPMooViewer's own count)
LOADED = "!window.viewer || !viewer.nTilesToLoad || viewer.nTilesLoaded >= viewer.nTilesToLoad"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The page's web root: IIPMooViewer unpacked from the vendor tarball, and the example page."""
    if not TARBALL.is_file():
        reason = f"{TARBALL} is missing (the IIPMooViewer release this test loads)"
        if os.environ.get("CI"):
            pytest.fail(f"the IIPMooViewer test must run in CI: {reason}")
        pytest.skip(reason)
    root = tmp_path_factory.mktemp("iipmooviewer-site")
    with tarfile.open(TARBALL) as tar:
        tar.extractall(root, filter="data")
    assert (root / "iipmooviewer" / "js" / "iipmooviewer-2.0-min.js").is_file()
    shutil.copy(REPO / "examples" / "iipmooviewer.html", root)
    return root


@pytest.fixture(scope="module")
def page_origin(site: Path) -> Iterator[str]:
    """A static server for `site` on its own loopback port: another origin than the tileserver's."""
    with static_origin(site) as origin:
        yield origin


@pytest.fixture(scope="module")
def image_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("iipmooviewer-images") / "root"
    make_images(root)  # JPEG 2000 files included (tests/jp2_images.py)
    write_slide(make_pyramid_module().sample_image(1531, 1013), root / SLIDE, levels=2)
    return root


@pytest.fixture(scope="module")
def cors_server(image_root: Path, page_origin: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`tileserver serve` allowing the page's origin only (TILESERVER_CORS), not `*`."""
    log = tmp_path_factory.mktemp("iipmooviewer-server") / "server.log"
    with live_tileserver(image_root, log, env=clean_env(TILESERVER_CORS=page_origin)) as base:
        yield base


@pytest.fixture
async def context(browser: Any) -> AsyncIterator[Any]:
    ctx = await browser.new_context()
    try:
        yield ctx
    finally:
        await ctx.close()


@pytest.fixture(scope="module")
def moo_summary() -> Iterator[dict[str, str]]:
    """One line per run, printed and written to test-artifacts/iipmooviewer-summary.txt."""
    start = time.monotonic()
    rows: dict[str, str] = {}
    yield rows
    if rows:
        ARTIFACTS.mkdir(exist_ok=True)
        text = "\n".join([f"IIPMooViewer: {len(rows)} runs in {time.monotonic() - start:.1f} s", *rows.values()])
        (ARTIFACTS / "iipmooviewer-summary.txt").write_text(text + "\n")
        print("\n" + text)


def metadata_path(name: str, image: str) -> str:
    """The metadata document IIPMooViewer asks for first (IIP: the objects the grid needs)."""
    if name.startswith("iip"):
        path = PROTOCOLS[name].rpartition("path=")[2]
        return f"{path}?FIF={image}&obj=Max-size&obj=Tile-size&obj=Resolution-number&obj=Resolutions"
    if name.startswith("iiif"):
        return f"/iiif/{name[-1]}/{quote(image, safe='')}/info.json"
    if name == "zoomify":
        return f"/zoomify/{image}/ImageProperties.xml"
    return f"/deepzoom/{image}.dzi"


async def protocol_grid(client: httpx.AsyncClient, name: str, image: str) -> Grid:
    """The image's levels and tiles as the protocol's own metadata document gives them."""
    r = await client.get(metadata_path(name, image))
    r.raise_for_status()
    return GRIDS[name](r.text)


async def check_preflight(client: httpx.AsyncClient, name: str, image: str, origin: str) -> None:
    """The answer chromium needs before IIPMooViewer's metadata request (it adds `X-Requested-With`)."""
    if name.startswith("iiif"):
        return  # IIPMooViewer drops the header for IIIF: a simple request, no preflight
    r = await client.options(metadata_path(name, image), headers={
        "Origin": origin, "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "x-requested-with"})
    assert r.status_code == 200, r.text
    assert r.headers["access-control-allow-origin"] == origin
    assert "x-requested-with" in r.headers["access-control-allow-headers"].lower()


class Recorder:
    """Every request of the page (via TileLog: open, failed, aborted) and every response kept for its body."""

    def __init__(self, page: Any) -> None:
        self.log = TileLog(1, 1)
        self.responses: list[Any] = []
        self.errors: list[str] = []
        page.on("request", self.log.started)
        page.on("requestfinished", self.log.finished)
        page.on("requestfailed", self.log.failed)
        page.on("response", self.responded)
        page.on("pageerror", lambda exc: self.errors.append(f"page error: {exc}"))
        page.on("console", lambda msg: self.errors.append(f"console: {msg.text}") if msg.type == "error" else None)
        page.on("dialog", self.dialog)

    def responded(self, response: Any) -> None:
        self.responses.append(response)

    async def dialog(self, dialog: Any) -> None:
        self.errors.append(f"alert: {dialog.message}")  # IIPMooViewer reports metadata errors with alert()
        await dialog.dismiss()


async def viewer_state(page: Any) -> dict[str, int]:
    return dict(await page.evaluate(
        "({res: viewer.view.res, top: viewer.num_resolutions - 1, x: viewer.view.x, y: viewer.view.y})"))


async def settle(page: Any, rec: Recorder, timeout: float = 20.0) -> None:
    """Until for QUIET seconds no request has been open and the viewer has loaded the tiles it asked for."""
    deadline = time.monotonic() + timeout
    quiet_since = time.monotonic()
    while time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        if rec.log.pending or not await page.evaluate(LOADED):
            quiet_since = time.monotonic()
        elif time.monotonic() - quiet_since >= QUIET:
            return
    raise AssertionError(f"requests still open after {timeout} s: {[r.url for r in rec.log.pending][:5]}")


async def wheel_zoom(page: Any, rec: Recorder, centre: tuple[float, float], out: bool = False) -> int:
    """Mouse-wheel steps over the image: one out (a no-op at the smallest level), or in until the
    viewer shows its last resolution. Returns the steps taken."""
    await page.mouse.move(*centre)
    for step in range(12):
        state = await viewer_state(page)
        if (step == 1) if out else state["res"] == state["top"]:
            return step
        await page.mouse.wheel(0, 200 if out else -200)
        await page.wait_for_timeout(50)
        await settle(page, rec)
    raise AssertionError(f"still not at full resolution after 12 wheel steps: {await viewer_state(page)}")


async def drag(page: Any, rec: Recorder, start: tuple[float, float], end: tuple[float, float]) -> None:
    await page.mouse.move(*start)
    await page.mouse.down()
    await page.mouse.move(*end, steps=6)
    await page.mouse.up()
    await page.wait_for_timeout(50)  # Drag's onComplete asks for the tiles (settle waits QUIET more)
    await settle(page, rec)


async def wrong_sizes(rec: Recorder, grid: Grid, server: str) -> tuple[list[str], list[Expect]]:
    """Each image response of the tileserver decoded and compared with its expected size."""
    problems, tiles = [], []
    for resp in rec.responses:
        if not resp.url.startswith(server) or (e := expect(resp.url, grid)) is None:
            continue
        img = pyvips.Image.new_from_buffer(await resp.body(), "")
        if (img.width, img.height) not in e.sizes:
            problems.append(f"{resp.url}: {img.width}x{img.height}, expected {sorted(e.sizes)}")
        if e.index is not None:
            tiles.append(e)
    return problems, tiles


@pytest.mark.parametrize("image", IMAGES)
@pytest.mark.parametrize("name", list(PROTOCOLS))
async def test_iipmooviewer_zooms_and_pans(name: str, image: str, context: Any, cors_server: str,
                                           page_origin: str, moo_summary: dict[str, str]) -> None:
    async with httpx.AsyncClient(base_url=cors_server, timeout=10) as client:
        grid = await protocol_grid(client, name, image)
        await check_preflight(client, name, image, page_origin)
    page = await context.new_page()
    await page.set_viewport_size({"width": max(240, round(grid.full[0] * VIEW_SHARE)),
                                  "height": max(180, round(grid.full[1] * VIEW_SHARE))})
    rec = Recorder(page)
    start = time.monotonic()
    query = f"lib=/iipmooviewer/&server={cors_server}&image={quote(image)}&{PROTOCOLS[name]}"
    await page.goto(f"{page_origin}/iipmooviewer.html?{query}")
    await page.wait_for_function("window.viewer && window.viewer.num_resolutions > 0", timeout=15_000)
    await page.wait_for_timeout(50)
    await settle(page, rec)
    box = await (await page.query_selector("#viewer")).bounding_box()
    w, h = box["width"], box["height"]
    await wheel_zoom(page, rec, (box["x"] + w / 2, box["y"] + h / 2), out=True)
    steps = await wheel_zoom(page, rec, (box["x"] + w / 2, box["y"] + h / 2))
    # drag the image up-left until the view is at the bottom-right corner, then back to the top-left;
    # each drag starts near the centre, away from the logo and navigation window in the top corners
    cx, cy, dx, dy = box["x"] + w / 2, box["y"] + h / 2, w * 0.25, h * 0.25
    for sign in (1, 1, -1, -1):
        await drag(page, rec, (cx + sign * dx, cy + sign * dy), (cx - sign * dx, cy - sign * dy))
    state = await viewer_state(page)
    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / f"iipmooviewer-{name}-{image.replace('/', '_')}.png"))
    seconds = time.monotonic() - start

    bad_status = [f"{r.status} {r.url}" for r in rec.responses if not 200 <= r.status < 300]
    assert not rec.errors, rec.errors
    assert not bad_status, bad_status
    assert not rec.log.failures, rec.log.failures
    meta = [r for r in rec.responses if r.url.startswith(cors_server) and r.request.resource_type == "xhr"]
    assert meta and all(r.headers.get("access-control-allow-origin") == page_origin for r in meta), meta
    problems, tiles = await wrong_sizes(rec, grid, cors_server)
    assert not problems, problems
    assert state["res"] == state["top"] and (state["x"], state["y"]) == (0, 0), state
    full = {(t.col, t.row) for t in tiles if t.index == 0}
    cols, rows = grid.counts(0)
    assert {(0, 0), (cols - 1, rows - 1)} <= full, f"full-resolution tiles {sorted(full)} of {cols}x{rows}"
    moo_summary[f"{name} {image}"] = (
        f"{name:9} {image:38} {len(rec.responses):3} requests, {len(tiles):3} tiles ({len(full)} at full "
        f"resolution of {cols * rows}), {len(rec.log.aborted)} aborted, "
        f"{steps} wheel steps, {seconds:.1f} s")


async def test_page_without_lib_shows_a_message(context: Any, page_origin: str) -> None:
    page = await context.new_page()
    await page.goto(f"{page_origin}/iipmooviewer.html")
    message = await page.wait_for_selector("#message", timeout=5_000)
    assert "?lib=" in await message.inner_text()


FETCH = """async ([url, header]) => {
  try { return (await fetch(url, {headers: {[header]: "1"}})).status; } catch (e) { return String(e); }
}"""


async def test_cors_is_enforced_on_the_page(context: Any, page_origin: str, cors_server: str) -> None:
    """The control that makes the viewer runs mean something: from the page's origin chromium lets
    through the header IIPMooViewer sends and blocks one the server does not allow."""
    page = await context.new_page()
    await page.goto(f"{page_origin}/iipmooviewer.html")
    url = f"{cors_server}/iip?FIF={RGB_TIF}&obj=Max-size"
    assert await page.evaluate(FETCH, [url, "X-Requested-With"]) == 200
    assert "Failed to fetch" in await page.evaluate(FETCH, [url, "X-Not-Allowed"])

