"""Fuzzing every URL grammar in-process: Hypothesis builds requests from tests/fuzz_urls.py (valid,
near-valid and hostile values in IIP, IIIF 3.0/2.1, DeepZoom, Zoomify, manifests and pages) against
one app over small fixture images (pyramid TIFF, JPEG 2000, SVS, OME-TIFF, documents, a stack, a
sequence, a bad file and a symlink out of the root). No answer may be a 5xx, hold a server path or
a traceback, and the server still answers a known-good request at the end. Requests reach the app
as a server would pass them on (`asgi_request`: the target byte for byte, `..` segments included,
which an HTTP client library would remove). The examples are derandomized and bounded so the module
stays well under a minute; bench/fuzz.py runs the same generators for 100,000 URLs per protocol
against a live server."""

from __future__ import annotations

import asyncio
import traceback
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.types import ASGIApp, Message

from tileserver.settings import Settings

from .conftest import decode, served_app
from .fuzz_urls import (
    IDENTS,
    PROTOCOLS,
    PYRAMID,
    SEQUENCE,
    FuzzRequest,
    Gen,
    Needles,
    check,
    fuzz_request,
    make_fuzz_root,
)

EXAMPLES = {"iip": 600, "iiif": 600, "deepzoom": 300, "zoomify": 300, "pages": 300, "otherwise": 400}
FUZZ = settings(deadline=timedelta(seconds=30), derandomize=True, database=None, print_blob=False,
                suppress_health_check=[HealthCheck.too_slow])


class HypothesisSource:
    """Draws through Hypothesis, so a failing request shrinks to a small one."""

    def __init__(self, draw: Callable[[Any], Any]) -> None:
        self.draw = draw

    def integer(self, lo: int, hi: int) -> int:
        value: int = self.draw(st.integers(lo, hi))
        return value


@st.composite
def requests(draw: Callable[[Any], Any], protocol: str) -> FuzzRequest:
    return fuzz_request(Gen(HypothesisSource(draw)), protocol)


@dataclass
class Answer:
    status: int
    headers: list[tuple[str, str]]
    body: bytes


async def asgi_request(app: ASGIApp, req: FuzzRequest, timeout: float = 60) -> Answer:
    """`req` through the ASGI app as uvicorn hands a request on: `raw_path` as sent, `path` its
    percent-decoding, the query string as sent. An exception out of the app becomes a 500 carrying
    its traceback (the check then reports both)."""
    raw_path, _, query = req.target.partition("?")
    headers = [(k.lower().encode(), v.encode("latin-1")) for k, v in req.headers]
    if not any(k == b"host" for k, _ in headers):
        headers.insert(0, (b"host", b"t"))
    if req.body:
        headers.append((b"content-length", str(len(req.body)).encode()))
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": req.method,
             "scheme": "http", "path": unquote(raw_path), "raw_path": raw_path.encode(), "root_path": "",
             "query_string": query.encode(), "headers": headers, "client": ("127.0.0.1", 50000),
             "server": ("t", 80)}
    messages = [{"type": "http.request", "body": req.body, "more_body": False}]
    answer = Answer(0, [], b"")

    async def receive() -> Message:
        if messages:
            return messages.pop()
        await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        if message["type"] == "http.response.start":
            answer.status = message["status"]
            answer.headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in message.get("headers", [])]
        elif message["type"] == "http.response.body":
            answer.body += message.get("body", b"")

    try:
        await asyncio.wait_for(app(scope, receive, send), timeout)
    except Exception:
        return Answer(500, answer.headers, answer.body + traceback.format_exc().encode())
    return answer


Fuzzed = tuple[ASGIApp, Needles]


@pytest.fixture(scope="module")
def fuzz_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fuzz") / "root"
    make_fuzz_root(root)
    return root


@pytest.fixture(scope="module")
async def fuzzed(fuzz_root: Path) -> AsyncIterator[Fuzzed]:
    # outputs up to 1500 px: the grammar is what is fuzzed here, not the cost of 5000-px AVIF exports
    config = Settings(root=fuzz_root, max_size=1500, derive_dir=fuzz_root.parent / "derived")
    async with served_app(config) as app:
        yield app, Needles.for_root(fuzz_root)


@pytest.fixture(scope="module")
async def fuzzed_otherwise(fuzz_root: Path) -> AsyncIterator[Fuzzed]:
    """The settings that change what the grammars accept: IIIF 2.1 by default with a page delimiter and
    no upscaling, an area cap, DeepZoom tiles of 254 with overlap, Zoomify tiers rounded down, no CORS."""
    config = Settings(root=fuzz_root, max_size=1500, max_area=400_000, allow_upscaling=False, iiif_version=2,
                      iiif_delimiter=";", deepzoom_tile_size=254, deepzoom_overlap=1, zoomify_rounding="down",
                      cors="", derive_dir=fuzz_root.parent / "derived")
    async with served_app(config) as app:
        yield app, Needles.for_root(fuzz_root)


async def fuzz_one(fuzzed: Fuzzed, req: FuzzRequest) -> None:
    app, needles = fuzzed
    a = await asgi_request(app, req)
    problems = check(req, a.status, a.headers, a.body, needles)
    assert not problems, f"{req} -> {a.status}: {problems} {a.body[:2000]!r}"


@settings(FUZZ, max_examples=EXAMPLES["iip"])
@given(req=requests("iip"))
async def test_iip(fuzzed: Fuzzed, req: FuzzRequest) -> None:
    await fuzz_one(fuzzed, req)


@settings(FUZZ, max_examples=EXAMPLES["iiif"])
@given(req=requests("iiif"))
async def test_iiif(fuzzed: Fuzzed, req: FuzzRequest) -> None:
    await fuzz_one(fuzzed, req)


@settings(FUZZ, max_examples=EXAMPLES["deepzoom"])
@given(req=requests("deepzoom"))
async def test_deepzoom(fuzzed: Fuzzed, req: FuzzRequest) -> None:
    await fuzz_one(fuzzed, req)


@settings(FUZZ, max_examples=EXAMPLES["zoomify"])
@given(req=requests("zoomify"))
async def test_zoomify(fuzzed: Fuzzed, req: FuzzRequest) -> None:
    await fuzz_one(fuzzed, req)


@settings(FUZZ, max_examples=EXAMPLES["pages"])
@given(req=requests("pages"))
async def test_pages(fuzzed: Fuzzed, req: FuzzRequest) -> None:
    await fuzz_one(fuzzed, req)


@settings(FUZZ, max_examples=EXAMPLES["otherwise"])
@given(data=st.data())
async def test_every_protocol_with_other_settings(fuzzed_otherwise: Fuzzed, data: st.DataObject) -> None:
    protocol = data.draw(st.sampled_from(sorted(PROTOCOLS)))
    await fuzz_one(fuzzed_otherwise, data.draw(requests(protocol)))


async def test_the_server_still_answers(fuzzed: Fuzzed) -> None:
    app, _ = fuzzed
    a = await asgi_request(app, FuzzRequest("GET", f"/iip?FIF={PYRAMID}&WID=200&CVT=png"))
    assert a.status == 200
    img = decode(a.body)
    assert (img.width, img.height) == (200, 150)
    a = await asgi_request(app, FuzzRequest("GET", f"/deepzoom/{PYRAMID}_files/10/1_0.jpg"))
    assert a.status == 200 and (decode(a.body).width, decode(a.body).height) == (128, 128)


@pytest.mark.parametrize("target", [
    pytest.param("/iip?FIF=../outside/secret.tif&OBJ=Max-size", id="iip-dotdot"),
    pytest.param("/iiif/3/sub/../escape.tif/info.json", id="iiif-dotdot-raw"),
    pytest.param("/deepzoom/sub/../../outside/secret.tif.dzi", id="deepzoom-dotdot"),
])
async def test_traversal_reaches_the_app_unnormalised(fuzzed: Fuzzed, target: str) -> None:
    """The driver passes `..` through as sent (a client library would have removed it), and the
    server refuses it."""
    app, needles = fuzzed
    a = await asgi_request(app, FuzzRequest("GET", target))
    assert a.status in (400, 404) and not check(FuzzRequest("GET", target), a.status, a.headers, a.body, needles)
    assert b"Width" not in a.body and b"61" not in a.body


def test_the_fixture_root_holds_every_identifier(tmp_path: Path) -> None:
    make_fuzz_root(tmp_path / "root")
    for ident in IDENTS:
        assert ident == SEQUENCE or (tmp_path / "root" / ident).exists(), ident
    assert (tmp_path / "root" / f"{SEQUENCE}_pyr_000_090.tif").is_file()
