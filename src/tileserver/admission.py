"""Admission control: every render runs in one of two lanes, decided from the request and the image alone
(protocol-neutral, so every protocol, JPEG 2000 and slides alike), after the tile cache missed.

- The **tile lane** runs tile-sized work on `settings.tile_threads` threads of its own, which large work never
  takes, so an uncached tile never waits behind an export.
- The **large lane** runs exports, big regions, rotations, costly formats and costly sources on
  `admission_large_threads` threads, with at most `admission_large_megapixels` pixels in flight. Past those
  limits a request waits in a short FIFO queue (`admission_large_queue` places, at most
  `admission_queue_wait` seconds), but only while a place is expected within that wait (from the work ahead
  and the recent seconds per cost unit); otherwise, and past the queue's length, it is refused at once with
  503 and a Retry-After of the expected wait. The queue absorbs bursts of short large renders (a validator
  or a page asking for a few WebP images at once) without letting a flood of long ones wait for nothing.
  Nothing queues without bound.
- Every render has a deadline (`admission_deadline`, waiting included): past it the client gets 503 and the
  work is cancelled. A large render in a child process (below) is stopped for good: its child is killed
  (SIGKILL) and replaced, which frees its CPU and memory at once, and its place frees as soon as its pool
  thread sees the child gone. Work in a thread (the tile lane; the large lane with
  `admission_large_processes=false`) is cancelled as far as libvips allows (imaging/cancel.py): a thread
  cannot be killed, so it keeps its place (its thread, its pixels) until it really ends.
- Both lanes share the CPU, so large renders run at a lower OS priority (`admission_large_nice`). By default
  (`admission_large_processes`) each runs in one of `admission_large_threads` niced child processes
  (imaging/isolate.py), libvips' worker threads included, while the large lane's pool thread waits for it (so
  the counting here is the same either way). Without them only the large lane's own threads are niced: the
  parts of a large render that run there (GIF quantisation, WebP/AVIF/JPEG 2000 encoding, Python) give way to
  tiles, but libvips' worker threads are shared by all renders of a process and keep their priority.

`estimate(meta, req)` is the cost model. Its unit is the megapixel-equivalent: decoding one megapixel from a
JPEG-tiled pyramid, or encoding one as JPEG, costs 1 (3-9 ms of one core on the 2-core test machine).
Other formats and sources are weighted by what they cost per pixel there (measured: bench/overload.py's
header names the machine). All counting happens on the event loop; the pool threads only run the work.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import math
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from . import metrics
from .errors import Busy, TileServerError
from .imaging.cancel import Job, check, running
from .levels import source_box
from .models import ImageMeta, OutputFormat, TileRequest
from .settings import Settings

T = TypeVar("T")
log = logging.getLogger("tileserver.admission")

# Cost per output pixel of each encoder, relative to JPEG (measured on 1024-px exports of a textured image;
# GIF is libimagequant quantisation and dithering, JPEG 2000 is OpenJPEG through Pillow).
FORMAT_WEIGHT: dict[OutputFormat, float] = {
    OutputFormat.JPEG: 1.0, OutputFormat.PNG: 8.0, OutputFormat.WEBP: 20.0, OutputFormat.AVIF: 50.0,
    OutputFormat.TIFF: 6.0, OutputFormat.GIF: 1000.0, OutputFormat.JP2: 80.0,
}
# Cost per decoded source pixel, relative to a JPEG-tiled TIFF (by `ImageMeta.loader`).
SOURCE_WEIGHT: dict[str, float] = {"jp2kload": 10.0, "openslide": 2.0}
ROTATE_WEIGHT = 5.0  # added per output pixel of a rotation by another angle than a right one (an affine)
RIGHT_ANGLE_WEIGHT = 2.0  # added per output pixel of a 90/180/270-degree rotation (random access)
PROCESSING_WEIGHT = 2.0  # added per output pixel when IIP processing (CNV, SHD, CMP, ...) is asked
MP = 1e6


class Lane(enum.Enum):
    SMALL = "tile"
    LARGE = "large"


@dataclass(frozen=True)
class Cost:
    """What a render is expected to take: `units` (CPU, megapixel-equivalents) decides the lane, `pixels`
    (decoded plus output, in millions) counts against the large lane's pixels in flight."""

    units: float
    pixels: float


def estimate(meta: ImageMeta, req: TileRequest) -> Cost:
    """The cost of rendering `req` from the image `meta`: the source pixels decoded (the box of the level
    read, at the stored level it is shrunk from when that level is virtual), weighted by the source, plus
    the output pixels (the canvas after rotation) weighted by the format, the rotation and processing."""
    try:
        level, (_, _, w, h) = source_box(meta, req)
        stored = next(i for i in range(level, -1, -1) if meta.levels[i].stored or i == 0)
    except (IndexError, ValueError, ZeroDivisionError, TileServerError):
        return Cost(0.0, 0.0)  # a request outside the image: the render answers it with its error at once
    scale = meta.levels[stored].width / max(meta.levels[level].width, 1)
    read = w * h * scale * scale / MP
    size = req.size if req.size is not None else (w, h)
    ow, oh = float(size[0]), float(size[1])
    angle = req.rotation % 360
    weight = FORMAT_WEIGHT.get(req.fmt, 1.0)
    if angle % 90:
        rad = math.radians(angle)
        c, s = abs(math.cos(rad)), abs(math.sin(rad))
        ow, oh = ow * c + oh * s, ow * s + oh * c
        weight += ROTATE_WEIGHT
    elif angle:
        weight += RIGHT_ANGLE_WEIGHT
    if not req.processing.is_identity:
        weight += PROCESSING_WEIGHT
    out = ow * oh / MP
    return Cost(read * SOURCE_WEIGHT.get(meta.loader, 1.0) + out * weight, read + out)


def lane_for(cost: Cost, settings: Settings) -> Lane:
    return Lane.SMALL if cost.units <= settings.admission_small_cost else Lane.LARGE


def _renice(nice: int) -> None:
    """Lower the OS priority of the calling pool thread by `nice`, from the process's own (a server
    started niced keeps tiles ahead of exports; Linux: a thread id is a valid PRIO_PROCESS target and the
    niceness is the thread's own; elsewhere nothing is changed)."""
    if nice and sys.platform.startswith("linux"):
        try:
            tid = threading.get_native_id()
            os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + nice))
        except OSError as exc:  # not allowed here (a seccomp profile): run at normal priority
            log.warning("cannot lower the large lane's thread priority: %s", exc)


class _Lane:
    """One lane's threads and counters (touched on the event loop only, but `running`)."""

    def __init__(self, name: str, threads: int) -> None:
        self.name = name
        self.threads = threads
        self.pool: ThreadPoolExecutor | None = None
        self.in_flight = 0  # admitted and not yet ended: running or waiting for a thread
        self.pixels = 0.0  # megapixels of the work in flight
        self.running = 0  # in a pool thread now (updated from the pool threads, under `lock`)
        self.lock = threading.Lock()
        self.done = 0
        self.refused = 0
        self.expired = 0
        self.abandoned = 0  # cancelled (deadline or client gone) and not yet ended
        self.seconds = 0.0  # recent run time of one render (moving average)
        self.rate = 0.0  # recent run time per cost unit (moving average), for the expected wait

    def ran(self, seconds: float, units: float) -> None:
        first = self.done == 0
        self.seconds = seconds if first else 0.8 * self.seconds + 0.2 * seconds
        per_unit = seconds / max(units, 1.0)
        self.rate = per_unit if first else 0.8 * self.rate + 0.2 * per_unit
        self.done += 1

    def stats(self, waiting: int = 0) -> dict[str, int]:
        n = self.name
        return {f"{n}_threads": self.threads, f"{n}_in_flight": self.in_flight, f"{n}_running": self.running,
                f"{n}_queued": max(self.in_flight - self.running, 0) + waiting, f"{n}_done": self.done,
                f"{n}_expired": self.expired, f"{n}_abandoned": self.abandoned}


@dataclass(eq=False)
class _Work:
    """Admitted large work: its cost and when it was admitted (for the expected wait)."""

    cost: Cost
    since: float


@dataclass(eq=False)
class _Waiter:
    cost: Cost
    ready: asyncio.Future[None]
    work: _Work | None = None  # its place, once `_wake` gave it one


class Admission:
    """The two lanes; `run(lane, fn, *args, cost=...)` runs `fn(*args)` in a lane's pool under its limits."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.small = _Lane("tile", settings.tile_threads)
        self.large = _Lane("large", settings.admission_large_threads)
        self.max_pixels = settings.admission_large_megapixels
        self._waiters: deque[_Waiter] = deque()
        self._admitted: set[_Work] = set()  # the large lane's work in flight

    # -- lifecycle ----------------------------------------------------------------------------------
    def start(self) -> None:
        for lane in (self.small, self.large):
            if lane.pool is None:
                nice = self.settings.admission_large_nice if lane is self.large else 0
                lane.pool = ThreadPoolExecutor(lane.threads, thread_name_prefix=f"tileserver-{lane.name}",
                                               initializer=_renice, initargs=(nice,))
            self._report(lane)

    def _report(self, state: _Lane) -> None:
        """The lane's admitted and queued work, to the metrics (a gauge set per change: no work at scrape)."""
        metrics.admission(state.name, state.in_flight, len(self._waiters) if state is self.large else 0)

    def stop(self) -> None:
        for lane in (self.small, self.large):
            if lane.pool is not None:
                lane.pool.shutdown(wait=False, cancel_futures=True)
                lane.pool = None

    # -- running work -------------------------------------------------------------------------------
    async def run(self, lane: Lane, fn: Callable[..., T], *args: Any, cost: Cost | None = None,
                  deadline: bool = True) -> T:
        """`fn(*args)` in `lane`'s pool. The large lane admits it within its limits, after a short wait in
        its queue, or raises `Busy` at once. With `deadline`, `Busy` too once `admission_deadline` seconds
        have passed since the call (the work is then cancelled and keeps its place until it ends)."""
        loop = asyncio.get_running_loop()
        until = loop.time() + self.settings.admission_deadline if deadline else None
        cost = cost or Cost(0.0, 0.0)
        if lane is Lane.LARGE:
            state, admitted = self.large, await self._enter(cost, until)
        else:
            state, admitted = self.small, self._take(self.small, cost)
        job = Job()
        try:
            self.start()
            assert state.pool is not None
            work = asyncio.wrap_future(state.pool.submit(self._call, state, job, fn, args))
        except BaseException:
            self._leave(state, admitted)
            raise
        work.add_done_callback(lambda done: self._ended(state, admitted, job, done))
        try:
            async with asyncio.timeout_at(until):
                return (await asyncio.shield(work))[0]
        except TimeoutError:
            if work.done():
                return work.result()[0]  # ended at the same moment
            state.expired += 1
            raise self._busy(state, "deadline", f"the {state.name} render took longer than "
                             f"{self.settings.admission_deadline:g} s") from None
        finally:
            if not work.done():  # deadline passed or the client went away: stop the work where it can
                state.abandoned += 1
                job.cancel()

    @staticmethod
    def _call(state: _Lane, job: Job, fn: Callable[..., T], args: tuple[Any, ...]) -> tuple[T, float]:
        """In a pool thread: `fn(*args)` as `job`, unless it was cancelled while it waited for a thread."""
        with state.lock:
            state.running += 1
        start = time.monotonic()
        try:
            with running(job):
                check()
                out = fn(*args)
                return out, max(time.monotonic() - start - job.unmetered, 0.0)  # a child's start is no render's
        finally:
            with state.lock:
                state.running -= 1

    def _ended(self, state: _Lane, admitted: _Work, job: Job, done: asyncio.Future[tuple[Any, float]]) -> None:
        """On the loop, when the work really ended (whether anyone still waits for it)."""
        if job.cancelled:
            state.abandoned -= 1
        if not done.cancelled() and done.exception() is None:
            state.ran(done.result()[1], admitted.cost.units)
        self._leave(state, admitted)

    # -- the limits -----------------------------------------------------------------------------------
    def _fits(self, cost: Cost) -> bool:
        large = self.large
        return large.in_flight < large.threads and (large.in_flight == 0 or
                                                    large.pixels + cost.pixels <= self.max_pixels)

    def _take(self, state: _Lane, cost: Cost) -> _Work:
        work = _Work(cost, time.monotonic())
        state.in_flight += 1
        if state is self.large:
            state.pixels += cost.pixels
            self._admitted.add(work)
        self._report(state)
        return work

    def _leave(self, state: _Lane, work: _Work) -> None:
        state.in_flight -= 1
        if state is self.large:
            self._admitted.discard(work)
            state.pixels = max(state.pixels - work.cost.pixels, 0.0) if state.in_flight else 0.0
            self._wake()
        self._report(state)

    def _wake(self) -> None:
        """Admit the queue's first waiters while they fit (FIFO: a large one is not overtaken forever)."""
        while self._waiters and self._fits(self._waiters[0].cost):
            waiter = self._waiters.popleft()
            if not waiter.ready.done():
                waiter.work = self._take(self.large, waiter.cost)
                waiter.ready.set_result(None)

    def expected_wait(self) -> float | None:
        """Seconds until a render queued now would start: what the work in flight still has to do and the
        work queued needs, at the recent seconds per cost unit, shared by the lane's threads; None before
        any large render has ended (nothing to go by)."""
        large = self.large
        if not large.done:
            return None
        now = time.monotonic()
        left = sum(max(w.cost.units * large.rate - (now - w.since), 0.0) for w in self._admitted)
        queued = sum(w.cost.units * large.rate for w in self._waiters)
        return (left + queued) / large.threads

    async def _enter(self, cost: Cost, until: float | None) -> _Work:
        """A place in the large lane: at once when one is free and none waits, else after a wait in the
        queue when it has room and a place is expected within `admission_queue_wait`; else `Busy`."""
        large = self.large
        if not self._waiters and self._fits(cost):
            return self._take(large, cost)
        expected = self.expected_wait()
        if len(self._waiters) >= self.settings.admission_large_queue or (
                expected is not None and expected > self.settings.admission_queue_wait):
            large.refused += 1
            raise self._busy(large, "full",
                             f"{large.in_flight} large renders in flight and {len(self._waiters)} waiting")
        loop = asyncio.get_running_loop()
        waiter = _Waiter(cost, loop.create_future())
        self._waiters.append(waiter)
        self._report(large)
        wait = loop.time() + self.settings.admission_queue_wait
        try:
            async with asyncio.timeout_at(wait if until is None else min(wait, until)):
                await waiter.ready
        except TimeoutError:
            if waiter.work is None:
                large.refused += 1
                raise self._busy(large, "queue_wait", "no large render slot was free in time") from None
            # admitted at the very moment it would have given up: go ahead
        except BaseException:
            if waiter.work is not None:  # admitted just as the client went away: give the place back
                self._leave(large, waiter.work)
            raise
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)
                self._report(large)
                self._wake()  # the next one may fit where this one did not
        assert waiter.work is not None
        return waiter.work

    def _busy(self, state: _Lane, reason: str, why: str) -> Busy:
        """503 with a Retry-After of about when a place frees (1 to 60 s): the large lane's expected wait;
        for the tile lane, the recent run time of one render times those in flight over its threads. The
        default (5 s) before anything ran."""
        metrics.refused(state.name, reason)  # reason: full (at once), queue_wait, deadline
        exc = Busy(f"busy: {why}; retry later")
        if state.done:
            expected = (self.expected_wait() if state is self.large else None) or \
                state.seconds * max(state.in_flight, 1) / state.threads
            exc.retry_after = min(max(math.ceil(expected), 1), 60)
        return exc

    def stats(self) -> dict[str, int]:
        """Counters for /health (and metrics), per lane (`tile_*`, `large_*`): threads; in flight (admitted
        and not ended: running, or waiting for a thread); running; queued (waiting for a thread, or for a
        place in the large lane); done; expired (deadline passed: 503); abandoned (cancelled, still
        running). The large lane's refusals (503 at once, or after the queue wait), its pixels in flight
        (millions, rounded up), its expected wait (ms), and the limits."""
        large = self.large
        expected = self.expected_wait()
        return {**self.small.stats(), **large.stats(len(self._waiters)), "large_refused": large.refused,
                "large_megapixels_in_flight": math.ceil(large.pixels),
                "large_expected_wait_ms": round((expected or 0.0) * 1000),
                "large_megapixels_limit": math.ceil(self.max_pixels),
                "large_queue_limit": self.settings.admission_large_queue,
                "deadline_ms": round(self.settings.admission_deadline * 1000)}
