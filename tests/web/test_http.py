"""Conditional requests (web/http.py): a date that cannot be read (found by tests/test_fuzz.py: a year
past the C range overflowed into a 500) is ignored, so the full answer comes, in every protocol."""

from __future__ import annotations

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
