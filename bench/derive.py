"""Large untiled images: tiles/s from one big JPEG read as it is (virtual levels), while its pyramid is
being derived (answered from the preview), and after (stored tiles passed through), with the time the
conversion took. Prints one markdown table. Run by hand; stdlib + httpx + pyvips (the project's .venv).

    .venv/bin/python bench/derive.py                         # 20000 x 15000 JPEG, 20 s per phase
    .venv/bin/python bench/derive.py --size 8000x6000 --duration 5

Each phase starts its own `tileserver serve` (2 workers, port 18291, loopback only) and stops it by its
pid (its process group) in a `finally`. Requests are IIP `JTL` tiles of the three largest levels, every
tile at most once (shuffled, fixed seed; a tenth of the tiles for each of the two slow phases, the rest
after; only the preview's answers, which are never cached, repeat), so no tile-cache hit flatters a
phase; `--concurrency` requests are in flight. Phase "as it is": TILESERVER_DERIVE_DIR empty (the
server before derivation; TILESERVER_MAX_DECODE_MEGAPIXELS=1000 and TILESERVER_DECODED_CACHE_MB=4096, so
that the pixel budget lets it decode the image whole and keep it, as it did then).
Phases "converting" and "after": a fresh derivative folder; a response with `Cache-Control: no-store`
came from the preview; "conversion" is the time from the first request to the first stored-tile answer.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import math
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
BASE = Path(os.environ.get("TILEBENCH_DIR", "/tmp/tilebench")) / "derive"
PORT = 18291


def make_image(path: Path, width: int, height: int) -> None:
    """A photograph-like JPEG: slow waves plus noise (compresses like a photograph, ~1.6 bits/pixel)."""
    import pyvips

    xyz = pyvips.Image.xyz(width, height)
    x, y = xyz[0], xyz[1]
    rgb = ((x * 0.05).sin() * 60 + 128).bandjoin([(y * 0.031).cos() * 60 + 128, ((x + y) * 0.013).sin() * 60 + 128])
    (rgb + pyvips.Image.gaussnoise(width, height, sigma=12)).cast("uchar").jpegsave(str(path), Q=88)


def tile_urls(name: str, width: int, height: int, levels: int = 3) -> list[str]:
    """IIP JTL URLs of every tile of the `levels` largest levels (floor halvings, as the server's)."""
    sizes = [(width, height)]
    while sizes[-1][0] > 256 or sizes[-1][1] > 256:
        w, h = sizes[-1]
        sizes.append((w // 2, h // 2))
    urls = []
    for level, (w, h) in enumerate(sizes[:levels]):
        resolution = len(sizes) - 1 - level
        urls += [f"/iip?FIF={name}&JTL={resolution},{n}" for n in range(math.ceil(w / 256) * math.ceil(h / 256))]
    random.Random(11).shuffle(urls)
    return urls


@contextlib.contextmanager
def server(root: Path, derive_dir: str, workers: int) -> Iterator[None]:
    # without derivation the image is decoded whole: let the pixel budget allow that, and keep the decoded
    # image in memory, as the server did before it had derivation and a budget
    budget = {} if derive_dir else {"TILESERVER_MAX_DECODE_MEGAPIXELS": "1000", "TILESERVER_DECODED_CACHE_MB": "4096"}
    env = {**os.environ, "TILESERVER_DERIVE_DIR": derive_dir, **budget}
    cmd = [str(REPO / ".venv" / "bin" / "tileserver"), "serve", str(root), "--host", "127.0.0.1",
           "--port", str(PORT), "--workers", str(workers)]
    log = open(BASE / "server.log", "ab")  # noqa: SIM115 - closed in the finally below
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        for _ in range(200):
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{PORT}/health", timeout=1).status_code == 200:
                    break
            time.sleep(0.1)
        else:
            raise RuntimeError("tileserver did not start; see " + str(BASE / "server.log"))
        yield
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


@dataclass
class Phase:
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    start: float = 0.0
    end: float = 0.0

    def row(self, name: str, note: str = "") -> str:
        n = len(self.latencies)
        elapsed = max(self.end - self.start, 1e-9)
        lat = sorted(self.latencies)
        p50 = statistics.median(lat) * 1000 if lat else float("nan")
        p99 = lat[min(n - 1, int(n * 0.99))] * 1000 if lat else float("nan")
        return f"| {name} | {n} | {elapsed:.1f} | {n / elapsed:.1f} | {p50:.1f} | {p99:.1f} | {self.errors} | {note} |"


class Load:
    """Requests `urls` in order with `concurrency` in flight. Without `classify`, everything is one phase
    ("as it is") of `duration` seconds. With it, responses go to "converting" (no-store; `urls` are
    requested round and round, as nothing provisional is cached) until the first stored-tile answer,
    then to "after" for `duration` more seconds, from `after`."""

    def __init__(self, urls: list[str], phases: dict[str, Phase], classify: bool, duration: float,
                 after: list[str] | None = None) -> None:
        self.phases, self.classify, self.duration = phases, classify, duration
        self.plain, self.ring, self.later = iter(urls), itertools.cycle(urls), iter(after or [])
        self.started = time.perf_counter()
        self.switched: float | None = None
        for phase in phases.values():
            phase.start = self.started

    def current(self) -> Phase:
        if not self.classify:
            return self.phases["as it is"]
        return self.phases["converting" if self.switched is None else "after"]

    def next_url(self) -> str | None:
        now = time.perf_counter()
        if self.classify and self.switched is None:
            return next(self.ring) if now - self.started < 600 else None
        if now - (self.switched or self.started) > self.duration:
            return None
        return next(self.later if self.classify else self.plain, None)

    def record(self, r: httpx.Response, took: float, done: float) -> None:
        if self.classify and self.switched is None and r.status_code == 200 \
                and r.headers.get("cache-control") != "no-store":
            self.switched = done
            self.phases["converting"].end = self.phases["after"].start = done
        phase = self.current()
        if r.status_code != 200:
            phase.errors += 1
        else:
            phase.latencies.append(took)

    async def worker(self, client: httpx.AsyncClient) -> None:
        while (url := self.next_url()) is not None:
            t = time.perf_counter()
            try:
                r = await client.get(url)
            except httpx.HTTPError:
                self.current().errors += 1
                continue
            done = time.perf_counter()
            self.record(r, done - t, done)

    async def run(self, concurrency: int) -> float | None:
        """Run to the end; the conversion time (first request to first stored-tile answer), if any."""
        limits = httpx.Limits(max_connections=concurrency)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{PORT}", timeout=600, limits=limits) as client:
            await asyncio.gather(*(self.worker(client) for _ in range(concurrency)))
        self.current().end = time.perf_counter()
        if self.classify and self.switched is None:
            self.phases["converting"].end = self.current().end
        return None if self.switched is None else self.switched - self.started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="20000x15000", help="JPEG size, WxH (default 20000x15000)")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of the 'as it is' and 'after' phases")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.lower().split("x"))
    root = BASE / "images"
    root.mkdir(parents=True, exist_ok=True)
    name = f"big-{width}x{height}.jpg"
    if not (root / name).exists():
        print(f"making {name} ...", file=sys.stderr)
        make_image(root / name, width, height)
    urls = tile_urls(name, width, height)
    few = len(urls) // 10  # the slow phases get a tenth each; stored tiles go fastest and get the rest
    plain = {"as it is": Phase()}
    with server(root, "", args.workers):
        asyncio.run(Load(urls[:few], plain, False, args.duration).run(args.concurrency))
    derived = {"converting": Phase(), "after": Phase()}
    folder = BASE / "derived"
    shutil.rmtree(folder, ignore_errors=True)
    with server(root, str(folder), args.workers):
        took = asyncio.run(Load(urls[few : 2 * few], derived, True, args.duration, urls[2 * few :])
                           .run(args.concurrency))
    size = sum(p.stat().st_size for p in folder.glob("*.tif"))
    print(f"\n{name} ({(root / name).stat().st_size / 1e6:.0f} MB), {args.workers} workers, {args.concurrency} "
          f"requests in flight, IIP JTL tiles of the 3 largest levels, each tile once, os: {os.uname().sysname} "
          f"{os.cpu_count()} CPUs\n")
    print("| phase | tiles | seconds | tiles/s | p50 ms | p99 ms | errors | notes |")
    print("|---|---|---|---|---|---|---|---|")
    print(plain["as it is"].row("as it is (virtual levels, no derivation)"))
    conv = f"conversion {took:.1f} s from the first request" if took is not None else "conversion did not finish"
    print(derived["converting"].row("while converting (from the preview)", conv))
    print(derived["after"].row("after (stored tiles passed through)", f"pyramid {size / 1e6:.0f} MB"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
