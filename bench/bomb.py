"""Decompression bombs against a live server: for each bomb of tests/bomb_images.py (a 1 kB PNG that says
50000 x 50000, the same complete in 1-bit, JPEG, GIF, WebP, striped and tiled TIFF, JPEG 2000), the status
and time of its info.json, its IIP OBJ metadata and one tile, and the resident memory of the server
process before, after and at its peak (VmRSS, VmHWM), with the temporary files it left. Prints one
markdown table. Run by hand; stdlib + httpx (the project's .venv).

    .venv/bin/python bench/bomb.py                                   # this checkout's tileserver
    .venv/bin/python bench/bomb.py --tileserver /work/main/.venv/bin/tileserver   # another build (before)

Each bomb gets a fresh `tileserver serve` (1 process, so its pid is the one serving; loopback port
18391; derivation on, in a fresh folder, unless `--no-derive`; TMPDIR a fresh folder), warmed with the
same requests on a good image first, and stopped by its pid (its process group) in a `finally`. A
watchdog samples the server's RSS every 50 ms and kills it past `--rss-limit-mb` (default 6000: a bomb
that gets further would take the machine down), which the table shows as "killed"; a request that takes
longer than `--timeout` shows "timeout". "temp files" counts what is left in TMPDIR plus deleted files
the process still holds open.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from tests.bomb_images import BOMBS  # noqa: E402

BASE = Path(os.environ.get("TILEBENCH_DIR", "/tmp/tilebench")) / "bomb"
PORT = 18391
GOOD = "good-1003x701.tif"


def memory_kb(pid: int) -> tuple[int, int]:
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])


def held_temp_files(pid: int, tmp: Path) -> int:
    held = 0
    with contextlib.suppress(FileNotFoundError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                held += os.readlink(f"/proc/{pid}/fd/{fd}").startswith(str(tmp))
    return held


@dataclass
class Watchdog:
    """Kills the server's process group when its RSS passes `limit_kb`; remembers the largest RSS seen."""

    pid: int
    limit_kb: int
    killed: bool = False
    seen_kb: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        while not self._stop.wait(0.05):
            try:
                rss, _ = memory_kb(self.pid)
            except (FileNotFoundError, ProcessLookupError):
                return
            self.seen_kb = max(self.seen_kb, rss)
            if rss > self.limit_kb:
                self.killed = True
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.pid, signal.SIGKILL)
                return

    def stop(self) -> None:
        self._stop.set()


@contextlib.contextmanager
def server(tileserver: str, root: Path, work: Path, derive: bool) -> Iterator[subprocess.Popen[bytes]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TILESERVER_")}
    env.update(TMPDIR=str(work / "tmp"), TILESERVER_DERIVE_DIR=str(work / "derived") if derive else "")
    cmd = [tileserver, "serve", str(root), "--host", "127.0.0.1", "--port", str(PORT), "--workers", "1"]
    log = open(work / "server.log", "ab")  # noqa: SIM115 - closed in the finally below
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        for _ in range(300):
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{PORT}/health", timeout=1).status_code == 200:
                    break
            time.sleep(0.1)
        else:
            raise RuntimeError("tileserver did not start; see " + str(work / "server.log"))
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


def requests(name: str) -> list[tuple[str, str]]:
    return [("info.json", f"/iiif/3/{name}/info.json"), ("OBJ", f"/iip?FIF={name}&OBJ=IIP,1.0&OBJ=Max-size"),
            ("tile", f"/iip?FIF={name}&JTL=0,0")]


def timed(c: httpx.Client, url: str) -> str:
    t = time.monotonic()
    try:
        status = str(c.get(url).status_code)
    except httpx.TimeoutException:
        status = "timeout"
    except httpx.TransportError:
        status = "no answer"
    return f"{status} ({(time.monotonic() - t) * 1000:,.0f} ms)"


def one(tileserver: str, root: Path, name: str, args: argparse.Namespace) -> list[str]:
    work = BASE / "run" / name
    shutil.rmtree(work, ignore_errors=True)
    (work / "tmp").mkdir(parents=True)
    with server(tileserver, root, work, not args.no_derive) as proc, httpx.Client(base_url=f"http://127.0.0.1:{PORT}",
                                                              timeout=args.timeout) as c:
        for _, url in requests(GOOD):
            c.get(url)
        before, _ = memory_kb(proc.pid)
        dog = Watchdog(proc.pid, args.rss_limit_mb * 1024)
        watcher = threading.Thread(target=dog.run, daemon=True)
        watcher.start()
        cells = [timed(c, url) if not dog.killed else "killed" for _, url in requests(name)]
        dog.stop()
        watcher.join()
        if dog.killed:
            after, peak, temp = "killed", f"> {args.rss_limit_mb:,} (killed)", "-"
        else:
            rss, hwm = memory_kb(proc.pid)
            after, peak = f"{rss // 1024:,}", f"{hwm // 1024:,}"
            temp = str(len(list((work / "tmp").iterdir())) + held_temp_files(proc.pid, work / "tmp"))
            cells.append("yes" if c.get(f"/iip?FIF={GOOD}&JTL=0,0").status_code == 200 else "no")
        if dog.killed:
            cells = [cell if cell != "no answer" else "killed" for cell in cells] + ["no (killed)"]
    size = (root / name).stat().st_size
    return [f"`{name}` ({size:,} B)", *cells[:3], f"{before // 1024:,}", after, peak, temp, cells[3]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tileserver", default=str(REPO / ".venv" / "bin" / "tileserver"),
                        help="the tileserver executable to run (default: this checkout's)")
    parser.add_argument("--rss-limit-mb", type=int, default=6000)
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds per request")
    parser.add_argument("--only", default="", help="comma-separated bomb file names (default: all)")
    parser.add_argument("--no-derive", action="store_true", help="no derived pyramids (TILESERVER_DERIVE_DIR empty)")
    args = parser.parse_args()
    root = BASE / "images"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    names = [n for n in BOMBS if not args.only or n in args.only.split(",")]
    for name in names:
        BOMBS[name](root / name)
    import pyvips

    pyvips.Image.black(1003, 701, bands=3).tiffsave(str(root / GOOD), tile=True, pyramid=True, compression="jpeg")
    rows = [one(args.tileserver, root, name, args) for name in names]
    derive = "off" if args.no_derive else "on"
    print(f"tileserver: {args.tileserver}; derivation {derive}; load average {os.getloadavg()[0]:.1f}; "
          "RSS in MB of the serving process")
    print()
    print("| bomb | info.json | OBJ | tile | RSS before | RSS after | peak (VmHWM) | temp files | still serving |")
    print("|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
