"""The cluster of issue 14 on this machine: nginx (deploy/nginx/tileserver.conf) in front of 1, 2 and 3
`tileserver serve` replicas (one process each) sharing one redis-server, all on loopback, started by
tests/cluster.py as the cluster tests start it. Prints markdown tables. Run by hand with the project's .venv;
needs wrk, nginx, redis-server (Debian) and the bench images (../shared/bench/make-test-images.sh, made if
missing, ~75 s).

    .venv/bin/python bench/cluster.py                        # everything, ~3 min
    .venv/bin/python bench/cluster.py --only scaling,cost --replicas 1,3 --duration 5

Sections (`--only`):
- scaling: for 1, 2, 3 replicas, a fresh cluster each: a cold pass through nginx over re-encoded tiles
  (IIP `JTL` of big.tif, levels `--levels`, with `QLT=75`: every tile decoded and encoded once, wrk-urls.lua
  `once`, -t2 -c16), then one pass like it straight at each replica (not measured: every replica then holds
  every tile), then `--duration` s of random picks through nginx (warm); with 1 replica also the warm run
  straight at the replica (what nginx costs). CPU per request of the replicas, nginx and redis-server from /proc.
- mix: 3 replicas behind round robin, a Zipf-like mix (s = 1) of `--mix-requests` requests over the tiles
  of three images (big.tif re-encoded, small.tif stored tiles, gray16.tif 16-bit tiles made into JPEG),
  one wrk pass in order; with the shared cache and without: where answers came from (each replica's
  `tileserver_image_responses_total{source}`), tiles made per distinct tile, the shared cache's hit rate.
- cost: 2 replicas, one client, sequential requests straight to a replica: a cold tile (made here), a
  local hit (the same URL again: this replica's memory), a shared hit (the same URL on the other replica,
  which has the image open but never made the tile); latency medians, replica CPU per request, Redis
  commands and CPU per request.
- faults: 3 replicas under `--duration` s of warm wrk load through nginx; a replica SIGKILLed after a third of
  it, then (the replica back) redis-server SIGKILLed likewise: requests sent, failed (wrk's non-2xx and socket
  errors), retried on another replica (nginx's access log, `$upstream_addr`).
- model: the 16- and 64-core estimate computed from the CPU figures above (see its notes for the model).

`--store s3rver` puts the images in s3rver (bench/stores.py) and serves `s3://tilebench/images` instead of
the folder. Every process started here is stopped in a `finally`; all traffic is loopback; every wrk run is
bounded. Without the shared cache in this tileserver (Settings has no `cache_url`) the replicas share
nothing and the mix and cost rows say so.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.append(str(Path(__file__).resolve().parents[1]))  # the project, for tests/cluster.py
import bench as harness  # the sibling bench.py: wrk, image set-up, machine line, process trees
from tests.cache_servers import redis_server
from tests.cluster import LOCAL_SOURCES, MADE_SOURCES, Cluster, Metrics, running_cluster
from tests.stores import S3Service

from tileserver.settings import Settings

IIP = harness.IIP
CACHE_URL = "cache_url" in Settings.model_fields  # a checkout without the shared cache: rows say so
CLK = os.sysconf("SC_CLK_TCK")
BUCKET, PREFIX = "tilebench", "images"


# ---------------------------------------------------------------------------------------------- URLs
def make_urls(protocol: str, levels: str, image: str, seed: int = 1) -> list[str]:
    out = harness.run([sys.executable, str(harness.SHARED / "make-urls.py"), "--protocol", protocol, "--levels",
                       levels, "--image", str(harness.IMAGES / image), "--prefix", IIP, "--seed", str(seed)],
                      capture_output=True).stdout
    urls = [u for u in out.splitlines() if u.strip() and not u.startswith("#")]
    return [harness.TS_FORMS[protocol](u) for u in urls]


def reencoded(levels: str, image: str = harness.IMAGE) -> list[str]:
    return [u.replace("&JTL=", "&QLT=75&JTL=", 1) for u in make_urls("iip", levels, image)]


def zipf(pool: list[str], n: int, s: float = 1.0, seed: int = 7) -> list[str]:
    """`n` picks from `pool` (rank = position) with weights 1 / rank^s."""
    rng = random.Random(seed)
    return rng.choices(pool, weights=[1 / (r + 1) ** s for r in range(len(pool))], k=n)


def write(name: str, urls: list[str]) -> Path:
    path = harness.BASE / "urls" / "cluster" / f"{name}.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(urls) + "\n")
    return path


# ----------------------------------------------------------------------------------------------- CPU
def cpu_seconds(pids: list[int]) -> float:
    total = 0.0
    for pid in harness.descendants(pids):
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / CLK
    return total


@dataclass
class Cpu:
    """CPU seconds of the replicas, nginx and the cache server, between `start` and `stop`."""

    cluster: Cluster
    used: dict[str, float] = field(default_factory=dict)

    def snapshot(self) -> dict[str, float]:
        c = self.cluster
        out = {"replicas": cpu_seconds([r.proc.pid for r in c.replicas if r.proc and r.proc.poll() is None]),
               "nginx": cpu_seconds([c.nginx_pid()])}
        if c.cache and c.cache.proc and c.cache.proc.poll() is None:
            out["cache"] = c.cache.cpu_seconds()  # its own count, in microseconds
        return out

    @contextlib.contextmanager
    def measure(self) -> Iterator[Cpu]:
        before = self.snapshot()
        yield self
        after = self.snapshot()
        self.used = {k: after[k] - before.get(k, 0.0) for k in after}

    def per(self, n: float) -> dict[str, float]:
        """CPU ms per request of each part, for `n` requests."""
        return {k: v * 1000 / n for k, v in self.used.items()} if n else {}


def commands(c: Cluster) -> int:
    return c.cache.commands() if c.cache else 0


# ------------------------------------------------------------------------------------------- clusters
@dataclass
class Bench:
    args: argparse.Namespace
    wrk: harness.Wrk
    folder: Path
    s3: S3Service | None = None
    lines: list[str] = field(default_factory=list)
    figures: dict[str, float] = field(default_factory=dict)  # inputs of the model

    @contextlib.contextmanager
    def cluster(self, replicas: int, backend: str | None = "redis") -> Iterator[Cluster]:
        root = f"s3://{BUCKET}/{PREFIX}" if self.s3 else str(harness.IMAGES)
        settings = dict(v.split("=", 1) for v in self.args.set)
        print(f"# {datetime.now(UTC):%H:%M:%S} {replicas} replica(s), shared cache {backend or 'none'}",
              file=sys.stderr)
        with running_cluster(root, self.folder / f"run-{time.monotonic_ns()}", s3=self.s3, replicas=replicas,
                             backend=backend if CACHE_URL else None, settings=settings) as c:
            try:
                yield c
            finally:
                self.wrk.kill()

    def port(self, url: str) -> int:
        return int(url.rsplit(":", 1)[1])

    def pass_(self, c: Cluster, urls: Path, label: str, url: str | None = None) -> dict[str, str]:
        got = self.wrk.bench_tiles(self.port(url or c.url), "cold", label, str(urls), single=False)
        return got[0] if got else {}

    def warm(self, c: Cluster, urls: Path, label: str, url: str | None = None) -> dict[str, str]:
        got = self.wrk.raw(self.port(url or c.url), urls, self.args.duration, label)
        return got[0] if got else {}


def rps(fields: dict[str, str]) -> float:
    return float(fields.get("rps", 0.0))


def errors(fields: dict[str, str]) -> int:
    return sum(int(fields.get(k, 0)) for k in ("err_connect", "err_read", "err_write", "err_status", "err_timeout"))


def lat(fields: dict[str, str]) -> str:
    return f"{fields['p50_ms']} / {fields['p99_ms']}" if "p50_ms" in fields else "-"


def ratio(v: float, ref: float) -> str:
    return f"{v / ref:.2f}x" if v and ref else "-"


def cpu_cell(per: dict[str, float]) -> str:
    return " / ".join(f"{per.get(k, 0.0):.2f}" for k in ("replicas", "nginx", "cache")) if per else "-"


# -------------------------------------------------------------------------------------------- scaling
def scaling(b: Bench) -> None:
    urls = write("reencoded", reencoded(b.args.levels))
    n_urls = len(urls.read_text().split())
    rows = []
    for n in b.args.replicas:
        with b.cluster(n) as c:
            cpu = Cpu(c)
            with cpu.measure():
                cold = b.pass_(c, urls, f"cluster-{n}-cold")
            cold_cpu = cpu.per(float(cold.get("requests", 0)))
            for r in c.replicas:  # one pass straight at each: every replica holds every tile
                b.pass_(c, urls, f"cluster-{n}-prime{r.index}", r.url)
            with cpu.measure():
                warm = b.warm(c, urls, f"cluster-{n}-warm")
            warm_cpu = cpu.per(float(warm.get("requests", 0)))
            rows.append((f"{n} behind nginx", cold, cold_cpu, warm, warm_cpu))
            if n == 1:
                b.figures.update(cold_replica=cold_cpu.get("replicas", 0), warm_replica=warm_cpu.get("replicas", 0),
                                 nginx=warm_cpu.get("nginx", 0), tile_kb=float(warm.get("MBps", 0)) * 1024 /
                                 max(rps(warm), 1))
                with cpu.measure():
                    direct = b.warm(c, urls, "cluster-1-direct", c.replicas[0].url)
                rows.append(("1, straight (no nginx)", {}, {}, direct, cpu.per(float(direct.get("requests", 0)))))
    base = next((rps(r[3]) for r in rows if r[0].startswith("1 ")), 0.0)
    base_cold = next((rps(r[1]) for r in rows if r[0].startswith("1 ")), 0.0)
    b.lines += [
        f"### Throughput with 1-3 replicas behind nginx ({n_urls} re-encoded tiles, wrk -t{b.args.threads} "
        f"-c{b.args.connections})", "",
        "| replicas | cold tiles/s | vs 1 | cold p50 / p99 ms | cold CPU ms/tile: replicas / nginx / redis "
        "| warm tiles/s | vs 1 | warm p50 / p99 ms | warm CPU ms/tile: replicas / nginx / redis | errors |",
        "|---|---|---|---|---|---|---|---|---|---|",
        *(f"| {name} | {rps(cold) or '-'} | {ratio(rps(cold), base_cold)} | {lat(cold)} "
          f"| {cpu_cell(ccpu)} | {rps(warm)} | {ratio(rps(warm), base)} | {lat(warm)} | {cpu_cell(wcpu)} "
          f"| {errors(cold) + errors(warm)} |" for name, cold, ccpu, warm, wcpu in rows), ""]


# ------------------------------------------------------------------------------------------------ mix
def sources(before: list[Metrics], after: list[Metrics]) -> dict[str, float]:
    out: dict[str, float] = {}
    for b, a in zip(before, after, strict=True):
        was = b.by("tileserver_image_responses_total", "source")
        for k, v in a.by("tileserver_image_responses_total", "source").items():
            out[k] = out.get(k, 0.0) + v - was.get(k, 0.0)
    return out


def mix(b: Bench) -> None:
    pool = reencoded("3,4,5,6") + make_urls("iiif", "2,3,4", "small.tif") + make_urls("iiif", "3,4,5", "gray16.tif")
    random.Random(3).shuffle(pool)
    picks = zipf(pool, b.args.mix_requests)
    urls, distinct = write("mix", picks), len(set(picks))
    rows = []
    for backend in ("redis", None):
        with b.cluster(3, backend) as c:
            before, ops, cpu = c.metrics(), commands(c), Cpu(c)
            with cpu.measure():
                got = b.pass_(c, urls, f"cluster-mix-{backend or 'none'}")
            answered = sources(before, c.metrics())
            if commands(c) > ops:  # Redis CPU per command, over many commands
                b.figures["cmd_us"] = cpu.used.get("cache", 0.0) * 1e6 / (commands(c) - ops)
        local = sum(answered.get(k, 0.0) for k in LOCAL_SOURCES)
        made = sum(answered.get(k, 0.0) for k in MADE_SOURCES)
        shared = sum(answered.values()) - local - made
        rows.append((backend, got, answered, local, shared, made))
        if backend and CACHE_URL:
            total = local + shared + made
            b.figures.update(mix_local=local / total, mix_shared=shared / total, mix_made=made / total)
    b.lines += [
        f"### Shared-cache hit rate in a mixed workload (3 replicas, round robin; {len(picks)} requests, Zipf s=1 "
        f"over {len(pool)} tiles of 3 images, {distinct} distinct requested)", "",
        "| shared cache | tiles/s | p50 / p99 ms | local hits | shared hits | made: passthrough / recode / decode "
        "| made per distinct tile | shared hit rate (of local misses) | errors |",
        "|---|---|---|---|---|---|---|---|---|",
        *(f"| {'Redis' if on and CACHE_URL else 'none'} | {rps(got)} | {lat(got)} | {local:.0f} | {shared:.0f} | "
          f"{' / '.join(f'{answered.get(k, 0):.0f}' for k in MADE_SOURCES)} | "
          f"{made / distinct:.2f} | {shared / (shared + made) if shared + made else 0:.1%} | {errors(got)} |"
          for on, got, answered, local, shared, made in rows), ""]
    if not CACHE_URL:
        b.lines += ["- this tileserver has no shared cache (Settings has no `cache_url`): both rows share nothing",
                    ""]
    b.lines += ["- made: what the replicas made themselves (passthrough: a stored tile sent as it is; recode: stored "
                "JPEG tiles cut or re-encoded without libvips; decode: libvips); made per distinct tile is 3 at worst "
                "(every replica makes every tile it is asked for) and 1 at best", ""]


# ----------------------------------------------------------------------------------------------- cost
def timed(client: httpx.Client, urls: list[str]) -> list[float]:
    out = []
    for u in urls:
        t = time.perf_counter()
        r = client.get(u)
        out.append((time.perf_counter() - t) * 1000)
        if r.status_code != 200:
            raise RuntimeError(f"{u}: HTTP {r.status_code}")
    return out


def png_tiles(levels: str) -> list[str]:
    """big.tif IIIF tiles at half their size, as PNG: decoded, shrunk and PNG-encoded by libvips."""
    out = []
    for u in make_urls("iiif", levels, harness.IMAGE):
        head, size, tail = u.rsplit("/", 3)[0], u.rsplit("/", 3)[1], "/0/default.png"
        out.append(f"{head}/{-(-int(size.rstrip(',')) // 2)},{tail}")
    return out


COST_KINDS = {"JPEG re-encoded (IIP JTL, QLT=75)": lambda: reencoded("5"),
              "PNG at half size (IIIF)": lambda: png_tiles("5")}


def cost(b: Bench) -> None:
    rows = []
    with b.cluster(2) as c, httpx.Client(base_url=c.replicas[0].url, trust_env=False, timeout=60) as a, \
            httpx.Client(base_url=c.replicas[1].url, trust_env=False, timeout=60) as other:
        for client in (a, other):  # the image open in both replicas: what follows is tiles only
            timed(client, [f"/iiif/3/{harness.IMAGE}/info.json"])
        cpu = Cpu(c)
        for kind, make in COST_KINDS.items():
            urls = make()[: b.args.cost_requests]
            for name, client in (("cold: made here", a), ("local hit: the same URL again", a),
                                 ("shared hit: the same URL on the other replica", other)):
                made = sum(m.total("tileserver_tiles_rendered_total") for m in c.metrics())
                ops = commands(c)
                with cpu.measure():
                    ms = timed(client, urls)
                made = sum(m.total("tileserver_tiles_rendered_total") for m in c.metrics()) - made
                rows.append((kind, name, ms, cpu.per(len(urls)), (commands(c) - ops) / len(urls), made))
    for kind, name, ms, per, ops, _ in rows:
        if kind == next(iter(COST_KINDS)):  # the model's inputs: the common case, a re-encoded JPEG tile
            key = name.split(":")[0].replace(" ", "_")
            b.figures.update({f"{key}_ms": statistics.median(ms), f"{key}_cpu": per.get("replicas", 0.0),
                              f"{key}_ops": ops, f"{key}_cache_cpu": per.get("cache", 0.0)})
    b.lines += [
        f"### The cost of a shared-cache hit ({b.args.cost_requests} big.tif tiles of each kind, one client, "
        "sequential, straight to a replica)", "",
        "| tiles | answer | latency p50 ms | p90 ms | replica CPU ms | Redis commands | Redis CPU us | tiles made |",
        "|---|---|---|---|---|---|---|---|",
        *(f"| {kind} | {name} | {statistics.median(ms):.2f} | {sorted(ms)[int(len(ms) * 0.9)]:.2f} | "
          f"{per.get('replicas', 0):.2f} | {ops:.1f} | {per.get('cache', 0) * 1000:.0f} | {made:.0f} |"
          for kind, name, ms, per, ops, made in rows), "",
        "- per request; latency from the client (httpx, loopback) includes its own overhead (~0.3 ms); a local "
        "hit of the same URL is answered by the replay of the recorded response (web/replay.py)", ""]


# --------------------------------------------------------------------------------------------- faults
def under_load(b: Bench, c: Cluster, urls: Path, label: str, fault: str) -> tuple[dict[str, str], int, int, int]:
    """wrk through nginx for --duration s with the fault after a third: its RESULT fields, and from nginx's log
    the requests retried on another replica, answered other than 200 (499s apart: wrk closing its
    connections at its end) and the 499s."""
    seen = len(c.access_log())
    got: list[dict[str, str]] = []
    load = threading.Thread(target=lambda: got.extend(b.wrk.raw(b.port(c.url), urls, b.args.duration, label)))
    load.start()
    time.sleep(b.args.duration / 3)
    if fault == "replica":
        c.kill(len(c.replicas) - 1)
    elif c.cache:
        c.cache.kill()
    load.join()
    lines = c.access_log(at_least=seen + int(got[0].get("requests", 0)) if got else 0)[seen:]
    return ((got[0] if got else {}), sum(ln.retried for ln in lines),
            sum(ln.status not in (200, 499) for ln in lines), sum(ln.status == 499 for ln in lines))


def faults(b: Bench) -> None:
    urls = write("faults", reencoded(b.args.levels))
    rows = []
    with b.cluster(3) as c:
        b.pass_(c, urls, "cluster-faults-prime")
        rows.append(("replica SIGKILL", *under_load(b, c, urls, "cluster-fault-replica", "replica")))
        c.restart(len(c.replicas) - 1)
        time.sleep(6)  # past nginx's fail_timeout: it sends the replica requests again
        if c.cache:
            rows.append(("redis-server SIGKILL", *under_load(b, c, urls, "cluster-fault-cache", "cache")))
    b.lines += [
        f"### Faults under load ({b.args.duration} s of random picks through nginx, the kill after a third)", "",
        "| fault | requests | tiles/s | failed (wrk: non-2xx, socket errors) | non-200 in nginx's log "
        "| retried on another replica | p99 ms |", "|---|---|---|---|---|---|---|",
        *(f"| {name} | {got.get('requests', '-')} | {rps(got)} | {errors(got)} | {bad} (+{closed} 499 at wrk's end) "
          f"| {retried} | {got.get('p99_ms', '-')} |" for name, got, retried, bad, closed in rows), ""]


# ---------------------------------------------------------------------------------------------- model
def redis_alone(b: Bench, value_kb: float) -> tuple[float, float]:
    """redis-benchmark (16 connections, GET and SET of `value_kb` values) against a redis-server of its own:
    (requests/s, Redis CPU us per command). (0, 0) without redis-benchmark."""
    exe = shutil.which("redis-benchmark")
    if not exe:
        return 0.0, 0.0
    with redis_server() as server:
        cpu, ops, t = server.cpu_seconds(), server.commands(), time.monotonic()
        subprocess.run([exe, "-h", "127.0.0.1", "-p", str(server.port), "-t", "get,set", "-d",
                        str(int(value_kb * 1024)), "-n", "40000", "-c", "16", "-q"], capture_output=True, check=True)
        done = server.commands() - ops
        return done / (time.monotonic() - t), (server.cpu_seconds() - cpu) * 1e6 / max(done, 1)


def model(b: Bench) -> None:
    f = b.figures
    need = ("cold_cpu", "local_hit_cpu", "shared_hit_cpu", "nginx")
    if not all(k in f for k in need):
        b.lines += ["### 16- and 64-core estimate: not computed (run the scaling and cost sections)", ""]
        return
    mixes = [("all local hits", 1.0, 0.0, 0.0), ("all shared hits", 0.0, 1.0, 0.0), ("all cold", 0.0, 0.0, 1.0)]
    if "mix_local" in f:
        mixes.append(("the Zipf mix above", f["mix_local"], f["mix_shared"], f["mix_made"]))
    served_us = f.get("cmd_us", 0.0)  # Redis CPU per command serving the replicas (the mix: a few thousand/s)
    served_us = served_us or 1000 * f.get("shared_hit_cache_cpu", 0.0) / max(f.get("shared_hit_ops", 0.0), 1e-9)
    alone_rate, alone_us = redis_alone(b, f.get("tile_kb", 20.0))
    rows = []
    for name, lo, sh, co in mixes:
        per = lo * f["local_hit_cpu"] + sh * f["shared_hit_cpu"] + co * f["cold_cpu"] + f["nginx"]
        ops = sh * f.get("shared_hit_ops", 0.0) + co * f.get("cold_ops", 0.0)
        for cores in (16, 64):
            rate = cores * 1000 / per
            busy = " / ".join(f"{rate * ops * us / 1e6:.2f}" for us in (served_us, alone_us) if us)
            gbit = rate * f.get("tile_kb", 20.0) * 8 / 1e6
            rows.append(f"| {name} | {cores} | {per:.2f} | {rate:,.0f} | {rate * ops:,.0f} | {busy} | {gbit:.1f} |")
    b.lines += [
        "### 16- and 64-core estimate (a model from the CPU figures above, not a measurement)", "",
        "| workload | cores | CPU ms per request (replica + nginx) | tiles/s | Redis commands/s "
        "| Redis cores busy (at its cost serving the replicas / under redis-benchmark) | Gbit/s out |",
        "|---|---|---|---|---|---|---|",
        *rows, "",
        f"- inputs (CPU ms per request, measured here): cold {f['cold_cpu']:.2f}, local hit {f['local_hit_cpu']:.2f},"
        f" shared hit {f['shared_hit_cpu']:.2f}, nginx {f['nginx']:.3f}; {f.get('tile_kb', 0):.1f} KB per tile; "
        f"Redis CPU per command {served_us:.1f} us serving the replicas"
        + (f", {alone_us:.1f} us under redis-benchmark ({alone_rate:,.0f} commands/s, 16 connections, GET and SET "
           f"of {f.get('tile_kb', 0):.0f}-KB values)" if alone_us else ""),
        "- model: tiles/s = cores / (CPU per request), with one replica process per core (replicas share nothing "
        "but Redis, so they add up) and nginx's share included; Redis runs commands on one thread, so its busy "
        "cores must stay well under 1 (beyond: several Redis or memcached servers, keys spread over them); the "
        "network is tiles/s x tile size. It ignores memory bandwidth, NUMA, the kernel's network stack at high "
        "rates, and the store's own latency (a cold tile from S3 waits on it without using CPU: STORE_THREADS "
        "covers that wait).", ""]


# ----------------------------------------------------------------------------------------------- main
@contextlib.contextmanager
def store(kind: str, folder: Path) -> Iterator[S3Service | None]:
    if kind == "local":
        yield None
        return
    import stores as store_bench  # bench/stores.py: s3rver on loopback

    with store_bench.s3rver(folder / "s3rver.log") as s3:
        s3.create_bucket(BUCKET)
        for name in (harness.IMAGE, "small.tif", "gray16.tif"):
            s3.put(BUCKET, f"{PREFIX}/{name}", harness.IMAGES / name)
        yield s3


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench/cluster.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    csv = lambda v: [x.strip() for x in v.split(",") if x.strip()]  # noqa: E731
    p.add_argument("--only", type=csv, default=["scaling", "mix", "cost", "faults", "model"])
    p.add_argument("--replicas", type=lambda v: [int(x) for x in csv(v)], default=[1, 2, 3])
    p.add_argument("--levels", default="4,5,6", help="IIP levels of big.tif for scaling and faults (1580 tiles)")
    p.add_argument("--duration", type=int, default=10, help="seconds of each warm run (default 10)")
    p.add_argument("--mix-requests", type=int, default=12000)
    p.add_argument("--cost-requests", type=int, default=300)
    p.add_argument("--store", choices=["local", "s3rver"], default="local")
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                   help="an environment variable for every replica, e.g. TILESERVER_THREADS=4")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--connections", type=int, default=16)
    args = p.parse_args(argv)
    args.command = shlex.join([".venv/bin/python", "bench/cluster.py", *argv])
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    for sig in (signal.SIGTERM, signal.SIGHUP):  # unwind through the finally blocks: everything is stopped
        signal.signal(sig, lambda s, _f: sys.exit(128 + s))
    harness.ensure_images()
    harness.RESULTS.mkdir(parents=True, exist_ok=True)
    started, load_start = datetime.now(UTC), harness.loadavg()
    wrk = harness.Wrk(args.threads, args.connections, args.duration,
                      harness.RESULTS / f"cluster-{started:%Y%m%d-%H%M%S}.txt")
    with tempfile.TemporaryDirectory(prefix="cluster-", dir=harness.BASE) as tmp, store(args.store, Path(tmp)) as s3:
        b = Bench(args, wrk, Path(tmp), s3)
        for name, section in (("scaling", scaling), ("mix", mix), ("cost", cost), ("faults", faults),
                              ("model", model)):
            if name in args.only:
                section(b)
    git = subprocess.run(["git", "-C", str(harness.REPO), "describe", "--always", "--dirty"], capture_output=True,
                         text=True).stdout.strip()
    print("\n".join([
        f"## The cluster on this machine ({started:%Y-%m-%d %H:%M} UTC)", "",
        f"- machine: {harness.machine()}; load average {load_start} at start, {harness.loadavg()} at end; "
        f"took {(datetime.now(UTC) - started).seconds // 60} min",
        f"- tileserver git {git or '?'}; replicas of 1 process each, default settings"
        + (f" and {', '.join(args.set)}" if args.set else "") + f"; images from {args.store}"
        + ("" if CACHE_URL else "; **no shared cache in this tileserver** (Settings has no cache_url)"),
        "- wrk, nginx (1 worker), the replicas and redis-server share the 2 cores: more replicas than cores "
        "cannot add throughput here; what scales is shown per core (CPU per request) and estimated below",
        f"- reproduce: `cd {harness.REPO} && {args.command}`; raw wrk lines: `{wrk.out}`", "", *b.lines]))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("\ninterrupted: every process started by this run has been stopped; no table", file=sys.stderr)
        sys.exit(130)

