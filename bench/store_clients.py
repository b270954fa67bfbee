"""obstore against fsspec/s3fs: the two ways to read byte ranges of S3 objects from Python, measured the way
the tile server uses them (sources/vfs.py): many small ranged GETs (a stored tile: 16 KB), from threads.

Starts moto's S3 server and nginx on loopback (tests/stores.py), stores one 8 MB object in both, and for
S3 (obstore's S3Store, fsspec's s3fs) and HTTP (obstore's HTTPStore, fsspec's HTTPFileSystem) each client
measures: the median latency of one HEAD and one 16 KB range GET (one thread, 200 of each), and the ranged
GETs per second with 16 threads (4000 GETs at random offsets), with and without 20 ms added per request
by StoreProxy. Prints a markdown table.

    .venv/bin/python bench/store_clients.py [--requests 4000] [--threads 16]
"""

from __future__ import annotations

import argparse
import functools
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.stores import S3Service, StoreProxy, moto_server, nginx_files

BUCKET, KEY = "bench-clients", "big.bin"
SIZE = 8 << 20  # moto copies an object per ranged GET past ~16 MB (60 ms for 64 MB): keep it below
RANGE = 16 * 1024


def obstore_client(s3: S3Service) -> tuple[Callable[[], Any], Callable[[int], bytes]]:
    import obstore

    store = s3.store(BUCKET)
    return (lambda: obstore.head(store, KEY),
            lambda off: bytes(obstore.get_range(store, KEY, start=off, length=RANGE)))


def s3fs_client(s3: S3Service) -> tuple[Callable[[], Any], Callable[[int], bytes]]:
    import s3fs

    fs = s3fs.S3FileSystem(key=s3.access_key_id, secret=s3.secret_access_key, use_listings_cache=False,
                           client_kwargs={"endpoint_url": s3.endpoint, "region_name": s3.region})
    path = f"{BUCKET}/{KEY}"
    return (lambda: fs.info(path, refresh=True),
            lambda off: fs.cat_file(path, start=off, end=off + RANGE))


def obstore_http(base: str) -> tuple[Callable[[], Any], Callable[[int], bytes]]:
    import obstore
    from obstore.store import HTTPStore

    store = HTTPStore.from_url(base + "/", client_options={"allow_http": True})
    return (lambda: obstore.head(store, KEY),
            lambda off: bytes(obstore.get_range(store, KEY, start=off, length=RANGE)))


def fsspec_http(base: str) -> tuple[Callable[[], Any], Callable[[int], bytes]]:
    import fsspec

    fs = fsspec.filesystem("http")
    url = f"{base}/{KEY}"
    return (lambda: fs.info(url), lambda off: fs.cat_file(url, start=off, end=off + RANGE))


def median_ms(fn: Callable[[], Any], n: int) -> float:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3


def rate(get: Callable[[int], bytes], n: int, threads: int) -> float:
    offsets = [random.randrange(0, SIZE - RANGE) for _ in range(n)]
    t = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        for data in pool.map(get, offsets):
            assert len(data) == RANGE
    return n / (time.perf_counter() - t)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--requests", type=int, default=4000)
    p.add_argument("--threads", type=int, default=16)
    args = p.parse_args()
    rows = []
    data = os.urandom(SIZE)
    with tempfile.TemporaryDirectory() as tmp, moto_server() as s3:
        (Path(tmp) / KEY).write_bytes(data)
        s3.create_bucket(BUCKET)
        s3.put(BUCKET, KEY, data)
        with nginx_files(Path(tmp)) as web:
            for latency in (0.0, 0.02):
                for store, upstream in (("S3 (moto)", s3.endpoint), ("HTTP (nginx)", web)):
                    with StoreProxy(upstream, latency=latency) as proxy:
                        clients = ((("obstore", obstore_client(s3.via(proxy.url))),
                                    ("fsspec/s3fs", s3fs_client(s3.via(proxy.url)))) if store.startswith("S3")
                                   else (("obstore", obstore_http(proxy.url)), ("fsspec/http", fsspec_http(proxy.url))))
                        for name, (head, get) in clients:
                            get(0)  # connect, warm up
                            rows.append((store, name, latency, median_ms(head, 200),
                                         median_ms(functools.partial(get, 4096), 200),
                                         rate(get, args.requests, args.threads)))
    load = os.getloadavg()[0]
    print(f"\nmoto S3 on loopback, {RANGE // 1024} KB ranged GETs, {args.threads} threads, "
          f"load average {load:.1f}\n")
    print(f"| store | client | added latency | HEAD median ms | GET median ms | GETs/s, {args.threads} threads |")
    print("|---|---|---|---|---|---|")
    for store, name, latency, head_ms, get_ms, per_s in rows:
        print(f"| {store} | {name} | {latency * 1e3:.0f} ms | {head_ms:.2f} | {get_ms:.2f} | {per_s:.0f} |")


if __name__ == "__main__":
    main()
