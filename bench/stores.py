"""Images in stores: tiles/s from a local folder, from S3 and over HTTP, cold and warm at 16 connections, each
store also behind a StoreProxy that adds a fixed latency per store request, all in one run. Prints one
markdown table. Run by hand with the project's .venv (httpx, obstore, moto[server]); needs wrk, nginx
(Debian nginx-light) and, for the default S3 server, node + npm.

    .venv/bin/python bench/stores.py                         # big.tif, levels 4,5,6, 20 ms, warm 10 s
    .venv/bin/python bench/stores.py --repeats 3 --latency 0,20,50 --only local,s3
    .venv/bin/python bench/stores.py --only s3 --s3 moto --levels 4   # moto: ~100 tiles, or it takes long

The image is big.tif of ../shared/bench/make-test-images.sh (a 20000 x 15000 JPEG-tiled pyramid, 336 MB;
made if missing, ~75 s), uploaded once per run into each S3 server (bucket `tilebench`, key
`images/big.tif`) and served by nginx from /tmp/tilebench (`http://127.0.0.1:PORT/images/`). S3 servers:
`s3rver` (npm s3rver 3.7.1, installed into .cache/s3rver on first use: streams byte ranges from disk) and
`moto` (moto's server mode, as in the tests; it reads the whole object for every GET, so on a 336 MB object
it answers a few ranged GETs per second and is the limit of its rows: see the "store alone" column).

Rows: `local` (`tileserver serve /tmp/tilebench/images`), then for each store a row straight to the store and
one per `--latency` value (ms) through a StoreProxy (tests/store_proxy.py, in this process) with that latency
per request; only proxied rows count store requests and bytes. Every row starts its own `tileserver serve`
(`--workers`, on a free loopback port or `--port`) and stops it:
- start; 16 `info.json` requests on separate connections (the image's metadata loaded in every worker): what
  the store served until then is "to open";
- cold: one wrk pass over the tile URL list, each URL once (../shared/bench/bench-tiles.sh --mode cold:
  wrk-urls.lua `once`, -t2 -c16); store requests and bytes per tile = the proxy's counts / list length;
- warm: passes over the list like the cold one, not measured (a tile is cached per worker, and a pass puts
  it in the one its connection reached): behind a proxy until two passes in a row send the store fewer than
  1 GET per 100 tiles, at most `--prime-passes` (12), else 12; then `--duration` s of random picks
  (wrk-urls.lua `random`); store requests per warm tile = counts / requests, by method in the notes (HEADs
  are freshness checks, GETs tiles still missing in a worker).
`--set NAME=VALUE` passes a setting to every tileserver (e.g. TILESERVER_STORE_THREADS=32); `--repeats N`
runs every row N times in turn, and the table gives medians.
The tile list: every 256-px tile of big.tif's IIP levels `--levels` as IIIF regions
(/iiif/3/big.tif/x,y,w,h/sw,/0/default.jpg; ../shared/bench/make-urls.py, shuffled with a fixed seed), the
stored JPEG tiles, which tileserver passes through. "store alone": wrk straight at the store for 5 s, one
20-KB range GET of the object over and over: the store's own ceiling at 16 connections.

All traffic is loopback; every wrk run is bounded; every process started here is stopped in a `finally`.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import os
import re
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.append(str(Path(__file__).resolve().parents[1]))  # the project, for tests/stores.py
import bench as harness  # the sibling bench.py: the tileserver process, wrk, image set-up, machine line
from tests.live import free_port
from tests.store_proxy import Counts, Exchange, StoreProxy
from tests.stores import S3Service, moto_server, nginx_files, stop, wait_answering

REPO = harness.REPO
IMAGE = harness.IMAGE
BUCKET, PREFIX = "tilebench", "images"
S3RVER_DIR = REPO / ".cache" / "s3rver"
S3RVER_VERSION = "3.7.1"
GOAL_COLD, GOAL_WARM = 0.5, 0.9  # with latency: cold >= half local cold; warm "matches" local warm (>= 90 %)
ALONE_RANGE = "bytes=1000000-1020479"  # 20 KB, about one stored tile


# ---------------------------------------------------------------------------------------------- stores
@dataclass(frozen=True)
class Store:
    """A running store holding big.tif: the image root tileserver is given for a store reached at
    `endpoint` (the store itself or a proxy in front of it), and the environment that goes with it."""

    kind: str  # s3 | http
    name: str  # moto | s3rver | nginx
    endpoint: str  # http://127.0.0.1:PORT
    s3: S3Service | None = None

    def root(self, endpoint: str) -> str:
        return f"s3://{BUCKET}/{PREFIX}" if self.s3 else f"{endpoint}/{PREFIX}/"

    def env(self, endpoint: str) -> dict[str, str]:
        return {**clean_env(), **(self.s3.via(endpoint).env() if self.s3 else {})}

    def object_path(self) -> str:
        return f"/{BUCKET}/{PREFIX}/{IMAGE}" if self.s3 else f"/{PREFIX}/{IMAGE}"


def clean_env() -> dict[str, str]:
    """This environment without tileserver's or AWS's variables: the servers run on defaults."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("TILESERVER_", "AWS_"))}


def s3rver_executable() -> Path:
    exe = S3RVER_DIR / "node_modules" / ".bin" / "s3rver"
    if not exe.exists():
        print(f"# installing s3rver {S3RVER_VERSION} into {S3RVER_DIR} (npm)", file=sys.stderr)
        subprocess.run(["npm", "install", "--prefix", str(S3RVER_DIR), "--no-audit", "--no-fund", "--loglevel=error",
                        "--save-exact", f"s3rver@{S3RVER_VERSION}"], check=True)
    return exe


@contextlib.contextmanager
def s3rver(log: Path) -> Iterator[S3Service]:
    """s3rver on a free loopback port, its objects in a temp folder, with its fixed credentials."""
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="s3rver-", dir=harness.BASE) as data, open(log, "ab") as out:
        proc = subprocess.Popen([str(s3rver_executable()), "-d", data, "-a", "127.0.0.1", "-p", str(port), "-s",
                                 "--no-vhost-buckets"], stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
        try:
            service = S3Service(f"http://127.0.0.1:{port}", "S3RVER", "S3RVER")
            wait_answering(service.endpoint + "/", proc, "s3rver")
            yield service
        finally:
            stop(proc)


def upload(s3: S3Service, name: str) -> None:
    start = datetime.now(UTC)
    s3.create_bucket(BUCKET)
    s3.put(BUCKET, f"{PREFIX}/{IMAGE}", harness.IMAGES / IMAGE)
    print(f"# {name}: {IMAGE} uploaded in {(datetime.now(UTC) - start).total_seconds():.1f} s", file=sys.stderr)


@contextlib.contextmanager
def running_stores(only: list[str], s3_servers: list[str], logs: Path) -> Iterator[list[Store]]:
    """The S3 servers named (each with big.tif uploaded) and nginx serving /tmp/tilebench, until exit."""
    with contextlib.ExitStack() as stack:
        out = []
        for name in s3_servers if "s3" in only else []:
            s3 = stack.enter_context(moto_server(logs / "moto.log") if name == "moto" else s3rver(logs / "s3rver.log"))
            upload(s3, name)
            out.append(Store("s3", name, s3.endpoint, s3))
        if "http" in only:
            out.append(Store("http", "nginx", stack.enter_context(nginx_files(harness.BASE))))
        yield out


def store_alone(store: Store, seconds: int = 5) -> tuple[float | None, str]:
    """wrk straight at the store: one ranged GET of the object, over and over (16 connections)."""
    out = subprocess.run(["wrk", "-t2", "-c16", f"-d{seconds}s", "--timeout", "30s", "-H", f"Range: {ALONE_RANGE}",
                          store.endpoint + store.object_path()], capture_output=True, text=True).stdout
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return (float(rps.group(1)) if rps else None), (f"store alone: {bad.group(1)} non-2xx" if bad else "")


# ---------------------------------------------------------------------------------------------- one row
@dataclass
class Row:
    store: str  # local | s3 (s3rver) | http (nginx)
    latency: str  # "-" (local), "none" (straight to the store), "20 ms" (through a proxy)
    latency_ms: float = 0.0
    cold: dict[str, str] = field(default_factory=dict)  # wrk RESULT fields
    warm: dict[str, str] = field(default_factory=dict)
    open_counts: Counts | None = None  # from the server's start through the 16 info.json requests
    open_exchanges: list[Exchange] = field(default_factory=list)
    cold_counts: Counts | None = None
    warm_counts: Counts | None = None
    alone: float | None = None
    notes: list[str] = field(default_factory=list)


def load_metadata(port: int) -> None:
    """16 info.json requests, each on a connection of its own, so that every worker has loaded big.tif."""
    def one(_: int) -> int:
        with httpx.Client(trust_env=False, timeout=120) as c:
            return c.get(f"http://127.0.0.1:{port}/iiif/3/{IMAGE}/info.json").status_code

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        statuses = set(pool.map(one, range(16)))
    if statuses != {200}:
        raise RuntimeError(f"info.json answered {sorted(statuses)}")


def check(port: int, path: str) -> str:
    """'' when `path` answers a JPEG, else a note."""
    try:
        r = httpx.get(f"http://127.0.0.1:{port}{path}", trust_env=False, timeout=60)
    except httpx.HTTPError as exc:
        return f"check: {type(exc).__name__}"
    if r.status_code != 200 or "image/jpeg" not in r.headers.get("content-type", ""):
        return f"check: HTTP {r.status_code} {r.headers.get('content-type', '')}"
    return ""


@dataclass
class Bench:
    args: argparse.Namespace
    wrk: harness.Wrk
    urls: Path
    n: int  # tiles in the list
    first: str
    rows: list[Row] = field(default_factory=list)

    def row(self, row: Row, root: str, env: dict[str, str] | None, proxy: StoreProxy | None) -> None:
        self.rows.append(row)
        print(f"# {datetime.now(UTC):%H:%M:%S} {row.store}, latency {row.latency}: tileserver serve {root}",
              file=sys.stderr)
        extra = dict(v.split("=", 1) for v in self.args.set)
        env = {**(env or clean_env()), **extra}
        ts = harness.Tileserver(self.args.port, self.args.workers, root, env)
        try:
            if proxy:
                proxy.reset()
            ts.start()
            load_metadata(self.args.port)
            row.open_counts = proxy.counts() if proxy else None
            row.open_exchanges = proxy.exchanges() if proxy else []
            self.measure(row, proxy)
        except RuntimeError as exc:
            lines = [ln for ln in ts.log.read_text(errors="replace").splitlines() if ln.strip()] or [""]
            row.notes.append(f"not measured: {exc} (its last line: `{lines[-1][:160]}`)")
            print(f"#   {exc}", file=sys.stderr)
        finally:
            self.wrk.kill()
            ts.stop()

    def measure(self, row: Row, proxy: StoreProxy | None) -> None:
        port, label = self.args.port, re.sub(r"[^A-Za-z0-9]+", "-", f"{row.store}-{row.latency}").strip("-")
        if proxy:
            proxy.reset()
        cold = self.wrk.bench_tiles(port, "cold", f"stores-{label}-cold", str(self.urls), single=False)
        row.cold = cold[0] if cold else {}
        row.cold_counts = proxy.counts() if proxy else None
        cold_kinds = kinds(proxy.exchanges()) if proxy else ""
        if note := check(port, self.first):
            row.notes.append(note)
        self.prime(row, proxy, label)
        if proxy:
            proxy.reset()
        warm = self.wrk.raw(port, self.urls, self.args.duration, f"stores-{label}-warm")
        row.warm = warm[0] if warm else {}
        row.warm_counts = proxy.counts() if proxy else None
        if proxy:
            row.notes.append(f"store requests: to open {kinds(row.open_exchanges)}, cold {cold_kinds}, "
                             f"warm {kinds(proxy.exchanges())}")
        for mode, fields in (("cold", row.cold), ("warm", row.warm)):
            print(f"#   {mode}: {fields.get('rps', '?')} tiles/s, p99 {fields.get('p99_ms', '?')} ms, "
                  f"{errors(fields)} errors", file=sys.stderr)

    def prime(self, row: Row, proxy: StoreProxy | None, label: str) -> None:
        """Passes over the list, each tile once. A tile is cached per worker, and a pass puts it in the one
        its connection reached: behind a proxy, passes go on until two in a row sent the store fewer than 1
        GET per 100 tiles (at most `--prime-passes`); else `--prime-passes` of them."""
        quiet, gets = 0, 0
        for run in range(1, self.args.prime_passes + 1):
            if proxy:
                proxy.reset()
            self.wrk.bench_tiles(self.args.port, "cold", f"stores-{label}-prime{run}", str(self.urls), single=False)
            if proxy:
                gets = sum(1 for ex in proxy.exchanges() if ex.method == "GET")
                quiet = quiet + 1 if gets < 0.01 * self.n else 0
                if quiet == 2:
                    break
        if proxy:
            row.notes.append(f"{run} priming passes, the last with {gets} store GETs")

    def store_rows(self, store: Store) -> None:
        name = f"{store.kind} ({store.name})"
        alone, note = store_alone(store)
        direct = Row(name, "none", alone=alone, notes=[note] if note else [])
        self.row(direct, store.root(store.endpoint), store.env(store.endpoint), None)
        for ms in self.args.latency:
            with StoreProxy(store.endpoint, latency=ms / 1000) as proxy:
                self.row(Row(name, f"{ms:g} ms", ms), store.root(proxy.url), store.env(proxy.url), proxy)


# ---------------------------------------------------------------------------------------------- report
def errors(fields: dict[str, str]) -> int:
    return sum(int(fields.get(k, 0)) for k in ("err_connect", "err_read", "err_write", "err_status", "err_timeout"))


def kinds(exchanges: list[Exchange]) -> str:
    """'82 GET, 2 HEAD': the store requests by method."""
    counted: dict[str, int] = {}
    for ex in exchanges:
        counted[ex.method] = counted.get(ex.method, 0) + 1
    return ", ".join(f"{n} {method}" for method, n in sorted(counted.items())) or "none"


def rps(fields: dict[str, str]) -> float | None:
    return float(fields["rps"]) if "rps" in fields else None


def fmt(v: float | None, digits: int = 0) -> str:
    return "-" if v is None else f"{v:,.{digits}f}"


def ratio(v: float | None, ref: float | None) -> str:
    return f"{v / ref:.2f}x" if v is not None and ref else "-"


def per(counts: Counts | None, n: float | None, kb: bool = False) -> str:
    if counts is None or not n:
        return "-"
    return f"{counts.bytes / 1024 / n:.1f}" if kb else f"{counts.requests / n:.3f}"


def opened(counts: Counts | None) -> str:
    return "-" if counts is None else f"{counts.requests} ({counts.bytes / 1024:.0f})"


def goal(row: Row, local: Row | None) -> str:
    if not row.latency_ms or local is None:
        return ""
    cold, warm, local_cold, local_warm = rps(row.cold), rps(row.warm), rps(local.cold), rps(local.warm)
    if cold is None or warm is None or not local_cold or not local_warm:
        return "-"
    return "met" if cold / local_cold >= GOAL_COLD and warm / local_warm >= GOAL_WARM else "not met"


def table_row(row: Row, local: Row | None, n: int) -> str:
    def lat(fields: dict[str, str]) -> str:
        return f"{fields['p50_ms']} / {fields['p99_ms']}" if "p50_ms" in fields else "-"

    cold, warm = rps(row.cold), rps(row.warm)
    tile_kb = float(row.cold["MBps"]) * 1024 / cold if cold else None
    warm_n = float(row.warm.get("requests", 0)) or None
    errs = errors(row.cold) + errors(row.warm)
    return (f"| {row.store} | {row.latency} | {fmt(cold)} | {ratio(cold, rps(local.cold) if local else None)} | "
            f"{fmt(warm)} | {ratio(warm, rps(local.warm) if local else None)} | {lat(row.cold)} | {lat(row.warm)} | "
            f"{fmt(tile_kb, 1)} | {opened(row.open_counts)} | {per(row.cold_counts, n)} | "
            f"{per(row.cold_counts, n, kb=True)} | {per(row.warm_counts, warm_n)} | {fmt(row.alone)} | {errs} | "
            f"{goal(row, local)} | {'; '.join(row.notes)} |")


MEDIANS = ("rps", "p50_ms", "p99_ms", "MBps", "requests")
SUMS = ("err_connect", "err_read", "err_write", "err_status", "err_timeout")


def merged(runs: list[Row]) -> Row:
    """One row of the table from the repeats of one row: medians of the rates and latencies, errors
    summed; the proxy's counts and the notes of the last run, with any failure noted in the others."""
    def fields(which: str) -> dict[str, str]:
        got = [getattr(r, which) for r in runs if getattr(r, which)]
        if not got:
            return {}
        out = {k: f"{statistics.median(float(f[k]) for f in got if k in f):.2f}" for k in MEDIANS if k in got[0]}
        return {**out, **{k: str(sum(int(f.get(k, 0)) for f in got)) for k in SUMS}}

    last = runs[-1]
    alone = [r.alone for r in runs if r.alone is not None]
    failed = ("not measured", "check", "store alone")
    failures = [note for r in runs[:-1] for note in r.notes if note.startswith(failed)]
    notes = list(dict.fromkeys([*failures, *last.notes]))
    return Row(last.store, last.latency, last.latency_ms, fields("cold"), fields("warm"), last.open_counts,
               last.open_exchanges, last.cold_counts, last.warm_counts, statistics.median(alone) if alone else None,
               notes)


def report(bench: Bench, n: int, started: datetime, load_start: str) -> str:
    a = bench.args
    grouped: dict[tuple[str, str], list[Row]] = {}
    for r in bench.rows:
        grouped.setdefault((r.store, r.latency), []).append(r)
    rows = [merged(runs) for runs in grouped.values()]
    local = next((r for r in rows if r.store == "local"), None)
    git = subprocess.run(["git", "-C", str(REPO), "describe", "--always", "--dirty"], capture_output=True,
                         text=True).stdout.strip()
    lines = [
        f"### Images in stores: tiles/s at {a.connections} connections, cold and warm, local vs S3 vs HTTP"
        + (f" (medians of {a.repeats} runs in turn)" if a.repeats > 1 else ""),
        "",
        f"- machine: {harness.machine()}; load average {load_start} at start, {harness.loadavg()} at end",
        f"- date: {started:%Y-%m-%d %H:%M} UTC, took {(datetime.now(UTC) - started).seconds // 60} min; "
        f"tileserver git {git or '?'}, {a.workers} workers, default settings",
        f"- image: `{harness.IMAGES / IMAGE}` (20000 x 15000, 256-px JPEG tiles); {n} tiles: IIP levels {a.levels} "
        "as IIIF regions, shuffled; stored tiles passed through",
        f"- load: wrk -t{a.threads} -c{a.connections}; cold = one pass, each tile once, right after the server "
        f"started and loaded the image's metadata; warm = {a.duration} s of random picks after up to "
        f"{a.prime_passes} passes like the cold one (not measured)" + (f"; set: {', '.join(a.set)}" if a.set else ""),
        f"- reproduce: `cd {REPO} && {a.command}`",
        "",
        "| store | added latency | cold tiles/s | cold vs local | warm tiles/s | warm vs local | cold p50 / p99 ms "
        "| warm p50 / p99 ms | tile KB | store requests (KB) to open | store requests / cold tile "
        "| store KB / cold tile | store requests / warm tile | store alone req/s | errors | goal | notes |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        *(table_row(r, local, n) for r in rows),
        "",
        "- added latency: `none` = tileserver talks to the store itself; `N ms` = through a StoreProxy "
        "(tests/store_proxy.py) that waits N ms before forwarding each store request; only those rows count "
        "store requests and bytes (per cold tile: counts / tiles in the list; per warm tile: counts / requests).",
        f"- to open: what the store served from the server's start through 16 `info.json` requests on "
        f"separate connections (the image opened in each of the {a.workers} workers, as far as those requests "
        "reached them all).",
        f"- goal (issue 13): with added latency, cold >= {GOAL_COLD:.0%} of local cold and warm >= "
        f"{GOAL_WARM:.0%} of local warm. A tile that costs one store request of L ms cannot come faster than "
        f"{a.connections} / L per second at {a.connections} connections ("
        + ", ".join(f"{a.connections / ms * 1000:,.0f}/s at {ms:g} ms" for ms in a.latency if ms) + ").",
        "- store alone: wrk -t2 -c16 for 5 s straight at the store, one 20-KB ranged GET of big.tif over and "
        "over: the store's own ceiling on this machine (moto reads the whole object for every GET).",
        "- errors: wrk connect/read/write/timeout errors and non-2xx/3xx statuses, cold + warm. wrk, the "
        "stores, the proxy and tileserver share the CPU.",
        f"- raw wrk RESULT lines: `{bench.wrk.out}`",
    ]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ main
def write_urls(levels: str) -> tuple[Path, int]:
    urls = [harness.TS_FORMS["iiif"](u) for u in harness.make_urls("iiif", levels)]
    path = harness.BASE / "urls" / "stores" / "iiif.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text("\n".join(urls) + "\n")
    tmp.replace(path)  # whole at once: another run may be reading it
    return path, len(urls)


def csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench/stores.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", type=csv, default=["local", "s3", "http"], help="rows: local,s3,http (default all)")
    p.add_argument("--s3", type=csv, default=["s3rver"], help="S3 servers: s3rver,moto (default s3rver)")
    p.add_argument("--latency", type=lambda v: [float(x) for x in csv(v)], default=[20.0],
                   help="ms added per store request, one proxied row each (default 20; 0 = counted, no delay)")
    p.add_argument("--levels", default="4,5,6", help="IIP levels of big.tif to list (default 4,5,6: 1580 tiles)")
    p.add_argument("--duration", type=int, default=10, help="warm seconds measured (default 10)")
    p.add_argument("--prime-passes", type=int, default=12,
                   help="passes over the list before the warm run (behind a proxy: until two in a row send the store "
                   "< 1 GET per 100 tiles; default 12)")
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                   help="an environment variable for every tileserver, e.g. TILESERVER_THREADS=8 (repeatable)")
    p.add_argument("--repeats", type=int, default=1, help="runs of every row, in turn; the table gives medians")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--port", type=int, default=0, help="tileserver's port (default: a free one, so that runs "
                   "side by side do not meet)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--connections", type=int, default=16)
    args = p.parse_args(argv)
    unknown = set(args.only) - {"local", "s3", "http"} | set(args.s3) - {"s3rver", "moto"}
    if unknown:
        p.error(f"unknown: {', '.join(sorted(unknown))}")
    if bad := [v for v in args.set if "=" not in v]:
        p.error(f"--set wants NAME=VALUE, not {bad[0]!r}")
    args.port = args.port or free_port()
    args.command = shlex.join([".venv/bin/python", "bench/stores.py", *argv])
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    for sig in (signal.SIGTERM, signal.SIGHUP):  # unwind through the finally blocks: everything is stopped
        signal.signal(sig, lambda s, _f: sys.exit(128 + s))
    for tool in ("wrk", "vipsheader"):
        if subprocess.run(["sh", "-c", f"command -v {tool}"], capture_output=True).returncode:
            print(f"{tool} missing: see {harness.SHARED / 'install-deps.sh'}", file=sys.stderr)
            return 1
    harness.ensure_images()
    harness.RESULTS.mkdir(parents=True, exist_ok=True)
    started, load_start = datetime.now(UTC), harness.loadavg()
    urls, n = write_urls(args.levels)
    first = next(line for line in urls.read_text().splitlines() if line.strip())
    wrk = harness.Wrk(args.threads, args.connections, args.duration,
                      harness.RESULTS / f"stores-{started:%Y%m%d-%H%M%S}.txt")
    bench = Bench(args, wrk, urls, n, first)
    try:
        with running_stores(args.only, args.s3, harness.RESULTS) as stores:
            for _ in range(args.repeats):  # the rows in turn, again: a quiet spell or a busy one is shared
                if "local" in args.only:
                    bench.row(Row("local", "-"), str(harness.IMAGES), None, None)
                for store in stores:
                    bench.store_rows(store)
    finally:
        wrk.kill()
    print(report(bench, n, started, load_start))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("\ninterrupted: every process started by this run has been stopped; no table", file=sys.stderr)
        sys.exit(130)
