"""Cooperative cancellation of a render past its deadline (see admission.py). A thread cannot be killed, so
the work is asked to stop: `Job.cancel()` (called on the event loop) sets a flag that `check()` reads between
the pipeline's steps, runs the stops registered with `on_cancel` (a large render in a child process,
imaging/isolate.py, is stopped for good: the child is killed), and sets libvips' own kill flag on every image
the job registered with `watch`. libvips checks that flag each time it computes a block of a downstream image
(`vips_region_prepare`), so a resize, rotation or encode stops at its next block with a "killed" error.
Encoders that work on pixels already in memory (GIF quantisation, OpenJPEG) are not libvips pipelines and run
to their end.

The job is the current thread's: `running(job)` sets it for the duration of one piece of work in a pool
thread, so the render code needs no extra argument."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from ..errors import Busy


class Cancelled(Busy):
    """Raised in a pool thread whose job was cancelled (its client got 503 already, or went away)."""


class Job:
    """One piece of admitted work; `cancelled` once its deadline passed or its client left."""

    __slots__ = ("_images", "_stops", "cancelled", "unmetered")

    def __init__(self) -> None:
        self.cancelled = False
        self.unmetered = 0.0  # seconds of the work that are not its own cost (a render child's start-up)
        self._images: list[Any] = []
        self._stops: list[Callable[[], None]] = []

    def cancel(self) -> None:
        # flag first, then the images: `watch` registers first, then reads the flag, so an image
        # registered at the same moment is killed by one side or the other
        self.cancelled = True
        for img in list(self._images):
            img.set_kill(True)
        for stop in list(self._stops):
            stop()

    def on_cancel(self, stop: Callable[[], None]) -> None:
        """Call `stop` (on the event loop: it must not block) when the job is cancelled, or now if it was:
        work done elsewhere (a render child process, imaging/isolate.py) is stopped by it. `stop` may be
        called twice at the same moment and must not mind."""
        self._stops.append(stop)
        if self.cancelled:
            stop()

    def watch(self, img: Any) -> Any:
        out = img.copy()  # a private image: only this job's pipeline computes its blocks
        self._images.append(out)
        if self.cancelled:
            out.set_kill(True)
        return out


_local = threading.local()


@contextmanager
def running(job: Job) -> Iterator[Job]:
    """Make `job` the current thread's job while the block runs."""
    previous = getattr(_local, "job", None)
    _local.job = job
    try:
        yield job
    finally:
        _local.job = previous


def current() -> Job | None:
    job: Job | None = getattr(_local, "job", None)
    return job


def check() -> None:
    """Raise `Cancelled` if the current thread's job was cancelled; a no-op outside a job."""
    job = current()
    if job is not None and job.cancelled:
        raise Cancelled("cancelled: the render took longer than its deadline")


def watch(img: Any) -> Any:
    """`img` as an image the current job can kill (itself outside a job)."""
    job = current()
    return img if job is None else job.watch(img)
