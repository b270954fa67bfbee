"""Real shared-cache servers on loopback for the tests: Debian's redis-server and memcached, each on a free
port, with no persistence, stopped on exit.

    with redis_server() as server:          # CacheServer: url "redis://127.0.0.1:PORT/0"
        settings = Settings(cache_url=server.url, ...)
        server.flush()                       # FLUSHALL / flush_all
        server.pause(); server.resume()      # SIGSTOP / SIGCONT: a server that hangs
        server.stop(); server.start()        # a server that is gone, and back (same port)
        server.kill()                        # SIGKILL: gone with no goodbye (the cluster tests, under load)
        server.stats(); server.hits()        # its own counters: Redis INFO, memcached stats
        server.cpu_seconds(); server.commands()  # the CPU it used and the commands it answered (bench/cluster.py)

Installed by `.ci/run` (apt: redis-server, memcached). Outside CI a test whose server is missing is skipped;
under CI (CI set) it fails, as the store tests do (tests/stores.py)."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

from .live import free_port
from .stores import unavailable


@dataclass
class CacheServer:
    kind: str  # "redis" or "memcached"
    command: list[str]
    port: int
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0" if self.kind == "redis" else f"memcached://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.proc = subprocess.Popen(self.command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.kind} exited with {self.proc.returncode}")
            try:
                if self._ask(b"PING\r\n" if self.kind == "redis" else b"version\r\n"):
                    return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError(f"{self.kind} did not answer on port {self.port}")

    def _ask(self, command: bytes) -> bytes:
        with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
            s.sendall(command)
            return s.recv(1024)

    def flush(self) -> None:
        """Forget every entry (the generations too)."""
        reply = self._ask(b"FLUSHALL\r\n" if self.kind == "redis" else b"flush_all\r\n")
        assert reply.startswith((b"+OK", b"OK")), reply

    def _talk(self, command: bytes, done: Callable[[bytes], bool]) -> bytes:
        """`command`'s whole reply: read until `done(reply so far)`."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
            s.sendall(command)
            data = b""
            while not done(data):
                chunk = s.recv(65536)
                if not chunk:
                    raise OSError(f"{self.kind} closed the connection")
                data += chunk
            return data

    def stats(self) -> dict[str, float]:
        """The server's numeric counters: Redis `INFO` (keyspace_hits, total_commands_processed, used_cpu_user,
        ...; `keys`: of db 0), memcached `stats` (get_hits, cmd_get, rusage_user, ...; `keys`: curr_items)."""
        if self.kind == "redis":
            def whole(d: bytes) -> bool:
                head, _, rest = d.partition(b"\r\n")
                return head.startswith(b"$") and len(rest) >= int(head[1:]) + 2

            raw = self._talk(b"INFO\r\n", whole).partition(b"\r\n")[2].decode()
            keys = re.search(r"^db0:keys=(\d+)", raw, re.M)
            pairs = [ln.split(":", 1) for ln in raw.splitlines() if ":" in ln and not ln.startswith("#")]
            return {**_numbers(pairs), "keys": int(keys[1]) if keys else 0}
        raw = self._talk(b"stats\r\n", lambda d: d.endswith(b"END\r\n")).decode()
        out = _numbers([ln.split()[1:3] for ln in raw.splitlines() if ln.startswith("STAT ")])
        return {**out, "keys": out.get("curr_items", 0)}

    def hits(self) -> int:
        """Lookups that found their key."""
        return int(self.stats()["keyspace_hits" if self.kind == "redis" else "get_hits"])

    def cpu_seconds(self) -> float:
        """CPU time the server has used, by its own count (microseconds, unlike /proc's clock ticks)."""
        st = self.stats()
        if self.kind == "redis":
            return st["used_cpu_user"] + st["used_cpu_sys"]
        return st["rusage_user"] + st["rusage_system"]

    def commands(self) -> int:
        """Commands the server has answered (memcached: gets, sets, deletes, touches and arithmetic)."""
        st = self.stats()
        if self.kind == "redis":
            return int(st["total_commands_processed"])
        return int(sum(st.get(k, 0) for k in ("cmd_get", "cmd_set", "cmd_touch", "delete_hits", "delete_misses",
                                                "incr_hits", "incr_misses", "decr_hits", "decr_misses")))

    def kill(self) -> None:
        """SIGKILL: the server is gone at once, its connections reset; `start()` brings it back on its port."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def pause(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


def _numbers(pairs: Sequence[Sequence[str]]) -> dict[str, float]:
    out = {}
    for key, value in (p for p in pairs if len(p) == 2):
        with contextlib.suppress(ValueError):
            out[key] = float(value)
    return out


def _binary(name: str) -> str:
    found = shutil.which(name) or (f"/usr/bin/{name}" if os.path.exists(f"/usr/bin/{name}") else None)
    if found is None:
        unavailable(f"{name} is not installed (apt-get install {name}; .ci/run does)")
    return found


@contextmanager
def redis_server() -> Iterator[CacheServer]:
    port = free_port()
    command = [_binary("redis-server"), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
               "--appendonly", "no", "--protected-mode", "yes", "--dir", "/tmp"]
    server = CacheServer("redis", command, port)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@contextmanager
def memcached_server(item_mb: int = 1) -> Iterator[CacheServer]:
    port = free_port()
    command = [_binary("memcached"), "-l", "127.0.0.1", "-p", str(port), "-U", "0", "-m", "64",
               "-I", f"{item_mb}m"]
    if os.geteuid() == 0:
        command += ["-u", "nobody"]  # memcached will not run as root
    server = CacheServer("memcached", command, port)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@contextmanager
def cache_server(kind: str) -> Iterator[CacheServer]:
    with (redis_server() if kind == "redis" else memcached_server()) as server:
        yield server
