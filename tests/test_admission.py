"""Admission control (admission.py): the cost model and lane decision, the large lane's limits (threads,
pixels in flight, a bounded queue, 503 at once past them), the deadline (503, the work cancelled but still
counted until it ends), the tile lane kept free of large work, and its wiring in the core."""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tileserver import core
from tileserver.admission import Admission, Cost, Lane, estimate, lane_for
from tileserver.core import TileService
from tileserver.errors import Busy
from tileserver.imaging import cancel
from tileserver.models import Box, ImageMeta, Level, OutputFormat, Processing, Tile, TileRequest
from tileserver.settings import Settings

from .conftest import RGB_TIF, decode, pattern
from .live import clean_env, live_tileserver

MP = 1e6
T256 = 256 * 256 / MP  # megapixels of a 256-px tile


def meta_of(levels: tuple[Level, ...], loader: str = "tiffload") -> ImageMeta:
    return ImageMeta("x", levels[0].width, levels[0].height, levels, 3, 8, "uint", "srgb", False, False,
                     0.0, 0, (0.0,) * 3, (255.0,) * 3, loader=loader)


PYRAMID = meta_of((Level(4000, 3000, 256, 256), Level(2000, 1500, 256, 256, 2.0), Level(1000, 750, 256, 256, 4.0)))
# a stored full level with virtual reductions (an untiled image): reads come from level 0
VIRTUAL = meta_of((Level(4000, 3000, 256, 256), Level(2000, 1500, 256, 256, 2.0, stored=False),
                   Level(1000, 750, 256, 256, 4.0, stored=False)))
JP2 = meta_of(PYRAMID.levels, loader="jp2kload")


def region(w: int, h: int, **kw: Any) -> TileRequest:
    return TileRequest(ident="x", region=Box(0, 0, 4000, 3000), size=(w, h), **kw)


@pytest.mark.parametrize(
    ("meta", "req", "units", "pixels"),
    [
        pytest.param(PYRAMID, TileRequest(ident="x", tile=Tile(0, 1, 1)), 2 * T256, 2 * T256, id="jpeg-tile"),
        pytest.param(PYRAMID, TileRequest(ident="x", tile=Tile(0, 1, 1), fmt=OutputFormat.PNG), 9 * T256,
                     2 * T256, id="png-tile"),
        pytest.param(PYRAMID, TileRequest(ident="x", tile=Tile(0, 1, 1), fmt=OutputFormat.GIF), 1001 * T256,
                     2 * T256, id="gif-tile"),
        pytest.param(PYRAMID, TileRequest(ident="x", tile=Tile(2, 3, 2)), 2 * (232 * 238) / MP,
                     2 * (232 * 238) / MP, id="edge-tile"),
        pytest.param(PYRAMID, region(1000, 750), 0.75 + 0.75, 1.5, id="export-reads-smallest-level"),
        pytest.param(PYRAMID, region(1100, 825), 3.0 + 1100 * 825 / MP, 3.0 + 1100 * 825 / MP,
                     id="export-reads-next-level"),
        pytest.param(VIRTUAL, region(1000, 750), 12.0 + 0.75, 12.75, id="virtual-level-reads-stored"),
        pytest.param(JP2, region(1000, 750), 10 * 0.75 + 0.75, 1.5, id="jp2-source"),
        pytest.param(PYRAMID, region(1000, 750, rotation=90.0), 0.75 + 3 * 0.75, 1.5, id="right-angle"),
        pytest.param(PYRAMID, region(1000, 750, rotation=270.0, mirror=True), 0.75 + 3 * 0.75, 1.5,
                     id="mirror-270"),
        pytest.param(PYRAMID, region(1000, 750, rotation=45.0), 0.75 + 6 * (1750 * 0.5**0.5) ** 2 / MP,
                     0.75 + (1750 * 0.5**0.5) ** 2 / MP, id="rotated-canvas"),
        pytest.param(PYRAMID, region(1000, 750, processing=Processing(invert=True)), 0.75 + 3 * 0.75, 1.5,
                     id="processing"),
        pytest.param(PYRAMID, TileRequest(ident="x", tile=Tile(7, 0, 0)), 0.0, 0.0, id="no-such-level"),
    ],
)
def test_estimate(meta: ImageMeta, req: TileRequest, units: float, pixels: float) -> None:
    cost = estimate(meta, req)
    assert cost.units == pytest.approx(units, rel=1e-3)
    assert cost.pixels == pytest.approx(pixels, rel=1e-3)


@pytest.mark.parametrize(
    ("req", "lane"),
    [
        pytest.param(TileRequest(ident="x", tile=Tile(0, 0, 0)), Lane.SMALL, id="tile"),
        pytest.param(TileRequest(ident="x", tile=Tile(0, 0, 0), fmt=OutputFormat.AVIF), Lane.SMALL, id="avif-tile"),
        pytest.param(TileRequest(ident="x", tile=Tile(0, 0, 0), fmt=OutputFormat.GIF), Lane.LARGE, id="gif-tile"),
        pytest.param(TileRequest(ident="x", tile=Tile(0, 0, 0), rotation=30.0), Lane.SMALL, id="rotated-tile"),
        pytest.param(region(1000, 750), Lane.SMALL, id="thumbnail-export"),
        pytest.param(region(1000, 750, fmt=OutputFormat.WEBP), Lane.LARGE, id="webp-export"),
        pytest.param(region(2000, 1500), Lane.LARGE, id="big-export"),
        pytest.param(region(1000, 750, rotation=45.0), Lane.LARGE, id="rotated-export"),
    ],
)
def test_lane_with_default_threshold(req: TileRequest, lane: Lane) -> None:
    assert lane_for(estimate(PYRAMID, req), Settings()) is lane


@pytest.mark.parametrize(("units", "lane"), [(3.99, Lane.SMALL), (4.0, Lane.SMALL), (4.01, Lane.LARGE)])
def test_lane_threshold_is_inclusive(units: float, lane: Lane) -> None:
    assert lane_for(Cost(units, 1.0), Settings(admission_small_cost=4.0)) is lane


# -- the gate ------------------------------------------------------------------------------------------
class Blocker:
    """Blocking work for the pools: each call waits until `release()` (at most 10 s)."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.started = threading.Semaphore(0)
        self.calls = 0

    def __call__(self, value: int = 1) -> int:
        self.calls += 1
        self.started.release()
        self.gate.wait(10)
        return value

    async def wait_started(self, n: int = 1) -> None:
        for _ in range(n):
            assert await asyncio.to_thread(self.started.acquire, True, 5), "the work never started"

    def release(self) -> None:
        self.gate.set()


@contextmanager
def admission(**settings: Any) -> Iterator[Admission]:
    adm = Admission(Settings(**settings))
    adm.start()
    try:
        yield adm
    finally:
        adm.stop()


async def until(check: Callable[[], bool], timeout: float = 5.0) -> None:
    end = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < end, "condition not reached"
        await asyncio.sleep(0.01)


async def refused_at_once(adm: Admission, pixels: float = 1.0) -> Busy:
    t0 = time.monotonic()
    with pytest.raises(Busy) as err:
        await adm.run(Lane.LARGE, int, 1, cost=Cost(100.0, pixels))
    assert time.monotonic() - t0 < 0.5  # not queued: answered at once
    return err.value


async def test_past_the_thread_limit_large_work_is_refused_at_once_and_tiles_still_run() -> None:
    blocker = Blocker()
    with admission(admission_large_threads=1, admission_large_queue=0) as adm:
        first = asyncio.ensure_future(adm.run(Lane.LARGE, blocker, 7, cost=Cost(100.0, 10.0)))
        await blocker.wait_started()
        busy = await refused_at_once(adm)
        assert busy.retry_after >= 1
        assert await adm.run(Lane.SMALL, int, 3) == 3  # the tile lane is not behind the large one
        stats = adm.stats()
        assert stats["large_in_flight"] == 1 and stats["large_refused"] == 1
        assert stats["large_megapixels_in_flight"] == 10
        blocker.release()
        assert await first == 7
        await until(lambda: adm.stats()["large_in_flight"] == 0)
        assert await adm.run(Lane.LARGE, int, 5, cost=Cost(100.0, 10.0)) == 5  # serving again


@pytest.mark.parametrize(
    ("running", "asked", "admitted"),
    [
        pytest.param([60.0], 40.0, True, id="fits-exactly"),
        pytest.param([60.0], 41.0, False, id="over-the-budget"),
        pytest.param([30.0, 30.0], 50.0, False, id="over-with-two"),
        pytest.param([], 500.0, True, id="alone-when-idle"),
    ],
)
async def test_pixels_in_flight_are_limited(running: list[float], asked: float, admitted: bool) -> None:
    blocker = Blocker()
    with admission(admission_large_threads=4, admission_large_queue=0, admission_large_megapixels=100) as adm:
        held = [asyncio.ensure_future(adm.run(Lane.LARGE, blocker, cost=Cost(100.0, p))) for p in running]
        await blocker.wait_started(len(running))
        if admitted:
            task = asyncio.ensure_future(adm.run(Lane.LARGE, blocker, 9, cost=Cost(100.0, asked)))
            await blocker.wait_started()
            blocker.release()
            assert await task == 9
        else:
            await refused_at_once(adm, asked)
            blocker.release()
        await asyncio.gather(*held)


async def test_the_queue_is_bounded_and_first_in_first_out() -> None:
    blocker = Blocker()
    with admission(admission_large_threads=1, admission_large_queue=2, admission_queue_wait=10) as adm:
        first = asyncio.ensure_future(adm.run(Lane.LARGE, blocker, 1, cost=Cost(100.0, 1.0)))
        await blocker.wait_started()
        order: list[int] = []

        async def queued(n: int) -> None:
            order.append(await adm.run(Lane.LARGE, int, n, cost=Cost(100.0, 1.0)))

        waiting = [asyncio.ensure_future(queued(n)) for n in (2, 3)]
        await until(lambda: adm.stats()["large_queued"] == 2)
        await refused_at_once(adm)  # the queue is full
        blocker.release()
        await asyncio.gather(first, *waiting)
        assert order == [2, 3]
        assert adm.stats()["large_refused"] == 1 and adm.stats()["large_queued"] == 0


async def test_a_queued_render_gives_up_after_the_queue_wait() -> None:
    blocker = Blocker()
    with admission(admission_large_threads=1, admission_large_queue=1, admission_queue_wait=0.2) as adm:
        first = asyncio.ensure_future(adm.run(Lane.LARGE, blocker, cost=Cost(100.0, 1.0)))
        await blocker.wait_started()
        t0 = time.monotonic()
        with pytest.raises(Busy):
            await adm.run(Lane.LARGE, int, 1, cost=Cost(100.0, 1.0))
        assert 0.15 < time.monotonic() - t0 < 2.0
        assert adm.stats()["large_queued"] == 0 and adm.stats()["large_refused"] == 1
        blocker.release()
        await first


@pytest.mark.parametrize("lane", [Lane.LARGE, Lane.SMALL])
async def test_past_the_deadline_503_and_the_work_keeps_its_place_until_it_ends(lane: Lane) -> None:
    blocker = Blocker()
    name = "large" if lane is Lane.LARGE else "tile"
    with admission(admission_deadline=0.3, admission_large_threads=1, admission_large_queue=0, threads=1) as adm:
        t0 = time.monotonic()
        with pytest.raises(Busy) as err:
            await adm.run(lane, blocker, cost=Cost(100.0, 1.0))
        assert 0.25 < time.monotonic() - t0 < 3 * 0.3  # generous: only a missing deadline fails
        assert "longer than 0.3 s" in err.value.message
        stats = adm.stats()
        assert stats[f"{name}_expired"] == 1 and stats[f"{name}_abandoned"] == 1 and stats[f"{name}_in_flight"] == 1
        if lane is Lane.LARGE:
            await refused_at_once(adm)  # the abandoned work still holds the only slot
        blocker.release()
        await until(lambda: adm.stats()[f"{name}_in_flight"] == 0)
        assert adm.stats()[f"{name}_abandoned"] == 0
        assert await adm.run(lane, int, 4, cost=Cost(100.0, 1.0)) == 4


async def test_work_past_its_deadline_before_it_started_never_runs() -> None:
    blocker = Blocker()
    late = Blocker()
    with admission(admission_deadline=0.2, threads=1) as adm:
        first = asyncio.ensure_future(adm.run(Lane.SMALL, blocker, deadline=False))
        await blocker.wait_started()
        with pytest.raises(Busy):
            await adm.run(Lane.SMALL, late)  # waits for the only thread past its deadline
        assert adm.stats()["tile_queued"] == 1
        blocker.release()
        await first
        await until(lambda: adm.stats()["tile_in_flight"] == 0)
        assert late.calls == 0


async def test_a_client_that_leaves_cancels_its_work() -> None:
    seen: list[cancel.Job | None] = []
    blocker = Blocker()

    def work() -> None:
        seen.append(cancel.current())
        blocker()

    with admission(admission_large_threads=1) as adm:
        task = asyncio.ensure_future(adm.run(Lane.LARGE, work, cost=Cost(100.0, 1.0)))
        await blocker.wait_started()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        job = seen[0]
        assert job is not None and job.cancelled
        assert adm.stats()["large_abandoned"] == 1
        blocker.release()
        await until(lambda: adm.stats()["large_in_flight"] == 0)


@pytest.mark.parametrize(("units_ahead", "waits"), [pytest.param(1.0, True, id="short-work-ahead"),
                                                   pytest.param(1000.0, False, id="long-work-ahead")])
async def test_a_render_waits_only_when_a_place_is_expected_within_the_queue_wait(units_ahead: float,
                                                                                  waits: bool) -> None:
    blocker = Blocker()
    with admission(admission_large_threads=1, admission_large_queue=8, admission_queue_wait=5) as adm:
        adm.large.done, adm.large.rate = 1, 0.01  # as if renders took 10 ms per cost unit
        held = asyncio.ensure_future(adm.run(Lane.LARGE, blocker, cost=Cost(units_ahead, 1.0)))
        await blocker.wait_started()
        if waits:  # expected to end within 10 ms: worth a wait
            queued = asyncio.ensure_future(adm.run(Lane.LARGE, int, 2, cost=Cost(100.0, 1.0)))
            await until(lambda: adm.stats()["large_queued"] == 1)
            blocker.release()
            assert await queued == 2
        else:  # 10 s ahead: refused at once, told to come back then
            busy = await refused_at_once(adm)
            assert busy.retry_after == 10 and adm.stats()["large_expected_wait_ms"] > 9000
            blocker.release()
        await held


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="a thread's own niceness is Linux's")
@pytest.mark.parametrize("nice", [0, 7])
async def test_the_large_lane_runs_at_a_lower_priority(nice: int) -> None:
    def niceness() -> int:
        return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    with admission(admission_large_nice=nice) as adm:
        tile = await adm.run(Lane.SMALL, niceness)
        large = await adm.run(Lane.LARGE, niceness, cost=Cost(100.0, 1.0))
    assert large == min(tile + nice, 19)


# -- in the core ---------------------------------------------------------------------------------------
@pytest.fixture
def service(tmp_path: Path, image_root: Path) -> Iterator[TileService]:
    (tmp_path / "a.tif").write_bytes((image_root / RGB_TIF).read_bytes())
    svc = TileService(Settings(root=tmp_path, stat_interval=60, admission_small_cost=1.0, derive_dir=None))
    svc.start()
    yield svc
    svc.stop()


@pytest.mark.parametrize(
    ("req", "lane"),
    [
        pytest.param(TileRequest(ident="a.tif", tile=Tile(0, 1, 1), fmt=OutputFormat.PNG), "tile", id="tile"),
        pytest.param(TileRequest(ident="a.tif", region=Box(0, 0, 1003, 701), size=(1003, 701)), "large",
                     id="export"),
        pytest.param(TileRequest(ident="a.tif", tile=Tile(1, 0, 0), fmt=OutputFormat.GIF), "large", id="gif-tile"),
        pytest.param(TileRequest(ident="a.tif", region=Box(0, 0, 500, 500), size=(200, 200), rotation=45.0),
                     "tile", id="small-rotation"),
    ],
)
async def test_renders_take_their_lane_and_cached_ones_none(service: TileService, req: TileRequest,
                                                            lane: str) -> None:
    await service.info("a.tif")  # a metadata load runs in the tile lane too
    before = service.stats()["admission"]
    first = await service.render(req)
    again = await service.render(req)
    stats = service.stats()["admission"]
    other = "tile" if lane == "large" else "large"
    assert stats[f"{lane}_done"] - before[f"{lane}_done"] == 1  # once: the repeat was a cache hit
    assert stats[f"{other}_done"] == before[f"{other}_done"]
    assert again.body is first.body and again.source == "cache"  # the cached copy, marked so
    img = decode(first.body)
    assert (img.width, img.height) == (first.width, first.height)


async def test_a_render_past_the_deadline_is_busy_in_the_core(service: TileService,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    service.settings = service.admission.settings = Settings(root=service.settings.root, admission_deadline=0.3,
                                                             derive_dir=None)
    blocker = Blocker()
    real = core.render

    def slow(*args: Any) -> Any:
        blocker()
        return real(*args)

    monkeypatch.setattr(core, "render", slow)
    req = TileRequest(ident="a.tif", tile=Tile(0, 0, 0), fmt=OutputFormat.PNG)
    with pytest.raises(Busy):
        await service.render(req)
    assert service.stats()["admission"]["tile_expired"] == 1
    blocker.release()
    await until(lambda: service.stats()["admission"]["tile_in_flight"] == 0)
    assert service.tiles.get((req, (await service.info("a.tif")).mtime, "")) is None  # nothing cached from it


# -- against a live server -----------------------------------------------------------------------------
EXPORTS = 6  # at once, against 1 large thread and 1 queue place: 2 are served, 4 refused
OVERLOAD_ENV = {"TILESERVER_THREADS": "2", "TILESERVER_ADMISSION_LARGE_THREADS": "1",
                "TILESERVER_ADMISSION_LARGE_QUEUE": "1", "TILESERVER_ADMISSION_QUEUE_WAIT": "60",
                "TILESERVER_ADMISSION_DEADLINE": "90"}
TILE_BOUND = 3.0  # seconds; generous: an uncached tile queued behind these exports waits for all of them


@pytest.fixture(scope="module")
def overloaded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    root = tmp_path_factory.mktemp("overload")
    pattern(3001, 2001).tiffsave(str(root / "big.tif"), compression="jpeg", Q=80, tile=True, pyramid=True,
                                 tile_width=256, tile_height=256)
    log = tmp_path_factory.mktemp("overload-log") / "server.log"
    with live_tileserver(root, log, workers=1, env=clean_env(**OVERLOAD_ENV)) as base:
        yield base, root


def timed_get(base: str, path: str) -> tuple[httpx.Response, float, float]:
    """The response, how long it took, and when it ended."""
    t0 = time.monotonic()
    response = httpx.get(base + path, timeout=120)
    ended = time.monotonic()
    return response, ended - t0, ended


@pytest.mark.server
def test_under_a_flood_of_exports_tiles_answer_and_the_excess_gets_503_at_once(overloaded: tuple[str, Path]) -> None:
    base, root = overloaded
    # distinct widths, so that no export is a cache hit: 45-degree WebP of about 3300 x 3300 pixels, seconds each
    exports = [f"/iiif/3/big.tif/full/{2800 - i},/45/default.webp" for i in range(EXPORTS)]
    with ThreadPoolExecutor(EXPORTS) as pool:
        flood = [pool.submit(timed_get, base, path) for path in exports]
        time.sleep(0.5)
        # another protocol's export while the lane and its queue are full: refused the same way
        iip = timed_get(base, "/iip?FIF=big.tif&WID=2990&CVT=png")
        latencies = []
        for i in range(24):  # uncached tiles, decoded and encoded (PNG): the tile lane
            tile, seconds, _ = timed_get(base, f"/iiif/3/big.tif/{256 * (i % 11)},{256 * (i // 11)},256,256/256,"
                                               "/0/default.png")
            assert tile.status_code == 200 and decode(tile.content).width == 256
            latencies.append(seconds)
        tiles_done = time.monotonic()
        answers = [f.result() for f in flood]
    served = [a for a in answers if a[0].status_code == 200]
    refused = [a for a in answers if a[0].status_code == 503]
    assert len(served) == 2 and len(refused) == EXPORTS - 2
    assert max(latencies) < TILE_BOUND, latencies
    assert max(ended for _, _, ended in served) > tiles_done  # the tiles were answered during the flood
    for response, seconds, _ in [*refused, iip]:
        assert response.status_code == 503 and int(response.headers["retry-after"]) >= 1
        assert seconds < 2.0  # at once, not after a wait
        assert response.text.startswith("busy: ") and str(root) not in response.text
    img = decode(served[0][0].content)
    assert abs(img.width - round(2800 * 2 ** 0.5 * 5 / 6)) <= 3 and img.bands == 4  # corners transparent


@pytest.mark.server
def test_after_the_flood_the_server_serves_and_shows_its_counters(overloaded: tuple[str, Path]) -> None:
    base, _ = overloaded
    end = time.monotonic() + 30
    while (stats := httpx.get(base + "/health").json()["admission"])["large_in_flight"]:
        assert time.monotonic() < end, stats
        time.sleep(0.1)
    assert stats["large_refused"] == EXPORTS - 2 + 1 and stats["large_done"] >= 2
    assert stats["large_queued"] == 0 and stats["large_megapixels_in_flight"] == 0
    assert stats["large_threads"] == 1 and stats["tile_threads"] == 2 and stats["large_queue_limit"] == 1
    scrape = httpx.get(base + "/metrics").text  # the same counts in the metrics
    refused = sum(float(line.rsplit(" ", 1)[1]) for line in scrape.splitlines()
                  if line.startswith('tileserver_admission_refused_total{') and 'lane="large"' in line)
    assert refused == stats["large_refused"]
    assert 'tileserver_admission_in_flight{lane="large"} 0.0' in scrape
    response, _, _ = timed_get(base, "/iiif/3/big.tif/full/2000,/0/default.webp")
    assert response.status_code == 200 and decode(response.content).width == 2000
