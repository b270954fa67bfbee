"""web/telemetry.py and Server-Timing: every image response says where its body came from (passthrough, recode,
decode with its stage times, the tile cache, replay) in every protocol, the metrics count the same, and the access
log writes one parseable line per response."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette

from tileserver.app import create_app
from tileserver.imaging import turbojpeg
from tileserver.settings import Settings
from tileserver.web import telemetry

from ..conftest import GREY16_TIF, RGB_TIF, decode
from ..test_metrics import Samples, scrape, value

DUR = r"\d+\.\d\d"
TIMINGS = {
    "passthrough": rf"passthrough;dur={DUR}",
    "recode": rf"recode, decode;dur={DUR}, encode;dur={DUR}",
    "crop": rf"crop;dur={DUR}",
    "decode": rf"decode;dur={DUR}, encode;dur={DUR}",
}
# edge tiles: cropped from the stored tile losslessly with TurboJPEG, else cut from decoded pixels and re-encoded
EDGE = "crop" if turbojpeg.library() is not None else "recode"
# (protocol, body source of the first answer, URL, width, height); a.tif: 1003 x 701 JPEG tiles of 256,
# g.tif: 600 x 410 deflate tiles (never passed through nor recoded)
CASES = [
    ("iip", "passthrough", "/iip?FIF=a.tif&JTL=2,1", 256, 256),
    ("iip", EDGE, "/fcgi-bin/iipsrv.fcgi?FIF=a.tif&JTL=2,11", 235, 189),
    ("iip", "recode", "/iip?FIF=a.tif&QLT=60&JTL=2,5", 256, 256),
    ("iip", "decode", "/iip?FIF=g.tif&JTL=2,0", 256, 256),
    ("iiif", "passthrough", "/iiif/3/a.tif/256,0,256,256/256,/0/default.jpg", 256, 256),
    ("iiif", EDGE, "/iiif/3/a.tif/768,512,235,189/235,/0/default.jpg", 235, 189),
    ("iiif", "recode", "/iiif/3/a.tif/0,0,258,258/258,/0/default.jpg", 258, 258),
    ("iiif", "decode", "/iiif/2/g.tif/0,0,256,256/256,/0/default.jpg", 256, 256),
    ("deepzoom", "passthrough", "/deepzoom/a.tif_files/10/1_1.jpg", 256, 256),
    ("deepzoom", EDGE, "/deepzoom/a.tif_files/10/3_2.jpg", 235, 189),
    ("deepzoom", "decode", "/deepzoom/g.tif_files/10/0_0.jpg", 256, 256),
    ("zoomify", "passthrough", "/zoomify/a.tif/TileGroup0/2-1-1.jpg", 256, 256),
    ("zoomify", EDGE, "/zoomify/a.tif/TileGroup0/2-3-2.jpg", 235, 189),
    ("zoomify", "decode", "/zoomify/g.tif/TileGroup0/2-0-0.jpg", 256, 256),
]


class Lines:
    """The access log lines written while a test runs (in place of stderr)."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def __call__(self, line: str) -> None:
        self.lines.append(line)


@pytest.fixture
def access_lines(monkeypatch: pytest.MonkeyPatch) -> Lines:
    lines = Lines()
    monkeypatch.setattr(telemetry, "write_line", lines)
    return lines


@pytest.fixture
async def app(tmp_path: Path, image_root: Path) -> AsyncIterator[Starlette]:
    shutil.copy(image_root / RGB_TIF, tmp_path / "a.tif")
    shutil.copy(image_root / GREY16_TIF, tmp_path / "g.tif")
    application = create_app(Settings(root=tmp_path, cors="*", access_log="json"))
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def client(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as c:
        yield c


def grown(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


@pytest.mark.parametrize(("protocol", "made", "url", "width", "height"),
                         [pytest.param(*c, id=f"{c[0]}-{c[1]}") for c in CASES])
async def test_server_timing_says_where_the_body_came_from(
        client: httpx.AsyncClient, access_lines: Lines, protocol: str, made: str, url: str, width: int,
        height: int) -> None:
    before = scrape()
    first = await client.get(url)  # made, and recorded for replay
    cached = await client.get(url, headers={"Origin": "http://viewer.example"})  # full stack: the tile cache
    replayed = await client.get(url)
    assert [r.status_code for r in (first, cached, replayed)] == [200, 200, 200]
    assert re.fullmatch(TIMINGS[made], first.headers["server-timing"])
    assert cached.headers["server-timing"] == "cache;desc=local"
    assert replayed.headers["server-timing"] == "replay"  # not the first answer's decode time
    img = decode(first.content)
    assert (img.width, img.height) == (width, height)
    assert cached.content == first.content and replayed.content == first.content
    after = scrape()
    for source in (made, "cache", "replay"):
        assert grown(before, after, "tileserver_image_responses_total", source=source) == 1
    assert grown(before, after, "tileserver_tiles_rendered_total", path=made) == 1
    routes = [json.loads(line) for line in access_lines.lines]
    assert [(r["source"], r["protocol"], r["status"]) for r in routes] == [
        (made, protocol, 200), ("cache", protocol, 200), ("replay", protocol, 200)]
    assert routes[0]["route"] == routes[2]["route"]  # a replayed answer keeps the route it was recorded with
    assert grown(before, after, "tileserver_requests_total", protocol=protocol, route=routes[0]["route"],
                 status="200") == 3


@pytest.mark.parametrize("split", [False, True], ids=["one-pass", "split-timing"])
async def test_libvips_savers_time_one_pass_unless_split(tmp_path: Path, image_root: Path, split: bool) -> None:
    """A PNG is decoded and encoded in one libvips pass: one figure, unless `split_timing` makes the pixels in
    memory first; either way the decoded pixels are the same."""
    shutil.copy(image_root / GREY16_TIF, tmp_path / "g.tif")
    app = create_app(Settings(root=tmp_path, split_timing=split))
    async with app.router.lifespan_context(app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        before = scrape()
        r = await c.get("/iiif/3/g.tif/full/300,/0/default.png")
        after = scrape()
    assert r.status_code == 200 and decode(r.content).width == 300
    timing = r.headers["server-timing"]
    if not split:
        assert re.fullmatch(rf'decode;dur={DUR};desc="decode, process and encode in one libvips pass"', timing)
        assert grown(before, after, "tileserver_decode_seconds_count", format="tiff") == 0
        assert grown(before, after, "tileserver_render_seconds_sum", path="decode", format="png") == pytest.approx(
            float(timing.split("=")[1].split(";")[0]) / 1e3, abs=1e-5)
        return
    stages = dict(re.findall(r"(decode|encode);dur=([\d.]+)", timing))
    assert re.fullmatch(TIMINGS["decode"], timing)
    assert grown(before, after, "tileserver_decode_seconds_sum", format="tiff") == pytest.approx(
        float(stages["decode"]) / 1e3, abs=1e-5)
    assert grown(before, after, "tileserver_encode_seconds_sum", format="png") == pytest.approx(
        float(stages["encode"]) / 1e3, abs=1e-5)


async def test_a_large_output_stays_one_pass_even_split(tmp_path: Path, image_root: Path) -> None:
    shutil.copy(image_root / RGB_TIF, tmp_path / "a.tif")
    app = create_app(Settings(root=tmp_path, split_timing=True))
    async with app.router.lifespan_context(app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        before = scrape()
        r = await c.get("/iiif/3/a.tif/full/^2600,/0/default.jpg")  # 2600 x 1817: above TIMED_PIXELS
        after = scrape()
    assert r.status_code == 200 and decode(r.content).width == 2600
    assert re.fullmatch(rf'decode;dur={DUR};desc="decode, process and encode in one libvips pass"',
                        r.headers["server-timing"])
    assert grown(before, after, "tileserver_render_seconds_count", path="decode", format="jpg") == 1
    assert grown(before, after, "tileserver_encode_seconds_count", format="jpg") == 0


async def test_documents_and_errors_carry_no_timing_but_are_counted(client: httpx.AsyncClient,
                                                                    access_lines: Lines) -> None:
    before = scrape()
    info = await client.get("/iiif/3/a.tif/info.json")
    missing = await client.get("/iiif/3/nothing.tif/info.json")
    unrouted = await client.get("/no/such/route")
    assert (info.status_code, missing.status_code, unrouted.status_code) == (200, 404, 404)
    assert "server-timing" not in info.headers and "server-timing" not in missing.headers
    after = scrape()
    route = "/iiif/3/{rest:path}"
    assert grown(before, after, "tileserver_requests_total", protocol="iiif", route=route, status="200") == 1
    assert grown(before, after, "tileserver_requests_total", protocol="iiif", route=route, status="404") == 1
    assert grown(before, after, "tileserver_requests_total", protocol="none", route="unmatched", status="404") == 1
    lines = [json.loads(line) for line in access_lines.lines]
    assert [line["source"] for line in lines] == [None, None, None]
    assert [line["status"] for line in lines] == [200, 404, 404]


async def test_access_log_lines_carry_the_fields(client: httpx.AsyncClient, access_lines: Lines) -> None:
    url = "/iip?FIF=a.tif&JTL=2,0"
    r = await client.get(url)
    head = await client.head("/iiif/3/a.tif/info.json")
    assert r.status_code == 200 and head.status_code == 200
    tile, doc = (json.loads(line) for line in access_lines.lines)
    assert set(tile) == {"time", "method", "path", "query", "status", "bytes", "duration_ms", "source", "client",
                         "protocol", "route", "worker"}
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", tile["time"])
    assert (tile["method"], tile["path"], tile["query"], tile["status"]) == ("GET", "/iip", "FIF=a.tif&JTL=2,0", 200)
    assert tile["bytes"] == len(r.content) and tile["source"] == "passthrough" and tile["route"] == "/iip"
    assert tile["client"] == "127.0.0.1" and 0 < tile["duration_ms"] < 10_000
    assert (doc["method"], doc["bytes"], doc["protocol"]) == ("HEAD", 0, "iiif")  # no body on the wire


async def test_text_access_log_and_no_log(tmp_path: Path, image_root: Path, access_lines: Lines) -> None:
    shutil.copy(image_root / RGB_TIF, tmp_path / "a.tif")
    for fmt in ("text", "off"):
        app = create_app(Settings(root=tmp_path, access_log=fmt))
        async with app.router.lifespan_context(app), httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
            assert (await c.get("/iip?FIF=a.tif&JTL=2,0")).status_code == 200
    assert len(access_lines.lines) == 1
    assert re.fullmatch(rf'127\.0\.0\.1 "GET /iip\?FIF=a\.tif&JTL=2,0" 200 \d+ {DUR}ms passthrough',
                        access_lines.lines[0])


@pytest.mark.parametrize(
    ("route", "protocol"),
    [("/iiif/3/{rest:path}", "iiif"), ("/iiif/manifests/{ident:path}.json", "presentation"),
     ("/fcgi-bin/iipsrv.fcgi", "iip"), ("/iip", "iip"), ("/deepzoom/{path:path}", "deepzoom"),
     ("/zoomify/{path:path}", "zoomify"), ("/health/ready", "server"), ("/metrics", "server")],
)
def test_protocol_of_route(route: str, protocol: str) -> None:
    assert telemetry.protocol_of(route) == protocol


async def test_metrics_endpoint_and_switch(tmp_path: Path, client: httpx.AsyncClient) -> None:
    r = await client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert "tileserver_cache_hits_total" in r.text and "tileserver_requests_total" in r.text
    off = create_app(Settings(root=tmp_path, metrics=False))
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=off), base_url="http://t") as c:
            assert (await c.get("/metrics")).status_code == 404
    finally:
        create_app(Settings(root=tmp_path))  # metrics on again for this process's other tests
