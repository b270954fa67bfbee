"""Overload: a flood of large exports against a stream of uncached tiles, before and after admission control.
Prints one markdown table. Run by hand; stdlib + httpx (the project's .venv).

    .venv/bin/python bench/overload.py                        # main vs this working tree, 30 s each
    .venv/bin/python bench/overload.py --duration 20 --exports 32 --before main --after WORKTREE

For each code version (`--before`: a git ref, exported with `git archive` into a scratch folder, so no
checkout is touched; `--after`: this working tree, or another ref) a `tileserver serve` starts on 127.0.0.1
(`--workers`, default settings otherwise) over the bench images of ../shared/bench/make-test-images.sh
(big.tif: a 20000 x 15000 JPEG-tiled pyramid; made if missing, ~2 minutes), run with this .venv's Python
and that version's `src` first on PYTHONPATH. Then:

- `--exports` clients (default 32) each keep one large export in flight for `--duration` seconds, in turn
  (`--kinds`) a 5000-px JPEG, a 45-degree rotated 3500-px WebP (a 4330-px canvas) and a 5000-px GIF, every URL
  distinct (widths counted down) so none is a cache hit. A 503 is answered after a 0.5-s pause (a client
  that honours Retry-After would wait longer: this flood is harsher).
- `--tile-clients` clients (default 4) fetch uncached tiles one after another, alone for `--calm` seconds
  (default 3: the "calm" column, what the machine gives without the flood), then during it: every 256-px
  tile of big.tif's two largest levels at most once (shuffled, fixed seed), in gray (`gray.jpg`), so each
  one is decoded, converted and encoded (a stored tile is not passed through). A failed tile (an error
  status or the client's timeout) counts as an error, and its wait counts in the percentiles.
- at the end, exports still running get `--drain` seconds more (a 503 counted then is still a 503), then
  are dropped ("unfinished": on the server they may still run; the server is then stopped).

The RSS of the server's processes is summed every 0.25 s (bench.py's sampler; shared pages count once
per process). Every server is stopped by its process group in a `finally`. All traffic is loopback.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench as harness  # the sibling bench.py: RSS sampler, machine line, image set-up

REPO = harness.REPO
IMAGE = "big.tif"
WIDTH, HEIGHT = 20000, 15000
GOAL_P99_MS = 100.0


# -------------------------------------------------------------------------------------------------- code
def export_ref(ref: str, scratch: Path) -> Path:
    """`src` of git ref `ref` in a scratch folder (git archive: no checkout is touched)."""
    out = scratch / ref.replace("/", "_")
    out.mkdir(parents=True, exist_ok=True)
    data = subprocess.run(["git", "-C", str(REPO), "archive", ref, "src"], capture_output=True, check=True).stdout
    with tempfile.TemporaryFile() as tmp:
        tmp.write(data)
        tmp.seek(0)
        with tarfile.open(fileobj=tmp) as tar:
            tar.extractall(out, filter="data")
    return out / "src"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def describe(ref: str | None) -> str:
    args = ["git", "-C", str(REPO), "describe", "--always"] + ([ref] if ref else ["--dirty"])
    return subprocess.run(args, capture_output=True, text=True).stdout.strip() or "?"


@contextlib.contextmanager
def server(src: Path, port: int, workers: int, log: Path) -> Iterator[harness.RssSampler]:
    if not harness.port_free(port):
        raise RuntimeError(f"127.0.0.1:{port} is in use; pick another --port")
    env = {k: v for k, v in os.environ.items() if not k.startswith("TILESERVER_")}
    env["PYTHONPATH"] = str(src)
    cmd = [sys.executable, "-m", "tileserver", "serve", str(harness.IMAGES), "--host", "127.0.0.1",
           "--port", str(port), "--workers", str(workers)]
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    sampler = harness.RssSampler([proc.pid])
    try:
        if not harness.wait_http(f"http://127.0.0.1:{port}/iiif/3/{IMAGE}/info.json", 60) or proc.poll() is not None:
            raise RuntimeError(f"tileserver did not come up; see {log}")
        time.sleep(1.0)  # every worker imported
        sampler.start()
        yield sampler
    finally:
        if sampler.is_alive():
            sampler.stop()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


# -------------------------------------------------------------------------------------------------- load
def tile_urls() -> list[str]:
    """Every 256-px tile of the two largest levels as an IIIF region, in gray, shuffled (seed 7)."""
    urls = []
    for scale in (1, 2):
        step = 256 * scale
        for y in range(0, HEIGHT, step):
            for x in range(0, WIDTH, step):
                w, h = min(step, WIDTH - x), min(step, HEIGHT - y)
                urls.append(f"/iiif/3/{IMAGE}/{x},{y},{w},{h}/{-(-w // scale)},/0/gray.jpg")
    random.Random(7).shuffle(urls)
    return urls


KINDS = {  # export kind -> IIIF path of an export `k` pixels narrower than the first
    "jpeg": lambda k: f"/iiif/3/{IMAGE}/full/{5000 - k},/0/default.jpg",
    "webp45": lambda k: f"/iiif/3/{IMAGE}/full/{3500 - k},/45/default.webp",
    "gif": lambda k: f"/iiif/3/{IMAGE}/full/{5000 - k},/0/default.gif",
}


def export_url(kinds: list[str], client: int, n: int, clients: int) -> str:
    """The n-th export of a client: a distinct width each time, the kinds in turn."""
    k = n * clients + client
    return KINDS[kinds[k % len(kinds)]](k)


@dataclass
class Outcome:
    calm: list[float] = field(default_factory=list)  # tile latencies before the flood
    tiles: list[float] = field(default_factory=list)  # during the flood
    flooding: bool = False
    tile_errors: int = 0
    served: list[float] = field(default_factory=list)
    refused: list[float] = field(default_factory=list)
    retry_after: list[int] = field(default_factory=list)
    other: int = 0
    unfinished: int = 0
    peak_rss: int = 0


async def exporter(client: httpx.AsyncClient, kinds: list[str], index: int, clients: int, until: float,
                   out: Outcome) -> None:
    n = 0
    while time.monotonic() < until:
        t0 = time.monotonic()
        try:
            r = await client.get(export_url(kinds, index, n, clients))
        except httpx.HTTPError:
            out.other += 1
            continue
        finally:
            n += 1
        took = time.monotonic() - t0
        if r.status_code == 200:
            out.served.append(took)
        elif r.status_code == 503:
            out.refused.append(took)
            with contextlib.suppress(KeyError, ValueError):
                out.retry_after.append(int(r.headers["retry-after"]))
            await asyncio.sleep(0.5)
        else:
            out.other += 1


async def tiler(client: httpx.AsyncClient, urls: Iterator[str], until: float, out: Outcome) -> None:
    while time.monotonic() < until:
        url = next(urls, None)
        if url is None:
            return
        t0 = time.monotonic()
        try:
            r = await client.get(url)
            ok = r.status_code == 200 and r.headers.get("content-type") == "image/jpeg"
        except httpx.HTTPError:  # a timeout too: its wait counts in the latencies, as the client saw it
            ok = False
        (out.tiles if out.flooding else out.calm).append(time.monotonic() - t0)
        out.tile_errors += not ok


async def flood(base: str, args: argparse.Namespace, urls: Iterator[str]) -> Outcome:
    out = Outcome()
    until = time.monotonic() + args.calm + args.duration
    limits = httpx.Limits(max_connections=args.exports + args.tile_clients + 4)
    timeout = httpx.Timeout(args.timeout)
    kinds = args.kinds.split(",")
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=timeout, trust_env=False) as exports, \
            httpx.AsyncClient(base_url=base, timeout=timeout, trust_env=False) as tiles:
        tiling = [asyncio.create_task(tiler(tiles, urls, until, out)) for _ in range(args.tile_clients)]
        await asyncio.sleep(args.calm)
        out.flooding = True
        flooding = [asyncio.create_task(exporter(exports, kinds, i, args.exports, until, out))
                    for i in range(args.exports)]
        await asyncio.gather(*tiling)
        await asyncio.sleep(max(until - time.monotonic(), 0))
        _, pending = await asyncio.wait(flooding, timeout=args.drain)
        out.unfinished = len(pending)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
    return out


# ------------------------------------------------------------------------------------------------ report
def ms(values: list[float], q: float) -> str:
    if not values:
        return "-"
    v = sorted(values)
    return f"{v[min(len(v) - 1, int(len(v) * q))] * 1000:,.0f}"


def row(label: str, commit: str, o: Outcome) -> str:
    p99 = sorted(o.tiles)[min(len(o.tiles) - 1, int(len(o.tiles) * 0.99))] * 1000 if o.tiles else float("inf")
    goal = "met" if p99 <= GOAL_P99_MS and not o.tile_errors else "not met"
    served = f"{statistics.median(o.served):.1f}" if o.served else "-"
    retry = f"{min(o.retry_after)}-{max(o.retry_after)}" if o.retry_after else "-"
    return (f"| {label} | {commit} | {ms(o.calm, 0.5)} / {ms(o.calm, 0.99)} | {len(o.tiles)} | {ms(o.tiles, 0.5)} | "
            f"{ms(o.tiles, 0.99)} | "
            f"{ms(o.tiles, 1.0)} | {o.tile_errors} | {goal} | {len(o.served)} | {served} | {len(o.refused)} | "
            f"{ms(o.refused, 0.5)} | {retry} | {o.other} | {o.unfinished} | {o.peak_rss / harness.MB:,.0f} |")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--before", default="main", help="git ref measured first (default main; none: skip)")
    p.add_argument("--after", default="WORKTREE", help="git ref measured second; WORKTREE: this working tree")
    p.add_argument("--exports", type=int, default=32, help="concurrent export clients")
    p.add_argument("--tile-clients", type=int, default=4, help="concurrent uncached-tile clients")
    p.add_argument("--duration", type=float, default=30.0, help="seconds of flood per version")
    p.add_argument("--calm", type=float, default=3.0, help="seconds of tiles alone before the flood")
    p.add_argument("--kinds", default="jpeg,webp45,gif", help=f"export kinds, in turn: {', '.join(KINDS)}")
    p.add_argument("--drain", type=float, default=5.0, help="seconds exports may still finish after the flood")
    p.add_argument("--timeout", type=float, default=60.0, help="client timeout per request, seconds")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--port", type=int, default=0, help="loopback port (default: a free one, chosen per run)")
    args = p.parse_args()

    harness.RESULTS.mkdir(parents=True, exist_ok=True)
    harness.ensure_images()
    started, load_start = datetime.now(UTC), harness.loadavg()
    rows = []
    with tempfile.TemporaryDirectory(prefix="overload-") as scratch:
        for label, ref in (("before", args.before), ("after", args.after)):
            if ref == "none":
                continue
            src = REPO / "src" if ref == "WORKTREE" else export_ref(ref, Path(scratch))
            commit = describe(None if ref == "WORKTREE" else ref)
            log = harness.RESULTS / f"overload-{label}.log"
            urls = iter(tile_urls())
            port = args.port or free_port()
            with server(src, port, args.workers, log) as sampler:
                out = asyncio.run(flood(f"http://127.0.0.1:{port}", args, urls))
                out.peak_rss = sampler.peak_sum
            rows.append(row(f"{label} ({ref})", commit, out))
            print(f"{label}: done", file=sys.stderr)
        shutil.rmtree(scratch, ignore_errors=True)
    print(f"Overload, {started:%Y-%m-%d %H:%M} UTC, {harness.machine()}, load {load_start} -> {harness.loadavg()}; "
          f"{args.exports} export clients ({args.kinds}) + {args.tile_clients} tile clients for "
          f"{args.calm:g} + {args.duration:g} s, "
          f"{args.workers} workers, default settings; "
          f"`{' '.join(['.venv/bin/python', 'bench/overload.py', *sys.argv[1:]])}`\n")
    print("| version | commit | calm tile p50 / p99 ms | tiles | tile p50 ms | tile p99 ms | tile max ms | "
          f"tile errors | p99 <= {GOAL_P99_MS:g} ms | exports 200 | 200 median s | exports 503 | 503 p50 ms | "
          "Retry-After s | other errors | unfinished | peak RSS MB |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("\ninterrupted: every server started by this run has been stopped; no table", file=sys.stderr)
        sys.exit(130)
