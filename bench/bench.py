"""tileserver vs iipsrv, side by side on loopback: one markdown table of req/s, p50, p99, errors, peak RSS.

Run through `bash bench/run.sh [options]` (or `make bench`). Not part of the package; stdlib + httpx only.

What it does, in order:
  1. makes sure the test images exist (../shared/bench/make-test-images.sh; skipped when present);
  2. writes the URL lists (../shared/bench/make-urls.py, big.tif IIP levels 4,5,6 = 1580 tiles, shuffled
     with a fixed seed) in iipsrv's URL forms, and derives tileserver's forms from the same lines, so both
     servers get the same tiles in the same order;
  3. for every scenario group and every repeat: starts tileserver, runs the group, stops it; starts iipsrv
     (../shared/bench/run-iipsrv.sh), runs the same group, stops it (A B A B). Only one server runs at a
     time, and every group starts from a freshly started server (so every cold pass is cold);
  4. drives wrk through ../shared/bench/bench-tiles.sh (-t2 -c16, warm runs -d seconds) and parses its
     RESULT lines; samples the RSS of every server process from /proc while the server is up;
  5. prints one markdown table of medians (plus the machine, the date and the command to reproduce).

`--soak MINUTES` instead runs tileserver alone under a long warm mixed load (wrk directly, one bounded
60-s run per minute) and prints RSS every minute against the configured caches + 200 MB per worker.

All traffic goes to 127.0.0.1. Every wrk run is bounded by -d. Every server started here is stopped in a
`finally` (iipsrv with stop-iipsrv.sh PORT, tileserver by the pid started here and its own children).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import random
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("TILEBENCH_SCRIPTS", REPO.parent / "shared" / "bench"))
BASE = Path(os.environ.get("TILEBENCH_DIR", "/tmp/tilebench"))
IMAGES = BASE / "images"
URLS = BASE / "urls" / "tileserver-bench"
RESULTS = BASE / "results"
IMAGE = "big.tif"
IIP = "/fcgi-bin/iipsrv.fcgi"
PAGE = os.sysconf("SC_PAGE_SIZE")
MB = 1024 * 1024


# --------------------------------------------------------------------------------------------- scenarios
@dataclass(frozen=True)
class Scenario:
    name: str  # --only name
    title: str  # table label
    group: str  # scenarios of one group share one server start (cold pass first, then warm)
    mode: str  # cold | warm | distinct (one pass over distinct URLs after one warm-up request)
    list_name: str  # URL list (written by write_lists) or a single path
    ts: str = ""  # single path for tileserver (when not a list)
    iip: str = ""  # single path for iipsrv


SCENARIOS = [
    Scenario("iip-cold", "IIP `JTL` tiles, levels 4-6", "iip", "cold", "iip"),
    Scenario("iip-warm", "IIP `JTL` tiles, levels 4-6", "iip", "warm", "iip"),
    Scenario("iip-qlt-cold", "IIP `JTL` tiles with `QLT=75` (re-encoded), levels 4-6", "iip-qlt", "cold",
             "iip-qlt"),
    Scenario("iiif-cold", "IIIF 256-px tiles, levels 4-6", "iiif", "cold", "iiif"),
    Scenario("iiif-warm", "IIIF 256-px tiles, levels 4-6", "iiif", "warm", "iiif"),
    Scenario("iip-random47-warm", "IIP `JTL` random picks, levels 4-7 (6,241 tiles, 370 MB: more than the caches)",
             "iip47", "warm", "iip47"),
    Scenario("deepzoom-warm", "DeepZoom tiles, levels 4-6", "deepzoom", "warm", "deepzoom"),
    Scenario("zoomify-warm", "Zoomify tiles, levels 4-6", "zoomify", "warm", "zoomify"),
    Scenario("info-warm", "IIIF `info.json`", "info", "warm", "",
             ts=f"/iiif/3/{IMAGE}/info.json", iip=f"{IIP}?IIIF={IMAGE}/info.json"),
    Scenario("cvt-warm", "`WID=1024&CVT=jpeg` export (one URL)", "cvt", "warm", "",
             ts=f"{IIP}?FIF={IMAGE}&WID=1024&CVT=jpeg", iip=f"{IIP}?FIF={IMAGE}&WID=1024&CVT=jpeg"),
    Scenario("iiif-full-warm", "IIIF `full/1024,/0/default.jpg` (one URL)", "iiif-full", "warm", "",
             ts=f"/iiif/3/{IMAGE}/full/1024,/0/default.jpg",
             iip=f"{IIP}?IIIF={IMAGE}/full/1024,/0/default.jpg"),
    Scenario("cvt-distinct", "`CVT=jpeg` exports, 400 distinct `WID` 851-1250", "cvt-distinct", "distinct",
             "cvt-distinct"),
]
SERVERS = ("tileserver", "iipsrv")


def run(cmd: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, text=True, check=True, **kw)  # type: ignore[call-overload, no-any-return]


def ensure_images() -> None:
    if (IMAGES / IMAGE).is_file() and (IMAGES / IMAGE).stat().st_size > 0:
        return
    print(f"# {IMAGES / IMAGE} missing: running make-test-images.sh (~75 s)", file=sys.stderr)
    run(["bash", str(SHARED / "make-test-images.sh")])


def make_urls(protocol: str, levels: str) -> list[str]:
    out = run([sys.executable, str(SHARED / "make-urls.py"), "--protocol", protocol, "--levels", levels,
               "--image", str(IMAGES / IMAGE), "--prefix", IIP], capture_output=True).stdout
    return [line for line in out.splitlines() if line.strip() and not line.startswith("#")]


# iipsrv query forms -> tileserver path forms (same tiles, same order)
TS_FORMS = {
    "iip": lambda u: u,
    "iiif": lambda u: u.replace(f"{IIP}?IIIF=", "/iiif/3/", 1),
    "deepzoom": lambda u: u.replace(f"{IIP}?DeepZoom=", "/deepzoom/", 1),
    "zoomify": lambda u: u.replace(f"{IIP}?Zoomify=", "/zoomify/", 1),
}


def list_path(name: str, server: str) -> Path:
    return URLS / f"{name}-{server}.txt"


def write_lists(levels: str) -> dict[str, int]:
    """Writes {name}-{server}.txt for every list scenario; returns the number of URLs per list."""
    URLS.mkdir(parents=True, exist_ok=True)
    counts = {}
    for name, to_ts in TS_FORMS.items():
        urls = make_urls(name, levels)
        list_path(name, "iipsrv").write_text("\n".join(urls) + "\n")
        list_path(name, "tileserver").write_text("\n".join(to_ts(u) for u in urls) + "\n")
        counts[name] = len(urls)
    # levels 4-7 of big.tif: a working set larger than either server's tile caches (random picks, warm mode)
    big = make_urls("iip", "4,5,6,7")
    for server in SERVERS:
        list_path("iip47", server).write_text("\n".join(big) + "\n")
    counts["iip47"] = len(big)
    # the same tiles with a QLT: no pass-through, every tile decoded and re-encoded (both servers)
    qlt = [u.replace("&JTL=", "&QLT=75&JTL=", 1) for u in list_path("iip", "iipsrv").read_text().split()]
    for server in SERVERS:
        list_path("iip-qlt", server).write_text("\n".join(qlt) + "\n")
    counts["iip-qlt"] = len(qlt)
    widths = list(range(851, 1251))
    random.Random(1).shuffle(widths)
    cvt = [f"{IIP}?FIF={IMAGE}&WID={w}&CVT=jpeg" for w in widths]
    for server in SERVERS:
        list_path("cvt-distinct", server).write_text("\n".join(cvt) + "\n")
    counts["cvt-distinct"] = len(cvt)
    return counts


def target(sc: Scenario, server: str) -> str:
    if sc.list_name:
        return str(list_path(sc.list_name, server))
    return sc.ts if server == "tileserver" else sc.iip


# -------------------------------------------------------------------------------------------- processes
def proc_children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] != "Z":
            kids.setdefault(int(fields[1]), []).append(int(entry))
    return kids


def descendants(roots: list[int]) -> list[int]:
    kids = proc_children()
    out, todo = [], list(roots)
    while todo:
        pid = todo.pop()
        if pid in out:
            continue
        out.append(pid)
        todo.extend(kids.get(pid, []))
    return out


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def rss_bytes(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE
    except (OSError, IndexError, ValueError):
        return 0


def comm(pid: int) -> str:
    """A short name for a server process: uvicorn's spawned workers and multiprocessing's resource tracker
    show up as `python`, so they are named from their command line."""
    try:
        name = Path(f"/proc/{pid}/comm").read_text().strip()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return "?"
    if "resource_tracker" in cmdline:
        return "resource-tracker"
    if "spawn_main" in cmdline:
        return "worker"
    return name


class RssSampler(threading.Thread):
    """Samples the summed RSS of a process tree every `interval` s (tree re-listed every second)."""

    def __init__(self, roots: list[int], interval: float = 0.25):
        super().__init__(daemon=True)
        self.roots, self.interval = roots, interval
        self.peak_sum = 0
        self.peak_by_pid: dict[int, int] = {}
        self.names: dict[int, str] = {}
        self.last: dict[int, int] = {}
        self._stop_event = threading.Event()

    def sample(self, pids: list[int]) -> None:
        now = {pid: rss_bytes(pid) for pid in pids}
        now = {pid: v for pid, v in now.items() if v}
        self.last = now
        self.peak_sum = max(self.peak_sum, sum(now.values()))
        for pid, v in now.items():
            self.peak_by_pid[pid] = max(self.peak_by_pid.get(pid, 0), v)
            self.names.setdefault(pid, comm(pid))

    def run(self) -> None:
        pids, listed = descendants(self.roots), time.monotonic()
        while not self._stop_event.is_set():
            if time.monotonic() - listed > 1.0:
                pids, listed = descendants(self.roots), time.monotonic()
            self.sample(pids)
            self._stop_event.wait(self.interval)

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=5)


def listening_inodes(port: int) -> set[str]:
    """The inodes of the sockets listening on TCP `port` (/proc/net/tcp, tcp6: state 0A)."""
    out = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                    out.add(fields[9])
    return out


def accepting(pids: list[int], port: int) -> int:
    """How many of `pids` watch a socket listening on `port` in an epoll set: tileserver's workers share one
    listening socket (web/balance.py), and each adds it to its event loop's epoll once it has started."""
    inodes = listening_inodes(port)
    n = 0
    for pid in pids:
        fds, polls = set(), []
        with contextlib.suppress(OSError):
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                with contextlib.suppress(OSError):
                    link = os.readlink(fd)
                    if link.startswith("socket:[") and link[8:-1] in inodes:
                        fds.add(fd.name)
                    elif link == "anon_inode:[eventpoll]":
                        polls.append(fd.name)
        watched = set()
        for ep in polls:
            with contextlib.suppress(OSError):
                watched |= {line.split()[1] for line in Path(f"/proc/{pid}/fdinfo/{ep}").read_text().splitlines()
                            if line.startswith("tfd:")}
        n += bool(fds & watched)
    return n


def port_free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def wait_http(url: str, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> bool:
    """Until `url` answers below 500; False after `timeout` s, or as soon as `proc` has exited."""
    deadline = time.monotonic() + timeout
    with httpx.Client(trust_env=False, timeout=5) as client:
        while time.monotonic() < deadline and (proc is None or proc.poll() is None):
            with contextlib.suppress(httpx.HTTPError):
                if client.get(url).status_code < 500:
                    return True
            time.sleep(0.1)
    return False


class Tileserver:
    label = "tileserver"

    def __init__(self, port: int, workers: int, root: str | Path = IMAGES, env: dict[str, str] | None = None):
        """`root`: the image root (a folder, or a store URL such as s3://BUCKET/PREFIX); `env`: the server's
        whole environment (default: this one's)."""
        self.port, self.workers, self.root, self.env = port, workers, str(root), env
        self.proc: subprocess.Popen[bytes] | None = None
        self.known: dict[int, str] = {}  # pid -> /proc/PID/stat start time, for a precise cleanup
        self.log = RESULTS / f"tileserver-{port}.log"

    def start(self) -> list[int]:
        if not port_free(self.port):
            raise RuntimeError(f"127.0.0.1:{self.port} is in use; pick another --ts-port")
        cmd = [str(REPO / ".venv" / "bin" / "tileserver"), "serve", self.root, "--host", "127.0.0.1",
               "--port", str(self.port), "--workers", str(self.workers)]
        RESULTS.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         env=self.env)
        url = f"http://127.0.0.1:{self.port}{IIP}?FIF={IMAGE}&OBJ=IIP,1.0"
        if not wait_http(url, 60, self.proc):
            raise RuntimeError(f"tileserver did not come up; see {self.log}")
        # one response does not mean every worker has started (imported, warmed up): each watches the shared
        # listening socket once it has, and a cold pass begun before would go to the workers already there
        deadline = time.monotonic() + 60
        while (time.monotonic() < deadline and self.workers > 1
               and accepting(descendants([self.proc.pid]), self.port) < self.workers):
            time.sleep(0.1)
        time.sleep(1.0)
        self.remember()
        return [self.proc.pid]

    def remember(self) -> None:
        if self.proc:
            for pid in descendants([self.proc.pid]):
                with contextlib.suppress(OSError):
                    self.known[pid] = Path(f"/proc/{pid}/stat").read_text().split()[21]

    def stop(self) -> None:
        if not self.proc:
            return
        self.remember()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        # any worker still alive is one this run started (same pid and start time): kill exactly that
        time.sleep(0.2)
        for pid, start in self.known.items():
            with contextlib.suppress(OSError):
                if alive(pid) and Path(f"/proc/{pid}/stat").read_text().split()[21] == start:
                    os.kill(pid, signal.SIGKILL)
        self.proc, self.known = None, {}


class Iipsrv:
    label = "iipsrv"

    def __init__(self, port: int, workers: int):
        self.port, self.workers = port, workers
        self.started = False

    def start(self) -> list[int]:
        if not port_free(self.port):
            raise RuntimeError(f"127.0.0.1:{self.port} is in use; pick another --iip-port")
        self.started = True
        r = subprocess.run(["bash", str(SHARED / "run-iipsrv.sh"), str(self.port), str(self.workers)],
                           capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"run-iipsrv.sh failed: {r.stderr.strip() or r.stdout.strip()}")
        pids = []
        for name in (f"iipsrv-{self.port}.pid", f"lighttpd-{self.port}.pid"):
            with contextlib.suppress(OSError):
                pids += [int(p) for p in (BASE / "run" / name).read_text().split() if p.isdigit()]
        return pids

    def stop(self) -> None:
        if self.started:
            subprocess.run(["bash", str(SHARED / "stop-iipsrv.sh"), str(self.port)], capture_output=True)
            self.started = False


# ------------------------------------------------------------------------------------------------- wrk
@dataclass
class Result:
    scenario: str
    server: str
    rep: int
    rps: float = 0.0
    p50: float = 0.0
    p99: float = 0.0
    errors: int = 0
    kb: float = 0.0
    requests: int = 0
    failed: bool = False


def parse_result(line: str) -> dict[str, str]:
    return dict(tok.split("=", 1) for tok in line.split()[1:] if "=" in tok)


def to_result(fields: dict[str, str], scenario: str, server: str, rep: int) -> Result:
    if "rps" not in fields:
        return Result(scenario, server, rep, failed=True)
    rps = float(fields["rps"])
    errors = sum(int(fields.get(k, 0)) for k in ("err_connect", "err_read", "err_write", "err_status",
                                                   "err_timeout"))
    kb = float(fields["MBps"]) * 1024 / rps if rps else 0.0
    return Result(scenario, server, rep, rps, float(fields["p50_ms"]), float(fields["p99_ms"]), errors, kb,
                  int(fields["requests"]))


class Wrk:
    def __init__(self, threads: int, conns: int, duration: int, out: Path):
        self.threads, self.conns, self.duration, self.out = threads, conns, duration, out
        self.proc: subprocess.Popen[str] | None = None

    def bench_tiles(self, port: int, mode: str, label: str, tgt: str, single: bool) -> list[dict[str, str]]:
        """tgt: a URL-list file, or (single=True) one URL path."""
        base = f"http://127.0.0.1:{port}"
        if single:
            tgt = base + tgt
        cmd = ["bash", str(SHARED / "bench-tiles.sh"), "--base", base, "--mode", mode, "-t", str(self.threads),
               "-c", str(self.conns), "-d", str(self.duration), "--label", label, "--out", str(self.out), tgt]
        return self._run(cmd)

    def raw(self, port: int, urlfile: Path, seconds: int, label: str) -> list[dict[str, str]]:
        env = {"WRK_THREADS": str(self.threads), "WRK_LABEL": label, "WRK_MODE": "warm"}
        cmd = ["env", *(f"{k}={v}" for k, v in env.items()), "wrk", f"-t{self.threads}", f"-c{self.conns}",
               f"-d{seconds}s", "--latency", "--timeout", "30s", "-s", str(SHARED / "wrk-urls.lua"),
               f"http://127.0.0.1:{port}", "--", str(urlfile), "random"]
        return self._run(cmd)

    def _run(self, cmd: list[str]) -> list[dict[str, str]]:
        # own process group, so that an interrupted run can stop exactly this wrk and its wrapper
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                     start_new_session=True)
        stdout, _ = self.proc.communicate()
        self.proc = None
        lines = [line for line in stdout.splitlines() if line.startswith("RESULT ")]
        with open(self.out, "a") as f:
            f.writelines(line + "\n" for line in lines if "urls=" not in line)  # bench-tiles.sh logs its own
        return [parse_result(line) for line in lines]

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            with contextlib.suppress(OSError):
                os.killpg(self.proc.pid, signal.SIGINT)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(OSError):
                    os.killpg(self.proc.pid, signal.SIGKILL)


# ---------------------------------------------------------------------------------------------- checks
def first_url(sc: Scenario, server: str) -> str:
    tgt = target(sc, server)
    if not sc.list_name:
        return tgt
    return next(line for line in Path(tgt).read_text().splitlines() if line.strip())


def preflight(sc: Scenario, server: str, port: int) -> str:
    """GETs the scenario's first URL; returns '' when it is a 200 of the expected type, else a note."""
    url = f"http://127.0.0.1:{port}{first_url(sc, server)}"
    want = "json" if url.endswith("info.json") else "image/jpeg"
    try:
        with httpx.Client(trust_env=False, timeout=60) as client:
            r = client.get(url)
    except httpx.HTTPError as exc:
        return f"{server}: {type(exc).__name__}"
    if r.status_code != 200:
        return f"{server}: HTTP {r.status_code}"
    if want not in r.headers.get("content-type", ""):
        return f"{server}: {r.headers.get('content-type', '?')}"
    return ""


# --------------------------------------------------------------------------------------------- the run
@dataclass
class Run:
    args: argparse.Namespace
    scenarios: list[Scenario]
    servers: list[Tileserver | Iipsrv]
    wrk: Wrk
    results: list[Result] = field(default_factory=list)
    notes: dict[str, set[str]] = field(default_factory=dict)
    rss: dict[tuple[str, str], RssSampler] = field(default_factory=dict)  # (server, group) -> largest peak

    def groups(self) -> list[list[Scenario]]:
        out: dict[str, list[Scenario]] = {}
        for sc in self.scenarios:
            out.setdefault(sc.group, []).append(sc)
        return list(out.values())

    def go(self) -> None:
        for group in self.groups():
            for rep in range(self.args.repeats):
                for server in self.servers:
                    self.one(group, server, rep)

    def one(self, group: list[Scenario], server: Tileserver | Iipsrv, rep: int) -> None:
        name = server.label
        print(f"# {datetime.now(UTC):%H:%M:%S} {group[0].group} run {rep + 1}: {name}", file=sys.stderr)
        try:
            roots = server.start()
        except RuntimeError as exc:
            server.stop()
            for sc in group:
                self.notes.setdefault(sc.name, set()).add(f"{name} not started")
                self.results.append(Result(sc.name, name, rep, failed=True))
            print(f"# {exc}", file=sys.stderr)
            return
        sampler = RssSampler(roots)
        sampler.start()
        try:
            self.measure(group, server, rep)
        finally:
            sampler.stop()
            server.stop()
        key = (name, group[0].group)
        if key not in self.rss or sampler.peak_sum > self.rss[key].peak_sum:
            self.rss[key] = sampler

    def measure(self, group: list[Scenario], server: Tileserver | Iipsrv, rep: int) -> None:
        name, port = server.label, server.port
        lead = group[0]
        if lead.mode == "distinct":  # one export first, so the pass measures exports, not the first open
            with httpx.Client(trust_env=False, timeout=120) as client, contextlib.suppress(httpx.HTTPError):
                client.get(f"http://127.0.0.1:{port}{IIP}?FIF={IMAGE}&WID=1024&CVT=jpeg")
        modes = {sc.mode for sc in group}
        mode = "both" if modes == {"cold", "warm"} else ("cold" if "warm" not in modes else "warm")
        rows = self.wrk.bench_tiles(port, mode, f"{lead.group}-{name}-r{rep + 1}", target(lead, name),
                                    single=not lead.list_name)
        note = preflight(lead, name, port)  # after the run: a cold pass must not be preceded by a request
        by_mode = {"cold": lead, "warm": group[-1]} if mode == "both" else {}
        for fields in rows:
            sc = by_mode.get(fields.get("mode", ""), lead)
            res = to_result(fields, sc.name, name, rep)
            self.results.append(res)
            print(f"#   {sc.name}: {res.rps:,.0f} req/s, p50 {res.p50} ms, p99 {res.p99} ms, {res.errors} errors"
                  + (" (no wrk report)" if res.failed else ""), file=sys.stderr)
            if note:
                self.notes.setdefault(sc.name, set()).add(note)
        if not rows:
            for sc in group:
                self.results.append(Result(sc.name, name, rep, failed=True))


# ------------------------------------------------------------------------------------------------ report
def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def fmt(v: float | None, digits: int = 0) -> str:
    if v is None:
        return "-"
    return f"{v:,.{digits}f}"


def machine() -> str:
    model = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem = "?"
    with contextlib.suppress(OSError, IndexError, ValueError):
        kb = int(Path("/proc/meminfo").read_text().split("\n")[0].split()[1])
        mem = f"{kb / 1024 / 1024:.1f} GiB RAM"
    return f"nproc {os.cpu_count()}, {model}, {mem}, Linux {os.uname().release}"


def versions() -> str:
    ts = subprocess.run([str(REPO / ".venv" / "bin" / "tileserver"), "--version"], capture_output=True,
                        text=True).stdout.strip() or "tileserver ?"
    git = subprocess.run(["git", "-C", str(REPO), "describe", "--always", "--dirty"], capture_output=True,
                         text=True).stdout.strip()
    if os.environ.get("IIPSRV_BIN"):
        iip = os.environ.get("IIPSRV_LABEL") or f"iipsrv built locally ({os.environ['IIPSRV_BIN']})"
    else:
        iip = "iipsrv " + subprocess.run(["dpkg-query", "-W", "-f=${Version}", "iipimage-server"],
                                         capture_output=True, text=True).stdout.strip() + " (Debian iipimage-server)"
    return f"{ts} (git {git or '?'}); {iip} behind lighttpd"


def loadavg() -> str:
    with contextlib.suppress(OSError):
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    return "?"


def row(run_: Run, sc: Scenario, counts: dict[str, int]) -> str:
    def pick(server: str) -> list[Result]:
        return [r for r in run_.results if r.scenario == sc.name and r.server == server and not r.failed]

    ts, ip = pick("tileserver"), pick("iipsrv")
    rps_t, rps_i = median([r.rps for r in ts]), median([r.rps for r in ip])
    ratio = f"{rps_t / rps_i:.2f}x" if rps_t and rps_i else "-"

    def stat(rs: list[Result], attr: str, digits: int = 1) -> str:
        return fmt(median([getattr(r, attr) for r in rs]), digits)

    def errs(server: str, rs: list[Result]) -> str:
        failed = sum(1 for r in run_.results if r.scenario == sc.name and r.server == server and r.failed)
        if not rs and not failed:
            return "-"
        return str(sum(r.errors for r in rs)) + (f" ({failed} runs failed)" if failed else "")

    def rss(server: str) -> str:
        s = run_.rss.get((server, sc.group))
        return fmt(s.peak_sum / MB) if s else "-"

    n = counts.get(sc.list_name, 1)
    mode = {"distinct": "one pass"}.get(sc.mode, sc.mode)
    notes = "; ".join(sorted(run_.notes.get(sc.name, set())))
    title = sc.title.replace("levels 4-6", f"levels {run_.args.levels}")
    return (f"| {title} | {mode} | {n} | {fmt(rps_t)} | {fmt(rps_i)} | {ratio} | {stat(ts, 'p50')} | "
            f"{stat(ts, 'p99')} | {stat(ip, 'p50')} | {stat(ip, 'p99')} | {errs('tileserver', ts)} | "
            f"{errs('iipsrv', ip)} | {stat(ts, 'kb')} / {stat(ip, 'kb')} | {rss('tileserver')} / "
            f"{rss('iipsrv')} | {notes} |")


def rss_summary(run_: Run) -> list[str]:
    out = []
    for server in SERVERS:
        samplers = [(g, s) for (srv, g), s in run_.rss.items() if srv == server]
        if not samplers:
            continue
        group, top = max(samplers, key=lambda gs: gs[1].peak_sum)
        procs = ", ".join(f"{top.names.get(pid, '?')} {v / MB:.0f}"
                          for pid, v in sorted(top.peak_by_pid.items(), key=lambda kv: -kv[1]))
        out.append(f"- peak RSS, {server}: **{top.peak_sum / MB:.0f} MB** summed over its processes "
                   f"(in the `{group}` scenario); per-process peaks MB: {procs}")
    return out


def report(run_: Run, counts: dict[str, int], started: datetime, load_start: str) -> str:
    a = run_.args
    lines = [
        f"### {'tileserver alone (--no-iipsrv)' if a.no_iipsrv else 'tileserver vs iipsrv'}: "
        f"wrk -t{a.threads} -c{a.connections}, warm runs {a.duration} s, "
        f"medians of {a.repeats} alternated run(s)",
        "",
        f"- machine: {machine()}; load average {load_start} at start, {loadavg()} at end",
        f"- date: {started:%Y-%m-%d %H:%M} UTC, took {(datetime.now(UTC) - started).seconds // 60} min",
        f"- servers: {versions()}; {a.workers} processes each, one server at a time, restarted before every "
        f"scenario group; image `{IMAGES / IMAGE}`",
        f"- configuration: {configuration()}",
        f"- reproduce: `cd {REPO} && {a.command}`",
        "",
        "| scenario | mode | URLs | tileserver req/s | iipsrv req/s | ratio | tileserver p50 ms | tileserver p99 ms "
        "| iipsrv p50 ms | iipsrv p99 ms | tileserver errors | iipsrv errors | body KB ts / iip "
        "| peak RSS MB ts / iip | notes |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    lines += [row(run_, sc, counts) for sc in run_.scenarios]
    lines += ["", *rss_summary(run_)]
    lines += [
        "- req/s, p50 and p99 are medians over the repeats; errors are summed over them (wrk: connect, read, "
        "write, timeout, and non-2xx/3xx statuses). ratio = tileserver / iipsrv req/s. wrk shares the CPU with "
        "the server: differences under ~10 % are noise.",
        f"- raw wrk RESULT lines: `{run_.wrk.out}`",
    ]
    return "\n".join(lines)


# -------------------------------------------------------------------------------------------------- soak
def soak_list() -> Path:
    urls: list[str] = []
    for name in (*TS_FORMS, "cvt-distinct"):
        urls += [u for u in list_path(name, "tileserver").read_text().splitlines() if u.strip()]
    urls.append(f"/iiif/3/{IMAGE}/info.json")
    random.Random(2).shuffle(urls)
    path = URLS / "soak-tileserver.txt"
    path.write_text("\n".join(urls) + "\n")
    return path


def cache_budget_mb() -> tuple[float, str]:
    raw = subprocess.run([str(REPO / ".venv" / "bin" / "tileserver"), "info"], capture_output=True, text=True)
    settings = json.loads(raw.stdout)["settings"]
    caches = float(settings.get("tile_cache_mb", 0)) + float(settings.get("decoded_cache_mb", 0))
    return caches, f"tile_cache_mb {settings.get('tile_cache_mb')} + decoded_cache_mb " \
                   f"{settings.get('decoded_cache_mb')}"


def configuration() -> str:
    try:
        _, text = cache_budget_mb()
    except (OSError, ValueError, KeyError):
        return "tileserver settings unknown (`tileserver info` failed)"
    iip_cache = os.environ.get("MAX_IMAGE_CACHE_SIZE") or "10"
    quality = os.environ.get("JPEG_QUALITY") or "75"
    return (f"tileserver settings from `tileserver info` ({text} per worker), iipsrv MAX_IMAGE_CACHE_SIZE "
            f"{iip_cache} MB per process, JPEG_QUALITY {quality} (run-iipsrv.sh defaults unless set in the "
            "environment; tileserver reads the same iipsrv variables)")


def soak(args: argparse.Namespace, ts: Tileserver, wrk: Wrk) -> None:
    path = soak_list()
    n = sum(1 for _ in path.open())
    caches, caches_text = cache_budget_mb()
    budget = caches + 200
    steps = max(1, math.ceil(args.soak * 60 / args.soak_step))
    started = datetime.now(UTC)
    print(f"### tileserver soak: {steps} x {args.soak_step} s of random picks from {n} mixed URLs (tiles of all "
          f"four protocols, levels {args.levels}, 400 CVT widths, info.json), wrk -t{args.threads} "
          f"-c{args.connections}, {args.workers} workers\n\n- machine: {machine()}; load average {loadavg()} at "
          f"start\n- date: {started:%Y-%m-%d %H:%M} UTC; {versions()}\n- reproduce: `cd {REPO} && {args.command}`\n"
          f"- budget per worker: configured caches ({caches_text}) + 200 MB = {budget:.0f} MB\n\n"
          "| step | end s | req/s | p50 ms | p99 ms | errors | RSS MB, sum | workers' RSS MB (peak in this step) "
          "| other processes MB |\n|---|---|---|---|---|---|---|---|---|", flush=True)
    sampler = RssSampler(ts.start())
    sampler.start()
    worst = 0.0
    try:
        for step in range(1, steps + 1):
            sampler.peak_sum, sampler.peak_by_pid = 0, {}
            rows = wrk.raw(ts.port, path, args.soak_step, f"soak-{step}")
            res = to_result(rows[0], "soak", "tileserver", step) if rows else Result("soak", "tileserver", step,
                                                                                      failed=True)
            peaks = sorted(sampler.peak_by_pid.items())
            workers = [v / MB for pid, v in peaks if sampler.names.get(pid) == "worker"]
            others = [f"{sampler.names.get(pid, '?')} {v / MB:.0f}" for pid, v in peaks
                      if sampler.names.get(pid) != "worker"]
            worst = max([worst, *workers])
            print(f"| {step} | {step * args.soak_step} | {fmt(res.rps)} | {res.p50:.1f} | {res.p99:.1f} | "
                  f"{'FAILED' if res.failed else res.errors} | {sampler.peak_sum / MB:.0f} | "
                  f"{', '.join(f'{w:.0f}' for w in workers)} | {', '.join(others)} |", flush=True)
    finally:
        sampler.stop()
        ts.stop()
    verdict = "within it" if worst <= budget else f"over it by {worst - budget:.0f} MB"
    print(f"\nlargest worker RSS over the soak: {worst:.0f} MB; budget {budget:.0f} MB per worker: {verdict}. "
          "RSS counts shared pages (libvips, Python) in every process that maps them.")


# --------------------------------------------------------------------------------------------------- main
def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench/run.sh", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    names = [sc.name for sc in SCENARIOS]
    p.add_argument("--duration", "-d", type=int, default=10, help="seconds per warm run (default 10)")
    p.add_argument("--repeats", "-r", type=int, default=2, help="alternated runs per server (default 2)")
    p.add_argument("--only", action="append", default=[],
                   help=f"scenario(s) to run, comma-separated or repeated: {', '.join(names)}; "
                        "or a group: iip, iip-qlt, iip47, iiif, deepzoom, zoomify, info, cvt, iiif-full, cvt-distinct")
    p.add_argument("--no-iipsrv", action="store_true", help="measure tileserver only")
    p.add_argument("--soak", type=float, metavar="MINUTES", help="instead of the table: a long warm run of "
                   "tileserver alone, RSS reported every --soak-step seconds")
    p.add_argument("--soak-step", type=int, default=60, metavar="SECONDS",
                   help="seconds per soak report line, one bounded wrk run each (default 60)")
    p.add_argument("--workers", type=int, default=2, help="processes per server (default 2)")
    p.add_argument("--threads", "-t", type=int, default=2, help="wrk threads (default 2)")
    p.add_argument("--connections", "-c", type=int, default=16, help="wrk connections (default 16)")
    p.add_argument("--levels", default="4,5,6", help="IIP levels of big.tif for the tile lists (default 4,5,6)")
    p.add_argument("--ts-port", type=int, default=18191, help="tileserver port (default 18191)")
    p.add_argument("--iip-port", type=int, default=18190, help="iipsrv port (default 18190)")
    a = p.parse_args(argv)
    wanted = {w.strip() for item in a.only for w in item.split(",") if w.strip()}
    unknown = wanted - set(names) - {sc.group for sc in SCENARIOS}
    if unknown:
        p.error(f"unknown scenario(s) {sorted(unknown)}; choose from {', '.join(names)}")
    a.scenarios = [sc for sc in SCENARIOS if not wanted or sc.name in wanted or sc.group in wanted]
    if a.duration < 1 or a.repeats < 1 or a.soak_step < 1 or (a.soak is not None and a.soak <= 0):
        p.error("--duration, --repeats, --soak-step must be >= 1 and --soak > 0")
    env = "".join(f"{k}={shlex.quote(os.environ[k])} " for k in ("IIPSRV_BIN", "IIPSRV_LABEL") if os.environ.get(k))
    a.command = env + "bash bench/run.sh" + ("".join(" " + shlex.quote(x) for x in argv))
    return a


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    # SIGTERM / SIGHUP: unwind through the finally blocks, so every server started here is stopped
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda s, _f: sys.exit(128 + s))
    for tool in ("wrk", "vipsheader"):
        if subprocess.run(["sh", "-c", f"command -v {tool}"], capture_output=True).returncode:
            print(f"{tool} missing: see {SHARED / 'install-deps.sh'}", file=sys.stderr)
            return 1
    ensure_images()
    RESULTS.mkdir(parents=True, exist_ok=True)
    started = datetime.now(UTC)
    load_start = loadavg()
    counts = write_lists(args.levels)
    wrk = Wrk(args.threads, args.connections, args.duration, RESULTS / f"tileserver-bench-{started:%Y%m%d-%H%M%S}.txt")
    ts = Tileserver(args.ts_port, args.workers)
    servers: list[Tileserver | Iipsrv] = [ts]
    if not args.no_iipsrv:
        servers.append(Iipsrv(args.iip_port, args.workers))
    try:
        if args.soak:
            soak(args, ts, wrk)
            return 0
        run_ = Run(args, args.scenarios, servers, wrk)
        run_.go()
    finally:
        wrk.kill()
        for server in servers:
            server.stop()
    print(report(run_, counts, started, load_start))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("\ninterrupted: every server started by this run has been stopped; no table", file=sys.stderr)
        sys.exit(130)
