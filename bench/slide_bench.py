"""Slide serving, cold: tileserver against large_image on the same synthetic SVS, and tileserver's slide
pass-through against its own pyramid-TIFF pass-through (driven by bench/slide_serve.sh).

Each measurement starts its server afresh (2 worker processes each) with the file in the OS page cache
(read through once before: cold means the servers' own caches are empty, not the disk), asks for the
image's metadata once (both servers then have the slide open: large_image opens it at start,
tileserver on first use), then makes one pass over a shuffled list of distinct tile URLs with wrk
(../shared/bench/bench-tiles.sh, `--mode cold`, -t2 -c16), so no tile is answered from a cache. Repeats give medians.

Scenarios (the same tiles, by DeepZoom level for tileserver and `getTile(x, y, z)` for large_image):
- full: full-resolution 256-px tiles, each a stored tile of the slide (tileserver passes it through;
  large_image decodes it through OpenSlide and re-encodes it);
- half: tiles of the level at 1/2 (not stored in an SVS, whose levels are 1/4 apart): 512 x 512 pixels of
  level 0 shrunk (tileserver decodes the 4 stored JPEG tiles at 1/2; large_image reads through OpenSlide);
- tiff: the same full-resolution tiles from `big.tif`, the same pyramid as a plain TIFF (bench/slide_setup.py),
  which tileserver reads through libvips and passes through (tileserver only).
All traffic goes to 127.0.0.1; every wrk run is bounded in time; every server started here is stopped.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SHARED = REPO.parent / "shared" / "bench"
WORK = Path(os.environ.get("TILEBENCH_DIR", "/tmp/tilebench"))
TS_PORT, LI_PORT = 8181, 8182


def wait(url: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=30) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"no answer from {url}")


class Server:
    def __init__(self, cmd: list[str], env: dict[str, str], ready: str, log: Path):
        self.cmd, self.env, self.ready, self.log = cmd, env, ready, log
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Server:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(self.cmd, env={**os.environ, **self.env}, stdout=log, stderr=log,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        wait(self.ready)
        time.sleep(1.5)  # every worker up (the first answer may come from one of them)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)  # the process group this run started, by its id
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=5)


def page_cache(path: Path) -> None:
    """Read the file once so that every run finds it in the OS page cache (as a served file would be)."""
    with open(path, "rb") as f:
        while f.read(64 << 20):
            pass


def tileserver(root: Path, image: str) -> Server:
    page_cache(root / image)
    cmd = [str(REPO / ".venv" / "bin" / "tileserver"), "serve", str(root), "--host", "127.0.0.1",
           "--port", str(TS_PORT), "--workers", "2"]
    return Server(cmd, {}, f"http://127.0.0.1:{TS_PORT}/iiif/3/{image}/info.json", WORK / "slide-ts.log")


def large_image(venv: Path, slide: Path) -> Server:
    page_cache(slide)
    cmd = [str(venv / "bin" / "uvicorn"), "large_image_app:app", "--app-dir", str(HERE), "--host", "127.0.0.1",
           "--port", str(LI_PORT), "--workers", "2", "--log-level", "warning", "--no-access-log"]
    return Server(cmd, {"LI_SLIDE": str(slide)}, f"http://127.0.0.1:{LI_PORT}/metadata", WORK / "slide-li.log")


def tiles(width: int, height: int, shift: int, count: int, seed: int) -> list[tuple[int, int]]:
    """`count` distinct interior (whole) 256-px tiles of the level `shift` halvings down, shuffled."""
    cols, rows = (math.ceil(width / (256 << shift)), math.ceil(height / (256 << shift)))
    every = [(c, r) for r in range(rows - 1) for c in range(cols - 1)]
    random.Random(seed).shuffle(every)
    return every[:count]


def url_list(name: str, urls: list[str]) -> Path:
    path = WORK / "urls" / f"slide-{name}.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(urls) + "\n")
    return path


def cold(port: int, urls: Path, label: str) -> tuple[float, int]:
    """(tiles/s, errors) of one wrk pass over `urls`."""
    out = subprocess.run(["bash", str(SHARED / "bench-tiles.sh"), "--base", f"http://127.0.0.1:{port}",
                          "--mode", "cold", "-t", "2", "-c", "16", "--label", label, str(urls)],
                         capture_output=True, text=True, timeout=900)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")), "")
    fields = dict(re.findall(r"(\w+)=(\S+)", line))
    if "rps" not in fields:
        raise RuntimeError(f"wrk gave no result for {label}: {out.stderr[-1500:]}")
    errors = sum(int(fields.get(k, 0)) for k in ("err_connect", "err_read", "err_write", "err_status", "err_timeout"))
    return float(fields["rps"]), errors


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", default=str(WORK / "slides"))
    ap.add_argument("--venv", default=str(WORK / "li-venv"))
    ap.add_argument("--urls", type=int, default=2000, help="tiles per cold pass")
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    root, venv = Path(a.dir), Path(a.venv)
    a.load_before = Path("/proc/loadavg").read_text().split()[0]
    with large_image(venv, root / "big.svs"), urllib.request.urlopen(f"http://127.0.0.1:{LI_PORT}/metadata") as r:
        li_meta = json.load(r)
    width, height, zmax = li_meta["sizeX"], li_meta["sizeY"], li_meta["levels"] - 1
    dz = math.ceil(math.log2(max(width, height)))
    results: dict[str, list[tuple[float, int]]] = {}
    for rep in range(a.repeats):
        for shift, scen in ((0, "full"), (1, "half")):
            picked = tiles(width, height, shift, a.urls, 100 * rep + shift)
            ts_urls = url_list(f"ts-{scen}", [f"/deepzoom/big.svs_files/{dz - shift}/{c}_{r}.jpg" for c, r in picked])
            li_urls = url_list(f"li-{scen}", [f"/tile/{zmax - shift}/{c}/{r}.jpg" for c, r in picked])
            with tileserver(root, "big.svs"):
                results.setdefault(f"ts-{scen}", []).append(cold(TS_PORT, ts_urls, f"ts-{scen}-r{rep}"))
            with large_image(venv, root / "big.svs"):
                results.setdefault(f"li-{scen}", []).append(cold(LI_PORT, li_urls, f"li-{scen}-r{rep}"))
        picked = tiles(width, height, 0, a.urls, 100 * rep)
        tif_urls = url_list("ts-tiff", [f"/deepzoom/big.tif_files/{dz}/{c}_{r}.jpg" for c, r in picked])
        with tileserver(root, "big.tif"):
            results.setdefault("ts-tiff", []).append(cold(TS_PORT, tif_urls, f"ts-tiff-r{rep}"))
        print(f"repeat {rep + 1}: " + ", ".join(f"{k} {v[-1][0]:.0f}/s" for k, v in results.items()), file=sys.stderr)
    report(results, width, height, a)


def report(results: dict[str, list[tuple[float, int]]], width: int, height: int, a: argparse.Namespace) -> None:
    med = {k: statistics.median(r for r, _ in v) for k, v in results.items()}
    errs = {k: sum(e for _, e in v) for k, v in results.items()}
    load = f"{a.load_before} / {Path('/proc/loadavg').read_text().split()[0]}"
    print(f"\nSlide tiles, cold (one pass over {a.urls} distinct shuffled 256-px tiles, wrk -t2 -c16, 2 worker "
          f"processes each, median of {a.repeats}; {width}x{height} synthetic Aperio SVS, JPEG Q80; "
          f"{os.cpu_count()} CPUs, 1-minute load average before / after {load})\n")
    print("| tiles | tileserver tiles/s | large_image tiles/s | ratio | goal |")
    print("|---|---:|---:|---:|---|")
    for scen, what in (("full", "full resolution (tileserver: pass-through)"),
                       ("half", "1/2 resolution, not stored (tileserver: 4 stored tiles decoded at 1/2; large_image: "
                                "OpenSlide read of 512 px, shrunk)")):
        ts, li = med[f"ts-{scen}"], med[f"li-{scen}"]
        print(f"| {what} | {ts:.0f} | {li:.0f} | {ts / li:.1f}x | >= 3x |")
    tif, svs = med["ts-tiff"], med["ts-full"]
    print(f"\n| tileserver, full-resolution tiles | tiles/s |\n|---|---:|\n| slide (SVS) pass-through | {svs:.0f} |\n"
          f"| pyramid TIFF pass-through | {tif:.0f} |\n| slide / TIFF | {svs / tif:.2f}x (goal >= 0.9x) |")
    if any(errs.values()):
        print(f"\nerrors: {errs}")


if __name__ == "__main__":
    main()
