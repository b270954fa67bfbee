"""Large-lane renders in child processes (imaging/isolate.py): the same pixels and the same errors as in
process, a killed child is a 503 with Retry-After and is replaced, an abandoned render's child is killed, the
children end with the server, and `admission_large_processes=false` renders in threads as before."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import shutil
import signal
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette

from tileserver import metrics
from tileserver.core import TileService
from tileserver.errors import Busy
from tileserver.settings import Settings

from ..bad_images import BROKEN_DATA, make_bad_images
from ..conftest import RGB_TIF, decode, max_diff, pattern, served_app
from ..document_images import DOC_TIF, write_document
from ..jp2_images import TILED_RGB, make_jp2s
from ..live import clean_env, live_process

EVERY_RENDER_LARGE = {"admission_small_cost": 1e-9, "derive_dir": None}  # every render in the large lane
SLOW_GIF = "slow-2600x2600.tif"  # a full-size GIF of it takes seconds (libimagequant)


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("isolate")
    opts = {"tile": True, "pyramid": True, "tile_width": 256, "tile_height": 256, "compression": "jpeg"}
    pattern(1003, 701).tiffsave(str(root / RGB_TIF), **opts)
    pattern(2600, 2600, seed=5).tiffsave(str(root / SLOW_GIF), **opts)
    make_bad_images(root)
    write_document(root / DOC_TIF)
    make_jp2s(root)
    return root


def settings_of(root: Path, processes: bool, **extra: object) -> Settings:
    return Settings(root=root, admission_large_processes=processes, **{**EVERY_RENDER_LARGE, **extra})  # type: ignore[arg-type]


def client_of(app: Starlette) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")


@pytest.fixture(scope="module")
async def isolated(root: Path) -> AsyncIterator[Starlette]:
    async with served_app(settings_of(root, True)) as app:
        yield app


@pytest.fixture(scope="module")
async def in_process(root: Path) -> AsyncIterator[Starlette]:
    async with served_app(settings_of(root, False)) as app:
        yield app


def children_of(app: Starlette) -> list[int]:
    service: TileService = app.state.service
    assert service.children is not None
    return service.children.pids()


async def until(test: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not test():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # a zombie (exited, not yet reaped by its parent) is gone too
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0] == "Z"


@pytest.mark.parametrize("path", [
    pytest.param(f"/iiif/3/{RGB_TIF}/full/max/0/default.jpg", id="iiif3-full-jpeg"),
    pytest.param(f"/iiif/2/{RGB_TIF}/full/!500,400/0/default.png", id="iiif2-fit-png"),
    pytest.param(f"/iiif/3/{RGB_TIF}/full/400,/45/default.png", id="iiif3-rotate45"),
    pytest.param(f"/iiif/3/{RGB_TIF}/full/300,/0/gray.gif", id="iiif3-gif"),
    pytest.param(f"/iiif/3/{RGB_TIF}/200,100,500,400/250,/90/default.webp", id="iiif3-region-webp"),
    pytest.param(f"/iip?FIF={RGB_TIF}&WID=600&CVT=jpeg", id="iip-cvt"),
    pytest.param(f"/iiif/3/{DOC_TIF};page=1/full/300,/0/default.png", id="document-page"),
    pytest.param(f"/iiif/3/{TILED_RGB}/full/max/0/default.jpg", id="jp2"),
])
async def test_exports_have_the_same_pixels_as_in_process(path: str, isolated: Starlette,
                                                          in_process: Starlette) -> None:
    async with client_of(isolated) as a, client_of(in_process) as b:
        done = isolated.state.service.admission.large.done
        there, here = await a.get(path), await b.get(path)
    assert (there.status_code, here.status_code) == (200, 200)
    assert there.headers["content-type"] == here.headers["content-type"]
    assert isolated.state.service.admission.large.done == done + 1  # rendered in the large lane...
    assert children_of(isolated)  # ...by a child
    x, y = decode(there.content), decode(here.content)
    assert (x.width, x.height, x.bands) == (y.width, y.height, y.bands)
    assert max_diff(x, y) == 0


async def test_the_health_page_counts_the_children(isolated: Starlette) -> None:
    async with client_of(isolated) as c:
        assert (await c.get(f"/iiif/3/{RGB_TIF}/full/120,/0/default.jpg")).status_code == 200
        health = (await c.get("/health")).json()
    assert health["admission"]["large_processes"] == len(children_of(isolated)) == 1


@pytest.mark.parametrize("name", BROKEN_DATA)
async def test_errors_have_the_same_status_and_message(name: str, isolated: Starlette, in_process: Starlette
                                                       ) -> None:
    """A file whose header reads but whose pixels do not decode: the child maps libvips' error as render does."""
    path = f"/iiif/3/{name}/full/max/0/default.jpg"
    async with client_of(isolated) as a, client_of(in_process) as b:
        there, here = await a.get(path), await b.get(path)
    assert there.status_code == here.status_code == 415
    assert there.text == here.text


async def test_an_image_deleted_after_its_metadata_was_read(root: Path, tmp_path: Path) -> None:
    """Not the in-process status, on purpose: the child opens the file itself and finds it gone (404, what
    the server answers anyway once it re-checks the file, within `stat_interval`), where the server process
    reads the handle it opened before and libvips fails on the vanished file (415, which blames the file's
    content)."""
    statuses = []
    for processes in (True, False):
        shutil.copy(root / RGB_TIF, tmp_path / "doomed.tif")
        async with served_app(settings_of(tmp_path, processes, stat_interval=60)) as app, client_of(app) as c:
            assert (await c.get("/iiif/3/doomed.tif/info.json")).status_code == 200
            (tmp_path / "doomed.tif").unlink()
            got = await c.get("/iiif/3/doomed.tif/full/400,/0/default.png")
            statuses.append((got.status_code, got.text))
    assert statuses == [(404, "image not found: doomed.tif"), (415, "the image could not be decoded")]


async def test_a_killed_child_is_a_503_with_retry_after_then_replaced(root: Path) -> None:
    async with served_app(settings_of(root, True)) as app, client_of(app) as c:
        assert (await c.get(f"/iiif/3/{RGB_TIF}/full/150,/0/default.jpg")).status_code == 200
        [pid] = children_of(app)
        os.kill(pid, signal.SIGKILL)
        await until(lambda: gone(pid))
        died = await c.get(f"/iiif/3/{RGB_TIF}/full/160,/0/default.jpg")
        assert died.status_code == 503
        assert int(died.headers["retry-after"]) >= 1
        again = await c.get(f"/iiif/3/{RGB_TIF}/full/160,/0/default.jpg")
        assert again.status_code == 200
        assert decode(again.content).width == 160
        [new] = children_of(app)
        assert new != pid


async def test_an_abandoned_render_kills_its_child(root: Path) -> None:
    metrics.configure(True)
    name = "tileserver_render_process_exits_total"
    before = metrics.exposition().decode()
    async with served_app(settings_of(root, True)) as app, client_of(app) as c:
        service: TileService = app.state.service
        assert (await c.get(f"/iiif/3/{RGB_TIF}/full/100,/0/default.gif")).status_code == 200  # the child is up
        [pid] = children_of(app)
        relaxed = service.admission.settings
        service.admission.settings = settings_of(root, True, admission_deadline=1.0)
        started = time.monotonic()
        slow = await c.get(f"/iiif/3/{SLOW_GIF}/full/max/0/default.gif")
        assert slow.status_code == 503 and "longer than" in slow.text
        await until(lambda: gone(pid), timeout=2.0)  # killed, not left to run its seconds of quantisation
        assert time.monotonic() - started < 5.0
        await until(lambda: service.admission.large.in_flight == 0, timeout=2.0)
        assert service.stats()["admission"]["large_processes"] == 0
        service.admission.settings = relaxed
        assert (await c.get(f"/iiif/3/{RGB_TIF}/full/100,/0/default.jpg")).status_code == 200  # a new child
    assert _count(metrics.exposition().decode(), name, "killed") == _count(before, name, "killed") + 1


def _count(text: str, name: str, reason: str) -> float:
    line = next((x for x in text.splitlines() if x.startswith(f'{name}{{reason="{reason}"}}')), None)
    return 0.0 if line is None else float(line.split()[-1])


async def test_stop_ends_the_children(root: Path) -> None:
    async with served_app(settings_of(root, True)) as app, client_of(app) as c:
        assert (await c.get(f"/iiif/3/{RGB_TIF}/full/110,/0/default.jpg")).status_code == 200
        [pid] = children_of(app)
    assert gone(pid)
    assert app.state.service.children.running() == 0


async def test_false_renders_in_the_large_lane_threads(in_process: Starlette) -> None:
    before = {p.pid for p in multiprocessing.active_children()}
    service: TileService = in_process.state.service
    assert service.children is None
    done = service.admission.large.done
    async with client_of(in_process) as c:
        got = await c.get(f"/iiif/3/{RGB_TIF}/full/130,/0/default.jpg")
        health = (await c.get("/health")).json()
    assert got.status_code == 200 and decode(got.content).width == 130
    assert service.admission.large.done == done + 1
    assert "large_processes" not in health["admission"]
    assert {p.pid for p in multiprocessing.active_children()} <= before


async def test_the_core_raises_busy_when_the_child_dies(root: Path) -> None:
    from tileserver.models import Box, TileRequest

    service = TileService(settings_of(root, True))
    service.start()
    try:
        req = TileRequest(ident=RGB_TIF, region=Box(0, 0, 1003, 701), size=(140, 98))
        assert (await service.render(req)).width == 140
        [pid] = service.children.pids() if service.children else []
        os.kill(pid, signal.SIGKILL)
        await until(lambda: gone(pid))
        with pytest.raises(Busy):
            await service.render(TileRequest(ident=RGB_TIF, region=Box(0, 0, 1003, 701), size=(141, 98)))
    finally:
        service.stop()


# -- a live server: children end with their worker ----------------------------------------------------
def descendants(pid: int) -> Iterator[tuple[int, int]]:
    """(pid, depth) of every process below `pid` (Linux /proc)."""
    stack = [(pid, 0)]
    while stack:
        p, depth = stack.pop()
        for task in Path(f"/proc/{p}/task").glob("*"):
            try:
                kids = (task / "children").read_text().split()
            except OSError:
                continue
            for kid in kids:
                stack.append((int(kid), depth + 1))
                yield int(kid), depth + 1


def parent_of(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


@pytest.mark.server
@pytest.mark.parametrize("end", ["stop", "worker-killed"])
def test_children_end_with_the_server(end: str, root: Path, tmp_path: Path) -> None:
    env = clean_env(TILESERVER_ADMISSION_SMALL_COST="0.000001")
    with live_process(root, tmp_path / "log", workers=2, env=env) as (base, proc):
        got = httpx.get(f"{base}/iiif/3/{RGB_TIF}/full/170,/0/default.jpg", timeout=30)
        assert got.status_code == 200
        children = [p for p, depth in descendants(proc.pid) if depth == 2]  # supervisor -> worker -> child
        assert len(children) == 1
        if end == "stop":
            proc.send_signal(signal.SIGTERM)
            proc.wait(15)
        else:  # the worker dies without a word: its child notices within WATCH_INTERVAL
            os.kill(parent_of(children[0]), signal.SIGKILL)
        deadline = time.monotonic() + 5
        while not gone(children[0]):
            assert time.monotonic() < deadline, "the render process outlived its server"
            time.sleep(0.05)


async def test_a_child_that_cannot_start_is_a_503(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tileserver.imaging import isolate

    def refused(*args: object) -> None:
        raise BlockingIOError(11, "Resource temporarily unavailable")  # fork's EAGAIN past a process limit

    monkeypatch.setattr(isolate, "_Child", refused)
    async with served_app(settings_of(root, True)) as app, client_of(app) as c:
        got = await c.get(f"/iiif/3/{RGB_TIF}/full/180,/0/default.jpg")
    assert got.status_code == 503 and "retry-after" in got.headers


async def test_a_childs_start_is_not_counted_as_render_time(root: Path) -> None:
    """Admission's recent seconds per render (its expected waits, Retry-After) leave out a new child's start."""
    async with served_app(settings_of(root, True)) as app, client_of(app) as c:
        started = time.monotonic()
        assert (await c.get(f"/iiif/3/{RGB_TIF}/full/190,/0/default.jpg")).status_code == 200
        took = time.monotonic() - started  # the child's start (an interpreter, pyvips) and the render
        large = app.state.service.admission.large
        assert large.done == 1
        assert large.seconds < took / 2
