"""CPU per request of a cold pass, tileserver against iipsrv 1.3 (run by hand; prints a Markdown table).

A cold pass's rate moves with the VM it runs on (the same list ran at 3,800-5,600 req/s through iipsrv 1.3 within
one sitting here), and wrk shares the two cores with the server. What a server spends per request moves less: this
reads the user and system CPU time of every process of each server (uvicorn's workers; lighttpd and the iipsrv
FastCGI processes) from /proc before and after one cold pass (wrk-urls.lua `once`: each URL of the list requested
once, right after the server started), and wrk's own from its resource usage, and divides by the requests
answered. Servers alternate, restarted before each pass.

    .venv/bin/python bench/cpu.py [--levels 4,5,6,7] [--protocols iip,iiif,iip-qlt] [--repeats 3] [--perf 2000]

`--perf HZ` also samples each pass with `perf record -F HZ` (linux-perf) over the server's processes and prints where
a request's CPU went, in µs per request by what ran: the JPEG codec (libjpeg-turbo, however it is linked), Python
(the interpreter and its extension modules), the kernel, the C library, the rest. perf slows both servers alike.

Needs what `make bench` needs (bench/README.md): wrk, the test images, iipsrv 1.3 (`IIPSRV_BIN`).
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # bench/bench.py: the servers, the URL lists, wrk

TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids: list[int]) -> tuple[float, float]:
    """(user, system) seconds of `pids` and their waited-for children."""
    user = system = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # fields after the name: state is [0], utime [11], stime [12], cutime [13], cstime [14]
        user += (int(fields[11]) + int(fields[13])) / TICK
        system += (int(fields[12]) + int(fields[14])) / TICK
    return user, system


def write_list(protocol: str, levels: str) -> dict[str, Path]:
    """The cold list of `protocol` over `levels`, in each server's form; `iip-qlt`: IIP with `QLT=75`."""
    base = "iip" if protocol == "iip-qlt" else protocol
    urls = bench.make_urls(base, levels)
    if protocol == "iip-qlt":
        urls = [u.replace("&JTL=", "&QLT=75&JTL=", 1) for u in urls]
    bench.URLS.mkdir(parents=True, exist_ok=True)
    out = {}
    for server in bench.SERVERS:
        path = bench.URLS / f"cpu-{protocol}-{levels.replace(',', '')}-{server}.txt"
        form = bench.TS_FORMS[base] if server == "tileserver" else (lambda u: u)
        path.write_text("\n".join(form(u) for u in urls) + "\n")
        out[server] = path
    return out


@dataclass
class Pass:
    protocol: str
    server: str
    requests: int
    rps: float
    p99: float
    user: float  # seconds, the server's processes
    system: float
    wrk: float  # seconds, wrk's user + system
    where: dict[str, int] | None = None  # --perf: samples per part (`part_of`)
    hz: int = 0

    def per(self, seconds: float) -> float:
        return seconds / self.requests * 1e6 if self.requests else 0.0


def part_of(dso: str) -> str:
    """What a perf sample's shared object is, for the table of `--perf`."""
    name = dso.rsplit("/", 1)[-1]
    if "jpeg" in name:  # libjpeg.so.62 (iipsrv via libtiff), simplejpeg's _jpeg module, libturbojpeg (edge crops)
        return "JPEG codec"
    if name.startswith("libpython") or ".cpython-" in name or name == "python3":
        return "Python"
    if name.startswith("[kernel"):
        return "kernel"
    if name.startswith(("libc.so", "libc-", "ld-linux", "libm.so", "libstdc++")):
        return "C library"
    return "rest"


PARTS = ("JPEG codec", "Python", "kernel", "C library", "rest")


def perf_parts(data: Path) -> dict[str, int]:
    """Samples per part (`part_of`) of a perf.data file."""
    out = subprocess.run(["perf", "report", "-i", str(data), "--sort", "dso", "--stdio", "-n"],
                         capture_output=True, text=True, check=False).stdout
    parts = dict.fromkeys(PARTS, 0)
    for line in out.splitlines():
        m = re.match(r"\s*[0-9.]+%\s+(\d+)\s+(\S+)", line)
        if m:
            parts[part_of(m.group(2))] += int(m.group(1))
    return parts


def one_pass(server: bench.Tileserver | bench.Iipsrv, protocol: str, urls: Path, wrk: bench.Wrk,
             hz: int = 0) -> Pass | None:
    roots = server.start()
    recorder, where = None, None
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "perf.data"
        try:
            pids = bench.descendants(roots)
            if hz:
                recorder = subprocess.Popen(["perf", "record", "-q", "-F", str(hz), "-o", str(data), "-p",
                                             ",".join(map(str, pids))], stdout=subprocess.DEVNULL,
                                            stderr=subprocess.DEVNULL)
                time.sleep(0.5)  # perf attached before the pass
            before = cpu_seconds(pids)
            children = resource.getrusage(resource.RUSAGE_CHILDREN)
            rows = wrk.bench_tiles(server.port, "cold", f"cpu-{protocol}-{server.label}", str(urls), single=False)
            after = cpu_seconds(pids)
            done = resource.getrusage(resource.RUSAGE_CHILDREN)
        finally:
            if recorder is not None:
                recorder.send_signal(signal.SIGINT)
                recorder.wait(timeout=60)
            server.stop()
        if recorder is not None and data.exists():
            where = perf_parts(data)
    if not rows or "rps" not in rows[0]:
        return None
    r = bench.to_result(rows[0], protocol, server.label, 0)
    wrk_cpu = (done.ru_utime - children.ru_utime) + (done.ru_stime - children.ru_stime)
    return Pass(protocol, server.label, r.requests, r.rps, r.p99, after[0] - before[0], after[1] - before[1],
                wrk_cpu, where, hz)


def where_table(passes: list[Pass], protocols: list[str]) -> list[str]:
    """`--perf`: µs per request of each part, medians over the passes."""
    lines = ["| cold pass | server | " + " | ".join(PARTS) + " | all sampled |",
             "|---|---|" + "---|" * (len(PARTS) + 1)]
    for protocol in protocols:
        for server in bench.SERVERS:
            ps = [p for p in passes if p.protocol == protocol and p.server == server and p.where and p.requests]
            if not ps:
                continue
            per = [{k: v / p.hz / p.requests * 1e6 for k, v in (p.where or {}).items()} for p in ps]
            cells = [statistics.median(x[k] for x in per) for k in PARTS]
            lines.append(f"| {protocol} | {server} | " + " | ".join(f"{c:.0f}" for c in cells)
                         + f" | {statistics.median(sum(x.values()) for x in per):.0f} |")
    return lines


def table(passes: list[Pass], protocols: list[str]) -> list[str]:
    lines = ["| cold pass | server | requests | req/s | p99 ms | server CPU µs/req (user + sys) | wrk µs/req "
             "| CPU ratio iipsrv / tileserver |", "|---|---|---|---|---|---|---|---|"]
    for protocol in protocols:
        cpu = {}
        for server in bench.SERVERS:
            ps = [p for p in passes if p.protocol == protocol and p.server == server]
            if not ps:
                continue
            med = statistics.median
            user, system = med([p.per(p.user) for p in ps]), med([p.per(p.system) for p in ps])
            cpu[server] = med([p.per(p.user + p.system) for p in ps])
            ratio = (f"{cpu['iipsrv'] / cpu['tileserver']:.2f}x"
                     if server == "iipsrv" and "tileserver" in cpu else "")
            lines.append(f"| {protocol} | {server} | {med([p.requests for p in ps]):,.0f} | "
                         f"{med([p.rps for p in ps]):,.0f} | {med([p.p99 for p in ps]):.1f} | "
                         f"{cpu[server]:.0f} ({user:.0f} + {system:.0f}) | {med([p.per(p.wrk) for p in ps]):.0f} "
                         f"| {ratio} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench/cpu.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--levels", default="4,5,6,7", help="levels of big.tif (default 4,5,6,7: 6,241 tiles)")
    p.add_argument("--protocols", default="iip,iiif", help="iip, iiif, deepzoom, zoomify, iip-qlt (default iip,iiif)")
    p.add_argument("--repeats", type=int, default=3, help="alternated passes per server (default 3)")
    p.add_argument("--workers", type=int, default=2, help="processes per server (default 2)")
    p.add_argument("--threads", "-t", type=int, default=2)
    p.add_argument("--connections", "-c", type=int, default=16)
    p.add_argument("--ts-port", type=int, default=18191)
    p.add_argument("--iip-port", type=int, default=18190)
    p.add_argument("--no-iipsrv", action="store_true", help="tileserver only")
    p.add_argument("--perf", type=int, default=0, metavar="HZ",
                   help="also sample each pass with perf record -F HZ: where a request's CPU went")
    args = p.parse_args(argv)
    protocols = [x for x in args.protocols.split(",") if x]
    unknown = [x for x in protocols if x not in (*bench.TS_FORMS, "iip-qlt")]
    if unknown:
        p.error(f"unknown protocol {unknown[0]}")
    bench.ensure_images()
    bench.RESULTS.mkdir(parents=True, exist_ok=True)
    servers: list[bench.Tileserver | bench.Iipsrv] = [bench.Tileserver(args.ts_port, args.workers)]
    if not args.no_iipsrv:
        servers.append(bench.Iipsrv(args.iip_port, args.workers))
    wrk = bench.Wrk(args.threads, args.connections, 60, bench.RESULTS / "cpu.txt")
    started, load = datetime.now(UTC), bench.loadavg()
    passes: list[Pass] = []
    try:
        for protocol in protocols:
            lists = write_list(protocol, args.levels)
            for rep in range(args.repeats):
                for server in servers:
                    got = one_pass(server, protocol, lists[server.label], wrk, args.perf)
                    if got is None:
                        print(f"# {protocol} {server.label} run {rep + 1}: no wrk report", file=sys.stderr)
                        continue
                    passes.append(got)
                    print(f"# {protocol} {server.label} run {rep + 1}: {got.rps:,.0f} req/s, p99 {got.p99} ms, "
                          f"{got.per(got.user + got.system):.0f} µs CPU/req", file=sys.stderr)
    finally:
        wrk.kill()
        for server in servers:
            server.stop()
    print(f"### CPU per request, cold passes over levels {args.levels} of big.tif "
          f"(wrk -t{args.threads} -c{args.connections}, {args.workers} processes each, medians of {args.repeats})")
    print()
    print(f"- machine: {bench.machine()}; load average {load} at start, {bench.loadavg()} at end")
    print(f"- date: {started:%Y-%m-%d %H:%M} UTC; servers: {bench.versions()}")
    print()
    print("\n".join(table(passes, protocols)))
    if args.perf:
        print()
        print(f"Where the CPU went (perf record -F {args.perf}, µs per request, medians):")
        print()
        print("\n".join(where_table(passes, protocols)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
