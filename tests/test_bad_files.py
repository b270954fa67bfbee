"""Bad files get one clear answer in every protocol, in-process and from a live server: 415 (the file is
there but is not an image this server can read) with a short message, never a 500, no server path in the
body, and the process keeps serving. A file whose header cannot be read is a 415 for every request; one
whose header reads but whose pixel data is broken (tests/bad_images.py) is described from its header and
is a 415 for every request for pixels."""

from __future__ import annotations

import builtins
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tileserver.settings import Settings

from .bad_images import BROKEN_DATA, GOOD, UNREADABLE, make_bad_images
from .conftest import decode, served
from .live import clean_env, live_process

PROTOCOLS: dict[str, tuple[list[str], list[str]]] = {  # (metadata URLs, pixel URLs) of each protocol
    "iiif": (["/iiif/3/{n}/info.json", "/iiif/2/{n}/info.json"], ["/iiif/3/{n}/full/100,/0/default.jpg"]),
    "iip": (["/iip?FIF={n}&OBJ=IIP,1.0&OBJ=Max-size"], ["/iip?FIF={n}&JTL=0,0", "/iip?FIF={n}&WID=100&CVT=png"]),
    "iipsrv-path": (["/fcgi-bin/iipsrv.fcgi?FIF={n}&OBJ=Resolution-number"], ["/fcgi-bin/iipsrv.fcgi?FIF={n}&JTL=0,0"]),
    "deepzoom": (["/deepzoom/{n}.dzi"], ["/deepzoom/{n}_files/0/0_0.jpg"]),
    "zoomify": (["/zoomify/{n}/ImageProperties.xml"], ["/zoomify/{n}/TileGroup0/0-0-0.jpg"]),
}
CASES = [pytest.param(name, protocol, id=f"{name}-{protocol}") for name in [*UNREADABLE, *BROKEN_DATA]
         for protocol in PROTOCOLS]


def urls(name: str) -> list[str]:
    """Every metadata and pixel URL of every protocol for `name` (other modules' bad-file tests use them)."""
    return [template.format(n=name) for meta, pixels in PROTOCOLS.values() for template in meta + pixels]


def expected(name: str) -> tuple[int, int]:
    """(status of the metadata, status of the pixels)."""
    return (415, 415) if name in UNREADABLE else (200, 415)


def check(r: httpx.Response, status: int, url: str, roots: list[str]) -> None:
    assert r.status_code == status, (url, r.status_code, r.text[:200])
    if status != 200:
        assert r.headers["cache-control"] == "no-cache", url
        assert 0 < len(r.text) < 100, (url, r.text)
        assert not any(root in r.text for root in roots) and "/tmp" not in r.text, (url, r.text)


@pytest.fixture(scope="module")
def bad_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("bad") / "root"
    make_bad_images(root)
    return root


@pytest.fixture(scope="module")
async def bad_client(bad_root: Path) -> AsyncIterator[httpx.AsyncClient]:
    async with served(Settings(root=bad_root, derive_dir=None)) as c:
        yield c


@pytest.fixture(scope="module")
def live_base(bad_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    work = tmp_path_factory.mktemp("bad-server")
    env = clean_env(TILESERVER_DERIVE_DIR=str(work / "derived"), TMPDIR=str(work))
    with live_process(bad_root, work / "server.log", workers=1, env=env) as (base, _):
        yield base


@pytest.mark.parametrize(("name", "protocol"), CASES)
async def test_in_process(bad_client: httpx.AsyncClient, bad_root: Path, name: str, protocol: str) -> None:
    meta_status, pixel_status = expected(name)
    meta_urls, pixel_urls = PROTOCOLS[protocol]
    for template, status in [(u, meta_status) for u in meta_urls] + [(u, pixel_status) for u in pixel_urls]:
        url = template.format(n=name)
        check(await bad_client.get(url), status, url, [str(bad_root)])


@pytest.mark.parametrize("name", [*UNREADABLE, *BROKEN_DATA])
def test_live(live_base: str, bad_root: Path, name: str) -> None:
    """Every protocol of one live server, for each bad file."""
    meta_status, pixel_status = expected(name)
    with httpx.Client(base_url=live_base, timeout=30) as c:
        for meta_urls, pixel_urls in PROTOCOLS.values():
            for template, status in [(u, meta_status) for u in meta_urls] + [(u, pixel_status) for u in pixel_urls]:
                url = template.format(n=name)
                check(c.get(url), status, url, [str(bad_root)])


def test_the_live_server_keeps_serving(live_base: str) -> None:
    with httpx.Client(base_url=live_base, timeout=30) as c:
        for name in [*UNREADABLE, *BROKEN_DATA]:
            assert c.get(f"/iip?FIF={name}&JTL=0,0").status_code == 415
        for good in GOOD.values():
            r = c.get(f"/iiif/3/{good}/full/120,/0/default.png")
            assert r.status_code == 200, (good, r.text)
            assert decode(r.content).width == 120
        assert c.get("/iip?FIF=missing.tif&JTL=0,0").status_code == 404


async def test_a_file_without_read_permission(bad_root: Path, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """chmod 000 (as root, which reads it anyway, the open is refused here as the kernel would refuse it)."""
    root = tmp_path / "root"
    root.mkdir()
    locked = root / "locked.tif"
    locked.write_bytes((bad_root / GOOD["tif"]).read_bytes())
    locked.chmod(0)
    if os.geteuid() == 0:
        real_open = builtins.open

        def refusing(file: Any, *args: Any, **kwargs: Any) -> Any:
            if str(file) == str(locked.resolve()):
                raise PermissionError(13, "Permission denied", str(file))
            return real_open(file, *args, **kwargs)

        monkeypatch.setattr(builtins, "open", refusing)
    async with served(Settings(root=root, derive_dir=None)) as c:
        for meta_urls, pixel_urls in PROTOCOLS.values():
            for template in meta_urls + pixel_urls:
                url = template.format(n="locked.tif")
                check(await c.get(url), 415, url, [str(root)])
