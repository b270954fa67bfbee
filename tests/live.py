"""A real `tileserver serve` process on a free loopback port, for the tests that need one (CLI,
browsers, the IIIF validator, iipsrv parity ports): started with no tileserver or iipsrv setting
from the caller's environment, waited for, and always stopped."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tileserver.settings import IIPSRV_ENV


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without any tileserver or iipsrv setting (the server runs on defaults), plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TILESERVER_") and k not in IIPSRV_ENV}
    return {**env, **extra}


def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"tileserver exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=2.0).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError(f"tileserver did not answer {url} within {timeout} s")


@contextmanager
def live_process(root: Path, log: Path, *, workers: int = 2, ready_path: str = "/health",
                 env: dict[str, str] | None = None) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """`tileserver serve root` on loopback, its output in `log`; yields the base URL and the process
    once `ready_path` answers 200, and stops the process (and its workers) on exit, if it still runs."""
    port = free_port()
    cmd = [sys.executable, "-m", "tileserver", "serve", str(root), "--host", "127.0.0.1", "--port", str(port),
           "--workers", str(workers)]
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, env=env or clean_env(), stdout=out, stderr=subprocess.STDOUT)
        base = f"http://127.0.0.1:{port}"
        try:
            wait_ready(base + ready_path, proc)
            yield base, proc
        finally:
            stop(proc)


def workers_of(pid: int) -> list[int]:
    """The worker processes of the server `pid` (uvicorn's spawned children; not multiprocessing's resource tracker)."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [int(c) for c in children if b"spawn_main" in Path(f"/proc/{c}/cmdline").read_bytes()]


def stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop `proc` if it still runs: SIGTERM, then SIGKILL after 10 s."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def live_tileserver(root: Path, log: Path, *, workers: int = 2, ready_path: str = "/health",
                    env: dict[str, str] | None = None) -> Iterator[str]:
    """`live_process`, yielding the base URL only."""
    with live_process(root, log, workers=workers, ready_path=ready_path, env=env) as (base, _):
        yield base


def memory_kb(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of process `pid` in kB: its resident memory now and at its peak."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])
