"""The store test services of tests/stores.py themselves: nginx answers byte ranges and conditional
requests, moto round-trips objects and ranged reads, and StoreProxy passes requests through unchanged while
it counts, delays and injects each fault."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator

import httpx
import obstore
import pytest

from .stores import FileServer, S3Service, StoreProxy

BUCKET = "helpers"
SMALL = os.urandom(100_003)
LARGE = os.urandom(3_000_017)  # several MB, odd-sized


@pytest.fixture(scope="module")
def files(http_files: FileServer) -> FileServer:
    (http_files.root / "helpers").mkdir(exist_ok=True)
    (http_files.root / "helpers" / "small.bin").write_bytes(SMALL)
    (http_files.root / "helpers" / "large.bin").write_bytes(LARGE)
    return http_files


@pytest.fixture(scope="module")
def s3(s3_service: S3Service) -> S3Service:
    s3_service.create_bucket(BUCKET)
    s3_service.put(BUCKET, "set/small.bin", SMALL)
    return s3_service


@pytest.fixture
def nginx_proxy(files: FileServer) -> Iterator[StoreProxy]:
    with StoreProxy(files.url) as proxy:
        yield proxy


RANGES = [  # Range header -> the slice of SMALL it selects
    pytest.param("bytes=0-0", slice(0, 1), id="first-byte"),
    pytest.param("bytes=1000-5095", slice(1000, 5096), id="middle"),
    pytest.param("bytes=99000-", slice(99000, None), id="open-end"),
    pytest.param("bytes=-777", slice(-777, None), id="suffix"),
]


@pytest.mark.parametrize(("header", "part"), RANGES)
def test_nginx_answers_a_range_with_206_and_those_bytes(files: FileServer, header: str, part: slice) -> None:
    r = httpx.get(files.url_of("helpers/small.bin"), headers={"Range": header}, trust_env=False)
    assert r.status_code == 206
    assert r.content == SMALL[part]
    start = part.start % len(SMALL)
    assert r.headers["content-range"] == f"bytes {start}-{start + len(r.content) - 1}/{len(SMALL)}"


def test_nginx_gives_validators_and_answers_conditionals(files: FileServer) -> None:
    url = files.url_of("helpers/small.bin")
    with httpx.Client(trust_env=False) as c:
        first = c.get(url)
        assert first.status_code == 200 and first.content == SMALL
        etag, modified = first.headers["etag"], first.headers["last-modified"]
        assert c.get(url, headers={"If-None-Match": etag}).status_code == 304
        assert c.get(url, headers={"If-Modified-Since": modified}).status_code == 304
        assert c.get(files.url_of("helpers/missing.bin")).status_code == 404


def test_moto_round_trips_an_object_and_a_ranged_get(s3: S3Service) -> None:
    store = s3.store(BUCKET)
    assert s3.get(BUCKET, "set/small.bin") == SMALL
    assert bytes(obstore.get_range(store, "set/small.bin", start=4096, end=8192)) == SMALL[4096:8192]
    meta = obstore.head(store, "set/small.bin")
    assert meta["size"] == len(SMALL) and meta["e_tag"]
    assert [m["path"] for m in obstore.list(s3.store(BUCKET, "set")).collect()] == ["small.bin"]


def test_moto_bucket_uploads_a_tree(s3: S3Service, tmp_path_factory: pytest.TempPathFactory) -> None:
    tree = tmp_path_factory.mktemp("tree")
    (tree / "a" / "b").mkdir(parents=True)
    (tree / "a" / "b" / "x.bin").write_bytes(b"x" * 1001)
    (tree / "y.bin").write_bytes(b"y" * 3)
    assert s3.upload_tree(BUCKET, tree, prefix="tree/") == ["tree/a/b/x.bin", "tree/y.bin"]
    assert s3.get(BUCKET, "tree/a/b/x.bin") == b"x" * 1001


@pytest.mark.parametrize("service", ["nginx", "s3"])
def test_proxy_counts_a_range_get(service: str, files: FileServer, s3: S3Service) -> None:
    upstream = files.url if service == "nginx" else s3.endpoint
    path = "/helpers/small.bin" if service == "nginx" else f"/{BUCKET}/set/small.bin"
    with StoreProxy(upstream) as proxy:
        if service == "nginx":
            r = httpx.get(proxy.url + path, headers={"Range": "bytes=500-1522"}, trust_env=False)
            assert r.status_code == 206 and r.content == SMALL[500:1523]
        else:
            got = obstore.get_range(s3.via(proxy.url).store(BUCKET), "set/small.bin", start=500, end=1523)
            assert bytes(got) == SMALL[500:1523]
        counts = proxy.counts()
        assert (counts.requests, counts.bytes) == (1, 1023)
        assert counts.path(path) == (1, 1023)
        [ex] = proxy.exchanges()
        assert (ex.method, ex.range, ex.status, ex.fault) == ("GET", "bytes=500-1522", 206, None)
        proxy.reset()
        assert proxy.counts().requests == 0


def test_proxy_passes_conditionals_and_keeps_connections(nginx_proxy: StoreProxy) -> None:
    url = nginx_proxy.url + "/helpers/small.bin"
    with httpx.Client(trust_env=False) as c:
        etag = c.get(url).headers["etag"]
        r = c.get(url, headers={"If-None-Match": etag})
        assert r.status_code == 304 and r.content == b""
        assert c.head(url).headers["content-length"] == str(len(SMALL))
        assert c.get(url, headers={"Range": "bytes=0-9", "If-Range": etag}).content == SMALL[:10]
    assert nginx_proxy.counts().bytes == len(SMALL) + 10


async def test_proxy_serves_many_connections_with_large_bodies(nginx_proxy: StoreProxy) -> None:
    limits = httpx.Limits(max_connections=20, max_keepalive_connections=20)
    async with httpx.AsyncClient(trust_env=False, limits=limits, timeout=30) as c:
        async def fetch(n: int) -> bytes:
            return (await c.get(nginx_proxy.url + "/helpers/large.bin")).content

        bodies = await asyncio.gather(*(fetch(n) for n in range(40)))
    assert all(b == LARGE for b in bodies)
    assert nginx_proxy.counts().path("/helpers/large.bin") == (40, 40 * len(LARGE))


def test_proxy_adds_its_latency_per_request(nginx_proxy: StoreProxy) -> None:
    nginx_proxy.latency = 0.15
    with httpx.Client(trust_env=False) as c:
        start = time.monotonic()
        for _ in range(3):
            assert c.get(nginx_proxy.url + "/helpers/small.bin").status_code == 200
        assert time.monotonic() - start >= 0.45
        nginx_proxy.latency = 0.0
        assert c.get(nginx_proxy.url + "/helpers/small.bin").content == SMALL


@pytest.mark.parametrize(("kind", "retry_after", "status", "header"), [
    pytest.param("503", 3, 503, "3", id="503-retry-after"),
    pytest.param("503", None, 503, None, id="503"),
    pytest.param("500", None, 500, None, id="500"),
    pytest.param("429", 1, 429, "1", id="429-retry-after"),
    pytest.param("403", None, 403, None, id="403"),
])
def test_proxy_answers_injected_statuses(nginx_proxy: StoreProxy, kind: str, retry_after: int | None,
                                         status: int, header: str | None) -> None:
    nginx_proxy.fail(kind, retry_after=retry_after, times=2)  # type: ignore[arg-type]
    url = nginx_proxy.url + "/helpers/small.bin"
    with httpx.Client(trust_env=False) as c:
        for _ in range(2):
            r = c.get(url)
            assert r.status_code == status and r.headers.get("retry-after") == header
            assert b"<Code>" in r.content
        assert c.get(url).content == SMALL  # the fault was for two requests
    assert [ex.status for ex in nginx_proxy.exchanges()] == [status, status, 200]


@pytest.mark.parametrize("kind", ["drop", "drop-mid"])
def test_proxy_drops_connections(nginx_proxy: StoreProxy, kind: str) -> None:
    nginx_proxy.fail(kind, match="small")  # type: ignore[arg-type]
    with httpx.Client(trust_env=False) as c:
        with pytest.raises(httpx.TransportError):
            c.get(nginx_proxy.url + "/helpers/small.bin")
        assert c.get(nginx_proxy.url + "/helpers/large.bin").content == LARGE  # other paths unharmed
        nginx_proxy.clear_faults()
        assert c.get(nginx_proxy.url + "/helpers/small.bin").content == SMALL
    dropped = nginx_proxy.exchanges()[0]
    assert dropped.fault == kind
    assert dropped.bytes == (0 if kind == "drop" else len(SMALL) // 2)


@pytest.mark.parametrize("kind", ["stall", "stall-mid"])
def test_proxy_stalls_and_then_answers(nginx_proxy: StoreProxy, kind: str) -> None:
    nginx_proxy.fail(kind, seconds=0.4, times=1)  # type: ignore[arg-type]
    with httpx.Client(trust_env=False) as c:
        start = time.monotonic()
        assert c.get(nginx_proxy.url + "/helpers/small.bin").content == SMALL
        assert time.monotonic() - start >= 0.4
        nginx_proxy.fail(kind, seconds=2, times=1)  # type: ignore[arg-type]
        with pytest.raises(httpx.ReadTimeout):  # a client that gives up first
            c.get(nginx_proxy.url + "/helpers/small.bin", timeout=0.3)


def test_proxy_rejects_non_loopback_upstreams() -> None:
    with pytest.raises(ValueError, match="loopback"):
        StoreProxy("http://192.0.2.1:80")
