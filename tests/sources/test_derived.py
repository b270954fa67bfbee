"""Large untiled images (sources/derived.py): answered from a preview while a pyramid is derived in the
background, then from the pyramid's stored tiles. Fixtures are generated here (a few thousand pixels,
odd sizes) and the threshold lowered to 1 megapixel; the derived TIFF is read back with tifffile."""

from __future__ import annotations

import asyncio
import gc
import math
import re
import struct
import zlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from email.utils import formatdate
from pathlib import Path
from typing import Any

import httpx
import pytest
import pyvips
import tifffile

from tileserver.app import create_app
from tileserver.core import TileService
from tileserver.models import ImageMeta
from tileserver.settings import Settings
from tileserver.sources.derived import estimate

from ..conftest import decode, max_diff, mean_diff

JPEG = "big-3001x2049.jpg"
PNG = "big-2501x1999.png"
STRIPED = "big-2777x1901-striped.tif"
TWIN = "twin-3001x2049.jpg"
RGBA = "big-rgba-2303x1601.png"
GREY16 = "big-grey16-2111x1703.png"
SMALL = "small-901x601.jpg"
PAGES = "pages-2401x1601-striped.tif"
BAD_PNG = "bad-3001x2001.png"
BAD_TIF = "bad-2001x1501.tif"
OURS = re.compile(r"[0-9a-f]{32}\.(tif|failed)|\.evict\.lock")


def smooth(width: int, height: int, bands: int = 3, seed: int = 0) -> Any:
    """Slow waves (periods of hundreds of pixels), so a preview a sixth of the size still holds them."""
    xyz = pyvips.Image.xyz(width, height)
    x, y = xyz[0], xyz[1]
    waves = [(x * (2 * math.pi / 700) + seed).sin() * 90 + 128, (y * (2 * math.pi / 530) + seed).cos() * 90 + 128,
             ((x + y) * (2 * math.pi / 900)).sin() * 90 + 128, x * (200 / width) + 40]
    img = waves[0].bandjoin(waves[1:bands]) if bands > 1 else waves[2]
    return img.cast("uchar").copy(interpretation="srgb" if bands >= 3 else "b-w")


def broken_png(width: int, height: int) -> bytes:
    """A PNG whose header is right and whose compressed data is not."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    noise = bytes((i * 7919 + 13) % 251 for i in range(40_000))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", noise) + chunk(b"IEND", b""))


def broken_tiff(path: Path) -> None:
    """A striped deflate TIFF whose strips are overwritten with garbage (directory intact)."""
    smooth(2001, 1501).tiffsave(str(path), compression="deflate")
    data = bytearray(path.read_bytes())
    first_ifd = struct.unpack("<I", data[4:8])[0]
    for i in range(16, first_ifd - 16):
        data[i] = (i * 31) % 256
    path.write_bytes(bytes(data))


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("derive")
    root = base / "root"
    root.mkdir()
    smooth(3001, 2049).jpegsave(str(root / JPEG), Q=92)
    smooth(2501, 1999, seed=1).pngsave(str(root / PNG), compression=1)
    smooth(2777, 1901, seed=2).tiffsave(str(root / STRIPED), compression="deflate")  # strips, no tiles
    smooth(3001, 2049, seed=3).jpegsave(str(root / TWIN), Q=92)
    smooth(2303, 1601, bands=4, seed=4).pngsave(str(root / RGBA), compression=1)
    (smooth(2111, 1703, bands=1, seed=5).cast("ushort") * 257).copy(interpretation="grey16").pngsave(
        str(root / GREY16), compression=1)
    smooth(901, 601).jpegsave(str(root / SMALL))
    pyvips.Image.arrayjoin([smooth(2401, 1601), smooth(2401, 1601, seed=6)], across=1).copy(
        interpretation="srgb").tiffsave(str(root / PAGES), page_height=1601, compression="deflate")
    (root / BAD_PNG).write_bytes(broken_png(3001, 2001))
    broken_tiff(root / BAD_TIF)
    outside = base / "outside"
    outside.mkdir()
    smooth(3001, 2049).jpegsave(str(outside / "secret.jpg"))
    (root / "escape.jpg").symlink_to(outside / "secret.jpg")
    return root


def settings(root: Path, folder: Path | None, **extra: Any) -> Settings:
    return Settings(root=root, derive_dir=folder, derive_min_megapixels=1.0, derive_preview_size=512, **extra)


@asynccontextmanager
async def serving(config: Settings) -> AsyncIterator[tuple[httpx.AsyncClient, TileService]]:
    app = create_app(config)
    service: TileService = app.state.service
    service.start()
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
            yield c, service
    finally:
        service.stop()


async def final(service: TileService, ident: str, timeout: float = 60) -> ImageMeta:
    """The image's metadata once it is no longer provisional."""
    for _ in range(int(timeout / 0.05)):
        meta = await service.info(ident)
        if not meta.provisional:
            return meta
        await asyncio.sleep(0.05)
    raise AssertionError(f"{ident} still provisional after {timeout} s")


def key_of(service: TileService, root: Path, name: str) -> str:
    assert service.derivatives is not None
    path = str((root / name).resolve())
    return service.derivatives.key(path, service.derivatives.inner.open(path, name).meta)


def tiles(width: int, height: int) -> list[tuple[tuple[int, int, int, int], int]]:
    """(region in full-resolution pixels, output width): an inner tile of level 0, its right edge tile,
    and a tile of level 2 (a quarter of the size)."""
    edge = (width - 1) // 256 * 256
    return [((256, 256, 256, 256), 256), ((edge, 0, width - edge, 256), width - edge), ((1024, 0, 1024, 1024), 256)]


def url(name: str, box: tuple[int, int, int, int], size: int, fmt: str = "jpg") -> str:
    return f"/iiif/3/{name}/{','.join(map(str, box))}/{size},/0/default.{fmt}"


def expected(original: Any, box: tuple[int, int, int, int], size: int) -> Any:
    region = original.crop(*box)
    return region if size == box[2] else region.resize(size / box[2])


def stored_tile(path: str, page: int, col: int, row: int) -> bytes:
    """A stored JPEG tile of the derived TIFF as a complete JPEG, read with tifffile."""
    with tifffile.TiffFile(path) as tif:
        p = tif.pages[page]
        index = row * -(-p.imagewidth // p.tilewidth) + col
        with open(path, "rb") as f:
            f.seek(p.dataoffsets[index])
            data = f.read(p.databytecounts[index])
        return p.jpegtables[:-2] + data[2:]


@pytest.mark.parametrize("name", [JPEG, PNG, STRIPED], ids=["jpeg", "png", "striped-tiff"])
async def test_preview_while_converting_then_stored_tiles(root: Path, tmp_path: Path, name: str) -> None:
    original = pyvips.Image.new_from_file(str(root / name))
    async with serving(settings(root, tmp_path / "derived")) as (c, service):
        assert service.derivatives is not None
        key = key_of(service, root, name)
        with service.derivatives.store.writing(key):  # another worker is converting it: this one waits
            first_info = await c.get(f"/iiif/3/{name}/info.json")
            assert first_info.status_code == 200
            assert (await service.info(name)).provisional
            for box, size in tiles(original.width, original.height):
                r = await c.get(url(name, box, size))
                assert r.status_code == 200 and r.headers["cache-control"] == "no-store"
                assert "etag" not in r.headers and "last-modified" not in r.headers
                got = decode(r.content)
                want = expected(original, box, size)
                assert (got.width, got.height) == (want.width, want.height)
                assert mean_diff(got, want) < 8  # upsampled from a 512-pixel preview: close, not exact
            replayed = service.replayed
            again = await c.get(url(name, *tiles(original.width, original.height)[0]))
            assert again.headers["cache-control"] == "no-store" and service.replayed == replayed
            assert service.tiles.stats()["entries"] == 0  # nothing provisional in the tile cache
            holder = {"If-Modified-Since": formatdate((root / name).stat().st_mtime + 1, usegmt=True)}
            assert (await c.get(url(name, (256, 256, 256, 256), 256), headers=holder)).status_code == 304
            pfl = await c.get(f"/iip?FIF={name}&PFL=0:0,0-10,0")
            assert pfl.status_code == 503 and pfl.headers["retry-after"]
        meta = await final(service, name)
        assert meta.compression == "jpeg" and all(lv.stored for lv in meta.levels[:3])
        assert (await c.get(f"/iiif/3/{name}/info.json")).content == first_info.content  # same levels, same URLs
        for box, size in tiles(original.width, original.height):
            r = await c.get(url(name, box, size))
            assert r.status_code == 200 and r.headers["cache-control"] == "max-age=86400" and r.headers["etag"]
            got = decode(r.content)
            assert mean_diff(got, expected(original, box, size)) < 2.5  # JPEG error (and libvips' own halving)
        inner = await c.get(url(name, (256, 256, 256, 256), 256))
        assert inner.content == stored_tile(service.derivatives.store.path(key), 0, 1, 1)  # passed through
        assert service.derivatives.counts["converted"] == 1


@pytest.mark.parametrize("name", [RGBA, GREY16], ids=["rgba-png", "grey16-png"])
async def test_alpha_and_16_bit_are_stored_losslessly(root: Path, tmp_path: Path, name: str) -> None:
    async with serving(settings(root, tmp_path / "derived")) as (c, service), \
            serving(settings(root, None)) as (plain, _):
        meta = await final(service, name)
        assert meta.compression == "deflate"
        with tifffile.TiffFile(service.derivatives.store.path(key_of(service, root, name))) as tif:  # type: ignore[union-attr]
            assert tif.pages[0].is_tiled and len(tif.pages) == sum(lv.stored for lv in meta.levels)
        for box, size in tiles(meta.width, meta.height):
            for fmt in ("png", "tif"):
                got = decode((await c.get(url(name, box, size, fmt))).content)
                want = decode((await plain.get(url(name, box, size, fmt))).content)
                if size == box[2]:
                    assert max_diff(got, want) == 0  # level 0: the same samples
                else:
                    # reduced by libvips' pyramid (2x2 means) vs shrunk from the file (alpha premultiplied)
                    assert mean_diff(got, want) < 3


async def test_two_workers_convert_once(root: Path, tmp_path: Path) -> None:
    folder = tmp_path / "derived"
    async with serving(settings(root, folder)) as (a, one), serving(settings(root, folder)) as (b, two):
        ra, rb = await asyncio.gather(a.get(f"/iiif/3/{JPEG}/info.json"), b.get(f"/iiif/3/{JPEG}/info.json"))
        assert ra.status_code == rb.status_code == 200
        await asyncio.gather(final(one, JPEG), final(two, JPEG))
        assert one.derivatives is not None and two.derivatives is not None
        counts = [one.derivatives.counts, two.derivatives.counts]
        assert sum(n["converted"] for n in counts) == 1 and sum(n["reused"] for n in counts) == 1
        tile = url(JPEG, (256, 256, 256, 256), 256)
        assert (await a.get(tile)).content == (await b.get(tile)).content
    assert [p.name for p in folder.iterdir() if p.name.endswith(".tif")] == [f"{key_of(one, root, JPEG)}.tif"]


async def test_the_store_stays_under_its_cap(root: Path, tmp_path: Path) -> None:
    async with serving(settings(root, tmp_path / "probe")) as (_, probe):
        meta = await final(probe, JPEG)
        size = probe.derivatives.store.usage()  # type: ignore[union-attr]
        assert probe.derivatives.stats()["bytes"] == size  # type: ignore[union-attr]
    folder = tmp_path / "derived"
    cap = max(1.25 * size, 1.05 * estimate(meta))  # room for one of the two same-sized pyramids, not both
    assert cap < 2 * size
    cap_mb = cap / 2**20
    async with serving(settings(root, folder, derive_cache_mb=cap_mb, metadata_cache_size=1)) as (c, service):
        assert service.derivatives is not None
        await final(service, JPEG)
        first = service.derivatives.store.path(key_of(service, root, JPEG))
        await service.info(SMALL)  # the one-entry metadata cache lets the first image go: its lease ends
        gc.collect()
        await final(service, TWIN)
        assert service.derivatives.store.usage() <= cap_mb * 2**20
        assert not Path(first).exists()  # evicted, least recently used
        assert Path(service.derivatives.store.path(key_of(service, root, TWIN))).exists()
        assert (await c.get(url(TWIN, (256, 256, 256, 256), 256))).headers["cache-control"] == "max-age=86400"
    async with serving(settings(root, folder, derive_cache_mb=cap_mb)) as (c, service):
        assert service.derivatives is not None
        await final(service, TWIN)  # reused and held
        meta = await final(service, JPEG)  # cannot fit beside the one in use: served from its file
        assert meta.loader == "jpegload" and meta.compression == ""
        assert Path(service.derivatives.store.path(key_of(service, root, TWIN))).exists()
        assert service.derivatives.store.usage() <= cap_mb * 2**20
        r = await c.get(url(JPEG, (256, 256, 256, 256), 256))
        assert r.status_code == 200 and mean_diff(decode(r.content), expected(
            pyvips.Image.new_from_file(str(root / JPEG)), (256, 256, 256, 256), 256)) < 1


@pytest.mark.parametrize("name", [BAD_PNG, BAD_TIF], ids=["png", "striped-tiff"])
async def test_a_corrupt_image_is_a_415_and_leaves_nothing(root: Path, tmp_path: Path, name: str) -> None:
    folder = tmp_path / "derived"
    async with serving(settings(root, folder)) as (c, service):
        for path in (f"/iiif/3/{name}/info.json", url(name, (0, 0, 256, 256), 256), f"/iip?FIF={name}&JTL=0,0"):
            r = await c.get(path)
            assert r.status_code == 415 and str(root) not in r.text
        assert (await c.get(f"/iiif/3/{SMALL}/info.json")).status_code == 200  # still serving
    # no derivative, temporary file, scratch folder or lock: only the record that it failed
    assert {p.name for p in folder.iterdir()} == {f"{key_of(service, root, name)}.failed"}
    async with serving(settings(root, folder)) as (c, service):  # another worker: no second decode
        assert (await c.get(f"/iiif/3/{name}/info.json")).status_code == 415
        assert service.derivatives is not None and service.derivatives.counts["previews"] == 0


async def test_nothing_outside_the_root_is_read_and_nothing_outside_the_store_written(
        root: Path, tmp_path: Path) -> None:
    folder = tmp_path / "derived"
    async with serving(settings(root, folder)) as (c, service):
        for ident in ("escape.jpg", "..%2Foutside%2Fsecret.jpg", "%2E%2E%2Foutside%2Fsecret.jpg"):
            assert (await c.get(f"/iiif/3/{ident}/info.json")).status_code == 404
        assert (await c.get("/iip?FIF=../outside/secret.jpg&JTL=0,0")).status_code == 404
        assert not folder.exists()  # nothing looked at: not even the store's folder was made
        assert not (await service.info(SMALL)).provisional  # below the threshold: read as it is
        assert not folder.exists()
        await final(service, JPEG)
    assert all(OURS.fullmatch(p.name) for p in folder.iterdir())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["derived"]


async def test_pages_after_the_first_are_read_from_the_file(root: Path, tmp_path: Path) -> None:
    async with serving(settings(root, tmp_path / "derived")) as (c, service):
        first = await final(service, PAGES)
        assert first.compression == "jpeg"  # page 0 derived
        second = await service.info(f"{PAGES};page=1")
        assert not second.provisional and second.loader == "tiffload" and second.compression == ""
        r = await c.get(url(f"{PAGES};page=1", (256, 256, 256, 256), 256, "png"))
        want = pyvips.Image.new_from_file(str(root / PAGES), page=1).crop(256, 256, 256, 256)
        assert r.status_code == 200 and max_diff(decode(r.content), want) == 0
        assert (await c.get(url(f"{PAGES};page=2", (0, 0, 256, 256), 256))).status_code == 404
