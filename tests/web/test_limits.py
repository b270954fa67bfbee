"""Request limits in front of every route (web/limits.py): the request target (414), the body's size
(413, refused from Content-Length before any of it is read, or as a chunked body passes the limit) and
the time it takes to come (408)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tileserver.settings import Settings

from ..conftest import RGB_TIF, served

MAX_URL = 1000
MAX_BODY = 4000
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


@pytest.fixture(scope="module")
async def client(image_root: Path) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(root=image_root, max_url_bytes=MAX_URL, max_body_bytes=MAX_BODY, body_timeout=0.5)
    async with served(settings) as c:
        yield c


class Body:
    """A request body in `chunks` pieces of `size` bytes (after `head`), counting the pieces read."""

    def __init__(self, head: bytes, chunks: int, size: int = 1000, pause: float = 0.0) -> None:
        self.head, self.chunks, self.size, self.pause = head, chunks, size, pause
        self.read = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        self.read += 1
        yield self.head
        for _ in range(self.chunks):
            await asyncio.sleep(self.pause)
            self.read += 1
            yield b"&" * self.size


def padded(path: str, length: int) -> str:
    """`path` with a query padded by `&` (IIP ignores empty pairs) to a target of `length` bytes."""
    sep = "&" if "?" in path else "?"
    return path + sep + "&" * (length - len(path) - 1)


ROUTES = [
    pytest.param(f"/iip?FIF={RGB_TIF}&OBJ=IIP,1.0", 200, id="iip"),
    pytest.param(f"/iiif/3/{RGB_TIF}/info.json", 200, id="iiif"),
    pytest.param(f"/deepzoom/{RGB_TIF}.dzi", 200, id="deepzoom"),
    pytest.param(f"/zoomify/{RGB_TIF}/ImageProperties.xml", 200, id="zoomify"),
    pytest.param(f"/iiif/manifests/{RGB_TIF}.json", 200, id="manifest"),
    pytest.param(f"/viewer/{RGB_TIF}", 200, id="viewer"),
    pytest.param("/health", 200, id="health"),
    pytest.param("/no/such/route", 404, id="unrouted"),
]


@pytest.mark.parametrize(("path", "status"), ROUTES)
async def test_a_target_at_the_limit_is_answered_past_it_refused(client: httpx.AsyncClient, path: str,
                                                                 status: int) -> None:
    assert (await client.get(padded(path, MAX_URL))).status_code == status
    long = await client.get(padded(path, MAX_URL + 1))
    assert long.status_code == 414
    assert f"at most {MAX_URL}" in long.text and len(long.content) < 200


async def test_a_long_path_is_refused_like_a_long_query(client: httpx.AsyncClient) -> None:
    r = await client.get("/iiif/3/" + "a" * MAX_URL + "/info.json")
    assert r.status_code == 414 and r.headers["cache-control"] == "no-cache"


async def test_a_body_at_the_limit_is_read(client: httpx.AsyncClient) -> None:
    query = f"FIF={RGB_TIF}&OBJ=Max-size".encode()
    body = query + b"&" * (MAX_BODY - len(query))
    r = await client.post("/iip", content=body, headers=FORM)
    assert r.status_code == 200 and r.text == "Max-size:1003 701\r\n"


@pytest.mark.parametrize("declared", [MAX_BODY + 1, 64 * 1024 * 1024])
async def test_a_declared_length_past_the_limit_is_refused_unread(client: httpx.AsyncClient, declared: int) -> None:
    body = Body(f"FIF={RGB_TIF}&OBJ=Max-size".encode(), chunks=declared // 1000)
    r = await client.post("/iip", content=body, headers={**FORM, "Content-Length": str(declared)})
    assert r.status_code == 413 and r.headers["connection"] == "close"
    assert f"at most {MAX_BODY}" in r.text
    assert body.read == 0


async def test_a_chunked_body_is_refused_as_it_passes_the_limit(client: httpx.AsyncClient) -> None:
    body = Body(f"FIF={RGB_TIF}&OBJ=Max-size".encode(), chunks=64 * 1024)  # 64 MB if it were all read
    r = await client.post("/iip", content=body, headers=FORM)
    assert r.status_code == 413 and r.headers["connection"] == "close"
    assert body.read <= MAX_BODY // 1000 + 2


async def test_a_chunked_body_under_the_limit_is_read(client: httpx.AsyncClient) -> None:
    body = Body(f"FIF={RGB_TIF}&OBJ=Max-size".encode(), chunks=3)
    r = await client.post("/iip", content=body, headers=FORM)
    assert r.status_code == 200 and r.text == "Max-size:1003 701\r\n"


async def test_a_body_that_comes_too_slowly_is_a_408(client: httpx.AsyncClient) -> None:
    body = Body(f"FIF={RGB_TIF}&OBJ=Max-size".encode(), chunks=3, size=10, pause=0.3)
    r = await client.post("/iip", content=body, headers=FORM)
    assert r.status_code == 408 and r.headers["connection"] == "close"
    assert body.read < 4


async def test_the_app_keeps_serving_after_refusals(client: httpx.AsyncClient) -> None:
    await client.get(padded("/health", MAX_URL + 1))
    await client.post("/iip", content=b"x" * (MAX_BODY + 1), headers=FORM)
    r = await client.get(f"/iip?FIF={RGB_TIF}&OBJ=Max-size")
    assert r.status_code == 200 and r.text == "Max-size:1003 701\r\n"
