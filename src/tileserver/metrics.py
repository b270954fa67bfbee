"""Prometheus metrics: the families, the recording calls every layer makes, and the scrape.

The numbers are per process by nature, so recording is a small module-level API (`request`, `image`,
`rendered`, `admission`, `refused`, ...) that any layer may call without being handed an object; it does
nothing until `configure` (called by `create_app`) turns it on. With several worker processes
(`tileserver serve --workers N`) prometheus-client's multiprocess mode keeps each process's values in
memory-mapped files of one folder (`Settings.metrics_dir`, made by the CLI and removed at exit), and a scrape
answered by any worker merges every process's files (`exposition`): counters and histograms add up, the
gauges of live processes are summed (`livesum`), and the gauge files of a worker that exited are removed
(`mark_dead` at shutdown, `_prune` for one that died without it) so its in-flight work stops counting while its
counters keep counting. Without a folder the families live in this module's own registry.

Recording is cheap: each call is a dict lookup of a label child bound once, then prometheus-client's
increment (a lock and, in multiprocess mode, an 8-byte write to the mapped file), or for the per-request calls a
count held in this process until `flush`; cache and I/O counters are
not recorded per event at all but sampled from the counters the caches and the kernel keep anyway
(`Sampler`, every `SAMPLE_INTERVAL` seconds and at each scrape). bench/metrics_overhead.py measures it.
Labels never carry an identifier, a path or a query: routes are route templates.
"""

from __future__ import annotations

import atexit
import bisect
import glob
import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

SAMPLE_INTERVAL = 1.0  # seconds between samples of the cache and I/O counters in each process
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
WORK_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
IO_FIELDS = {"rchar": "read", "read_bytes": "storage"}  # /proc/self/io field -> label


class Families:
    """Every metric family, made once per process (prometheus-client refuses a name twice)."""

    def __init__(self, registry: Any) -> None:
        from prometheus_client import Counter, Gauge, Histogram

        def counter(name: str, doc: str, labels: tuple[str, ...]) -> Any:
            return Counter(name, doc, labels, registry=registry)

        def histogram(name: str, doc: str, labels: tuple[str, ...], buckets: tuple[float, ...]) -> Any:
            return Histogram(name, doc, labels, registry=registry, buckets=buckets)

        def gauge(name: str, doc: str, labels: tuple[str, ...]) -> Any:
            return Gauge(name, doc, labels, registry=registry, multiprocess_mode="livesum")

        self.requests = counter("tileserver_requests", "HTTP responses by protocol, route template and status",
                                ("protocol", "route", "status"))
        self.latency = histogram("tileserver_request_duration_seconds", "Time from a request's arrival to its "
                                 "last body byte, by protocol and route template", ("protocol", "route"),
                                 LATENCY_BUCKETS)
        self.images = counter("tileserver_image_responses", "Image responses by where the body came from: replay, "
                              "cache (the tile cache), shared (the shared cache), passthrough, recode, decode",
                              ("source",))
        self.rendered = counter("tileserver_tiles_rendered", "Images made (cache misses) by path: passthrough "
                                "(stored bytes), recode (stored JPEG tiles cut without libvips), decode", ("path",))
        self.render = histogram("tileserver_render_seconds", "Time to make one image (cache misses), by path and "
                                "output format", ("path", "format"), WORK_BUCKETS)
        self.decode = histogram("tileserver_decode_seconds", "Time to read, decode and process the pixels of one "
                                "image, by source format (its reader): recoded tiles, and libvips renders with "
                                "split_timing", ("format",), WORK_BUCKETS)
        self.encode = histogram("tileserver_encode_seconds", "Time to encode one image, by output format: recoded "
                                "tiles, and libvips renders with split_timing", ("format",), WORK_BUCKETS)
        self.hits = counter("tileserver_cache_hits", "Cache hits by cache", ("cache",))
        self.misses = counter("tileserver_cache_misses", "Cache misses by cache", ("cache",))
        self.entries = gauge("tileserver_cache_entries", "Entries held by each cache (live processes)", ("cache",))
        self.cache_bytes = gauge("tileserver_cache_bytes", "Bytes held by each cache (live processes)", ("cache",))
        self.read = counter("tileserver_source_read_bytes", "Bytes the server processes read from files (read: "
                            "every read and pread by any reader, libvips, OpenJPEG and OpenSlide included; "
                            "storage: what the kernel fetched from the storage device)", ("via",))
        self.in_flight = gauge("tileserver_admission_in_flight", "Admitted work running, by lane", ("lane",))
        self.queued = gauge("tileserver_admission_queued", "Work waiting for admission, by lane", ("lane",))
        self.refusals = counter("tileserver_admission_refused", "Work refused by admission control (503), by "
                                "lane and reason", ("lane", "reason"))
        self.workers = gauge("tileserver_workers", "Server processes alive", ())
        self.process_exits = counter("tileserver_render_process_exits", "Render child processes of the large lane "
                                     "that ended, by reason: killed (its render was abandoned: deadline or client "
                                     "gone), died (crashed or killed from outside: its render got 503), stopped "
                                     "(server shutdown)", ("reason",))
        self.store_requests = counter("tileserver_store_requests", "Requests made to image stores (S3, GCS, Azure, "
                                      "HTTP), by operation: HEAD, GET (ranges and whole copies), LIST", ("op",))
        self.store_bytes = counter("tileserver_store_read_bytes", "Bytes read from image stores", ())
        self.shared_errors = counter("tileserver_shared_cache_errors", "Shared-cache trouble, by kind: calls that "
                                     "failed or timed out (error), calls not made while its breaker was open "
                                     "(skipped), entries that did not parse (corrupt), writes not made (dropped: too "
                                     "large, or too many in flight)", ("kind",))
        self.shared_leases = counter("tileserver_shared_cache_leases", "Single flight across replicas: tile leases won "
                                     "(won: this replica renders), misses that waited for another replica's render "
                                     "(waited), of which got it (served) or rendered it here after all (expired)",
                                     ("outcome",))
        self.shared_available = gauge("tileserver_shared_cache_available", "1 while the shared cache is used, 0 while "
                                      "its breaker is open (live processes: the number of workers using it)", ())
        self.store_failures = counter("tileserver_store_failures", "Store requests that failed after their "
                                      "retries, by the status answered (404, 502, 503, 504)", ("status",))


class _State:
    """The process's families and label children; `families` is None while metrics are off."""

    def __init__(self) -> None:
        self.families: Families | None = None
        self.built: Families | None = None  # kept when switched off: names are registered once per process
        self.registry: Any = None
        self.folder: Path | None = None
        self.children: dict[tuple[object, ...], Any] = {}
        self.lock = threading.Lock()
        self.io_seen: dict[str, int] = {}
        self.captured: list[tuple[Any, ...]] | None = None  # a render child's `rendered` calls (capture)
        self.held_lock = threading.Lock()  # the held per-request values (`flush`); the pool's threads record too
        self.counts: dict[Any, int] = {}
        self.observed: dict[Any, list[Any]] = {}  # histogram child -> [sum, count per bucket]


_state = _State()


def configure(enabled: bool, folder: Path | None = None) -> bool:
    """Turn recording on (`enabled`) or off for this process; `folder`: the multiprocess folder shared by the
    worker processes of one server. Returns whether metrics are on."""
    if not enabled:
        _state.families = None
        return False
    with _state.lock:
        if _state.built is None:
            _state.built = _build(folder)
            atexit.register(flush)  # a process that ends without `mark_dead` keeps its held counts too
        _state.families = _state.built
        _state.built.workers.set(1)
        if not _state.io_seen:
            _read_io(_state.io_seen)  # what the process read before serving (its own code) is not counted
    return True


def _build(folder: Path | None) -> Families:
    from prometheus_client import CollectorRegistry, values

    if folder is not None:
        # prometheus-client picks its storage from this variable; the workers inherit it from the CLI, and it is set
        # here too for a server started another way (a process manager building the app from settings)
        folder.mkdir(parents=True, exist_ok=True)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(folder)
        if not getattr(values.ValueClass, "_multiprocess", False):
            values.ValueClass = values.MultiProcessValue()  # type: ignore[no-untyped-call]
        _state.folder = folder
        return Families(None)  # the values go to the folder's files; a scrape reads them there
    _state.registry = CollectorRegistry(auto_describe=True)
    return Families(_state.registry)


def enabled() -> bool:
    return _state.families is not None


def _child(family: Any, *labels: object) -> Any:
    key = (id(family), *labels)
    child = _state.children.get(key)
    if child is None:
        child = _state.children[key] = family.labels(*labels) if labels else family
    return child


# -- recording ------------------------------------------------------------------------------------
# The per-request calls (`request`, `image`, `rendered`) are held in this process and written to prometheus-client
# by `flush`: each written value is a lock and, in multiprocess mode, a write to the mapped file, and a histogram's
# observation a Python loop over its buckets; together about a tenth of a cold stored tile's time. `flush` runs with
# every sample of the caches (`SAMPLE_INTERVAL`), before each exposition and when a worker stops, so a scrape sees
# this worker's counts whole and the other workers' within `SAMPLE_INTERVAL`, as their cache gauges (a worker killed
# outright loses what it held: at most that long of its requests' counts).
def _count(child: Any) -> None:
    with _state.held_lock:
        _state.counts[child] = _state.counts.get(child, 0) + 1


def _observe(child: Any, amount: float) -> None:
    """`child.observe(amount)`, held: the bucket found by bisection (the first bound >= amount, as observe's)."""
    bounds = child._upper_bounds
    at = bisect.bisect_left(bounds, amount)
    with _state.held_lock:
        held = _state.observed.get(child)
        if held is None:
            held = _state.observed[child] = [0.0, [0] * len(bounds)]
        held[0] += amount
        held[1][at] += 1


def flush() -> None:
    """Write the held counts and observations to prometheus-client."""
    with _state.held_lock:
        counts, observed = _state.counts, _state.observed
        _state.counts, _state.observed = {}, {}
    for child, n in counts.items():
        child.inc(n)
    for child, (total, buckets) in observed.items():
        child._sum.inc(total)
        for at, n in enumerate(buckets):
            if n:
                child._buckets[at].inc(n)


def request(protocol: str, route: str, status: int, seconds: float) -> None:
    """One HTTP response, counted when its last byte was sent."""
    f = _state.families
    if f is None:
        return
    _count(_child(f.requests, protocol, route, status))
    _observe(_child(f.latency, protocol, route), seconds)


def image(source: str) -> None:
    """One image response whose body came from `source` (replay, cache, passthrough, recode, decode)."""
    f = _state.families
    if f is not None:
        _count(_child(f.images, source))


def rendered(path: str, source_format: str, output_format: str, seconds: float, *, decode: float | None = None,
             encode: float | None = None) -> None:
    """One image made by `path` (passthrough, recode, decode) from a `source_format` file as `output_format` in
    `seconds`, and the times of its stages when they were measured apart (`decode`: the pixels read, decoded
    and processed; `encode`)."""
    if _state.captured is not None:
        _state.captured.append((path, source_format, output_format, seconds, decode, encode))
        return
    f = _state.families
    if f is None:
        return
    _count(_child(f.rendered, path))
    _observe(_child(f.render, path, output_format), seconds)
    if decode is not None:
        _observe(_child(f.decode, source_format), decode)
    if encode is not None:
        _observe(_child(f.encode, output_format), encode)


def capture(into: list[tuple[Any, ...]] | None) -> None:
    """Keep this process's `rendered` calls in `into` instead of recording them (None: record again): a
    render child of the large lane (imaging/isolate.py) sends them to its server process, which records
    them with `replay_rendered`."""
    _state.captured = into


def replay_rendered(calls: list[tuple[Any, ...]]) -> None:
    for path, source_format, output_format, seconds, decode, encode in calls:
        rendered(path, source_format, output_format, seconds, decode=decode, encode=encode)


def process_exit(reason: str) -> None:
    """One render child process ended (`reason`: killed, died, stopped)."""
    f = _state.families
    if f is not None:
        _child(f.process_exits, reason).inc()


def admission(lane: str, in_flight: int, queued: int) -> None:
    """The admission state of `lane` after a change (work admitted, finished or queued) in this process."""
    f = _state.families
    if f is None:
        return
    _child(f.in_flight, lane).set(in_flight)
    _child(f.queued, lane).set(queued)


def refused(lane: str, reason: str) -> None:
    """One request refused by admission control (`reason`: e.g. `concurrency`, `pixels`, `deadline`)."""
    f = _state.families
    if f is not None:
        _child(f.refusals, lane, reason).inc()


def store_read(op: str, nbytes: int = 0, requests: int = 1) -> None:
    """`requests` store requests of kind `op` that returned `nbytes` bytes."""
    f = _state.families
    if f is not None:
        _child(f.store_requests, op).inc(requests)
        if nbytes:
            _child(f.store_bytes).inc(nbytes)


def store_failed(status: int) -> None:
    f = _state.families
    if f is not None:
        _child(f.store_failures, status).inc()


class Sampler:
    """Turns counters kept elsewhere (the caches' hits and misses, the kernel's read counts) into metric
    increments, so nothing is recorded per cache lookup. One per app: it remembers what it last saw."""

    def __init__(self) -> None:
        self.seen: dict[str, tuple[int, int]] = {}
        self.shared_seen: dict[str, int] = {}

    def shared(self, stats: Mapping[str, Any] | None) -> None:
        """The shared cache's counters (`SharedCache.stats`; None: no shared cache) as metric increments."""
        if stats is not None:
            _shared_sample(self, stats)

    def caches(self, stats: Mapping[str, Mapping[str, int]]) -> None:
        """`stats`: cache name -> its counters (`hits`, `misses`, `entries`, `bytes`; any may be absent)."""
        f = _state.families
        if f is None:
            return
        for name, s in stats.items():
            hits, misses = s.get("hits", 0), s.get("misses", 0)
            old_hits, old_misses = self.seen.get(name, (0, 0))
            if hits < old_hits or misses < old_misses:  # counters restarted (a cache made anew)
                old_hits = old_misses = 0
            if hits > old_hits:
                _child(f.hits, name).inc(hits - old_hits)
            if misses > old_misses:
                _child(f.misses, name).inc(misses - old_misses)
            self.seen[name] = (hits, misses)
            if "entries" in s:
                _child(f.entries, name).set(s["entries"])
            if "bytes" in s:
                _child(f.cache_bytes, name).set(s["bytes"])
        _sample_io(f)


SHARED_ERRORS = {"errors": "error", "skipped": "skipped", "corrupt": "corrupt", "dropped": "dropped"}
SHARED_LEASES = {"leases": "won", "lease_waits": "waited", "lease_served": "served", "lease_expired": "expired"}


def _shared_sample(sampler: Sampler, stats: Mapping[str, Any]) -> None:
    f = _state.families
    if f is None:
        return
    for family, names in ((f.shared_errors, SHARED_ERRORS), (f.shared_leases, SHARED_LEASES)):
        for name, label in names.items():
            now, before = int(stats.get(name, 0)), sampler.shared_seen.get(name, 0)
            if now > before:
                _child(family, label).inc(now - before)
            sampler.shared_seen[name] = now
    _child(f.shared_available).set(1 if stats.get("available") else 0)


def _read_io(into: dict[str, int]) -> bool:
    """This process's read counters from /proc/self/io (Linux; elsewhere False)."""
    try:
        with open("/proc/self/io") as io:
            into.update({k: int(v) for k, _, v in (line.partition(": ") for line in io) if k in IO_FIELDS})
    except (OSError, ValueError):
        return False
    return True


def _sample_io(f: Families) -> None:
    """This process's file reads since the last sample."""
    now: dict[str, int] = {}
    if not _read_io(now):
        return
    with _state.lock:
        for key, value in now.items():
            before = _state.io_seen.get(key, 0)
            _state.io_seen[key] = value
            if value > before:
                _child(f.read, IO_FIELDS[key]).inc(value - before)


# -- the scrape and the worker's end ----------------------------------------------------------------
def exposition() -> bytes:
    """The text exposition of every family: this process's, or in multiprocess mode every worker's merged."""
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.multiprocess import MultiProcessCollector

    flush()
    if _state.folder is None:
        return generate_latest(_state.registry) if _state.registry is not None else b""
    _prune(_state.folder)
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(_state.folder))  # type: ignore[no-untyped-call]
    out: bytes = generate_latest(registry)
    return out


def mark_dead(pid: int | None = None) -> None:
    """Drop the live gauges of process `pid` (this one by default) from the shared folder: a worker that
    stops no longer counts as running work, nor as a worker; its counters stay in the totals."""
    if pid is None:
        flush()  # its held counts first
    if _state.folder is None:
        return
    from prometheus_client.multiprocess import mark_process_dead

    mark_process_dead(os.getpid() if pid is None else pid, str(_state.folder))  # type: ignore[no-untyped-call]


def _prune(folder: Path) -> None:
    """Mark dead the processes whose live gauge files remain although they are gone (killed workers)."""
    for name in glob.glob(os.path.join(folder, "gauge_live*_*.db")):
        pid = os.path.basename(name)[:-3].rpartition("_")[2]
        if pid.isdigit() and not _alive(int(pid)):
            mark_dead(int(pid))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
