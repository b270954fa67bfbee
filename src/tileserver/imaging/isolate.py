"""Large-lane renders in child processes (`admission_large_processes`).

libvips computes pixels on worker threads of its own (its threadset), shared by every render of a process, so
a niced pool thread (admission.py) does not make an export give way to tiles: the export's pixels are made at
the tiles' priority. Here a large render runs in one of `admission_large_threads` child processes instead,
each niced at start by `admission_large_nice` below the server's own priority (its libvips threads with it)
and reused: the CPU goes to tiles first, and an abandoned render (deadline passed, client gone) is stopped for
good by killing its child (SIGKILL), which frees its CPU and memory at once; a new child replaces it.

A child is started lazily (multiprocessing's `spawn`: a fresh interpreter, never a fork of a process with
threads and libvips state) from the server's `Settings`, builds the same sources and formats
(sources/configured.py), so it opens an image from its location (`Location`: path, identifier, selection and
version) itself, within the same pixel budget, and keeps the last few images it opened by location. It answers
with the `Rendered` result (or the `TileServerError` the in-process render raises, rebuilt here with its status
and message) over a pipe; the pool thread of the large lane waits for it, so admission's accounting is
unchanged. A child that dies (a crash, the OOM killer) costs its render a 503 with Retry-After and is replaced.
A child exits when its pipe closes or its server process is gone (it checks its parent every
`WATCH_INTERVAL` seconds), and graceful shutdown stops it (`Children.stop`). Render metrics recorded in a
child are sent back and recorded by the server process.

Costs: a child's start (about 0.5 s, paid by the first large render after a start or a kill); its memory
(the interpreter and libvips, about 70 MB, plus the caches the settings give every process); a script that
embeds the app and renders large work must guard its main code with `if __name__ == "__main__":` (`spawn`
imports the main module again in the child), or set `admission_large_processes=false`.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from .. import metrics
from ..cache.memory import ByteLRU
from ..errors import Busy, TileServerError
from ..models import Rendered, TileRequest
from ..settings import Settings
from ..sources.base import Selector, SourceImage
from ..sources.configured import Sources
from ..sources.pyramid import configure_vips
from . import cancel
from .render import render

log = logging.getLogger("tileserver.isolate")
CONTEXT = multiprocessing.get_context("spawn")
OPENED = 8  # images a child keeps open, by location
HISTOGRAMS = 8 << 20  # bytes of per-image histograms a child keeps (render's `derived`)
WATCH_INTERVAL = 0.5  # seconds between a child's checks that its server process still runs
STOP_WAIT = 2.0  # seconds graceful shutdown waits for idle children to exit before killing them


@dataclass(frozen=True)
class Location:
    """Where an image is and which version of it (the core's `_Found`): what a child opens it from, and the key
    of its opened images (a new version is opened anew)."""

    path: str
    ident: str
    version: Hashable
    base: str | None = None  # a selection's file identifier
    selector: Selector | None = None


class ChildDied(Exception):
    """The child's pipe closed before it answered: it was killed, or crashed."""


class _Child:
    """One render child and its end of the pipe; `job` is the render it runs now (for `abandon`)."""

    def __init__(self, settings: Settings, priority: int) -> None:
        ours, theirs = CONTEXT.Pipe()
        self.process = CONTEXT.Process(target=main, args=(theirs, settings, priority, os.getpid()),
                                       name="tileserver-render", daemon=True)
        self.process.start()
        theirs.close()
        self.conn = ours
        self.lock = threading.Lock()
        self.job: cancel.Job | None = None
        self.killed = False  # by `abandon` (its render was abandoned) or `kill`
        self.stopping = False  # by graceful shutdown

    def ready(self) -> None:
        """Wait until the child has started (its sources made): it says so once."""
        try:
            said = self.conn.recv()
        except (EOFError, OSError) as exc:
            raise ChildDied from exc
        if said != "ready":
            raise ChildDied(f"a render process said {said!r} at start")

    def ask(self, location: Location, req: TileRequest) -> tuple[str, Any, list[tuple[Any, ...]]]:
        try:
            self.conn.send((location, req))
            answer: tuple[str, Any, list[tuple[Any, ...]]] = self.conn.recv()
            return answer
        except (EOFError, OSError) as exc:
            raise ChildDied from exc

    def abandon(self, job: cancel.Job) -> None:
        """On the event loop: kill the child if it still runs `job` (it may have answered and taken another)."""
        with self.lock:
            if self.job is job:
                self.kill()

    def kill(self) -> None:
        self.killed = True
        pid = self.process.pid
        if pid is not None and self.process.exitcode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def reap(self, timeout: float) -> None:
        self.process.join(timeout)
        if self.process.exitcode is None:
            self.kill()
            self.process.join()
        self.conn.close()


class Children:
    """The render children of one server process; `render` runs in a large-lane pool thread, so at most
    `admission_large_threads` children exist (one per thread busy at once)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        # the server's own priority, lowered: a server started niced keeps tiles ahead of exports
        own = os.getpriority(os.PRIO_PROCESS, os.getpid()) if hasattr(os, "getpriority") else 0
        self.priority = min(19, own + settings.admission_large_nice)
        self._idle: list[_Child] = []
        self._all: set[_Child] = set()
        self._lock = threading.Lock()
        self.started = 0

    def running(self) -> int:
        with self._lock:
            return len(self._all)

    def pids(self) -> list[int]:
        with self._lock:
            return [c.process.pid for c in self._all if c.process.pid is not None]

    def render(self, location: Location, req: TileRequest) -> Rendered:
        """`req` rendered from the image at `location` in a child; what `imaging.render.render` returns or
        raises. The current job's cancellation (admission's deadline) kills the child."""
        child, new = self._take()
        job = cancel.current()
        with child.lock:
            child.job = job
        if job is not None:
            job.on_cancel(lambda: child.abandon(job))
        try:
            if new:  # its start-up is not this render's cost (admission's seconds per cost unit)
                started = time.monotonic()
                child.ready()
                if job is not None:
                    job.unmetered += time.monotonic() - started
            kind, value, calls = child.ask(location, req)
        except ChildDied:
            self._lost(child)
            cancel.check()  # abandoned: its client was answered already
            raise Busy("the render process ended before the image was made; retry later") from None
        with child.lock:
            child.job = None
            killed = child.killed
        if killed:  # cancelled just as it answered: the answer stands, the child is gone
            self._lost(child)
        else:
            with self._lock:
                self._idle.append(child)
        metrics.replay_rendered(calls)
        if kind == "ok":
            assert isinstance(value, Rendered)
            return value
        if kind == "error":
            raise rebuilt(*value)
        raise RuntimeError(f"the render failed in its child process: {value}")

    def _take(self) -> tuple[_Child, bool]:
        """An idle child, or a new one (True: not started yet)."""
        with self._lock:
            if self._idle:
                return self._idle.pop(), False
        try:
            child = _Child(self.settings, self.priority)
        except OSError as exc:  # no process could be started (a process or memory limit): not the request's fault
            log.error("cannot start a render process: %s", exc)
            raise Busy("no render process could be started; retry later") from exc
        with self._lock:
            self._all.add(child)
            self.started += 1
        return child, True

    def _lost(self, child: _Child) -> None:
        with self._lock:
            self._all.discard(child)
        child.reap(STOP_WAIT)
        reason = "stopped" if child.stopping else "killed" if child.killed else "died"
        if reason == "died":
            log.warning("a render process died (exit code %s); its render got 503", child.process.exitcode)
        metrics.process_exit(reason)

    def stop(self) -> None:
        """Stop every child: idle ones are asked to exit (killed if they do not within `STOP_WAIT`), busy ones
        (abandoned renders) are killed."""
        with self._lock:
            children, idle = list(self._all), set(self._idle)
            self._all.clear()
            self._idle.clear()
        for child in children:
            child.stopping = True
            if child in idle:
                with contextlib.suppress(OSError):
                    child.conn.send(None)
            else:
                child.kill()
        until = time.monotonic() + STOP_WAIT
        for child in children:
            if child in idle:
                child.reap(max(until - time.monotonic(), 0.0))
                metrics.process_exit("stopped")


def rebuilt(cls: type[TileServerError], message: str, attrs: dict[str, Any]) -> TileServerError:
    """The error a child raised, as the in-process render would have raised it (its class: the status; its
    message; its attributes, such as a Retry-After)."""
    exc = cls.__new__(cls)
    TileServerError.__init__(exc, message)
    exc.__dict__.update(attrs)
    return exc


# -------------------------------------------------------------------------------------------- the child
class _Renderer:
    """A child's sources, its last opened images (by location) and its per-image histograms."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.sources = Sources.of(settings)
        self.derived: ByteLRU[Hashable, object] = ByteLRU(HISTOGRAMS)
        self.opened: OrderedDict[Location, SourceImage] = OrderedDict()

    def image(self, loc: Location) -> SourceImage:
        image = self.opened.pop(loc, None)
        if image is None:
            image = self.sources.open(loc.path, loc.ident, loc.base, loc.selector)
            if image.meta.provisional:  # the server renders previews itself; this is a race with a conversion
                raise Busy(f"{loc.ident} is being prepared; retry in a moment")
        self.opened[loc] = image
        while len(self.opened) > OPENED:
            self.opened.popitem(last=False)
        return image

    def answer(self, loc: Location, req: TileRequest) -> tuple[str, Any]:
        try:
            return "ok", render(self.image(loc), req, self.settings, self.derived)
        except TileServerError as exc:
            return "error", (type(exc), exc.message, {k: v for k, v in vars(exc).items() if k != "message"})
        except Exception as exc:  # a bug: the in-process render answers it with 500 too
            log.exception("render failed in a render process")
            return "failed", type(exc).__name__


def main(conn: Connection, settings: Settings, priority: int, parent: int) -> None:
    """A child's life: lower its priority, watch its parent, then answer renders until its pipe closes or
    it is sent None."""
    _lower_priority(priority)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the server stops its children
    threading.Thread(target=_watch, args=(parent,), name="tileserver-watch", daemon=True).start()
    configure_vips()
    renderer = _Renderer(settings)
    gc.collect()
    gc.freeze()  # a full collection then walks only what renders make (cli.frozen)
    try:
        conn.send("ready")
    except OSError:
        return
    calls: list[tuple[Any, ...]] = []
    metrics.capture(calls)
    while True:
        try:
            asked = conn.recv()
        except (EOFError, OSError):
            return
        if asked is None:
            return
        kind, value = renderer.answer(*asked)
        try:
            conn.send((kind, value, calls))
        except (OSError, EOFError):
            return
        except Exception as exc:  # an answer that does not pickle (nothing was sent): a 500, as in process
            log.exception("a render process's answer could not be sent")
            conn.send(("failed", type(exc).__name__, []))
        finally:
            calls.clear()


def _lower_priority(priority: int) -> None:
    """Run at `priority` (a nice value; the process and every thread it starts later: libvips' workers)."""
    if not hasattr(os, "setpriority"):
        return
    try:
        if os.getpriority(os.PRIO_PROCESS, 0) < priority:
            os.setpriority(os.PRIO_PROCESS, 0, priority)
    except OSError as exc:  # not allowed here (a seccomp profile): run at the inherited priority
        print(f"tileserver: cannot lower a render process's priority: {exc}", file=sys.stderr)


def _watch(parent: int) -> None:
    """Exit at once when the server process is gone (the pipe may not say so while a render runs)."""
    while os.getppid() == parent:
        time.sleep(WATCH_INTERVAL)
    os._exit(0)
