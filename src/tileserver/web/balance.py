"""New connections spread exactly over the worker processes of `tileserver serve --workers N`.

Each HTTP/1.1 connection is served by the worker that accepted it, for as long as it is kept alive, so how
connections are spread is how load is spread: a viewer's six connections, a proxy's pool of upstream ones, a
benchmark's sixteen. When each worker listens on a socket of its own (SO_REUSEPORT) the kernel picks one by a hash
of the client's address and port, at random as far as the workers can tell: 16 connections over 2 workers come out
8/8 only one time in five, and 5/11 or worse one time in five (measured here: 8/8, 6/10, 7/9, 5/11, 8/8, 7/9, 8/8,
8/8); the worker with 11 then answers each request ~11/8 as late as a balanced one would, and a cold pass's p99
follows it. On one shared socket without help it is worse: the worker that wakes first takes a whole burst.

Here the workers share one listening socket (`BalancedSocket`, made by the supervisor) and a table of how many
connections each holds (`Counts`: one 8-byte count per slot in a small file mapped by every worker, a slot claimed
with a POSIX lock on its byte, which the kernel releases when its worker dies). A worker accepts a pending
connection only when it holds no more than the fewest any worker holds (`Acceptor`); else it stops watching the
socket and looks again at the next turns of its event loop (`SPINS`, then every `RECHECK`), so the one with fewer,
woken by the same connection, takes it. This is
Envoy's "exact" connection balance, done without a lock: each worker writes only its own count. A worker that
has not taken a pending connection within `STUCK` (busy in a long turn, gone, or its slot left stale by a crash:
the table is then swept of slots whose lock is free) no longer holds the others back: they accept it. Counts are
of open connections (`on_lost`); how busy each one is does not count.

It runs inside uvicorn by its own extension point: the workers' event loop (`new_event_loop`, uvloop's) answers
uvicorn's `create_server(sock=...)` for a `BalancedSocket` with an `Acceptor` instead of uvloop's server.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import logging
import mmap
import os
import select
import socket
import tempfile
from collections.abc import Callable
from multiprocessing.reduction import DupFd, ForkingPickler
from typing import Any

import uvloop

log = logging.getLogger("tileserver")

ABSENT = 1 << 62  # a slot no live worker holds: larger than any count, so it never is the fewest
# a worker holding more than the fewest looks at a pending connection again at the next SPINS turns of its event
# loop (in a burst the others take theirs within microseconds, and uvloop's timers step by milliseconds), then
# every RECHECK
SPINS = 32
RECHECK = 0.001  # s
STUCK = 0.010  # s: a connection pending this long is taken by whichever worker looks, balanced or not
ERROR_PAUSE = 0.1  # s: accepting stops this long after an accept error such as EMFILE (out of descriptors)


class Counts:
    """The open connections of each worker of one server, one signed 8-byte count per slot of a shared file;
    `ABSENT` where no worker is. A worker `claim`s a free slot (a POSIX lock on the slot's byte: released by the
    kernel when the worker dies), counts its own connections in it (`add`), and reads everyone's (`fewest`)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd  # kept open for as long as the slot is held: closing any copy would drop the lock
        size = os.fstat(fd).st_size
        self._map = mmap.mmap(fd, size)
        self.view = memoryview(self._map).cast("q")
        self.slot: int | None = None

    @classmethod
    def create(cls, slots: int) -> Counts:
        """A new table of `slots` empty slots, in an anonymous file (the supervisor's; workers get its descriptor):
        a memfd where the system has them (no file system needed: a container's may be read-only), else an
        unlinked temporary file."""
        if hasattr(os, "memfd_create"):
            fd = os.memfd_create("tileserver-connections", os.MFD_CLOEXEC)
        else:
            with tempfile.TemporaryFile() as f:
                fd = os.dup(f.fileno())
        os.ftruncate(fd, slots * 8)
        table = cls(fd)
        for i in range(slots):
            table.view[i] = ABSENT
        return table

    def claim(self) -> int | None:
        """The first free slot, now this process's with a count of 0; None when every slot is held."""
        for i in range(len(self.view)):
            if self._lock(i):
                self.view[i] = 0
                self.slot = i
                return i
        return None

    def _lock(self, i: int) -> bool:
        try:
            fcntl.lockf(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, i)
        except OSError as exc:
            if exc.errno in (errno.EACCES, errno.EAGAIN):
                return False
            raise
        return True

    def add(self, n: int) -> None:
        if self.slot is not None:
            self.view[self.slot] += n

    def mine(self) -> int:
        return 0 if self.slot is None else self.view[self.slot]

    def fewest(self) -> bool:
        """Whether this process holds no more connections than any live worker (True without a slot)."""
        return self.slot is None or self.view[self.slot] <= min(self.view)

    def sweep(self) -> int:
        """Marks `ABSENT` the slots with a count but no live holder (a worker that died without `leave`); how many."""
        swept = 0
        for i in range(len(self.view)):
            if i != self.slot and self.view[i] != ABSENT and self._lock(i):
                self.view[i] = ABSENT
                fcntl.lockf(self.fd, fcntl.LOCK_UN, 1, i)
                swept += 1
        return swept

    def leave(self) -> None:
        """This process's slot given up: marked absent, its lock released."""
        if self.slot is not None:
            self.view[self.slot] = ABSENT
            fcntl.lockf(self.fd, fcntl.LOCK_UN, 1, self.slot)
            self.slot = None


class BalancedSocket(socket.socket):
    """The supervisor's listening socket, shared by every worker, with the table of their connections (`counts`).
    Handed to a worker (pickled for its spawn), it arrives as the same socket and table."""

    counts: Counts

    @classmethod
    def bound(cls, host: str, port: int, workers: int) -> BalancedSocket:
        family = socket.AF_INET6 if host and ":" in host else socket.AF_INET
        sock = cls(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.counts = Counts.create(2 * workers + 8)  # room for restarts (a new worker starts before the old ends)
        log.info("tileserver listening on %s:%d, connections balanced over %d workers", host,
                 sock.getsockname()[1], workers)
        return sock


def _rebuild(sock: Any, table: Any, family: int, kind: int, proto: int) -> BalancedSocket:
    out = BalancedSocket(family, kind, proto, fileno=sock.detach())
    out.counts = Counts(table.detach())
    return out


def _reduce(sock: BalancedSocket) -> tuple[Callable[..., BalancedSocket], tuple[Any, ...]]:
    return _rebuild, (DupFd(sock.fileno()), DupFd(sock.counts.fd), sock.family, sock.type, sock.proto)


ForkingPickler.register(BalancedSocket, _reduce)


class Acceptor:
    """One worker's accepting on a `BalancedSocket`, in place of the event loop's own server; the part of
    `asyncio.Server` uvicorn uses (`close`, `wait_closed`, `is_serving`, `sockets`)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, factory: Callable[[], asyncio.BaseProtocol],
                 sock: BalancedSocket, backlog: int, ssl: Any = None) -> None:
        self._loop, self._factory, self._sock, self._ssl = loop, factory, sock, ssl
        self.counts = sock.counts
        sock.setblocking(False)
        sock.listen(backlog)
        self._fd = sock.fileno()
        self._poll = select.poll()
        self._poll.register(self._fd, select.POLLIN)
        self._serving = True
        self._declined: float | None = None  # when this worker began to leave a pending connection to others
        self._swept = False
        self._timer: asyncio.Handle | None = None
        self._spins = 0  # turns of the loop this worker has looked again at a pending connection without a timer
        if self.counts.claim() is None:
            log.warning("no free slot in the connection table: this worker accepts without balancing")
        loop.add_reader(self._fd, self._readable)

    @property
    def sockets(self) -> tuple[socket.socket, ...]:
        return (self._sock,)

    def is_serving(self) -> bool:
        return self._serving

    def get_loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    def close(self) -> None:
        if not self._serving:
            return
        self._serving = False
        self._loop.remove_reader(self._fd)
        if self._timer is not None:
            self._timer.cancel()
        self.counts.leave()  # the others no longer wait for this worker to take connections

    async def wait_closed(self) -> None:
        return None

    def _readable(self) -> None:
        """Accept the pending connections while this worker holds no more than the fewest (or they are stuck)."""
        while self._serving:
            if not self.counts.fewest():
                now = self._loop.time()
                if self._declined is None:
                    self._declined, self._spins = now, 0
                if now - self._declined < STUCK:
                    self._spins += 1  # the one with fewer is taking it now: look again at the next turn of the loop
                    self._pause(0.0 if self._spins <= SPINS else RECHECK)
                    return
                if not self._swept:  # the fewest has not taken it: is that worker still there?
                    self._swept = True
                    if self.counts.sweep():
                        continue
            else:
                self._declined, self._swept = None, False
            try:
                conn, _ = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                self._declined, self._swept = None, False
                return
            except OSError as exc:
                if exc.errno == errno.ECONNABORTED:  # gone before it was taken
                    continue
                log.warning("accepting a connection failed: %s", exc)  # out of descriptors: try again soon
                self._pause(ERROR_PAUSE)
                return
            self.counts.add(1)
            self._loop.create_task(self._serve(conn))

    def _pause(self, delay: float) -> None:
        self._loop.remove_reader(self._fd)
        if delay:
            self._timer = self._loop.call_later(delay, self._resume)
        else:
            self._timer = self._loop.call_soon(self._resume)

    def _resume(self) -> None:
        self._timer = None
        if not self._serving:
            return
        if self._poll.poll(0):  # still pending: decide again
            self._readable()
            if self._timer is not None or not self._serving:
                return
        else:  # another worker took it
            self._declined, self._swept = None, False
        self._loop.add_reader(self._fd, self._readable)

    async def _serve(self, conn: socket.socket) -> None:
        """`conn` served by a protocol of uvicorn's; its count ends once, when the protocol says it is lost
        (`on_lost`, web/server.py's `GuardedProtocol`) or it could not be served."""
        counted = True

        def lost() -> None:
            nonlocal counted
            if counted:
                counted = False
                self.counts.add(-1)

        def made() -> asyncio.BaseProtocol:
            protocol = self._factory()
            if hasattr(protocol, "on_lost"):
                protocol.on_lost = lost
            else:  # a protocol that cannot say when it ends is not counted
                lost()
            return protocol

        try:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            await self._loop.connect_accepted_socket(made, conn, ssl=self._ssl)
        except Exception as exc:  # the client went away at once, or its TLS handshake failed
            log.debug("a connection ended before it was served: %s", exc)
            lost()
            with contextlib.suppress(OSError):
                conn.close()


class BalancingLoop(uvloop.Loop):
    """uvloop's event loop, whose `create_server` answers a `BalancedSocket` with an `Acceptor`."""

    async def create_server(self, protocol_factory: Any, host: Any = None, port: Any = None, **kwargs: Any) -> Any:
        sock = kwargs.get("sock")
        if isinstance(sock, BalancedSocket):
            return Acceptor(self, protocol_factory, sock, kwargs.get("backlog") or 2048, kwargs.get("ssl"))
        return await super().create_server(protocol_factory, host, port, **kwargs)


def new_event_loop() -> asyncio.AbstractEventLoop:
    """The workers' event loop (uvicorn's `loop` option names it)."""
    return BalancingLoop()
