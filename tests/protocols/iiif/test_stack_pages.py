"""IIIF identifiers naming a page of an image stack, as iipsrv 1.3's IIIF_DELIMITER defines them
(IIIF.cc): with the delimiter `;`, `stack.tif;2` is page 2 of `stack.tif`, on the path routes and on
`?IIIF=`. Off by default. The shared iipsrv harness does not pass IIIF_DELIMITER through, so these
are checked against our own IIP `SDS=n` and the page's generated pixels, not against a live 1.3."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tileserver.app import create_app
from tileserver.protocols.iiif.urls import Target, split_page
from tileserver.settings import Settings

from ...conftest import RGB_TIF, decode, mean_diff
from ...stack_images import STACK_TIF, stack_page


@pytest.mark.parametrize(
    ("ident", "delimiter", "expected"),
    [
        pytest.param("stack.tif;2", ";", ("stack.tif", 2), id="page"),
        pytest.param("sub/stack.tif;0", ";", ("sub/stack.tif", 0), id="page-0-in-folder"),
        pytest.param("a;b.tif;12", ";", ("a;b.tif", 12), id="last-delimiter"),
        pytest.param("a;b.tif", ";", ("a;b.tif", 0), id="not-digits-stays-a-file"),
        pytest.param("stack.tif;", ";", ("stack.tif;", 0), id="empty-index"),
        pytest.param(";3", ";", (";3", 0), id="no-file"),
        pytest.param("stack.tif;2", "", ("stack.tif;2", 0), id="off"),
        pytest.param("stack.tif__2", "__", ("stack.tif", 2), id="longer-delimiter"),
    ],
)
def test_split_page(ident: str, delimiter: str, expected: tuple[str, int]) -> None:
    got = split_page(Target("info", ident), delimiter)
    assert (got.ident, got.page) == expected


@pytest.fixture(scope="module")
async def paged(image_root: Path) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(Settings(root=image_root, iiif_delimiter=";"))
    app.state.service.start()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        yield c
    app.state.service.stop()


@pytest.mark.parametrize("page", [0, 1, 2])
@pytest.mark.parametrize(
    "url",
    [pytest.param("/iiif/3/{ident}/128,0,256,200/max/0/default.jpg", id="path-v3"),
     pytest.param("/iiif/2/{ident}/full/200,/0/default.png", id="path-v2-scaled"),
     pytest.param("/fcgi-bin/iipsrv.fcgi?IIIF={ident}/128,0,256,200/max/0/default.jpg", id="query")],
)
async def test_page_pixels(paged: httpx.AsyncClient, url: str, page: int) -> None:
    r = await paged.get(url.format(ident=f"{STACK_TIF};{page}"))
    assert r.status_code == 200, r.text
    got = decode(r.content)
    full = stack_page(451, 331, page)
    want = full.crop(128, 0, 256, 200) if got.width == 256 else full.resize(200 / 451, vscale=got.height / 331)
    assert mean_diff(got, want) < 6
    other = stack_page(451, 331, (page + 1) % 3)
    assert mean_diff(got, other.crop(128, 0, 256, 200) if got.width == 256 else
                     other.resize(200 / 451, vscale=got.height / 331)) > 15


async def test_same_pixels_as_sds(paged: httpx.AsyncClient) -> None:
    via_iiif = decode((await paged.get(f"/iiif/3/{STACK_TIF};2/full/max/0/default.png")).content)
    via_iip = decode((await paged.get(f"/fcgi-bin/iipsrv.fcgi?FIF={STACK_TIF}&SDS=2&CVT=png")).content)
    assert mean_diff(via_iiif, via_iip) == 0


async def test_info_of_a_page(paged: httpx.AsyncClient) -> None:
    info = (await paged.get(f"/iiif/3/{STACK_TIF};1/info.json")).json()
    assert info["id"] == f"http://t/iiif/3/{STACK_TIF}%3B1"  # our ids encode all but unreserved characters
    assert (info["width"], info["height"]) == (451, 331)


@pytest.mark.parametrize(
    "url",
    [pytest.param(f"/iiif/3/{STACK_TIF};3/info.json", id="info-past-the-stack"),
     pytest.param(f"/iiif/3/{STACK_TIF};3/full/max/0/default.jpg", id="image-past-the-stack"),
     pytest.param(f"/iiif/3/{RGB_TIF};1/full/max/0/default.jpg", id="single-image")],
)
async def test_missing_page_is_404(paged: httpx.AsyncClient, url: str) -> None:
    assert (await paged.get(url)).status_code == 404


async def test_off_by_default(client: httpx.AsyncClient) -> None:
    assert (await client.get(f"/iiif/3/{STACK_TIF};1/info.json")).status_code == 404
