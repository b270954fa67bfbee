"""web/balance.py: new connections spread exactly over the workers of `tileserver serve --workers N`.

The table of connections per worker is tested across real processes (a slot is held by a POSIX lock that the
kernel drops when its holder dies); the spreading against a real server with two workers, its connections counted
per worker process from /proc, and with one of its workers killed."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tileserver.web.balance import ABSENT, Counts

from ..live import clean_env, live_process, workers_of

HOLD = """
import os, sys, time
from tileserver.web.balance import Counts
table = Counts(int(sys.argv[1]))
print(table.claim(), flush=True)
table.add(int(sys.argv[2]))
sys.stdin.readline()  # held until told to go
"""


def holder(table: Counts, connections: int) -> tuple[subprocess.Popen[str], int]:
    """A process holding a slot of `table` with `connections` counted; its slot."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(table.fd), str(connections)], pass_fds=[table.fd],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    return proc, int(proc.stdout.readline())


def release(proc: subprocess.Popen[str]) -> None:
    proc.kill()
    proc.communicate()


def test_each_process_claims_a_slot_of_its_own_and_counts_in_it() -> None:
    table = Counts.create(4)
    assert list(table.view) == [ABSENT] * 4
    first, second = holder(table, 3), holder(table, 5)
    try:
        assert {first[1], second[1]} == {0, 1}
        mine = table.claim()
        assert mine == 2
        deadline = time.monotonic() + 10
        while sorted(table.view) != [0, 3, 5, ABSENT] and time.monotonic() < deadline:
            time.sleep(0.01)
        assert table.fewest()  # 0 against 3 and 5
        table.add(4)
        assert not table.fewest() and table.mine() == 4  # 3 is fewer
        table.add(-1)
        assert table.fewest()  # a tie is the fewest too
    finally:
        for proc, _ in (first, second):
            release(proc)


def test_a_dead_holders_slot_is_swept_and_claimed_again() -> None:
    table = Counts.create(3)
    proc, slot = holder(table, 0)
    assert table.claim() == 1 and table.view[slot] == 0
    table.add(2)
    assert not table.fewest()  # the holder's 0 holds this process back...
    assert table.sweep() == 0  # ...while the holder lives
    release(proc)
    assert table.view[slot] == 0  # a killed holder leaves its count...
    assert table.sweep() == 1 and table.view[slot] == ABSENT and table.fewest()  # ...swept: its lock is free
    again, slot2 = holder(table, 0)
    try:
        assert slot2 == slot  # free again
    finally:
        release(again)


def test_leaving_frees_the_slot() -> None:
    table = Counts.create(2)
    assert table.claim() == 0
    table.add(7)
    table.leave()
    assert table.view[0] == ABSENT and table.slot is None and table.fewest()
    proc, slot = holder(table, 0)
    try:
        assert slot == 0
    finally:
        release(proc)


# -- a real server -------------------------------------------------------------------------------------------------
def established(pids: list[int], port: int, states: tuple[str, ...] = ("01",)) -> Counter[int]:
    """The connections to local `port` held by each of `pids` (/proc/net/tcp and the processes' fds): established
    ones, or those in `states` (08: closed by the client, not yet by the server)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] in states and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(fields[9])
    out: Counter[int] = Counter()
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                link = os.readlink(fd)
            except OSError:
                continue
            if link.startswith("socket:[") and link[8:-1] in inodes:
                out[pid] += 1
    return out


def ask(conn: socket.socket) -> bytes:
    """One keep-alive request on `conn`; the status line."""
    conn.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    got = b""
    while b"\r\n\r\n" not in got:
        more = conn.recv(65536)
        assert more, "the server closed the connection"
        got += more
    head, _, body = got.partition(b"\r\n\r\n")
    fields = dict(line.lower().split(b": ", 1) for line in head.split(b"\r\n")[1:])
    length = int(fields[b"content-length"])
    while len(body) < length:
        body += conn.recv(65536)
    return head.split(b"\r\n")[0]


@pytest.fixture
def two_workers(image_root: Path, tmp_path: Path) -> Iterator[tuple[str, int, list[int]]]:
    with live_process(image_root, tmp_path / "server.log", workers=2, env=clean_env()) as (base, proc):
        port = urlsplit(base).port
        assert port is not None
        deadline = time.monotonic() + 60
        while len(workers_of(proc.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        workers = workers_of(proc.pid)
        assert len(workers) == 2
        settle(port, workers)
        yield base, port, workers


def settle(port: int, workers: list[int]) -> None:
    """Until both workers take connections: fresh connections, one at a time, until each has held one."""
    seen: set[int] = set()
    deadline = time.monotonic() + 60
    while len(seen) < 2 and time.monotonic() < deadline:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
            ask(c)
            seen |= set(established(workers, port))
        time.sleep(0.05)
    assert len(seen) == 2, "both workers did not come to take connections"


@pytest.mark.server
def test_a_burst_of_connections_is_spread_exactly(two_workers: tuple[str, int, list[int]]) -> None:
    """16 connections opened at once, three times: 8 and 8 each time (by SO_REUSEPORT's hash: one time in five)."""
    _, port, workers = two_workers
    for _ in range(3):
        conns = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(16)]
        try:
            assert all(ask(c).startswith(b"HTTP/1.1 200") for c in conns)
            assert sorted(established(workers, port).values()) == [8, 8]
        finally:
            for c in conns:
                c.close()
        deadline = time.monotonic() + 10
        while established(workers, port, ("01", "08")) and time.monotonic() < deadline:  # the server's ends closed
            time.sleep(0.02)


@pytest.mark.server
def test_connections_keep_being_taken_when_a_worker_is_killed(two_workers: tuple[str, int, list[int]]) -> None:
    """A worker killed outright, holding no connection, leaves a count of 0 in the table, which would hold every
    other worker back for ever: the other takes new connections anyway (after `STUCK`, the dead slot swept)."""
    _, port, workers = two_workers
    os.kill(workers[0], signal.SIGKILL)
    start = time.monotonic()
    conns = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(6)]
    try:
        assert all(ask(c).startswith(b"HTTP/1.1 200") for c in conns)
        assert time.monotonic() - start < 5
        assert established([workers[1]], port)[workers[1]] == 6
    finally:
        for c in conns:
            c.close()
