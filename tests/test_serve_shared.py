"""`tileserver serve --workers 2` with a shared Redis, from the environment only (TILESERVER_CACHE_URL,
TILESERVER_CACHE_API_TOKEN): the token reaches every worker (it is kept out of the settings the CLI hands them),
a tile rendered by one worker is served from the shared cache by the other (told apart by the access log's
worker pid), and a purge through either worker is answered."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from .cache_servers import CacheServer, redis_server
from .conftest import RGB_TIF, decode
from .live import clean_env, live_process

TOKEN = "serve-token-0123456789abcdef"
URL = f"/iiif/3/{RGB_TIF}/256,256,512,512/200,/0/default.png"

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def redis() -> Iterator[CacheServer]:
    with redis_server() as server:
        yield server


def test_two_workers_share_tiles_through_redis(image_root: Path, redis: CacheServer, tmp_path: Path) -> None:
    env = clean_env(TILESERVER_CACHE_URL=redis.url, TILESERVER_CACHE_API_TOKEN=TOKEN, TILESERVER_ACCESS_LOG="json",
                    TILESERVER_CACHE_GENERATION_TTL="0.2")
    log = tmp_path / "server.log"
    with live_process(image_root, log, workers=2, env=env) as (base, _proc):
        bodies = set()
        for _ in range(40):  # a new connection each time: the kernel spreads them over the two workers
            with httpx.Client(base_url=base, timeout=10) as c:
                r = c.get(URL)
                assert r.status_code == 200
                bodies.add(r.content)
        with httpx.Client(base_url=base, timeout=10) as c:
            assert c.delete(f"/cache/{RGB_TIF}", headers={"Authorization": "Bearer wrong-token-0123456789"}
                            ).status_code == 403
            purged = [c.delete(f"/cache/{RGB_TIF}", headers={"Authorization": f"Bearer {TOKEN}"}) for _ in range(4)]
            assert [p.status_code for p in purged] == [200] * 4 and all(p.json()["cluster"] for p in purged)
            health = c.get("/health").json()
            assert health["shared_cache"]["backend"] == "redis" and TOKEN not in json.dumps(health)
    assert len(bodies) == 1 and decode(bodies.pop()).width == 200
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    tiles = [line for line in lines if line["path"] == URL.split("?")[0] and line["status"] == 200]
    by_worker: dict[int, set[str]] = {}
    for line in tiles:
        by_worker.setdefault(line["worker"], set()).add(line["source"])
    made = [line for line in tiles if line["source"] not in ("shared", "cache", "replay")]
    assert len(made) == 1, tiles  # rendered once for both workers
    if len(by_worker) < 2:
        pytest.skip("every connection reached the same worker; nothing to tell apart")
    assert any("shared" in sources for sources in by_worker.values())  # the other worker got it from Redis
    assert TOKEN not in log.read_text()
