"""The front (web/front.py): GET requests answered in `tileserver serve`'s HTTP protocol (web/server.py), before an
ASGI cycle, with exactly the bytes the full stack sends (status line, headers but Date and Server-Timing durations,
body), cold and repeated, over every protocol's tile URLs; everything it must not answer goes down the full stack;
pipelined requests keep their order, HTTP/1.0 and `Connection: close` close, the keep-alive timer is armed once;
forwarded headers count as the trusted-proxy middleware has them; its answers are counted, logged and cached as the
full stack's are. Driven in-process: uvicorn's protocol over a recording transport, apps with the front on and
off."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from starlette.applications import Starlette
from uvicorn.server import ServerState

from tileserver import errors
from tileserver.app import create_app
from tileserver.core import TileService
from tileserver.imaging import turbojpeg
from tileserver.settings import Settings
from tileserver.web.front import Front
from tileserver.web.lean import first_route
from tileserver.web.server import FRONT_BUFFER, GuardedProtocol, HeadLimits

from ..conftest import RGB_TIF, decode
from .transport import Recording

CROPS = turbojpeg.library() is not None  # edge tiles cropped from the stored tile (else re-encoded in the pool)


@dataclass
class Reply:
    status: int
    head: list[tuple[bytes, bytes]]  # as sent, in order
    body: bytes

    def header(self, name: bytes) -> bytes | None:
        return next((v for k, v in self.head if k == name), None)

    def comparable(self) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        """All but Date, and Server-Timing's stages without their durations (`decode;dur=1.23` -> `decode`)."""
        head = [(k, re.sub(rb";dur=[0-9.]+", b"", v) if k == b"server-timing" else v) for k, v in self.head
                if k != b"date"]
        return self.status, head, self.body


def replies(stream: bytes, methods: list[str]) -> list[Reply] | None:
    """The responses in `stream`, one per method (HEAD: no body), or None while they are incomplete."""
    out = []
    for method in methods:
        head, sep, rest = stream.partition(b"\r\n\r\n")
        if not sep:
            return None
        lines = head.split(b"\r\n")
        fields = [tuple(line.split(b": ", 1)) for line in lines[1:]]
        status = int(lines[0].split()[1])
        length = 0 if method == "HEAD" or status in (204, 304) else int(dict(fields).get(b"content-length", b"0"))
        assert b"transfer-encoding" not in dict(fields)
        if len(rest) < length:
            return None
        out.append(Reply(status, fields, rest[:length]))  # type: ignore[arg-type]
        stream = rest[length:]
    assert stream == b""  # nothing more than was asked for
    return out


class Connection:
    """One client connection to `app` through `GuardedProtocol`, in-process."""

    def __init__(self, app: Starlette, peer: str = "127.0.0.1", limit: int | None = None) -> None:
        config = uvicorn.Config(app, lifespan="off", proxy_headers=False, server_header=False, date_header=False,
                                access_log=False, limit_concurrency=limit)
        config.load()
        self.transport = Peer(peer)
        self.protocol = GuardedProtocol(config=config, server_state=ServerState(), app_state={},
                                        limits=HeadLimits.of(app.state.settings))
        self.protocol.connection_made(self.transport)
        self.seen = 0

    async def send(self, data: bytes, methods: list[str]) -> list[Reply]:
        self.protocol.data_received(data)
        for _ in range(2000):
            stream = b"".join(self.transport.writes)[self.seen:]
            got = replies(stream, methods)
            if got is not None:
                self.seen += len(stream)
                return got
            await asyncio.sleep(0.005)
        raise AssertionError(f"no whole answer to {data!r}")

    async def get(self, target: str, method: str = "GET", headers: dict[str, str] | None = None,
                  version: str = "1.1") -> Reply:
        lines = [f"{method} {target} HTTP/{version}", "Host: tiles.test", *(f"{k}: {v}" for k, v in
                                                                            (headers or {}).items())]
        return (await self.send(("\r\n".join(lines) + "\r\n\r\n").encode(), [method]))[0]


class Peer(Recording):
    def __init__(self, host: str) -> None:
        super().__init__()
        self.host = host

    def get_extra_info(self, name: str, default: object = None) -> object:
        return {"sockname": ("127.0.0.1", 8000), "peername": (self.host, 50000)}.get(name, default)


@pytest.fixture
def root(tmp_path: Path, image_root: Path) -> Path:
    shutil.copy(image_root / RGB_TIF, tmp_path / "a.tif")
    return tmp_path


def settings_of(root: Path, **more: Any) -> Settings:
    return Settings(**{"root": root, "cors": "*", "stat_interval": 60, "warm_up": False, **more})


@pytest.fixture
def answered(monkeypatch: pytest.MonkeyPatch) -> list[str | None]:
    """How the front took each request it was asked about, in order: "now", "later" (a render it awaits) or None
    (left to the full stack)."""
    seen: list[str | None] = []
    original = Front.answer

    def spy(self: Front, scope: Any) -> Any:
        out = original(self, scope)
        seen.append(None if out is None else "now" if isinstance(out, tuple) else "later")
        return out

    monkeypatch.setattr(Front, "answer", spy)
    return seen


@pytest.fixture
async def apps(root: Path) -> AsyncIterator[tuple[Starlette, Starlette]]:
    async for both in pair(settings_of(root)):
        yield both


async def pair(settings: Settings) -> AsyncIterator[tuple[Starlette, Starlette]]:
    """Two apps of `settings`, running, each with caches of its own: the front on, and off."""
    on, off = create_app(settings), create_app(settings.model_copy(update={"front": False}))
    assert on.state.front is not None and off.state.front is None
    async with on.router.lifespan_context(on), off.router.lifespan_context(off):
        yield on, off


async def primed(apps: tuple[Starlette, Starlette]) -> tuple[Connection, Connection]:
    """A connection to each app, after an info.json has loaded the image's metadata and probed the formats."""
    on, off = Connection(apps[0]), Connection(apps[1])
    for c in (on, off):
        assert (await c.get("/iiif/3/a.tif/info.json")).status == 200
    return on, off


# (url, how the front takes it when first asked after the image's metadata is known, when asked again):
# "now", "later" (rendered in the pool, or its image's metadata loaded first: `Pending`), None (the full stack's),
# "?" (either of now and later: it depends on how the image is stored, not on the front)
EDGE = "now" if CROPS else "later"  # edge tiles are cropped from the stored tile on the loop, else re-encoded
URLS = [
    pytest.param("/iip?FIF=a.tif&JTL=2,1", "now", "now", id="iip-stored-tile"),
    pytest.param("/fcgi-bin/iipsrv.fcgi?FIF=a.tif&JTL=2,3", EDGE, "now", id="iip-edge-tile"),
    pytest.param("/fcgi-bin/iipsrv.fcgi?FIF=a.tif&QLT=60&JTL=2,3", "now", "now", id="iip-recoded-on-the-loop"),
    pytest.param("/fcgi-bin/iipsrv.fcgi?FIF=a.tif&QLT=60&JTL=1,1", "now", "now", id="iip-recoded-whole-tile"),
    pytest.param("/iip?FIF=a.tif&CNT=1.5&JTL=2,3", "later", "now", id="iip-processed-in-the-pool"),
    pytest.param("/iip?fif=a.tif&jtl=0,0", "now", "now", id="iip-lower-case"),
    pytest.param("/iip?FIF=a.tif&WID=200&CVT=jpeg", "later", "now", id="iip-cvt"),
    pytest.param("/iip?FIF=a.tif&JTL=2,999", None, None, id="iip-tile-out-of-range"),
    pytest.param("/iip?FIF=missing.tif&JTL=0,0", "later", "later", id="iip-missing-image"),  # its load awaited
    pytest.param("/iip?FIF=a.tif&JTL=x,y", None, None, id="iip-bad-jtl"),
    pytest.param("/iip?FIF=a.tif&OBJ=IIP,1.0&OBJ=Max-size", None, "now", id="iip-obj-replayed"),
    pytest.param("/iiif/3/a.tif/0,0,256,256/256,/0/default.jpg", "now", "now", id="iiif3-stored-tile"),
    pytest.param("/iiif/a.tif/768,512,235,189/235,/0/default.jpg", EDGE, "now", id="iiif-edge-tile"),
    pytest.param("/iiif/2/a.tif/full/100,/0/gray.png", "later", "now", id="iiif2-png"),
    pytest.param("/iiif/3/a.tif/0,0,512,512/256,/0/default.bogus", None, None, id="iiif-bad-format"),
    pytest.param("/iiif/3/a.tif/nope/max/0/default.jpg", None, None, id="iiif-bad-region"),
    pytest.param("/iiif/3/missing.tif/full/max/0/default.jpg", "later", "later", id="iiif-missing-image"),
    pytest.param("/iiif/2/a.tif/info.json", None, "now", id="iiif-info-replayed"),
    pytest.param("/deepzoom/a.tif_files/10/1_1.jpg", "?", "now", id="deepzoom"),
    pytest.param("/deepzoom/a.tif_files/10/99_1.jpg", None, None, id="deepzoom-out-of-range"),
    pytest.param("/deepzoom/a.tif.dzi", None, None, id="dzi-not-replayed"),
    pytest.param("/zoomify/a.tif/TileGroup0/2-1-1.jpg", "?", "now", id="zoomify"),
    pytest.param("/zoomify/a.tif/TileGroup0/9-0-0.jpg", None, None, id="zoomify-out-of-range"),
    pytest.param("/iiif/manifests/a.tif.json", None, None, id="manifest"),
    pytest.param("/health", None, None, id="health"),
]


@pytest.mark.parametrize(("url", "cold", "again"), URLS)
async def test_the_front_answers_exactly_as_the_full_stack(apps: tuple[Starlette, Starlette],
                                                           answered: list[str | None], url: str, cold: str | None,
                                                           again: str | None) -> None:
    on, off = await primed(apps)
    answered.clear()
    for method in ("GET", "GET", "HEAD"):  # cold, then replayed or remembered, then HEAD (never the front's)
        mine, theirs = await on.get(url, method), await off.get(url, method)
        assert mine.comparable() == theirs.comparable()
    for expected, took in zip((cold, again), answered, strict=True):
        assert took in ("now", "later") if expected == "?" else took == expected
    assert len(answered) == 2  # a HEAD is never put to it
    if mine.status == 200 and mine.header(b"content-type", ).startswith(b"image/"):  # type: ignore[union-attr]
        got = await on.get(url)
        assert decode(got.body).width > 0
        etag = got.header(b"etag")
        assert etag is not None
        for headers in ({"If-None-Match": etag.decode()}, {"Range": "bytes=0-9"}, {"Origin": "https://x.test"},
                        {"If-Modified-Since": "Tue, 01 Dec 2026 00:00:00 GMT"}):
            answered.clear()
            mine, theirs = await on.get(url, headers=headers), await off.get(url, headers=headers)
            assert mine.comparable() == theirs.comparable()
            assert answered == [None]


async def test_a_tile_of_an_image_not_yet_known_waits_in_the_front_for_its_metadata(
        apps: tuple[Starlette, Starlette], answered: list[str | None], monkeypatch: pytest.MonkeyPatch) -> None:
    """The image's metadata is loaded as the endpoint loads it (`Pending`), once however many requests wait for it,
    and the tile then answered by the front: what the full stack sends, without its ASGI cycle."""
    on, off = Connection(apps[0]), Connection(apps[1])
    service = apps[0].state.service
    loads = []
    load = service._load
    monkeypatch.setattr(service, "_load", lambda *args: loads.append(args[0]) or load(*args))
    urls = [f"/iip?FIF=a.tif&JTL=2,{i}" for i in range(8)]
    mine = await asyncio.gather(*(Connection(apps[0]).get(u) for u in urls))  # eight connections at once
    theirs = [await off.get(u) for u in urls]
    assert [m.comparable() for m in mine] == [t.comparable() for t in theirs]
    assert answered == ["later"] * 8 and loads == ["a.tif"]
    assert (await on.get("/iip?FIF=a.tif&JTL=2,9")).comparable() == (await off.get("/iip?FIF=a.tif&JTL=2,9")
                                                                     ).comparable()
    assert answered[8:] == ["now"]


async def test_pipelined_requests_keep_their_order(apps: tuple[Starlette, Starlette],
                                                   answered: list[str | None]) -> None:
    on, off = await primed(apps)
    urls = ["/iip?FIF=a.tif&JTL=2,1", "/iip?FIF=a.tif&CNT=1.5&JTL=2,2", "/iip?FIF=a.tif&JTL=2,0",
            "/deepzoom/a.tif.dzi", "/iip?FIF=a.tif&JTL=2,1"]
    data = b"".join(f"GET {u} HTTP/1.1\r\nHost: tiles.test\r\n\r\n".encode() for u in urls)
    answered.clear()
    mine = await on.send(data, ["GET"] * len(urls))
    theirs = await off.send(data, ["GET"] * len(urls))
    assert [r.comparable() for r in mine] == [r.comparable() for r in theirs]
    assert answered == ["now", "later"]  # the rest waited behind the render, for the full stack
    alone = [await Connection(apps[1]).get(u) for u in urls]
    assert [r.body for r in mine] == [r.body for r in alone]
    assert not on.transport.closed


@pytest.mark.parametrize(("version", "headers"), [("1.0", {}), ("1.1", {"Connection": "close"})])
async def test_a_connection_that_ends_is_closed_after_the_answer(apps: tuple[Starlette, Starlette],
                                                                 answered: list[str | None], version: str,
                                                                 headers: dict[str, str]) -> None:
    on, off = await primed(apps)
    url = "/iip?FIF=a.tif&JTL=2,1"
    answered.clear()
    mine, theirs = await on.get(url, headers=headers, version=version), await off.get(url, headers=headers,
                                                                                       version=version)
    assert answered == ["now"]
    assert mine.comparable() == theirs.comparable()
    assert mine.header(b"connection") == b"close"
    assert on.transport.closed and off.transport.closed


async def test_the_keep_alive_timer_is_armed_once(apps: tuple[Starlette, Starlette]) -> None:
    on, _ = await primed(apps)
    protocol = on.protocol
    two = b"".join(f"GET /iip?FIF=a.tif&JTL=2,{n} HTTP/1.1\r\nHost: x\r\n\r\n".encode() for n in (1, 2))
    first = protocol.timeout_keep_alive_task
    await on.send(two, ["GET", "GET"])
    timer = protocol.timeout_keep_alive_task
    assert timer is not None and timer is not first
    assert first is not None and first.cancelled()  # each answer re-arms it, the earlier timers cancelled
    protocol.connection_lost(None)
    assert timer.cancelled()


async def test_a_head_read_whole_arms_no_header_timer(apps: tuple[Starlette, Starlette]) -> None:
    """The header timer of a kept-alive connection is armed only when a read ends inside a request's head."""
    on, _ = await primed(apps)
    protocol = on.protocol
    armed: list[object] = []
    arm = protocol._arm
    protocol._arm = lambda: (armed.append(1), arm())  # type: ignore[method-assign]
    await on.get("/iip?FIF=a.tif&JTL=2,1")
    assert armed == [] and protocol.head_timer is None
    protocol.data_received(b"GET /iip?FIF=a.tif&JTL=2,2 HTTP/1.1\r\nHo")
    timer = protocol.head_timer
    assert armed == [1] and timer is not None and not timer.cancelled()
    got = await on.send(b"st: x\r\n\r\n", ["GET"])
    assert got[0].status == 200 and timer.cancelled() and protocol.head_timer is None


@pytest.mark.parametrize("request_head", [
    pytest.param(b"HEAD /iip?FIF=a.tif&JTL=2,1 HTTP/1.1\r\nHost: x\r\n\r\n", id="head"),
    pytest.param(b"GET /iip?FIF=a.tif&JTL=2,1 HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nab", id="a-body"),
    pytest.param(b"GET /iip?FIF=a.tif&JTL=2,1 HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n\r\n", id="expect"),
    pytest.param(b"POST /iip HTTP/1.1\r\nHost: x\r\nContent-Length: 19\r\n\r\nFIF=a.tif&JTL=2,1\r\n", id="post"),
])
async def test_what_the_front_leaves_to_the_full_stack(apps: tuple[Starlette, Starlette], answered: list[str | None],
                                                       request_head: bytes) -> None:
    on, off = await primed(apps)
    answered.clear()
    methods = [request_head.split(b" ", 1)[0].decode()]
    mine, theirs = await on.send(request_head, methods), await off.send(request_head, methods)
    assert mine[0].comparable() == theirs[0].comparable()
    assert "now" not in answered and "later" not in answered


async def test_a_full_write_buffer_or_the_connection_limit_waits_for_the_full_stack(
        apps: tuple[Starlette, Starlette], answered: list[str | None], monkeypatch: pytest.MonkeyPatch) -> None:
    on, _ = await primed(apps)
    answered.clear()
    monkeypatch.setattr(on.transport, "get_write_buffer_size", lambda: FRONT_BUFFER + 1)
    assert (await on.get("/iip?FIF=a.tif&JTL=2,1")).status == 200
    limited = Connection(apps[0], limit=1)
    limited.protocol.connections.add(object())  # type: ignore[arg-type]  (another connection: at the limit)
    assert (await limited.get("/iip?FIF=a.tif&JTL=2,1")).status == 503
    assert answered == []


@pytest.mark.parametrize("more", [
    pytest.param({"stat_interval": 0}, id="metadata-never-fresh"),
    pytest.param({"access_policy": json.dumps({"tiers": {"preview": {"max_width": 600, "max_height": 600}},
                                               "rules": [{"match": "*", "anonymous": "preview"}]}),
                  "access_key": "k" * 32}, id="access-policy"),
])
async def test_no_front_answers_when_every_request_must_wait(root: Path, answered: list[str | None],
                                                             more: dict[str, Any]) -> None:
    app = create_app(settings_of(root, **more))
    assert (app.state.front is None) is ("access_policy" in more)
    async with app.router.lifespan_context(app):
        c = Connection(app)
        for _ in range(3):
            assert (await c.get("/iip?FIF=a.tif&JTL=1,1")).status == 200
    assert "now" not in answered and "later" not in answered


@pytest.mark.parametrize(("peer", "counted"), [("127.0.0.1", False), ("10.0.0.9", True)])
async def test_forwarded_headers_count_as_the_trusted_proxy_middleware_has_them(
        root: Path, answered: list[str | None], peer: str, counted: bool) -> None:
    async for apps in pair(settings_of(root, trusted_proxies=("10.0.0.0/8",))):
        on, off = Connection(apps[0], peer), Connection(apps[1], peer)
        forwarded = {"X-Forwarded-Host": "public.test", "X-Forwarded-Proto": "https"}
        url = "/iiif/3/a.tif/0,0,256,256/256,/0/default.jpg"
        for c in (on, off):
            await c.get("/iiif/3/a.tif/info.json")
        answered.clear()
        for _ in range(2):
            mine, theirs = await on.get(url, headers=forwarded), await off.get(url, headers=forwarded)
            assert mine.comparable() == theirs.comparable()
            link = mine.header(b"link") or b""
            assert (b"<https://public.test/iiif/3/a.tif/" in link) is counted
        assert answered == ["now", "now"]


async def test_a_failing_front_leaves_the_answer_to_the_full_stack(apps: tuple[Starlette, Starlette],
                                                                   monkeypatch: pytest.MonkeyPatch,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    on, off = await primed(apps)

    def broken(self: Front, scope: Any) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(Front, "answer", broken)
    url = "/iip?FIF=a.tif&JTL=2,1"
    assert (await on.get(url)).comparable() == (await off.get(url)).comparable()
    assert "the front failed" in caplog.text


@pytest.mark.parametrize("error", [errors.Busy("the tile lane is full"), errors.ImageTooLarge("too large"),
                                   errors.TileNotFound("no such tile")], ids=lambda e: type(e).__name__)
@pytest.mark.parametrize("url", ["/iip?FIF=a.tif&CNT=1.5&JTL=2,1", "/iiif/2/a.tif/full/100,/0/gray.png"])
async def test_a_render_that_fails_later_is_answered_as_the_full_stack_answers_it(
        apps: tuple[Starlette, Starlette], answered: list[str | None], monkeypatch: pytest.MonkeyPatch, url: str,
        error: errors.TileServerError) -> None:
    on, off = await primed(apps)

    async def failing(self: TileService, req: Any, *, background: bool = False) -> None:
        raise error

    monkeypatch.setattr(TileService, "render", failing)
    answered.clear()
    mine, theirs = await on.get(url), await off.get(url)
    assert answered == ["later"]
    assert mine.comparable() == theirs.comparable()
    assert mine.status == errors.status_for(error) and mine.status >= 400
    assert error.message.encode() in mine.body
    assert not on.transport.closed
    ok = await on.get("/iip?FIF=a.tif&JTL=2,1")  # the connection serves on
    assert ok.status == 200


async def test_a_later_answer_the_front_gives_up_is_the_full_stacks(apps: tuple[Starlette, Starlette],
                                                                    monkeypatch: pytest.MonkeyPatch,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    on, off = await primed(apps)
    async def bug(self: Front, *args: Any) -> None:
        raise RuntimeError("a bug before the render")

    monkeypatch.setattr(Front, "_later", bug)
    url = "/iip?FIF=a.tif&CNT=1.5&JTL=2,1"
    mine, theirs = await on.get(url), await off.get(url)
    assert mine.comparable() == theirs.comparable()
    assert mine.status == 200 and decode(mine.body).width == 256
    assert "the front failed" in caplog.text


async def test_a_connection_lost_while_a_render_waits_gets_nothing(apps: tuple[Starlette, Starlette],
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    on, _ = await primed(apps)
    gate = asyncio.Event()
    original = TileService.render

    async def slow(self: TileService, req: Any, *, background: bool = False) -> Any:
        await gate.wait()
        return await original(self, req, background=background)

    monkeypatch.setattr(TileService, "render", slow)
    sent = len(on.transport.writes)
    on.protocol.data_received(b"GET /iip?FIF=a.tif&CNT=1.5&JTL=2,1 HTTP/1.1\r\nHost: x\r\n\r\n")
    await asyncio.sleep(0.05)
    assert len(on.protocol.tasks) == 1  # the front's task, counted as uvicorn counts its cycles'
    on.transport.closed = True
    on.protocol.connection_lost(None)
    gate.set()
    for _ in range(100):
        if not on.protocol.tasks:
            break
        await asyncio.sleep(0.01)
    assert not on.protocol.tasks and len(on.transport.writes) == sent


async def test_front_answers_are_counted_logged_and_cached_as_the_full_stacks(
        root: Path, answered: list[str | None], capfd: pytest.CaptureFixture[str]) -> None:
    async for apps in pair(settings_of(root, access_log="text")):
        on, off = await primed(apps)
        before = [app.state.service.cache_stats() for app in apps]
        answered.clear()
        for url in ("/iip?FIF=a.tif&JTL=2,1", "/iip?FIF=a.tif&JTL=2,1", "/iip?FIF=a.tif&JTL=1,0",
                    "/iip?FIF=a.tif&JTL=1,0"):
            assert (await on.get(url)).comparable() == (await off.get(url)).comparable()
        assert answered == ["now"] * 4
        after = [app.state.service.cache_stats() for app in apps]
        for name in ("tile", "stored_tile", "translation", "replay"):
            mine, theirs = ({k: a[name][k] - b[name].get(k, 0) for k in ("hits", "misses") if k in a[name]}
                            for a, b in zip(after, before, strict=True))
            assert mine == theirs, name
    lines = [line for line in capfd.readouterr().err.splitlines() if "JTL=" in line]
    assert len(lines) == 8  # each app logged its four
    assert [line.split()[-1] for line in lines].count("replay") == 4
    assert [line.split()[-1] for line in lines].count("passthrough") == 4


@pytest.mark.parametrize("root_path", ["", "/tiles"])
@pytest.mark.parametrize("path", [
    "/iiif/3/a.tif/0,0,256,256/256,/0/default.jpg", "/iiif/a.tif/full/max/0/default.jpg",
    "/iiif/manifests/a.tif.json", "/iiif/collection.json", "/iiif/collections/x.json", "/iiif", "/iiif/",
    "/iip", "/iipx", "/fcgi-bin/iipsrv.fcgi", "/deepzoom/a.tif_files/10/1_1.jpg", "/zoomify/a.tif/TileGroup0/2-1-1.jpg",
    "/", "", "/health/live", "/nothing/here", "/viewer/a.tif",
])
def test_the_front_chooses_the_routers_route_from_the_routes_near_a_path(root: Path, root_path: str,
                                                                         path: str) -> None:
    app = create_app(settings_of(root))
    front: Front = app.state.front
    scope = {"type": "http", "method": "GET", "root_path": root_path, "path": root_path + path, "path_params": {}}
    every = [id(r) for r in app.routes]
    for _ in range(2):  # chosen, then remembered
        near = front._near(scope)
        assert [r for r in app.routes if r in near] == list(near)  # in the router's order
        assert first_route(near, every, scope) == first_route(app.routes, every, scope)
        assert len(near) < len(app.routes) or not path.startswith("/iiif/")


@pytest.mark.parametrize(("fields", "closed"), [
    ([(b"connection", b"Close")], True),
    ([(b"etag", b'"1"'), (b"connection", b"keep-alive, close")], True),
    ([(b"connection", b"keep-alive")], False),
    ([(b"x-connection", b"close")], False),
    ([(b"link", b"<http://h/connection: close>")], False),
])
async def test_an_answer_that_says_close_closes_its_connection(apps: tuple[Starlette, Starlette],
                                                              fields: list[tuple[bytes, bytes]],
                                                              closed: bool) -> None:
    """As uvicorn's cycle does: an answer's own `Connection: close` ends the connection, with no second
    `connection` field; the default headers (uvicorn's Date) come first, encoded again when uvicorn renews them."""
    c = Connection(apps[0])
    for date in (b"Sun, 06 Dec 2026 06:00:00 GMT", b"Sun, 06 Dec 2026 06:00:01 GMT"):
        c.protocol.server_state.default_headers = [(b"date", date)]
        c.protocol._send((200, [*fields, (b"content-length", b"1")], b"x"), True)
        await asyncio.sleep(0)  # written at the end of the loop's turn (`TurnWriter`)
        head, _, body = c.transport.writes[-1].partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        assert lines[:2] == [b"HTTP/1.1 200 OK", b"date: " + date] and body == b"x"
        assert lines[2:] == [b"%s: %s" % f for f in fields] + [b"content-length: 1"]
        assert c.transport.closed is closed
        if closed:
            break
