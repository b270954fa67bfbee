"""Conditional requests (web/http.py): a date that cannot be read (found by tests/test_fuzz.py: a year
past the C range overflowed into a 500) is ignored, so the full answer comes, in every protocol."""

from __future__ import annotations

import re
from email.utils import formatdate

import httpx
import pytest

from ..conftest import RGB_TIF

URLS = [f"/iip?FIF={RGB_TIF}&JTL=1,0", f"/iiif/3/{RGB_TIF}/info.json", f"/iiif/2/{RGB_TIF}/full/64,/0/default.jpg",
        f"/deepzoom/{RGB_TIF}.dzi", f"/zoomify/{RGB_TIF}/TileGroup0/0-0-0.jpg"]


@pytest.mark.parametrize("since", [
    pytest.param("1 Jan 99999999999 00:00:00 GMT", id="year-overflows"),
    pytest.param("Feb 99999999999 00:00:00 GMT -0000", id="year-overflows-no-day"),
    pytest.param("01 Jan 1 00:00:00 +9999", id="offset-past-a-day"),
    pytest.param("Sat, 01 Jan 10000 00:00:00 GMT", id="year-10000"),
    pytest.param("garbage", id="garbage"),
])
@pytest.mark.parametrize("url", URLS)
async def test_an_unreadable_if_modified_since_is_ignored(client: httpx.AsyncClient, url: str, since: str) -> None:
    r = await client.get(url, headers={"If-Modified-Since": since})
    assert r.status_code == 200, r.text
    assert r.content and "ETag" in r.headers


@pytest.mark.parametrize("url", URLS)
async def test_a_later_if_modified_since_is_a_304(client: httpx.AsyncClient, url: str) -> None:
    r = await client.get(url, headers={"If-Modified-Since": formatdate(4102444800, usegmt=True)})  # in 2100
    assert r.status_code == 304 and not r.content


@pytest.mark.parametrize("url", URLS)
async def test_responses_name_their_image_for_cdn_purges(client: httpx.AsyncClient, url: str) -> None:
    """Surrogate-Key (Fastly, Varnish xkey) and Cache-Tag (Cloudflare, Akamai): one token per image, the same in
    every protocol, for the first answer and its replays, header-safe whatever the identifier."""
    from tileserver.core import surrogate_key

    answers = [await client.get(url) for _ in range(2)]  # the second is replayed
    for r in answers:
        assert r.status_code == 200
        assert r.headers["surrogate-key"] == r.headers["cache-tag"] == surrogate_key(RGB_TIF)
    assert re.fullmatch(r"img-[0-9a-f]{20}", surrogate_key(RGB_TIF))


@pytest.mark.parametrize("ident", ["doc.tif;page=2", "doc.tif;c=1:0-10:ff0000", "doc.tif"])
def test_an_image_and_its_selections_share_one_surrogate_key(ident: str) -> None:
    from tileserver.core import generation_name, surrogate_key

    assert generation_name(ident) == "doc.tif" and surrogate_key(ident) == surrogate_key("doc.tif")
    assert surrogate_key("a\r\nb;page=x").startswith("img-")  # odd identifiers still give a plain token
