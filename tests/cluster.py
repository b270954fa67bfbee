"""The cluster of issue 14 on loopback, without Docker, for tests/test_cluster.py and bench/cluster.py: nginx
running deploy/nginx/tileserver.conf (the file docker-compose.yml mounts; only its addresses and log path
rewritten) in front of N `tileserver serve s3://BUCKET/PREFIX` replicas (one process group each), which
read their images from moto's S3 server (tests/stores.py) and share one redis-server or memcached
(Debian's packages, started by tests/cache_servers.py; `.ci/run` installs them).

    with running_cluster("s3://bucket/set", folder, s3=s3, replicas=3, backend="redis") as c:
        c.url                               # nginx: "http://127.0.0.1:PORT"
        c.replicas[1].url                   # that replica, directly
        c.replicas[1].metrics().total("tileserver_tiles_rendered_total")
        c.kill(1); c.restart(1)             # SIGKILL its process group; start it again on its port
        c.shared().kill(); c.shared().start()  # the shared cache server, likewise
        c.access_log()                      # nginx's lines: status, every replica tried
        with Load(c.url, paths) as load:    # client threads sending GETs through nginx until the block ends
            ...
        load.sent, load.failed

Replicas get the settings compose gives them (`TILESERVER_STORE_*`, `TILESERVER_CACHE_URL`,
`TILESERVER_CACHE_API_TOKEN`) and no others from the caller's environment. Every process binds 127.0.0.1
and is stopped on exit; a killed one is killed by its own process group id only.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from .cache_servers import CacheServer, cache_server
from .live import clean_env, free_port
from .stores import S3Service, nginx

REPO = Path(__file__).resolve().parents[1]
NGINX_CONF = REPO / "deploy" / "nginx" / "tileserver.conf"
BACKENDS = ("redis", "memcached")
TOKEN = "cluster-test-token"  # TILESERVER_CACHE_API_TOKEN of the replicas
LOCAL_SOURCES = ("replay", "cache")  # tileserver_image_responses_total{source}: from a replica's own memory
MADE_SOURCES = ("passthrough", "recode", "decode")  # ... made by the replica (any other source: the shared cache)


# ------------------------------------------------------------------------------------- nginx config
UPSTREAM_BLOCK = re.compile(r"^upstream tileserver \{\n(?P<body>.*?)^\}", re.M | re.S)
SERVER_LINE = re.compile(r"^(?P<indent>[ \t]*)server[ \t]+(?P<address>\S+)(?P<params>[^;\n]*);[^\n]*\n", re.M)
LISTEN = re.compile(r"^(?P<indent>[ \t]*)listen[ \t]+80;", re.M)
ACCESS_LOG = "/var/log/nginx/access.log"


def upstream_servers(text: str) -> list[tuple[str, str]]:
    """The (address, parameters) of every `server` line of the `upstream tileserver` block."""
    block = UPSTREAM_BLOCK.search(text)
    if block is None:
        raise ValueError("no `upstream tileserver { ... }` block")
    return [(m["address"], m["params"].strip()) for m in SERVER_LINE.finditer(block["body"])]


def loopback_config(text: str, port: int, upstreams: Sequence[int], access_log: Path) -> str:
    """deploy/nginx/tileserver.conf for loopback: the upstream's server lines replaced by one per port of
    `upstreams` (127.0.0.1, with the parameters the file gives its servers), `listen 80` by
    `listen 127.0.0.1:port`, the access log's path by `access_log`. Nothing else changes."""
    block = UPSTREAM_BLOCK.search(text)
    if block is None:
        raise ValueError("no `upstream tileserver { ... }` block")
    lines = list(SERVER_LINE.finditer(text, block.start("body"), block.end("body")))
    if not lines or len({m["params"] for m in lines}) != 1:
        raise ValueError("the upstream's server lines must all carry the same parameters")
    first = lines[0]
    servers = "".join(f"{first['indent']}server 127.0.0.1:{p}{first['params']};\n" for p in upstreams)
    out = text[:first.start()] + servers + text[lines[-1].end():]
    if len(LISTEN.findall(out)) != 1 or out.count(ACCESS_LOG) != 1:
        raise ValueError(f"expected one `listen 80;` and one {ACCESS_LOG}")
    out = LISTEN.sub(lambda m: f"{m['indent']}listen 127.0.0.1:{port};", out)
    return out.replace(ACCESS_LOG, str(access_log))


@dataclass(frozen=True)
class Logged:
    """One line of nginx's access log (deploy/nginx/tileserver.conf's `log_format tileserver`)."""

    method: str
    path: str
    status: int
    upstreams: tuple[str, ...]  # every replica tried, in order ("127.0.0.1:PORT")
    upstream_statuses: tuple[str, ...]

    @property
    def retried(self) -> bool:
        return len(self.upstreams) > 1

    @property
    def answered_by(self) -> str:
        return self.upstreams[-1] if self.upstreams else ""


LOG_LINE = re.compile(r'"(?P<method>\S+) (?P<path>\S+)[^"]*" status=(?P<status>\d+) bytes=\d+ '
                      r"upstream=(?P<upstreams>.*?) upstream_status=(?P<statuses>.*?) request_time=")


def parse_log(text: str) -> list[Logged]:
    out = []
    for line in text.splitlines():
        m = LOG_LINE.search(line)
        if m:
            def split(v: str) -> tuple[str, ...]:
                return tuple(p.strip() for p in re.split(r"[,:](?=\s)", v) if p.strip() and p.strip() != "-")

            out.append(Logged(m["method"], m["path"], int(m["status"]), split(m["upstreams"]),
                              split(m["statuses"])))
    return out


# ---------------------------------------------------------------------------------------- metrics
class Metrics(dict[tuple[str, frozenset[tuple[str, str]]], float]):
    """A /metrics scrape (prometheus-client's parser): (sample name, label set) -> value."""

    @classmethod
    def parse(cls, text: str) -> Metrics:
        from prometheus_client.parser import text_string_to_metric_families

        return cls({(s.name, frozenset(s.labels.items())): s.value
                    for family in text_string_to_metric_families(text) for s in family.samples})

    def total(self, name: str, **labels: str) -> float:
        """The sum of the samples of `name` whose labels include `labels`."""
        want = set(labels.items())
        return sum(v for (n, ls), v in self.items() if n == name and want <= ls)

    def by(self, name: str, label: str) -> dict[str, float]:
        """`name`'s samples summed by the value of `label`."""
        out: dict[str, float] = {}
        for (n, ls), v in self.items():
            if n == name:
                key = dict(ls).get(label, "")
                out[key] = out.get(key, 0.0) + v
        return out


# --------------------------------------------------------------------------------------- processes
def _stop(proc: subprocess.Popen[bytes] | None, *, kill: bool = False) -> None:
    """Stops `proc` and its process group (it was started in a session of its own, so the group's id is its
    pid): SIGKILL when `kill`, else SIGTERM, then SIGKILL after 10 s. A process already reaped is left
    alone (its id may be another's by now)."""
    if proc is None or proc.returncode is not None:
        return
    with contextlib.suppress(OSError):
        os.killpg(proc.pid, signal.SIGKILL if kill else signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(OSError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    with contextlib.suppress(OSError):  # workers of the group that outlived their supervisor
        os.killpg(proc.pid, signal.SIGKILL)


@dataclass
class Replica:
    """One `tileserver serve ROOT` on 127.0.0.1:`port`, in a process group of its own."""

    index: int
    port: int
    root: str
    env: dict[str, str]
    log: Path
    workers: int = 1
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def address(self) -> str:
        """As nginx logs it in $upstream_addr."""
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        cmd = [sys.executable, "-m", "tileserver", "serve", self.root, "--host", "127.0.0.1", "--port",
               str(self.port), "--workers", str(self.workers)]
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(cmd, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Until /health/ready answers 200 (the store answers, the thread pool runs)."""
        deadline = time.monotonic() + timeout
        with httpx.Client(trust_env=False, timeout=2.0) as client:
            while time.monotonic() < deadline:
                if self.proc is None or self.proc.poll() is not None:
                    tail = self.log.read_text(errors="replace")[-1500:]
                    raise RuntimeError(f"replica {self.index} exited: {tail}")
                with contextlib.suppress(httpx.HTTPError):
                    if client.get(self.url + "/health/ready").status_code == 200:
                        return
                time.sleep(0.1)
        raise RuntimeError(f"replica {self.index} was not ready within {timeout} s")

    def kill(self) -> None:
        """SIGKILL to its process group: the server and any worker processes, with no shutdown."""
        _stop(self.proc, kill=True)

    def stop(self) -> None:
        _stop(self.proc)

    def metrics(self) -> Metrics:
        r = httpx.get(self.url + "/metrics", trust_env=False, timeout=10)
        r.raise_for_status()
        return Metrics.parse(r.text)


@dataclass
class Cluster:
    url: str  # nginx
    replicas: list[Replica]
    cache: CacheServer | None  # None: the replicas share nothing
    s3: S3Service | None  # None: they read a folder
    nginx_folder: Path

    def shared(self) -> CacheServer:
        if self.cache is None:
            raise RuntimeError("this cluster has no shared cache server")
        return self.cache

    def access_log(self, at_least: int = 0, timeout: float = 5.0) -> list[Logged]:
        """nginx's access log, once it has `at_least` lines (nginx writes a line after the response has gone,
        so a client may see the answer before its line is there)."""
        path = self.nginx_folder / "access.log"
        deadline = time.monotonic() + timeout
        while True:
            lines = parse_log(path.read_text(errors="replace")) if path.exists() else []
            if len(lines) >= at_least or time.monotonic() > deadline:
                return lines
            time.sleep(0.02)

    def nginx_pid(self) -> int:
        return int((self.nginx_folder / "nginx.pid").read_text())

    def kill(self, index: int) -> None:
        self.replicas[index].kill()

    def restart(self, index: int) -> None:
        replica = self.replicas[index]
        replica.stop()
        replica.start()
        replica.wait_ready()

    def metrics(self) -> list[Metrics]:
        return [r.metrics() for r in self.replicas]


def replica_env(s3: S3Service | None, cache: CacheServer | None, settings: Mapping[str, str]) -> dict[str, str]:
    """What compose gives a replica (the store, the shared cache, the cache API token), plus `settings`;
    no TILESERVER_, iipsrv or AWS_ variable of this environment."""
    env = {k: v for k, v in clean_env().items() if not k.startswith("AWS_")}
    if s3 is not None:
        env.update({"TILESERVER_STORE_ENDPOINT": s3.endpoint, "TILESERVER_STORE_REGION": s3.region,
                    "TILESERVER_STORE_ACCESS_KEY_ID": s3.access_key_id,
                    "TILESERVER_STORE_SECRET_ACCESS_KEY": s3.secret_access_key, "TILESERVER_STORE_ALLOW_HTTP": "true"})
    if cache is not None:
        env["TILESERVER_CACHE_URL"] = cache.url
    return {**env, "TILESERVER_CACHE_API_TOKEN": TOKEN, **settings}


@contextlib.contextmanager
def running_cluster(root: str, folder: Path, *, s3: S3Service | None = None, replicas: int = 3,
                    backend: str | None = "redis", workers: int = 1,
                    settings: Mapping[str, str] | None = None) -> Iterator[Cluster]:
    """The cache server (`backend`: redis, memcached or None), `replicas` replicas serving `root` (a folder,
    or an s3:// URL of `s3`), started together and waited for, then nginx on a free port; logs in `folder`.
    Everything is stopped on exit."""
    folder.mkdir(parents=True, exist_ok=True)
    nodes: list[Replica] = []
    with contextlib.ExitStack() as stack:
        cache = stack.enter_context(cache_server(backend)) if backend else None
        env = replica_env(s3, cache, settings or {})
        nodes = [Replica(i, free_port(), root, env, folder / f"replica-{i}.log", workers) for i in range(replicas)]
        stack.callback(lambda: [node.stop() for node in nodes])
        for node in nodes:
            node.start()
        for node in nodes:
            node.wait_ready()
        port = free_port()
        text = NGINX_CONF.read_text()
        def http(tmp: Path) -> str:
            return loopback_config(text, port, [n.port for n in nodes], tmp / "access.log")

        tmp = stack.enter_context(nginx(http, port, ready_path="/health/live", what="nginx-cluster"))
        yield Cluster(f"http://127.0.0.1:{port}", nodes, cache, s3, tmp)


# -------------------------------------------------------------------------------------------- load
@dataclass
class Load:
    """`threads` client threads sending GETs of `paths` to `url` (keep-alive, each thread cycling from its
    own offset) from `start()` until `stop()`; every answer is counted: `sent`, and `failed` with the
    path and the status (or the exception's name) of each request that did not get a 200 with a body."""

    url: str
    paths: Sequence[str]
    threads: int = 4
    timeout: float = 15.0
    sent: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _workers: list[threading.Thread] = field(default_factory=list)

    def __enter__(self) -> Load:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        for t in range(self.threads):
            worker = threading.Thread(target=self._run, args=(t,), daemon=True)
            worker.start()
            self._workers.append(worker)

    def stop(self) -> None:
        self._stop.set()
        for worker in self._workers:
            worker.join(timeout=self.timeout + 5)

    def wait_sent(self, n: int, timeout: float = 30.0) -> None:
        """Until `n` requests have been answered in all."""
        deadline = time.monotonic() + timeout
        while self.sent < n:
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {self.sent} of {n} requests answered within {timeout} s")
            time.sleep(0.02)

    def _run(self, t: int) -> None:
        i = t * len(self.paths) // max(self.threads, 1)
        with httpx.Client(base_url=self.url, trust_env=False, timeout=self.timeout) as client:
            while not self._stop.is_set():
                path = self.paths[i % len(self.paths)]
                i += 1
                try:
                    r = client.get(path)
                    problem = "" if r.status_code == 200 and r.content else f"HTTP {r.status_code}"
                except httpx.HTTPError as exc:
                    problem = type(exc).__name__
                with self._lock:
                    self.sent += 1
                    if problem:
                        self.failed.append((path, problem))


def iiif_tiles(ident: str, width: int, height: int, tile: int, scale: int = 1, fmt: str = "jpg") -> list[str]:
    """Every tile of `ident` (`width` x `height`) at 1/`scale` as IIIF 3 region requests, edge tiles partial."""
    step = tile * scale
    out = []
    for y in range(0, height, step):
        for x in range(0, width, step):
            w, h = min(step, width - x), min(step, height - y)
            out.append(f"/iiif/3/{ident}/{x},{y},{w},{h}/{-(-w // scale)},/0/default.{fmt}")
    return out
