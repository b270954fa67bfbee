"""Bad files get one clear answer in every protocol: 415 (the file is there but is not an image this
server reads), never a 500, no server path in the body, and the process keeps serving."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tileserver.settings import Settings

from .conftest import RGB_TIF, served

BAD_FILES = {
    "empty.tif": b"",
    "text.jpg": b"hello, I am not a JPEG",
    "garbage.png": b"\x89PNG\r\n\x1a\n" + b"\x00garbage" * 64,
    "bad-ifd.tif": b"II*\x00\x00\xff\xff\xff" + b"\x00" * 64,
    "bigtiff-stub.tif": b"II+\x00\x08\x00\x00\x00" + b"\x00" * 8,
    "not-a-tiff.svs": b"MM\x00*\x00\x00\x00\x08" + b"\xff" * 32,
}


def urls(name: str) -> list[str]:
    return [
        f"/fcgi-bin/iipsrv.fcgi?FIF={name}&OBJ=IIP,1.0&OBJ=Max-size",
        f"/iip?FIF={name}&JTL=0,0",
        f"/iip?FIF={name}&WID=100&CVT=png",
        f"/iiif/3/{name}/info.json",
        f"/iiif/2/{name}/full/100,/0/default.jpg",
        f"/deepzoom/{name}.dzi",
        f"/deepzoom/{name}_files/0/0_0.jpg",
        f"/zoomify/{name}/ImageProperties.xml",
        f"/zoomify/{name}/TileGroup0/0-0-0.jpg",
    ]


@pytest.fixture(scope="module")
def bad_root(tmp_path_factory: pytest.TempPathFactory, image_root: Path) -> Path:
    root = tmp_path_factory.mktemp("bad") / "root"
    root.mkdir()
    for name, data in BAD_FILES.items():
        (root / name).write_bytes(data)
    good = (image_root / RGB_TIF).read_bytes()
    (root / "truncated.tif").write_bytes(good[: len(good) // 3])
    (root / RGB_TIF).write_bytes(good)
    return root


@pytest.fixture(scope="module")
async def bad_client(bad_root: Path) -> AsyncIterator[httpx.AsyncClient]:
    async with served(Settings(root=bad_root)) as c:
        yield c


@pytest.mark.parametrize("name", [*BAD_FILES, "truncated.tif"])
async def test_a_bad_file_is_415_everywhere(bad_client: httpx.AsyncClient, bad_root: Path, name: str) -> None:
    root = str(bad_root)
    for url in urls(name):
        r = await bad_client.get(url)
        assert r.status_code == 415, (url, r.status_code, r.text)
        assert root not in r.text and "/tmp" not in r.text, url
        assert r.headers["cache-control"] == "no-cache"


async def test_the_server_keeps_serving(bad_client: httpx.AsyncClient) -> None:
    for name in BAD_FILES:
        await bad_client.get(f"/iip?FIF={name}&JTL=0,0")
    assert (await bad_client.get(f"/iip?FIF={RGB_TIF}&JTL=0,0")).status_code == 200
    assert (await bad_client.get("/iip?FIF=missing.tif&JTL=0,0")).status_code == 404
