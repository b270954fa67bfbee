"""A worker's warm-up at start (`settings.warm_up`): its first real requests are not slower than the rest.

A fresh Python process answers its first requests several times slower than its later ones: modules are still
imported on first use, libvips describes each operation the first time it is called, the output formats are
probed on the first IIIF request (a JPEG 2000 encode among them), and CPython specialises a function's bytecode
only after it has run a few times. Here, before the worker takes a connection (the lifespan's startup), a
throwaway app over a small generated pyramid (a temporary folder) answers each enabled protocol's tile URLs a few
times: stored tiles passed through, tiles re-encoded (`QLT`), a scaled region, an export, the info documents and a
404, each by the app's front where the server's would answer it (web/front.py), so that every one of those code
paths has run. Then the server's own app probes its output formats.

The throwaway app is made from default settings (no environment, no shared cache, no access policy, no metrics,
no access log, nothing derived, no tile cache, so every request renders) plus the server's settings that shape
a tile response. Its folder is removed at once; the server's caches, counters and logs are untouched (metrics are
process-wide: off while the warm app runs, then as the server configured them).
"""

from __future__ import annotations

import gc
import logging
import math
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pyvips

from . import metrics
from .core import OUTPUT_SETTINGS, TileService
from .settings import Settings

log = logging.getLogger("tileserver.warmup")

IMAGE = "warm.tif"
WIDTH, HEIGHT, TILE = 1000, 700, 256  # 4 x 3 full-resolution tiles, partial ones at the edges, 3 levels
ROUNDS = 8  # CPython 3.11 specialises a function after a few calls; more rounds add time, not speed
# what a tile response depends on, besides the image: the warm app answers as the server would
SHAPING = (*OUTPUT_SETTINGS, "protocols", "iiif_version", "iiif_delimiter", "deepzoom_tile_size", "deepzoom_overlap",
           "zoomify_rounding", "max_size", "max_area", "allow_upscaling", "cors", "base_url", "cache_control", "rights",
           "max_url_bytes", "max_identifier_length",
           # process-wide state that making an app sets (sources/configured.py): set again as the server set it
           "store_block_cache_mb", "source_cache_dir", "source_cache_mb")


def write_image(path: Path) -> None:
    """A small JPEG-tiled pyramid with some texture (so JPEG coding does real work)."""
    xyz = pyvips.Image.xyz(WIDTH, HEIGHT)
    img = (xyz[0] * 255 / WIDTH).cast("uchar").bandjoin([
        (xyz[1] * 255 / HEIGHT).cast("uchar"), pyvips.Image.gaussnoise(WIDTH, HEIGHT, sigma=30).cast("uchar")])
    img.copy(interpretation="srgb").tiffsave(str(path), compression="jpeg", Q=90, tile=True, pyramid=True,
                                             tile_width=TILE, tile_height=TILE)


def warm_settings(settings: Settings, root: Path) -> Settings:
    """The throwaway app's settings: defaults, the server's response-shaping ones, `root`, nothing kept or sent."""
    shaping = {name: getattr(settings, name) for name in SHAPING}
    return Settings.model_construct(**shaping, root=root, tile_cache_mb=0.0, decoded_cache_mb=16.0, derive_dir=None,
                                    metrics=False, access_log="off", admission_large_processes=False, warm_up=False)


def urls(settings: Settings) -> Iterator[str]:
    """The URLs a warm-up round asks, for the protocols `settings` enables (paths with their query)."""
    cols, rows = -(-WIDTH // TILE), -(-HEIGHT // TILE)
    on = set(settings.protocols)
    if "iip" in on:
        yield f"/iip?FIF={IMAGE}&OBJ=IIP,1.0&OBJ=Max-size&OBJ=Tile-size&OBJ=Resolution-number"
        for i in range(cols * rows):
            yield f"/iip?FIF={IMAGE}&JTL=2,{i}"
        yield f"/iip?FIF={IMAGE}&QLT=75&JTL=2,1"
        yield f"/iip?FIF={IMAGE}&JTL=1,0"
        yield f"/iip?FIF={IMAGE}&WID=300&CVT=jpeg"
    if "iiif" in on:
        for version in (3, 2):
            yield f"/iiif/{version}/{IMAGE}/info.json"
            for x, y in ((0, 0), (TILE, 0), (0, TILE), (2 * TILE, TILE)):
                yield f"/iiif/{version}/{IMAGE}/{x},{y},{TILE},{TILE}/{TILE},/0/default.jpg"
            yield f"/iiif/{version}/{IMAGE}/0,0,{2 * TILE},{2 * TILE}/{TILE},/0/default.jpg"
        yield f"/iiif/3/{IMAGE}/full/200,/0/default.jpg"
    if "deepzoom" in on:
        top = math.ceil(math.log2(max(WIDTH, HEIGHT)))
        yield f"/deepzoom/{IMAGE}.dzi"
        yield from (f"/deepzoom/{IMAGE}_files/{top}/{x}_{y}.jpg" for x, y in ((0, 0), (1, 0), (1, 1)))
    if "zoomify" in on:
        yield f"/zoomify/{IMAGE}/ImageProperties.xml"
        yield from (f"/zoomify/{IMAGE}/TileGroup0/2-{x}-{y}.jpg" for x, y in ((0, 0), (1, 0), (1, 1)))


async def get(app: Any, url: str, headers: Sequence[tuple[bytes, bytes]] = ()) -> int:
    """One GET of `url` (a path with its query) from loopback, as `tileserver serve` answers it: by the app's front
    (web/front.py) when it can, else through the ASGI app; the response's status."""
    path, _, query = url.partition("?")
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
             "path": path, "raw_path": path.encode(), "query_string": query.encode(), "root_path": "",
             "headers": [(b"host", b"127.0.0.1"), *headers], "client": ("127.0.0.1", 0), "server": ("127.0.0.1", 80)}
    front = getattr(getattr(app, "state", None), "front", None)
    taken = None if front is None else front.answer(dict(scope))
    answer = taken if taken is None or isinstance(taken, tuple) else await taken  # sent now, or rendered first
    if answer is not None:
        return int(answer[0])
    status = 0

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(scope, receive, send)
    return status


async def warm_up(service: TileService, settings: Settings, make_app: Callable[[Settings], Any]) -> float:
    """Warm this process (see the module's text); the seconds it took. A failure is logged, never raised: a
    worker that could not warm up still serves."""
    start = time.perf_counter()
    try:
        with tempfile.TemporaryDirectory(prefix="tileserver-warm-") as folder:
            root = Path(folder)
            await service.run(write_image, root / IMAGE)
            app = make_app(warm_settings(settings, root))
            app.state.service.start()
            try:
                todo = list(urls(settings))
                for _ in range(ROUNDS):
                    for url in todo:
                        await get(app, url)
            finally:
                app.state.service.stop()
                metrics.configure(settings.metrics, settings.metrics_dir)  # process-wide: the warm app turned it off
        await service.output_formats()
        gc.collect()  # what the warm-up left (modules, caches, libvips' operation descriptions) out of the collector's
        gc.freeze()  # reach, as cli.frozen does for what was made before: full collections stay short
    except Exception:
        log.warning("warm-up failed; serving without it", exc_info=True)
    took = time.perf_counter() - start
    log.info("worker warmed up in %.0f ms", took * 1e3)
    return took
