"""metrics.py: the recording API, the cache sampler, and the multiprocess scrape (worker processes writing into
one folder, a scrape merging them, a dead worker's live gauges dropped while its counters stay)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tileserver import metrics

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    """Every sample of an exposition, by name and label set."""
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def scrape() -> Samples:
    return parse(metrics.exposition().decode())


@pytest.fixture(autouse=True)
def on() -> None:
    assert metrics.configure(True)  # in-process: this module's own registry


@pytest.mark.parametrize(
    ("protocol", "route", "status", "seconds", "bucket"),
    [
        pytest.param("iiif", "/iiif/3/{rest:path}", 200, 0.0003, "0.0005", id="fast-tile"),
        pytest.param("iip", "/iip", 404, 0.02, "0.025", id="iip-404"),
        pytest.param("server", "/health", 200, 3.0, "5.0", id="slow"),
    ],
)
def test_request_counts_and_latency(protocol: str, route: str, status: int, seconds: float, bucket: str) -> None:
    before = scrape()
    metrics.request(protocol, route, status, seconds)
    metrics.request(protocol, route, status, seconds)
    after = scrape()
    labels = {"protocol": protocol, "route": route}
    assert value(after, "tileserver_requests_total", **labels, status=str(status)) - value(
        before, "tileserver_requests_total", **labels, status=str(status)) == 2
    count = "tileserver_request_duration_seconds_count"
    assert value(after, count, **labels) - value(before, count, **labels) == 2
    bucket_name = "tileserver_request_duration_seconds_bucket"
    assert value(after, bucket_name, **labels, le=bucket) - value(before, bucket_name, **labels, le=bucket) == 2
    smaller = metrics.LATENCY_BUCKETS[metrics.LATENCY_BUCKETS.index(float(bucket)) - 1] if bucket != "0.0005" else None
    if smaller is not None:  # not in the bucket below
        le = str(smaller)
        assert value(after, bucket_name, **labels, le=le) == value(before, bucket_name, **labels, le=le)


def test_held_observations_land_in_the_buckets_observe_would_choose() -> None:
    """Per-request values are held and written at `flush` (each exposition flushes first): from several threads,
    on a bucket's bound, between bounds and past the last one, the buckets, count and sum are what
    prometheus-client's own `observe` makes."""
    from prometheus_client import CollectorRegistry, Histogram, generate_latest

    amounts = [0.0, 0.0005, 0.00051, 0.001, 0.0099, 0.01, 2.5, 29.0, 30.0, 31.0, 1e9]
    registry = CollectorRegistry()
    reference = Histogram("tileserver_request_duration_seconds", "ref", ("protocol", "route"),
                          buckets=metrics.LATENCY_BUCKETS, registry=registry)
    before = scrape()
    threads = [threading.Thread(target=lambda: [metrics.request("zoomify", "/held", 200, a) for a in amounts])
               for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for a in amounts * 4:
        reference.labels("zoomify", "/held").observe(a)
    after = scrape()
    expected = parse(generate_latest(registry).decode())
    for (name, labels), want in expected.items():
        if name.endswith(("_bucket", "_count", "_sum")):
            got = after.get((name, labels), 0.0) - before.get((name, labels), 0.0)
            assert got == pytest.approx(want), (name, labels)
    labels = {"protocol": "zoomify", "route": "/held", "status": "200"}
    assert value(after, "tileserver_requests_total", **labels) - value(before, "tileserver_requests_total",
                                                                       **labels) == 4 * len(amounts)


@pytest.mark.parametrize(
    ("path", "seconds", "stages"),
    [
        pytest.param("passthrough", 0.0002, {}, id="passthrough"),
        pytest.param("recode", 0.003, {"decode": 0.001, "encode": 0.002}, id="recode"),
        pytest.param("decode", 0.0055, {"decode": 0.004, "encode": 0.0015}, id="decode-split"),
        pytest.param("decode", 0.4, {}, id="decode-one-pass"),
    ],
)
def test_rendered_paths_and_stage_times(path: str, seconds: float, stages: dict[str, float]) -> None:
    before = scrape()
    metrics.rendered(path, "tiff", "jpg", seconds, **stages)
    after = scrape()
    assert value(after, "tileserver_tiles_rendered_total", path=path) - value(
        before, "tileserver_tiles_rendered_total", path=path) == 1
    render = "tileserver_render_seconds_sum"
    assert value(after, render, path=path, format="jpg") - value(before, render, path=path,
                                                                 format="jpg") == pytest.approx(seconds)
    for stage, fmt in (("decode", "tiff"), ("encode", "jpg")):
        name = f"tileserver_{stage}_seconds_sum"
        grown = value(after, name, format=fmt) - value(before, name, format=fmt)
        assert grown == pytest.approx(stages.get(stage, 0.0))


def test_admission_gauges_and_refusals() -> None:
    before = scrape()
    metrics.admission("large", 3, 2)
    metrics.admission("tile", 1, 0)
    metrics.refused("large", "concurrency")
    metrics.refused("large", "concurrency")
    metrics.refused("large", "pixels")
    after = scrape()
    assert value(after, "tileserver_admission_in_flight", lane="large") == 3
    assert value(after, "tileserver_admission_queued", lane="large") == 2
    assert value(after, "tileserver_admission_in_flight", lane="tile") == 1
    refused = "tileserver_admission_refused_total"
    assert value(after, refused, lane="large", reason="concurrency") - value(
        before, refused, lane="large", reason="concurrency") == 2
    assert value(after, refused, lane="large", reason="pixels") - value(before, refused, lane="large",
                                                                          reason="pixels") == 1
    metrics.admission("large", 0, 0)  # set, not added: the state after the change
    assert value(scrape(), "tileserver_admission_in_flight", lane="large") == 0


def test_sampler_turns_cache_counters_into_increments() -> None:
    sampler = metrics.Sampler()
    before = scrape()
    sampler.caches({"tile": {"hits": 5, "misses": 2, "entries": 2, "bytes": 900}})
    sampler.caches({"tile": {"hits": 8, "misses": 2, "entries": 3, "bytes": 1200}})
    sampler.caches({"tile": {"hits": 1, "misses": 1, "entries": 1, "bytes": 10}})  # a new cache: counts restart
    after = scrape()
    assert value(after, "tileserver_cache_hits_total", cache="tile") - value(
        before, "tileserver_cache_hits_total", cache="tile") == 9
    assert value(after, "tileserver_cache_misses_total", cache="tile") - value(
        before, "tileserver_cache_misses_total", cache="tile") == 3
    assert value(after, "tileserver_cache_entries", cache="tile") == 1
    assert value(after, "tileserver_cache_bytes", cache="tile") == 10


def test_sampler_turns_shared_cache_counters_into_increments() -> None:
    sampler = metrics.Sampler()
    before = scrape()
    sampler.shared(None)  # no shared cache: nothing
    sampler.shared({"errors": 1, "skipped": 10, "leases": 2, "lease_waits": 3, "lease_served": 2, "lease_expired": 1,
                    "available": False})
    sampler.shared({"errors": 1, "skipped": 25, "leases": 4, "lease_waits": 3, "lease_served": 2, "lease_expired": 1,
                    "available": True})
    after = scrape()

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("tileserver_shared_cache_errors_total", kind="error") == 1
    assert delta("tileserver_shared_cache_errors_total", kind="skipped") == 25
    assert delta("tileserver_shared_cache_leases_total", outcome="won") == 4
    assert delta("tileserver_shared_cache_leases_total", outcome="waited") == 3
    assert delta("tileserver_shared_cache_leases_total", outcome="expired") == 1
    assert value(after, "tileserver_shared_cache_available") == 1


def test_file_reads_are_sampled(tmp_path: Path) -> None:
    data = tmp_path / "blob"
    data.write_bytes(os.urandom(300_000))
    sampler = metrics.Sampler()
    sampler.caches({})
    before = value(scrape(), "tileserver_source_read_bytes_total", via="read")
    with data.open("rb", buffering=0) as f:
        while f.read(65536):
            pass
    sampler.caches({})
    grown = value(scrape(), "tileserver_source_read_bytes_total", via="read") - before
    assert 300_000 <= grown < 2_000_000


def test_off_records_nothing() -> None:
    before = scrape()
    metrics.configure(False)
    try:
        assert not metrics.enabled()
        metrics.request("iip", "/iip", 200, 0.01)
        metrics.refused("large", "concurrency")
    finally:
        metrics.configure(True)
    after = scrape()
    assert value(after, "tileserver_requests_total", protocol="iip", route="/iip", status="200") == value(
        before, "tileserver_requests_total", protocol="iip", route="/iip", status="200")


WORKER = textwrap.dedent("""
    import sys
    from pathlib import Path
    from tileserver import metrics
    metrics.configure(True, Path(sys.argv[1]))
    for _ in range(int(sys.argv[2])):
        metrics.request("iiif", "/iiif/3/{rest:path}", 200, 0.002)
    metrics.admission("large", 1, 0)
    if sys.argv[3] == "clean":
        metrics.mark_dead()
    """)
SCRAPER = textwrap.dedent("""
    import sys
    from pathlib import Path
    from tileserver import metrics
    metrics.configure(True, Path(sys.argv[1]))
    metrics.mark_dead()  # the scraper itself is not a worker here
    sys.stdout.write(metrics.exposition().decode())
    """)


@pytest.mark.parametrize("end", ["clean", "killed"])
def test_one_scrape_sums_processes_and_forgets_dead_ones(tmp_path: Path, end: str) -> None:
    """Processes writing into one folder: their counters add up in any process's scrape; a process that is
    gone, whether it said so (`mark_dead`) or not (killed: pruned at the scrape), no longer counts in the live
    gauges, while its counts stay in the totals."""
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    for n in (3, 4):
        subprocess.run([sys.executable, "-c", WORKER, str(tmp_path), str(n), end], check=True, env=env, timeout=60)
    out = subprocess.run([sys.executable, "-c", SCRAPER, str(tmp_path)], check=True, env=env, timeout=60,
                         capture_output=True, text=True).stdout
    samples = parse(out)
    labels = {"protocol": "iiif", "route": "/iiif/3/{rest:path}"}
    assert value(samples, "tileserver_requests_total", **labels, status="200") == 7
    assert value(samples, "tileserver_request_duration_seconds_count", **labels) == 7
    assert value(samples, "tileserver_request_duration_seconds_bucket", **labels, le="0.0025") == 7
    assert value(samples, "tileserver_admission_in_flight", lane="large") == 0
    assert value(samples, "tileserver_workers") == 0
    assert not list(tmp_path.glob("gauge_live*"))


def test_render_process_exits_count_by_reason() -> None:
    name = "tileserver_render_process_exits_total"
    before = scrape()
    metrics.process_exit("killed")
    metrics.process_exit("killed")
    metrics.process_exit("died")
    after = scrape()
    assert value(after, name, reason="killed") - value(before, name, reason="killed") == 2
    assert value(after, name, reason="died") - value(before, name, reason="died") == 1
    assert value(after, name, reason="stopped") == value(before, name, reason="stopped")


def test_captured_renders_are_recorded_when_replayed() -> None:
    """A render child's `rendered` calls are kept, not recorded, and count once the server replays them."""
    name = "tileserver_tiles_rendered_total"
    before = value(scrape(), name, path="decode")
    calls: list[tuple[object, ...]] = []
    metrics.capture(calls)
    try:
        metrics.rendered("decode", "tiff", "gif", 0.2)
    finally:
        metrics.capture(None)
    assert value(scrape(), name, path="decode") == before
    assert calls == [("decode", "tiff", "gif", 0.2, None, None)]
    metrics.replay_rendered(calls)
    assert value(scrape(), name, path="decode") == before + 1
