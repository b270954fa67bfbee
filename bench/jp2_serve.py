"""JPEG 2000 tiles served: tileserver vs iipsrv 1.3 on the issue's 10000x7500 JP2, side by side on loopback.

Run through `bash bench/jp2_serve.sh [options]` (bench/README.md, "JPEG 2000 serving"). The file is
bench/jp2_setup.sh's `rgb8.jp2` (`opj_compress -n 7 -b 64,64 -c [256,256],[256,256],[128,128] -p RPCL
-r 20 -t 1024,1024 -SOP`). The URLs are every 256-px `JTL` tile of the chosen IIP resolutions (default
4,5,6: 2500, 5000 and 10000 px wide, 1580 tiles), shuffled with a fixed seed, the same list for both
servers. For every repeat and server (A B A B): start it fresh (tileserver `--workers 2`, iipsrv
`run-iipsrv.sh PORT 2`: 2 processes each), one cold pass over the list (each URL once), then `--duration`
seconds of uniformly random picks from it (warm), wrk -t2 -c16; stop it. Peak RSS is sampled from /proc.
Prints one markdown table of medians. The machinery (starting and stopping servers, wrk, RSS) is
bench/bench.py's; only loopback is loaded; every server started here is stopped in a `finally`.
"""

from __future__ import annotations

import argparse
import os
import random
import shlex
import signal
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
JP2BENCH = Path(os.environ.get("JP2BENCH", "/tmp/jp2bench"))
os.environ["TILEBENCH_DIR"] = str(JP2BENCH)  # bench.py and run-iipsrv.sh serve $TILEBENCH_DIR/images
sys.path.insert(0, str(REPO / "bench"))

import bench  # noqa: E402 - after TILEBENCH_DIR is set

TILE = 256
GOALS = {"cold": 2.0, "warm": 10.0}


def level_sizes(width: int, height: int) -> list[tuple[int, int]]:
    """IIP resolutions, smallest first, as both servers size a 7-resolution JP2: floor halvings of the
    codestream's levels (then virtual levels down to one tile, none for this file)."""
    sizes = [(width, height)]
    while sizes[-1][0] > TILE or sizes[-1][1] > TILE:
        w, h = sizes[-1]
        sizes.append((w // 2, h // 2))
    return sizes[::-1]


def tile_urls(image: str, width: int, height: int, resolutions: list[int]) -> list[str]:
    sizes = level_sizes(width, height)
    urls = []
    for r in resolutions:
        w, h = sizes[r]
        n = -(-w // TILE) * -(-h // TILE)
        urls += [f"{bench.IIP}?FIF={image}&JTL={r},{i}" for i in range(n)]
    random.Random(1).shuffle(urls)
    return urls


def image_size(path: Path) -> tuple[int, int]:
    sys.path.insert(0, str(REPO / "src"))
    from tileserver.sources.jp2header import read_header

    with open(path, "rb") as f:
        cs = read_header(f).codestream
    return cs.width, cs.height


def one(server: bench.Tileserver | bench.Iipsrv, wrk: bench.Wrk, urlfile: Path, duration: int
        ) -> dict[str, object]:
    roots = server.start()
    sampler = bench.RssSampler(roots)
    sampler.start()
    out: dict[str, object] = {}
    try:
        label = f"jp2-{server.label}"
        cold = wrk.bench_tiles(server.port, "cold", label, str(urlfile), single=False)
        warm = wrk.raw(server.port, urlfile, duration, label)
        for mode, rows in (("cold", cold), ("warm", warm)):
            res = bench.to_result(rows[0], mode, server.label, 0) if rows else None
            out[mode] = res
            if res is not None:
                print(f"#   {server.label} {mode}: {res.rps:,.0f} tiles/s, p50 {res.p50} ms, p99 {res.p99} ms, "
                      f"{res.errors} errors, {res.requests} requests", file=sys.stderr)
    finally:
        sampler.stop()
        server.stop()
    out["rss"] = sampler.peak_sum / bench.MB
    return out


def med(runs: list[dict[str, object]], mode: str, attr: str) -> float | None:
    values = [getattr(r[mode], attr) for r in runs if r.get(mode) is not None and not r[mode].failed]  # type: ignore[union-attr]
    return statistics.median(values) if values else None


def errors(runs: list[dict[str, object]], mode: str) -> int:
    return sum(r[mode].errors if r.get(mode) is not None else 1 for r in runs)  # type: ignore[union-attr]


def table(args: argparse.Namespace, results: dict[str, list[dict[str, object]]], n: int, load0: str,
          took: float) -> str:
    lines = [
        f"JPEG 2000 serving, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; {bench.machine()}; load average {load0} at "
        f"start, {bench.loadavg()} at end; {bench.versions()}; {openjpeg_version()}; jp2_cache_mb "
        f"{os.environ.get('TILESERVER_JP2_CACHE_MB', 'default')}; iipsrv MAX_IMAGE_CACHE_SIZE "
        f"{os.environ.get('MAX_IMAGE_CACHE_SIZE', '10')} MB, JPEG_QUALITY 75 both; {args.repeats} repeat(s), "
        f"run took {took:.0f} s; `bash bench/jp2_serve.sh {shlex.join(sys.argv[1:])}`",
        "",
        f"`{args.image}`, {n} shuffled 256-px `JTL` tiles of IIP resolutions {args.levels}; 2 processes each, "
        f"wrk -t2 -c{args.connections}; warm = {args.duration} s of random picks after the cold pass",
        "",
        "| pass | tileserver tiles/s | iipsrv 1.3 tiles/s | ratio | goal | p50 ms (ts / iip) | p99 ms (ts / iip) "
        "| errors (ts / iip) | peak RSS MB (ts / iip) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    ts, ip = results.get("tileserver", []), results.get("iipsrv", [])
    for mode in ("cold", "warm"):
        a, b = med(ts, mode, "rps"), med(ip, mode, "rps")
        ratio = f"{a / b:.2f}x" if a and b else "-"
        goal = GOALS[mode]
        met = ("met" if a / b >= goal else "not met") if a and b else "-"
        lines.append(
            f"| {mode} | {bench.fmt(a)} | {bench.fmt(b)} | {ratio} | >= {goal:g}x: {met} "
            f"| {bench.fmt(med(ts, mode, 'p50'), 1)} / {bench.fmt(med(ip, mode, 'p50'), 1)} "
            f"| {bench.fmt(med(ts, mode, 'p99'), 1)} / {bench.fmt(med(ip, mode, 'p99'), 1)} "
            f"| {errors(ts, mode) if ts else '-'} / {errors(ip, mode) if ip else '-'} "
            f"| {bench.fmt(max((float(r['rss']) for r in ts), default=None))} / "  # type: ignore[arg-type]
            f"{bench.fmt(max((float(r['rss']) for r in ip), default=None))} |")  # type: ignore[arg-type]
    return "\n".join(lines)


def openjpeg_version() -> str:
    sys.path.insert(0, str(REPO / "src"))
    from tileserver.sources.openjpeg import library

    lib = library()
    return f"tileserver's OpenJPEG {lib.version}" if lib else "tileserver has no OpenJPEG"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--image", default="rgb8.jp2", help="a file in $JP2BENCH/images (default rgb8.jp2)")
    p.add_argument("--levels", default="4,5,6", help="IIP resolutions to list (default 4,5,6)")
    p.add_argument("--duration", type=int, default=10, help="warm seconds per run (default 10)")
    p.add_argument("--repeats", type=int, default=2, help="runs per server, alternated (default 2)")
    p.add_argument("--connections", type=int, default=16)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--ts-port", type=int, default=18291)
    p.add_argument("--iip-port", type=int, default=18290)
    p.add_argument("--no-iipsrv", action="store_true")
    args = p.parse_args()
    path = JP2BENCH / "images" / args.image
    if not path.is_file():
        print(f"{path} is missing: run bash bench/jp2_setup.sh first", file=sys.stderr)
        return 1
    if not args.no_iipsrv and not os.environ.get("IIPSRV_BIN"):
        print("IIPSRV_BIN is not set (bench/jp2_serve.sh sets it)", file=sys.stderr)
        return 1
    bench.IMAGE = args.image  # tileserver's readiness request
    width, height = image_size(path)
    urls = tile_urls(args.image, width, height, [int(v) for v in args.levels.split(",")])
    urlfile = JP2BENCH / "urls" / f"jp2-{args.image}-{args.levels.replace(',', '-')}.txt"
    urlfile.parent.mkdir(parents=True, exist_ok=True)
    urlfile.write_text("\n".join(urls) + "\n")
    (JP2BENCH / "results").mkdir(parents=True, exist_ok=True)
    wrk = bench.Wrk(2, args.connections, args.duration, JP2BENCH / "results" / "jp2-serve.txt")
    servers: list[bench.Tileserver | bench.Iipsrv] = [bench.Tileserver(args.ts_port, args.workers)]
    if not args.no_iipsrv:
        servers.append(bench.Iipsrv(args.iip_port, args.workers))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so that the finally below stops the servers
    load0, t0 = bench.loadavg(), time.monotonic()
    results: dict[str, list[dict[str, object]]] = {}
    try:
        for rep in range(args.repeats):
            for server in servers:
                print(f"# {datetime.now(UTC):%H:%M:%S} run {rep + 1}: {server.label}", file=sys.stderr)
                results.setdefault(server.label, []).append(one(server, wrk, urlfile, args.duration))
    finally:
        wrk.kill()
        for server in servers:
            server.stop()
    print(table(args, results, len(urls), load0, time.monotonic() - t0))
    return 0


if __name__ == "__main__":
    sys.exit(main())
