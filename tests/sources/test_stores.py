"""Images in object storage and behind HTTP (sources/stores.py, sources/vfs.py), against real services on
loopback: moto's S3 server and nginx (tests/stores.py), with StoreProxy in front to count what the store
serves and to inject faults.

Every protocol and every format answers over each store with the pixels the same request gives over
the local folder; a cold tile of a loaded image costs the store one request of at most the tile's bytes
plus 1 KB; store failures are 502/503/504 with Retry-After, logged with the store and key and never
the credentials."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tileserver.settings import Settings
from tileserver.sources import vfs
from tileserver.sources.tiff import TiffFile

from ..conftest import GREY16_TIF, PLAIN_JPG, RGB_TIF, STRIPED_TIF, decode, make_images, max_diff, pattern, served
from ..document_images import DOC_TIF
from ..jp2_images import TILED_RGB
from ..ome_images import FOUR, write
from ..slide_images import make_svs
from ..stores import S3Service, StoreProxy, moto_server, nginx_files

BUCKET = "tileserver-images"
PREFIX = "set/"
SVS = "slide-2000x1500.svs"
PNG = "sub/rgba-300x200.png"
DEFLATE = "rgb-3lvl-1501x1103-tiled-deflate.tif"

# identifier -> the kinds of read it exercises over a store
IMAGES = {
    RGB_TIF: "pyramid TIFF, JPEG tiles: ranged reads, stored tiles passed through",
    GREY16_TIF: "pyramid TIFF, 16-bit deflate: ranged reads, raw tiles inflated",
    STRIPED_TIF: "striped TIFF: copied to the source cache",
    PLAIN_JPG: "JPEG: copied",
    PNG: "PNG with alpha: copied",
    FOUR.name: "OME-TIFF, 4 x 16-bit channels: ranged reads",
    TILED_RGB: "JPEG 2000: copied",
    SVS: "Aperio slide: copied, OpenSlide",
    DOC_TIF + ";page=1": "multi-page TIFF document, a page",
}


def urls(ident: str) -> list[str]:
    """One request per protocol (and the info document) for `ident`."""
    q = ident.replace("/", "%2F").replace(";", "%3B")
    return [f"/iiif/3/{q}/info.json", f"/iiif/3/{q}/full/120,/0/default.png",
            f"/iiif/2/{q}/0,0,256,256/128,/0/default.jpg", f"/fcgi-bin/iipsrv.fcgi?FIF={ident}&WID=90&CVT=png",
            f"/deepzoom/{ident}_files/8/0_0.png", f"/zoomify/{ident}/TileGroup0/0-0-0.jpg"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("stores")
    everything = base / "all"
    make_images(everything)
    root = base / "images"
    (root / "sub").mkdir(parents=True)
    for name in (RGB_TIF, GREY16_TIF, STRIPED_TIF, PLAIN_JPG, PNG, TILED_RGB, DOC_TIF):
        shutil.copy(everything / name, root / name)
    write(root, FOUR)
    pattern(1501, 1103, seed=9).tiffsave(str(root / DEFLATE), tile=True, pyramid=True, compression="deflate",
                                         tile_width=256, tile_height=256)
    make_svs(root / SVS, 2000, 1500)
    return root


@pytest.fixture(scope="module")
def s3(folder: Path) -> Iterator[S3Service]:
    with moto_server() as service:
        service.create_bucket(BUCKET)
        service.upload_tree(BUCKET, folder, PREFIX)
        yield service


@pytest.fixture(scope="module")
def web(folder: Path) -> Iterator[str]:
    with nginx_files(folder.parent) as base:
        yield f"{base}/{folder.name}/"


def s3_settings(s3: S3Service, endpoint: str | None = None, **kw: Any) -> Settings:
    return Settings(root_url=f"s3://{BUCKET}/{PREFIX}", store_endpoint=endpoint or s3.endpoint,
                    store_access_key_id=s3.access_key_id, store_secret_access_key=s3.secret_access_key,
                    store_region=s3.region, derive_dir=None, **kw)


@asynccontextmanager
async def clients(*settings: Settings) -> AsyncIterator[list[httpx.AsyncClient]]:
    async with served(settings[0]) as a:
        if len(settings) == 1:
            yield [a]
            return
        async with served(settings[1]) as b:
            yield [a, b]


def same(local: httpx.Response, remote: httpx.Response, url: str) -> None:
    assert remote.status_code == local.status_code == 200, (url, remote.status_code, remote.text[:200])
    if url.endswith(".json"):
        a, b = local.json(), remote.json()
        assert (a["width"], a["height"], a.get("sizes"), a.get("tiles")) == \
            (b["width"], b["height"], b.get("sizes"), b.get("tiles"))
        return
    x, y = decode(local.content), decode(remote.content)
    assert (x.width, x.height, x.bands) == (y.width, y.height, y.bands), url
    assert max_diff(x, y) == 0, url


@pytest.mark.parametrize("ident", list(IMAGES), ids=[IMAGES[i] for i in IMAGES])
@pytest.mark.parametrize("store", ["s3", "http"])
async def test_every_protocol_and_format_over_every_store(folder: Path, s3: S3Service, web: str, store: str,
                                                          ident: str, tmp_path: Path) -> None:
    remote = (s3_settings(s3, source_cache_dir=tmp_path) if store == "s3" else
              Settings(root_url=web, derive_dir=None, source_cache_dir=tmp_path))
    async with clients(Settings(root=folder, derive_dir=None), remote) as (local, over):
        for url in urls(ident):
            same(await local.get(url), await over.get(url), url)


def stored_tile_bytes(path: Path, level_dir: int, index: int) -> int:
    with path.open("rb") as f:
        tf = TiffFile(f)
        ifd = tf.pages[level_dir]
        return tf.tile_location(lambda n, o: os.pread(f.fileno(), n, o), ifd, index)[1]


@pytest.mark.parametrize("ident", [RGB_TIF, DEFLATE, FOUR.name])
@pytest.mark.parametrize("store", ["s3", "http"])
async def test_a_cold_tile_costs_one_request_of_its_bytes(folder: Path, s3: S3Service, web: str, store: str,
                                                         ident: str) -> None:
    """Metadata loaded (info.json and a first tile), then each full-resolution tile not yet asked for:
    exactly one store request, at most the stored tile's size plus 1 KB (JPEG and deflate tiles, decoded
    by libvips over a custom source); an OME composite reads one tile per channel, each a request of its
    own (its channels' directories lie far apart), fetched at once."""
    upstream = s3.endpoint if store == "s3" else web.split("/images/")[0]
    with StoreProxy(upstream) as proxy:
        settings = (s3_settings(s3, proxy.url, stat_interval=3600) if store == "s3" else
                    Settings(root_url=proxy.url + web[len(upstream):], derive_dir=None, stat_interval=3600))
        async with served(settings) as client:
            info = (await client.get(f"/iiif/3/{ident}/info.json")).json()
            assert info["width"] > 0
            # a first tile: a composite's channel windows come from the smallest level, once per image
            assert (await client.get(f"/iiif/3/{ident}/0,0,256,256/256,/0/default.png")).status_code == 200
            await asyncio.sleep(vfs.STAT_TTL + 0.1)  # reads go by the stat the metadata was loaded with
            for x, y in ((256, 0), (0, 256), (256, 256)):
                proxy.reset()
                r = await client.get(f"/iiif/3/{ident}/{x},{y},256,256/256,/0/default.png")
                assert r.status_code == 200
                counts = proxy.counts()
                with (folder / ident).open("rb") as f:
                    tf = TiffFile(f)
                # the tile's bytes: the channel tiles of an OME composite, one tile otherwise
                pages = [p for p in range(len(tf.pages)) if tf.pages[p].size == (info["width"], info["height"])]
                # one request per stored tile read (an OME channel's directory lies far from the next: its
                # tile is a request of its own, all of them made at once)
                assert counts.requests == len(pages), proxy.exchanges()
                cols = -(-info["width"] // 256)
                total = sum(stored_tile_bytes(folder / ident, p, (y // 256) * cols + x // 256) for p in pages)
                assert counts.bytes <= total + 1024, (counts.bytes, total)


async def test_metadata_is_read_once_per_object_version(s3: S3Service) -> None:
    with StoreProxy(s3.endpoint) as proxy:
        async with served(s3_settings(s3, proxy.url, stat_interval=3600)) as client:
            for _ in range(3):
                assert (await client.get(f"/iiif/3/{RGB_TIF}/info.json")).status_code == 200
            first = proxy.counts().requests
            proxy.reset()
            for _ in range(5):
                assert (await client.get(f"/iiif/3/{RGB_TIF}/info.json")).status_code == 200
            assert proxy.counts().requests == 0
            assert first <= 8  # HEAD, then the directories (a few 4 KiB blocks) and the tile tables in one


async def test_a_changed_object_is_reloaded(folder: Path, s3: S3Service, tmp_path: Path) -> None:
    key = PREFIX + "changing.tif"
    s3.put(BUCKET, key, folder / RGB_TIF)
    async with served(s3_settings(s3, stat_interval=0)) as client:
        first = (await client.get("/iiif/3/changing.tif/info.json")).json()
        s3.put(BUCKET, key, folder / GREY16_TIF)
        await asyncio.sleep(vfs.STAT_TTL + 0.1)
        second = (await client.get("/iiif/3/changing.tif/info.json")).json()
        tile = await client.get("/iiif/3/changing.tif/full/100,/0/default.png")
    assert (first["width"], second["width"]) == (1003, 600)
    assert decode(tile.content).bands == 1


async def test_listing_over_a_store_that_lists(s3: S3Service, web: str) -> None:
    async with served(s3_settings(s3)) as client:
        r = await client.get("/")
        assert r.status_code == 200
        for ident in (RGB_TIF, FOUR.name, PNG):
            assert ident in r.text
        coll = await client.get("/iiif/collections/sub.json")
        assert coll.status_code == 200 and "rgba-300x200.png" in coll.text
    async with served(Settings(root_url=web, derive_dir=None)) as client:
        assert (await client.get("/")).status_code == 200  # nginx cannot list: an empty index


@pytest.mark.parametrize("ident", ["../outside.tif", "sub/../../x.tif", "a\\b.tif", "missing.tif"])
async def test_bad_and_missing_identifiers(s3: S3Service, ident: str) -> None:
    async with served(s3_settings(s3)) as client:
        r = await client.get(f"/iiif/3/{ident.replace('/', '%2F')}/info.json")
        assert r.status_code in (400, 404)
        assert BUCKET not in r.text and "127.0.0.1" not in r.text


# -- store failures ---------------------------------------------------------------------------------
FAULTS = [
    # (fault, proxy arguments, expected status)
    ("503", {"retry_after": 1}, 503),
    ("500", {}, 502),
    ("drop", {}, 502),
    ("stall", {"seconds": 3.0}, 504),
]


@pytest.mark.parametrize(("kind", "args", "status"), FAULTS, ids=[f[0] for f in FAULTS])
@pytest.mark.parametrize("store", ["s3", "http"])
async def test_store_failures_are_answered_with_retry_after(s3: S3Service, web: str, store: str, kind: str,
                                                          args: dict[str, Any], status: int,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    upstream = s3.endpoint if store == "s3" else web.split("/images/")[0]
    limits = {"store_timeout": 1.0, "store_retries": 1, "store_retry_timeout": 2.0}
    with StoreProxy(upstream) as proxy:
        settings = (s3_settings(s3, proxy.url, **limits) if store == "s3" else
                    Settings(root_url=proxy.url + web[len(upstream):], derive_dir=None, **limits))
        async with served(settings) as client:
            assert (await client.get(f"/iiif/3/{RGB_TIF}/info.json")).status_code == 200
            proxy.fail(kind, **args)  # type: ignore[arg-type]
            with caplog.at_level(logging.ERROR, logger="tileserver.sources.vfs"):
                r = await client.get(f"/iiif/3/{RGB_TIF}/512,256,256,256/256,/0/default.png")
            assert r.status_code == status, r.text
            assert int(r.headers["Retry-After"]) >= 1
            assert "127.0.0.1" not in r.text and BUCKET not in r.text
            logged = [rec.getMessage() for rec in caplog.records if rec.name == "tileserver.sources.vfs"]
            assert len(logged) == 1 and RGB_TIF in logged[0]
            assert s3.secret_access_key not in logged[0]
            proxy.clear_faults()
            ok = await client.get(f"/iiif/3/{RGB_TIF}/512,256,256,256/256,/0/default.png")
            assert ok.status_code == 200  # and the server goes on


async def test_a_few_failures_are_retried(s3: S3Service) -> None:
    with StoreProxy(s3.endpoint) as proxy:
        async with served(s3_settings(s3, proxy.url, store_retries=3)) as client:
            assert (await client.get(f"/iiif/3/{RGB_TIF}/info.json")).status_code == 200
            proxy.fail("503", times=2)
            r = await client.get(f"/iiif/3/{RGB_TIF}/0,256,256,256/256,/0/default.png")
            assert r.status_code == 200
            assert [e.status for e in proxy.exchanges()][-3:] == [503, 503, 206]


async def test_refused_credentials_are_a_502_and_never_shown(s3: S3Service,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    wrong = Settings(root_url=f"s3://{BUCKET}/{PREFIX}", store_endpoint=s3.endpoint, store_access_key_id="nobody",
                     store_secret_access_key="wrong-secret-123", store_region=s3.region, derive_dir=None)
    async with served(wrong) as client:
        with caplog.at_level(logging.INFO):
            r = await client.get(f"/iiif/3/{RGB_TIF}/info.json")
    # moto accepts any credentials unless IAM is enforced: then this is a 200; a 502 must not say why
    assert r.status_code in (200, 502)
    assert "wrong-secret-123" not in r.text and all("wrong-secret-123" not in m for m in caplog.messages)


def test_only_mounted_roots_are_read() -> None:
    with pytest.raises(Exception) as info:
        vfs.stat("s3://some-other-bucket/secret.tif")
    assert info.value.__class__.__name__ == "NotFound"
    with pytest.raises(Exception) as info:
        vfs.stat("https://elsewhere.example/x.tif")
    assert info.value.__class__.__name__ == "NotFound"


async def test_the_source_cache_is_bounded(folder: Path, s3: S3Service, tmp_path: Path) -> None:
    """Copies (formats read from files: here JPEG 2000 and PNG) stay within `source_cache_mb`; an object
    larger than the whole cache is a 422."""
    sizes = {name: (folder / name).stat().st_size for name in (TILED_RGB, PNG, PLAIN_JPG)}
    bound = max(sizes[TILED_RGB], sizes[PNG]) * 1.5
    cache = tmp_path / "copies"
    async with served(s3_settings(s3, source_cache_dir=cache, source_cache_mb=bound / 2**20)) as client:
        for ident in (TILED_RGB, PNG, TILED_RGB):
            r = await client.get(f"/iiif/3/{ident.replace('/', '%2F')}/full/64,/0/default.png")
            assert r.status_code == 200
            held = sum(p.stat().st_size for p in cache.iterdir())
            assert held <= bound
    tiny = sizes[PLAIN_JPG] / 2 / 2**20
    async with served(s3_settings(s3, source_cache_dir=tmp_path / "tiny", source_cache_mb=tiny)) as client:
        r = await client.get(f"/iiif/3/{PLAIN_JPG}/info.json")
        assert r.status_code == 422


async def test_readiness_follows_the_store(s3: S3Service) -> None:
    with StoreProxy(s3.endpoint) as proxy:
        async with served(s3_settings(s3, proxy.url, store_timeout=1.0, store_retries=0)) as client:
            assert (await client.get("/health/ready")).status_code == 200
            proxy.fail("500")
            assert (await client.get("/health/ready")).status_code == 503
            proxy.clear_faults()
            assert (await client.get("/health/ready")).status_code == 200
            stores = (await client.get("/health")).json()["stores"]
            assert stores["requests"] >= 1 and stores["failures"] >= 1


def test_libvips_sources_are_let_go(s3: S3Service) -> None:
    """The custom sources libvips reads objects through are kept alive only while an image uses them."""
    import gc

    from tileserver.sources.stores import RemoteSource, options_of

    source = RemoteSource(f"s3://{BUCKET}/{PREFIX}", options_of(s3_settings(s3)))
    loc = source.resolve(RGB_TIF)
    for _ in range(40):
        img = vfs.tiffload(loc, page=1)
        assert img.crop(0, 0, 16, 16).avg() >= 0
        del img
        gc.collect()
    assert len(vfs._sources) <= 3


@pytest.mark.parametrize("store", ["s3", "http"])
def test_serve_a_store_url(folder: Path, s3: S3Service, web: str, store: str, tmp_path: Path) -> None:
    """`tileserver serve s3://...` (AWS variables) and `tileserver serve http://...`, with two workers."""
    from ..live import clean_env, live_tileserver

    root = f"s3://{BUCKET}/{PREFIX}" if store == "s3" else web
    env = clean_env(**(s3.env() if store == "s3" else {}))
    with live_tileserver(root, tmp_path / "serve.log", workers=2, env=env) as base, \
            httpx.Client(base_url=base, trust_env=False, timeout=30) as c:  # type: ignore[arg-type]
        for url in urls(RGB_TIF) + urls(FOUR.name):
            r = c.get(url)
            assert r.status_code == 200, (url, r.text[:200])


def test_the_secret_reaches_every_worker(folder: Path, s3: S3Service, tmp_path: Path) -> None:
    """The secret key given as a setting (not as AWS_SECRET_ACCESS_KEY) is used by the worker processes too,
    and never appears in the settings they are handed or in any page."""
    from ..live import clean_env, live_tileserver

    env = clean_env(TILESERVER_STORE_ENDPOINT=s3.endpoint, TILESERVER_STORE_ACCESS_KEY_ID=s3.access_key_id,
                    TILESERVER_STORE_SECRET_ACCESS_KEY=s3.secret_access_key, TILESERVER_STORE_REGION=s3.region)
    with live_tileserver(f"s3://{BUCKET}/{PREFIX}", tmp_path / "serve.log", workers=2,  # type: ignore[arg-type]
                         env=env) as base, httpx.Client(base_url=base, trust_env=False, timeout=30) as c:
        for _ in range(6):  # answered by both workers
            assert c.get(f"/iiif/3/{RGB_TIF}/full/64,/0/default.jpg").status_code == 200
        for page in ("/", "/health", f"/iiif/3/{RGB_TIF}/info.json"):
            assert s3.secret_access_key not in c.get(page).text
    assert s3.secret_access_key not in (tmp_path / "serve.log").read_text()


async def test_an_http_store_is_ready_though_it_refuses_folders(web: str) -> None:
    async with served(Settings(root_url=web, derive_dir=None)) as client:
        assert (await client.get("/health/ready")).status_code == 200
