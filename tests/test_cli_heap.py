"""cli.heap_tunables: `tileserver serve`'s processes ask glibc for a malloc heap in transparent huge pages that is kept
once grown (fixed trim and mmap thresholds), each tunable unless the operator named it; one process re-executes
itself (the same pid) to take them, workers inherit them; and glibc does keep such a heap."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tileserver import cli

from .live import clean_env, live_process, workers_of

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux") or not cli._glibc(), reason="glibc on Linux")


ALL = "glibc.malloc.hugetlb=1:glibc.malloc.trim_threshold=16777216:glibc.malloc.mmap_threshold=1048576"


@pytest.mark.parametrize(("before", "after", "asked"), [
    (None, ALL, True),
    ("", ALL, True),
    ("glibc.malloc.arena_max=2", "glibc.malloc.arena_max=2:" + ALL, True),
    ("glibc.malloc.hugetlb=0", "glibc.malloc.hugetlb=0:glibc.malloc.trim_threshold=16777216:"
     "glibc.malloc.mmap_threshold=1048576", True),  # the operator's choice stands, the others are added
    ("glibc.malloc.trim_threshold=0:glibc.malloc.hugetlb=2", "glibc.malloc.trim_threshold=0:glibc.malloc.hugetlb=2:"
     "glibc.malloc.mmap_threshold=1048576", True),
    (ALL, ALL, False),  # all named already (a process re-executed with them): nothing asked, no second exec
])
def test_the_tunables_are_added_unless_named(before: str | None, after: str, asked: bool) -> None:
    environ = {} if before is None else {"GLIBC_TUNABLES": before}
    assert cli.heap_tunables(environ) is asked
    assert environ["GLIBC_TUNABLES"] == after


# in a fresh process: 40 blocks of 200 KB (a decoded 256-px tile is 192 KB) allocated and freed; how many were
# mapped on their own, and how large the heap still is once they are free
HEAP_PROBE = """
import ctypes
libc = ctypes.CDLL(None)
FIELDS = "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost"
class Info(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in FIELDS.split()]
libc.mallinfo2.restype = Info
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
blocks = [libc.malloc(200_000) for _ in range(40)]
mapped = libc.mallinfo2().hblks
for b in reversed(blocks):
    libc.free(b)
print(mapped, libc.mallinfo2().arena)
"""


def probe_heap(tunables: str | None) -> tuple[int, int]:
    env = {k: v for k, v in clean_env().items() if k != "GLIBC_TUNABLES"}
    if tunables is not None:
        env["GLIBC_TUNABLES"] = tunables
    out = subprocess.run([sys.executable, "-c", HEAP_PROBE], env=env, capture_output=True, text=True, check=True)
    mapped, arena = out.stdout.split()
    return int(mapped), int(arena)


def test_glibc_keeps_the_heap_with_them() -> None:
    environ: dict[str, str] = {}
    cli.heap_tunables(environ)
    mapped, arena = probe_heap(environ["GLIBC_TUNABLES"])
    assert mapped == 0 and arena >= 40 * 200_000  # from the heap, and the heap kept once they are free
    mapped, arena = probe_heap(None)  # glibc's defaults: each mapped on its own (above 128 KB), unmapped when freed
    assert mapped >= 39


def test_nothing_is_asked_of_another_c_library(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli, "_glibc", lambda: False)
    environ: dict[str, str] = {}
    assert cli.heap_tunables(environ) is False and environ == {}


def environ_of(pid: int) -> dict[str, str]:
    """The environment `pid` started with, as /proc shows it. glibc parses GLIBC_TUNABLES in place, leaving a NUL
    where each ':' was: the pieces after it that name a tunable are joined to it again."""
    out: dict[str, str] = {}
    last = ""
    for raw in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
        entry = raw.decode("utf-8", "replace")
        if last == "GLIBC_TUNABLES" and entry.startswith("glibc."):
            out[last] += ":" + entry
        elif entry:
            last, _, value = entry.partition("=")
            out[last] = value
    return out


@pytest.mark.parametrize("workers", [1, 2])
def test_the_server_processes_run_with_it(image_root: Path, tmp_path: Path, workers: int) -> None:
    env = {k: v for k, v in clean_env().items() if k != "GLIBC_TUNABLES"}
    with live_process(image_root, tmp_path / "log", workers=workers, env=env) as (base, proc):
        assert httpx.get(base + "/health").status_code == 200
        serving = [proc.pid] if workers == 1 else workers_of(proc.pid)  # one process: re-executed, the same pid
        assert len(serving) == workers
        for pid in serving:
            assert environ_of(pid)["GLIBC_TUNABLES"] == ALL


def test_off_it_is_not_asked(image_root: Path, tmp_path: Path) -> None:
    env = {k: v for k, v in clean_env(TILESERVER_HUGE_PAGES="false").items() if k != "GLIBC_TUNABLES"}
    with live_process(image_root, tmp_path / "log", workers=1, env=env) as (_, proc):
        assert "GLIBC_TUNABLES" not in environ_of(proc.pid)
