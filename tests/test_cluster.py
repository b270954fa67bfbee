"""The cluster of issue 14 on loopback (tests/cluster.py): nginx with deploy/nginx/tileserver.conf in front of
three `tileserver serve s3://...` replicas (moto's S3) sharing redis-server or memcached; every test runs
once per backend, on one cluster per backend for the module.

Counted, not assumed: what each replica made (`tileserver_tiles_rendered_total` of its own /metrics, asked on
its own port), how it answered (`tileserver_image_responses_total{source}`), what it asked the store
(`tileserver_store_requests_total{op}`), the cache server's own hit counter (Redis INFO, memcached stats),
and nginx's access log (every replica a request was tried on: `$upstream_addr`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import pyvips

from tileserver.settings import Settings

from .cluster import (
    BACKENDS,
    LOCAL_SOURCES,
    MADE_SOURCES,
    TOKEN,
    Cluster,
    Load,
    Metrics,
    Replica,
    iiif_tiles,
    running_cluster,
)
from .conftest import decode, pattern
from .stores import S3Service

pytestmark = pytest.mark.server

BUCKET, PREFIX = "cluster", "set"
SIZE = (700, 500)  # every image: 700 x 500, 128-px JPEG tiles, 3 levels
SHARED = {  # one image per case, so that it is cold on every replica; the request makes its body from pixels
    "iiif-png": "/iiif/3/{ident}/10,20,300,200/150,/0/default.png",
    "iip-cvt": "/iip?FIF={ident}&WID=200&CVT=jpeg",
    "deepzoom": "/deepzoom/{ident}_files/8/0_0.jpeg",
    "zoomify": "/zoomify/{ident}/TileGroup0/1-1-0.jpg",
    "info-json": "/iiif/3/{ident}/info.json",
}
SETTINGS = {
    "TILESERVER_STAT_INTERVAL": "3600",  # an object changed in the store is seen only after a purge
    "TILESERVER_ADMISSION_QUEUE_WAIT": "30",  # on 2 shared cores a short queue would refuse, not fail
    "TILESERVER_CACHE_TIMEOUT": "1",  # ... and a loaded machine can hold a loopback call past the default 0.1 s
    "TILESERVER_CACHE_BREAKER_SECONDS": "1",  # a restarted cache server is tried again within a second
}
HOST = {"Host": "tiles.example"}  # one public host for every replica: their documents are the same bytes
RED, BLUE = (200, 40, 40), (40, 40, 200)


def write(path: Path, img: pyvips.Image) -> None:
    img.tiffsave(str(path), tile=True, pyramid=True, tile_width=128, tile_height=128, compression="jpeg", Q=90)


def flat(colour: tuple[int, int, int]) -> pyvips.Image:
    return (pyvips.Image.black(*SIZE, bands=3) + list(colour)).cast("uchar").copy(interpretation="srgb")


@pytest.fixture(scope="module")
def images(s3_service: S3Service, tmp_path_factory: pytest.TempPathFactory) -> S3Service:
    folder = tmp_path_factory.mktemp("cluster-images")
    for n, case in enumerate(SHARED):
        for backend in BACKENDS:
            write(folder / f"{case}-{backend}.tif", pattern(*SIZE, seed=10 + n))
    for backend in BACKENDS:
        write(folder / f"flight-{backend}.tif", pattern(*SIZE, seed=30))
    write(folder / "load-a.tif", pattern(*SIZE, seed=40))
    write(folder / "load-b.tif", pattern(*SIZE, seed=41))
    write(folder / "swap.tif", flat(RED))
    s3_service.create_bucket(BUCKET)
    s3_service.upload_tree(BUCKET, folder, prefix=f"{PREFIX}/")
    return s3_service


@pytest.fixture(scope="module", params=BACKENDS)
def cluster(request: pytest.FixtureRequest, images: S3Service,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    folder = tmp_path_factory.mktemp(f"cluster-{request.param}")
    with running_cluster(f"s3://{BUCKET}/{PREFIX}", folder, s3=images, replicas=3, backend=request.param,
                         settings=SETTINGS) as c:
        yield c


def rendered(m: Metrics) -> float:
    return m.total("tileserver_tiles_rendered_total")


def answered(before: Metrics, after: Metrics) -> dict[str, float]:
    """Image responses between two scrapes, by where their body came from."""
    b = before.by("tileserver_image_responses_total", "source")
    return {k: v - b.get(k, 0.0) for k, v in after.by("tileserver_image_responses_total", "source").items()
            if v - b.get(k, 0.0)}


def store_gets(m: Metrics) -> float:
    return m.total("tileserver_store_requests_total", op="GET")


def get(replica: Replica | str, path: str, **headers: str) -> httpx.Response:
    base = replica if isinstance(replica, str) else replica.url
    r = httpx.get(base + path, headers={**HOST, **headers}, trust_env=False, timeout=30)
    assert r.status_code == 200, (path, r.status_code, r.text[:200])
    return r


def ident_of(case: str, cluster: Cluster) -> str:
    return f"{case}-{cluster.shared().kind}.tif"


# ------------------------------------------------------------------------------------- the topology
def test_nginx_spreads_requests_over_every_replica_on_kept_alive_connections(cluster: Cluster) -> None:
    seen = len(cluster.access_log())
    paths = iiif_tiles("load-a.tif", *SIZE, tile=128)
    with httpx.Client(base_url=cluster.url, trust_env=False, timeout=30) as client:
        for path in paths:
            r = client.get(path)
            assert r.status_code == 200 and decode(r.content).width == int(path.split("/")[5].rstrip(","))
    lines = cluster.access_log(at_least=seen + len(paths))[seen:]
    assert [ln.path for ln in lines] == paths and all(ln.status == 200 and not ln.retried for ln in lines)
    by = {r.address: sum(ln.answered_by == r.address for ln in lines) for r in cluster.replicas}
    assert min(by.values()) >= len(paths) // 3 - 1, by  # round robin


# ------------------------------------------------------------------------------------- the shared cache
@pytest.mark.parametrize("case", list(SHARED))
def test_what_one_replica_made_another_serves_from_the_shared_cache(cluster: Cluster, case: str) -> None:
    a, b, _ = cluster.replicas
    path = SHARED[case].format(ident=ident_of(case, cluster))
    before_a, before_b, hits = a.metrics(), b.metrics(), cluster.shared().hits()
    first = get(a, path)
    second = get(b, path)
    after_a, after_b = a.metrics(), b.metrics()
    assert second.content == first.content
    assert cluster.shared().hits() > hits, "the cache server counted no hit"
    if case != "info-json":
        assert decode(second.content).width > 0
        assert rendered(after_a) - rendered(before_a) == 1
        assert rendered(after_b) - rendered(before_b) == 0, "replica B made the image again"
        sources = answered(before_b, after_b)
        assert sum(sources.values()) == 1 and not set(sources) & {*LOCAL_SOURCES, *MADE_SOURCES}, sources
    assert store_gets(after_b) - store_gets(before_b) == 0, "replica B read the image from the store"


def test_concurrent_misses_on_three_replicas_make_the_tile_once(cluster: Cluster) -> None:
    path = f"/iiif/3/flight-{cluster.shared().kind}.tif/full/200,/0/default.png"
    before = [rendered(m) for m in cluster.metrics()]
    barrier = threading.Barrier(len(cluster.replicas))
    bodies: dict[int, bytes] = {}

    def one(replica: Replica) -> None:
        barrier.wait()
        bodies[replica.index] = get(replica, path).content

    threads = [threading.Thread(target=one, args=(r,)) for r in cluster.replicas]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(bodies) == 3 and len(set(bodies.values())) == 1
    assert decode(bodies[0]).width == 200
    made = [rendered(m) - b for m, b in zip(cluster.metrics(), before, strict=True)]
    assert sum(made) == 1, f"made by the replicas: {made}"


# ---------------------------------------------------------------------------------------- the purge
def colour(body: bytes) -> tuple[int, int, int]:
    img = decode(body)
    return tuple(round(img[band].avg()) for band in range(3))  # type: ignore[return-value]


def close(got: tuple[int, int, int], want: tuple[int, int, int]) -> bool:
    return all(abs(g - w) <= 4 for g, w in zip(got, want, strict=True))


def test_a_purge_sent_through_one_replica_takes_effect_on_all(cluster: Cluster, images: S3Service,
                                                              tmp_path: Path) -> None:
    key = f"{PREFIX}/swap.tif"
    folder = tmp_path
    write(folder / "red.tif", flat(RED))
    write(folder / "blue.tif", flat(BLUE))
    images.put(BUCKET, key, folder / "red.tif")
    paths = ["/iiif/3/swap.tif/full/120,/0/default.png", "/iiif/3/swap.tif/0,0,128,128/128,/0/default.jpg"]
    for replica in cluster.replicas:
        for path in paths:
            assert close(colour(get(replica, path).content), RED)
    images.put(BUCKET, key, folder / "blue.tif")
    for replica in cluster.replicas:  # STAT_INTERVAL is an hour: no replica looks at the store again
        for path in paths:
            assert close(colour(get(replica, path).content), RED)
    refused = httpx.delete(cluster.url + "/cache/swap.tif", trust_env=False, timeout=30)
    assert refused.status_code in (401, 403)
    wrong = httpx.delete(cluster.url + "/cache/swap.tif", headers={"Authorization": "Bearer not-the-token"},
                         trust_env=False, timeout=30)
    assert wrong.status_code in (401, 403)
    assert close(colour(get(cluster.replicas[0], paths[0]).content), RED)

    purged = httpx.delete(cluster.url + "/cache/swap.tif", headers={"Authorization": f"Bearer {TOKEN}"},
                          trust_env=False, timeout=30)
    assert 200 <= purged.status_code < 300, purged.text[:200]
    # every replica re-reads the image's purge generation within cache_generation_ttl
    deadline = time.monotonic() + Settings().cache_generation_ttl + 3.0
    for replica in cluster.replicas:
        for path in paths:
            while not close(got := colour(get(replica, path).content), BLUE):
                assert time.monotonic() < deadline, f"replica {replica.index} still sends {got} for {path}"
                time.sleep(0.1)
    for replica in cluster.replicas:
        assert all(close(colour(get(replica, path).content), BLUE) for path in paths)
    assert close(colour(get(cluster.url, paths[0]).content), BLUE)


# ---------------------------------------------------------------------------------------- the faults
def load_paths() -> list[str]:
    """Stored tiles (passed through), tiles made at half size and PNGs, of two images, interleaved."""
    lists = [iiif_tiles(name, *SIZE, tile=128, scale=scale, fmt=fmt) for name in ("load-a.tif", "load-b.tif")
             for scale, fmt in ((1, "jpg"), (2, "jpg"), (1, "png"))]
    return [p for group in zip(*(lst * 3 for lst in lists), strict=False) for p in group]


def test_a_replica_killed_under_load_costs_no_request(cluster: Cluster) -> None:
    victim = cluster.replicas[2]
    start = len(cluster.access_log())
    with Load(cluster.url, load_paths(), threads=4) as load:
        load.wait_sent(40)
        at_kill = len(cluster.access_log())
        cluster.kill(victim.index)
        killed_after = load.sent
        load.wait_sent(killed_after + 150, timeout=60)
    lines = cluster.access_log(at_least=start + load.sent)
    before, after = lines[start:at_kill], lines[at_kill:]
    retried = [ln for ln in after if ln.retried]
    print(f"replica kill ({cluster.shared().kind}): sent {load.sent}, failed {len(load.failed)}, "
          f"retried {len(retried)}")
    assert load.failed == []
    assert any(ln.answered_by == victim.address for ln in before), "the victim served nothing before"
    assert retried and all(ln.status == 200 and ln.upstreams[0] == victim.address for ln in retried)
    assert all(ln.answered_by != victim.address for ln in after[len(retried) + 8:])

    cluster.restart(victim.index)  # back on its port: nginx tries it again after fail_timeout (5 s)
    deadline = time.monotonic() + 20
    seen = len(cluster.access_log())
    with httpx.Client(base_url=cluster.url, trust_env=False, timeout=30) as client:
        while not any(ln.answered_by == victim.address for ln in cluster.access_log()[seen:]):
            assert time.monotonic() < deadline, "nginx never sent the restarted replica a request"
            assert client.get("/iiif/3/load-a.tif/info.json").status_code == 200
            time.sleep(0.1)


def test_the_cache_server_killed_under_load_costs_no_request(cluster: Cluster) -> None:
    paths = load_paths()
    fresh = [p.replace("/0/default.", "/90/default.") for p in paths]  # never asked before: from the sources
    before = cluster.metrics()
    with Load(cluster.url, [p for pair in zip(paths, fresh, strict=True) for p in pair], threads=4) as load:
        load.wait_sent(20)
        cluster.shared().kill()
        at_kill = load.sent
        load.wait_sent(at_kill + 120, timeout=90)
    after = cluster.metrics()
    sources: dict[str, float] = {}
    for b, a in zip(before, after, strict=True):
        for k, v in answered(b, a).items():
            sources[k] = sources.get(k, 0.0) + v
    print(f"cache server kill ({cluster.shared().kind}): sent {load.sent}, failed {len(load.failed)}, "
          f"answered after the kill by source {sources}")
    assert load.failed == []
    local, made = (sum(sources.get(k, 0) for k in kinds) for kinds in (LOCAL_SOURCES, MADE_SOURCES))
    assert local > 0 and made > 0, sources

    cluster.shared().start()  # on its port again: the replicas use it once more
    a, b, _ = cluster.replicas
    deadline = time.monotonic() + 30
    n = 0
    while True:
        n += 1
        path = f"/iiif/3/load-b.tif/{n},0,200,200/100,/0/default.png"
        get(a, path)
        before_b = rendered(b.metrics())
        get(b, path)
        if rendered(b.metrics()) == before_b:
            break
        assert time.monotonic() < deadline, "the replicas did not use the cache server again within 30 s"
        time.sleep(0.5)
