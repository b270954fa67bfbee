"""The reference IIPImage server, real and on loopback, for the parity tests: iipsrv 1.3 built from
`../shared/vendor/iipsrv-1.3.tar.gz` (`build-iipsrv.sh`, about 30 s, once per machine, into
`.cache/iipsrv-1.3`), behind lighttpd through the shared bench harness `../shared/bench/run-iipsrv.sh`.
`.ci/run` installs what it needs; outside CI a test that needs it is skipped when it cannot be had,
under CI it fails."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from .live import clean_env, free_port

PROJECT = Path(__file__).resolve().parents[1]
SHARED = PROJECT.parent / "shared"
HARNESS = SHARED / "bench"
BUILD_SCRIPT = SHARED / "vendor" / "build-iipsrv.sh"
BUILD_DIR = PROJECT / ".cache" / "iipsrv-1.3"


def unavailable(why: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"iipsrv parity tests must run in CI: {why}")
    pytest.skip(why)


def iipsrv13_binary() -> str:
    """Build iipsrv 1.3 once (idempotent: the script returns the existing binary)."""
    if not BUILD_SCRIPT.exists():
        unavailable(f"{BUILD_SCRIPT} is missing")
    if os.geteuid() != 0 and not (BUILD_DIR / "iipsrv-1.3" / "src" / "iipsrv.fcgi").exists():
        unavailable("building iipsrv 1.3 needs root for its Debian build packages")
    out = subprocess.run(["bash", str(BUILD_SCRIPT), str(BUILD_DIR)], capture_output=True, text=True, timeout=900)
    if out.returncode != 0:
        pytest.fail(f"iipsrv 1.3 did not build: {out.stderr[-2000:]}")
    return out.stdout.strip().splitlines()[-1]


@contextmanager
def running_iipsrv(binary: str, image_root: Path, **env: str) -> Iterator[httpx.Client]:
    """lighttpd + one iipsrv.fcgi on a free loopback port serving `image_root`; a client whose base URL
    is iipsrv's FastCGI path (`/fcgi-bin/iipsrv.fcgi`)."""
    if not (HARNESS / "run-iipsrv.sh").exists():
        unavailable(f"{HARNESS} is missing")
    for tool in ("lighttpd", "spawn-fcgi"):
        if shutil.which(tool) is None:
            unavailable(f"{tool} is not installed (apt-get install lighttpd spawn-fcgi)")
    port = free_port()
    state = Path(f"/tmp/tilebench-parity-{os.getpid()}-{port}")
    harness_env = clean_env(TILEBENCH_DIR=str(state), FILESYSTEM_PREFIX=f"{image_root}/", IIPSRV_BIN=binary,
                            **env)
    started = subprocess.run(["bash", str(HARNESS / "run-iipsrv.sh"), str(port), "1"], env=harness_env,
                             capture_output=True, text=True, timeout=60)
    if started.returncode != 0:
        shutil.rmtree(state, ignore_errors=True)
        pytest.fail(f"iipsrv did not start: {started.stderr}")
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}/fcgi-bin/iipsrv.fcgi", timeout=30) as c:
            yield c
    finally:
        subprocess.run(["bash", str(HARNESS / "stop-iipsrv.sh"), str(port)], env=harness_env,
                       capture_output=True, timeout=60)
        shutil.rmtree(state, ignore_errors=True)
