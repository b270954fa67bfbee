"""`/metrics` of a real `tileserver serve --workers 2`: after a mix of requests over every protocol, one scrape
shows every family, and its counts add up across both workers to what the JSON access log of both says; a killed
worker stops counting as one while its counts stay; the shared folder goes when the server stops."""

from __future__ import annotations

import json
import os
import signal
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tileserver.imaging import turbojpeg

from .conftest import GREY16_TIF, RGB_TIF
from .jp2_images import TILED_RGB
from .live import clean_env, live_tileserver
from .sources.test_jp2share import server_pid
from .test_metrics import Samples, parse, value

FAMILIES = ("tileserver_requests", "tileserver_request_duration_seconds", "tileserver_image_responses",
            "tileserver_tiles_rendered", "tileserver_render_seconds", "tileserver_decode_seconds",
            "tileserver_encode_seconds", "tileserver_cache_hits", "tileserver_cache_misses",
            "tileserver_cache_entries", "tileserver_cache_bytes", "tileserver_source_read_bytes",
            "tileserver_workers", "tileserver_admission_in_flight", "tileserver_admission_queued")
# edge tiles are cropped from the stored tile (TurboJPEG), `QLT=` tiles recoded
MADE = ("passthrough", "recode", "decode", *(("crop",) if turbojpeg.library() is not None else ()))


def mix() -> list[tuple[str, dict[str, str]]]:
    """Requests over every protocol: made (passthrough, recode, decode; JPEG 2000 too), then again (replayed),
    again through the full stack (Origin: the tile cache), documents, errors and probes."""
    tiles = [f"/iip?FIF={RGB_TIF}&JTL=2,{n}" for n in range(4)] + [
        f"/iip?FIF={RGB_TIF}&JTL=2,11", f"/iiif/3/{RGB_TIF}/768,512,235,189/235,/0/default.jpg",
        f"/iip?FIF={RGB_TIF}&QLT=60&JTL=2,5",
        f"/iiif/3/{GREY16_TIF}/0,0,256,256/256,/0/default.jpg", f"/deepzoom/{RGB_TIF}_files/10/1_1.jpg",
        f"/deepzoom/{GREY16_TIF}_files/10/1_0.png", f"/zoomify/{RGB_TIF}/TileGroup0/2-1-1.jpg",
        f"/zoomify/{RGB_TIF}/TileGroup0/2-3-2.jpg", f"/iip?FIF={TILED_RGB}&JTL=2,0", f"/iip?FIF={TILED_RGB}&JTL=2,1"]
    origin = {"Origin": "http://viewer.example"}
    return ([(t, {}) for t in tiles] + [(t, {}) for t in tiles] + [(t, origin) for t in tiles]
            + [(f"/iiif/3/{RGB_TIF}/info.json", {}), (f"/deepzoom/{RGB_TIF}.dzi", {}),
               ("/iip?FIF=missing.tif&OBJ=x", {}), ("/no/such/route", {}), ("/health/ready", {}),
               ("/health/live", {})])


def get(base: str, url: str, headers: dict[str, str]) -> int:
    return httpx.get(base + url, headers=headers, timeout=60).status_code  # a connection of its own


def log_lines(log: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]


def scrape_until(base: str, done: Any, timeout: float = 15.0) -> Samples:
    """Scrape until `done(samples)` (the workers sample their caches every second), or fail."""
    deadline = time.monotonic() + timeout
    while True:
        samples = parse(httpx.get(base + "/metrics", timeout=30).text)
        if done(samples) or time.monotonic() > deadline:
            return samples
        time.sleep(0.2)


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of `name` over every label set that includes `labels`."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= ls)


@pytest.mark.server
def test_one_scrape_counts_both_workers(image_root: Path, tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    with live_tileserver(image_root, log, workers=2, env=clean_env(TILESERVER_ACCESS_LOG="json")) as base:
        folder = next(Path("/dev/shm").glob(f"tileserver-metrics-{os.getuid()}-{server_pid(base.rsplit(':', 1)[1])}"))
        requests = mix()
        with ThreadPoolExecutor(6) as pool:  # concurrent connections: both workers accept some
            for _ in range(10):
                statuses = list(pool.map(lambda r: get(base, *r), requests))
                assert statuses.count(404) == 2 and statuses.count(200) == len(requests) - 2
                if len({line["worker"] for line in log_lines(log)}) == 2:
                    break
        lines = log_lines(log)
        workers = {line["worker"] for line in lines}
        assert len(workers) == 2
        sources = Counter(line["source"] for line in lines)
        statuses = Counter(str(line["status"]) for line in lines)

        def settled(s: Samples) -> bool:
            # a repeated or replayed tile's body comes from the tile cache or, for a stored tile passed through,
            # from where its bytes are (`stored_tile`), after the tile cache missed it
            made = sum(sources[m] for m in MADE)
            located = total(s, "tileserver_cache_hits_total", cache="stored_tile")
            scrapes = total(s, "tileserver_requests_total", route="/metrics")  # this loop's own, so far
            return (total(s, "tileserver_requests_total") - scrapes == len(lines) and located > 0
                    and total(s, "tileserver_cache_misses_total", cache="tile") == made + located
                    and total(s, "tileserver_cache_hits_total", cache="tile") + located
                    == sources["cache"] + sources["replay"])

        samples = scrape_until(base, settled)
        assert settled(samples), "the counts of both workers did not add up"
        names = {n.removesuffix("_total").removesuffix("_count") for n, _ in samples}
        assert set(FAMILIES) <= {n.removesuffix("_bucket").removesuffix("_sum") for n in names}
        assert value(samples, "tileserver_workers") == 2
        statuses["200"] += int(total(samples, "tileserver_requests_total", route="/metrics"))
        for status, n in statuses.items():
            assert total(samples, "tileserver_requests_total", status=status) == n
        for source in (*MADE, "cache", "replay"):
            assert value(samples, "tileserver_image_responses_total", source=source) == sources[source] > 0
            if source in MADE:
                assert value(samples, "tileserver_tiles_rendered_total", path=source) == sources[source]
        assert total(samples, "tileserver_render_seconds_count") == sum(sources[m] for m in MADE)
        # split: recoded tiles, and decoded ones the encoder took from memory (JPEG; the PNG was one pass)
        split = total(samples, "tileserver_decode_seconds_count")
        assert sources["recode"] < split < sources["recode"] + sources["decode"]
        assert total(samples, "tileserver_encode_seconds_count") == split
        assert value(samples, "tileserver_decode_seconds_count", format="jp2k") > 0
        requests = total(samples, "tileserver_requests_total")
        assert total(samples, "tileserver_request_duration_seconds_count") == requests
        assert total(samples, "tileserver_cache_hits_total", cache="replay") >= sources["replay"]
        assert total(samples, "tileserver_cache_misses_total", cache="jp2") > 0
        assert value(samples, "tileserver_source_read_bytes_total", via="read") > 0

        # a worker killed without a word: it stops counting as one (its live gauges are dropped at the next
        # scrape), the supervisor starts another, and what the killed one counted stays in the totals
        victim = next(iter(workers))
        os.kill(victim, signal.SIGKILL)
        after = scrape_until(base, lambda s: value(s, "tileserver_workers") == 2
                             and not (folder / f"gauge_livesum_{victim}.db").exists(), timeout=30)
        assert value(after, "tileserver_workers") == 2
        assert not (folder / f"gauge_livesum_{victim}.db").exists()
        assert total(after, "tileserver_requests_total") > total(samples, "tileserver_requests_total")
        assert total(after, "tileserver_cache_misses_total", cache="tile") == total(
            samples, "tileserver_cache_misses_total", cache="tile")
    assert not folder.exists()
