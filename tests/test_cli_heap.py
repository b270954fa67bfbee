"""cli.huge_page_heap: `tileserver serve`'s processes ask glibc for a malloc heap in transparent huge pages, unless
the operator named the tunable; one process re-executes itself (the same pid) to take it, workers inherit it."""

from __future__ import annotations

import sys
from pathlib import Path

import httpx
import pytest

from tileserver import cli

from .live import clean_env, live_process, workers_of

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux") or not cli._glibc(), reason="glibc on Linux")


@pytest.mark.parametrize(("before", "after", "asked"), [
    (None, "glibc.malloc.hugetlb=1", True),
    ("", "glibc.malloc.hugetlb=1", True),
    ("glibc.malloc.arena_max=2", "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1", True),
    ("glibc.malloc.hugetlb=0", "glibc.malloc.hugetlb=0", False),  # the operator's choice stands
    ("glibc.malloc.hugetlb=2:glibc.malloc.arena_max=2", "glibc.malloc.hugetlb=2:glibc.malloc.arena_max=2", False),
])
def test_the_tunable_is_added_unless_named(before: str | None, after: str, asked: bool) -> None:
    environ = {} if before is None else {"GLIBC_TUNABLES": before}
    assert cli.huge_page_heap(environ) is asked
    assert environ["GLIBC_TUNABLES"] == after


def test_nothing_is_asked_of_another_c_library(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli, "_glibc", lambda: False)
    environ: dict[str, str] = {}
    assert cli.huge_page_heap(environ) is False and environ == {}


def environ_of(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(e.decode("utf-8", "replace").partition("=")[::2] for e in raw if e)


@pytest.mark.parametrize("workers", [1, 2])
def test_the_server_processes_run_with_it(image_root: Path, tmp_path: Path, workers: int) -> None:
    env = {k: v for k, v in clean_env().items() if k != "GLIBC_TUNABLES"}
    with live_process(image_root, tmp_path / "log", workers=workers, env=env) as (base, proc):
        assert httpx.get(base + "/health").status_code == 200
        serving = [proc.pid] if workers == 1 else workers_of(proc.pid)  # one process: re-executed, the same pid
        assert len(serving) == workers
        for pid in serving:
            assert environ_of(pid)["GLIBC_TUNABLES"] == "glibc.malloc.hugetlb=1"


def test_off_it_is_not_asked(image_root: Path, tmp_path: Path) -> None:
    env = {k: v for k, v in clean_env(TILESERVER_HUGE_PAGES="false").items() if k != "GLIBC_TUNABLES"}
    with live_process(image_root, tmp_path / "log", workers=1, env=env) as (_, proc):
        assert "GLIBC_TUNABLES" not in environ_of(proc.pid)
