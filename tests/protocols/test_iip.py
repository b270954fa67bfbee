"""IIP through the app: OBJ replies line for line, tiles and exports by decoded pixels and sizes,
errors with the right status and body, no path leaks."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest
import pyvips

from tileserver.app import create_app
from tileserver.protocols.iip.obj import pixels_per_metre
from tileserver.settings import Settings

from ..conftest import (
    ALPHA_PNG,
    GREY16_TIF,
    PLAIN_JPG,
    RGB_1000,
    RGB_TIF,
    STRIPED_TIF,
    SUBIFD_TIF,
    decode,
    max_diff,
    mean_diff,
    served,
)

OBJ_BASIC = "OBJ=IIP,1.0&OBJ=Max-size&OBJ=Tile-size&OBJ=Resolution-number&OBJ=Resolutions"


async def get(client: httpx.AsyncClient, query: str, path: str = "/iip") -> httpx.Response:
    return await client.get(f"{path}?{query}")


async def test_obj_basic_matches_iipsrv_line_for_line(client: httpx.AsyncClient) -> None:
    """iipsrv's reply for a vips-made 1000x700 pyramid with 256 tiles (reference/iipsrv.md §1.1)."""
    r = await get(client, f"FIF={RGB_1000}&{OBJ_BASIC}", "/fcgi-bin/iipsrv.fcgi")
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/vnd.netfpx"
    assert r.headers["iip"] == "1.3"  # iipsrv 1.3 answers OBJ=IIP,1.0 with a header, not a body line
    assert r.content == (b"Max-size:1000 700\r\nTile-size:256 256\r\nResolution-number:3\r\n"
                         b"Resolutions:250 175,500 350,1000 700\r\n")


async def test_obj_extra_objects(client: httpx.AsyncClient) -> None:
    q = ("OBJ=IIP-server&OBJ=Colorspace,*&OBJ=Bits-per-channel&OBJ=Horizontal-views&OBJ=Vertical-views"
         "&OBJ=Min-Max-sample-values&OBJ=Resolutions")
    r = await get(client, f"FIF={RGB_TIF}&{q}")
    assert r.text.split("\r\n") == [
        "IIP-server:3.65", "Colorspace,0-2,0:0 0 3 3 0 1 2", "Bits-per-channel:8", "Horizontal-views:0",
        "Vertical-views:90", "Min-Max-sample-values: 0  255  0  255  0  255", "Resolutions:250 175,501 350,1003 701",
        "",
    ]


async def test_obj_grey16(client: httpx.AsyncClient) -> None:
    q = "OBJ=IIP,1.0&OBJ=Max-size&OBJ=Bits-per-channel&OBJ=Colorspace,*&OBJ=Min-Max-sample-values"
    r = await get(client, f"FIF={GREY16_TIF}&{q}")
    assert r.text == ("Max-size:600 410\r\nBits-per-channel:16\r\nColorspace,0-2,0:0 0 1 1 0\r\n"
                      "Min-Max-sample-values: 0  65535\r\n")


async def test_obj_without_fif_for_server_objects(client: httpx.AsyncClient) -> None:
    r = await get(client, "OBJ=IIP,1.0&OBJ=IIP-opt-comm")
    assert r.status_code == 200
    assert r.headers["iip"] == "1.3"
    assert r.text.startswith("IIP-opt-comm:CVT ")


async def test_obj_max_size_after_rotation_swaps(client: httpx.AsyncClient) -> None:
    r = await get(client, f"FIF={RGB_TIF}&ROT=90&OBJ=Max-size")
    assert r.text == "Max-size:701 1003\r\n"


@pytest.mark.parametrize("ident", [STRIPED_TIF, PLAIN_JPG, ALPHA_PNG, SUBIFD_TIF])
async def test_obj_for_other_sources(client: httpx.AsyncClient, ident: str) -> None:
    r = await get(client, f"FIF={ident}&OBJ=Max-size&OBJ=Resolution-number&OBJ=Tile-size")
    assert r.status_code == 200
    lines = r.text.split("\r\n")
    assert lines[0].startswith("Max-size:")
    assert int(lines[1].split(":")[1]) >= 2 or ident == ALPHA_PNG
    assert lines[2] == "Tile-size:256 256"


async def test_obj_unknown_object(client: httpx.AsyncClient) -> None:
    r = await get(client, f"FIF={RGB_TIF}&OBJ=foo")
    assert r.status_code == 400
    assert r.content == b"Error/7:3 2 foo\r\n"


async def test_metadata_objects(image_root: Path, client: httpx.AsyncClient) -> None:
    img = pyvips.Image.black(300, 200, bands=3).copy(interpretation="srgb")
    img.set_type(pyvips.GValue.gstr_type, "image-description", "A test scene")
    img.tiffsave(str(image_root / "described.tif"), tile=True, pyramid=True)
    r = await get(client, "FIF=described.tif&OBJ=description&OBJ=subject&OBJ=title")
    assert r.headers["content-type"] == "text/plain; charset=utf-8"
    assert r.text == "A test scene\r\nA test scene\r\n"  # the spec's name too; no title: no line
    r = await get(client, "FIF=described.tif&OBJ=title")
    assert r.status_code == 400 and r.content == b"Error/31:2 1 FIF=described.tif&OBJ=title\r\n"


@pytest.mark.parametrize(
    ("value", "unit", "expected"),
    [
        pytest.param(300.0, 2, 11811.0234375, id="inch"),
        pytest.param(118.11, 3, 11811.0, id="cm"),
        pytest.param(72.0, 1, 72.0, id="no-unit"),
    ],
)
def test_dpi_is_pixels_per_metre_as_a_float(value: float, unit: int, expected: float) -> None:
    assert pixels_per_metre(value, unit) == pytest.approx(expected, abs=1e-3)


def level_crop(path: Path, page: int, box: tuple[int, int, int, int]) -> pyvips.Image:
    return pyvips.Image.tiffload(str(path), page=page).crop(*box)


@pytest.mark.parametrize(
    ("res", "index", "page", "box"),
    [
        pytest.param(2, 0, 0, (0, 0, 256, 256), id="full-first"),
        pytest.param(2, 5, 0, (256, 256, 256, 256), id="full-interior"),
        pytest.param(2, 11, 0, (768, 512, 235, 189), id="full-last-edge"),
        pytest.param(1, 1, 1, (256, 0, 245, 256), id="half-edge"),
        pytest.param(0, 0, 2, (0, 0, 250, 175), id="smallest"),
    ],
)
async def test_tile_pixels_equal_direct_crop(
    image_root: Path, client: httpx.AsyncClient, res: int, index: int, page: int, box: tuple[int, int, int, int]
) -> None:
    expected = level_crop(image_root / RGB_TIF, page, box)
    png = await get(client, f"FIF={RGB_TIF}&PTL={res},{index}")
    assert png.headers["content-type"] == "image/png"
    assert max_diff(decode(png.content), expected) == 0
    jpg = await get(client, f"FIF={RGB_TIF}&JTL={res},{index}")
    assert jpg.headers["content-type"] == "image/jpeg"
    assert mean_diff(decode(jpg.content), expected) < 3


async def test_tile_formats(client: httpx.AsyncClient) -> None:
    for cmd, media in (("WTL", "image/webp"), ("TTL", "image/tiff"), ("ATL", "image/avif")):
        r = await get(client, f"FIF={RGB_TIF}&{cmd}=1,0")
        assert r.status_code == 200 and r.headers["content-type"] == media
        assert (decode(r.content).width, decode(r.content).height) == (256, 256)


async def test_virtual_levels_of_single_resolution_images(image_root: Path, client: httpx.AsyncClient) -> None:
    r = await get(client, f"FIF={STRIPED_TIF}&OBJ=Resolutions")
    assert r.text == "Resolutions:225 129,450 258,900 517\r\n"  # halvings rounded down, as iipsrv
    tile = decode((await get(client, f"FIF={STRIPED_TIF}&PTL=0,0")).content)
    assert (tile.width, tile.height) == (225, 129)
    full = pyvips.Image.new_from_file(str(image_root / STRIPED_TIF))
    assert mean_diff(tile, full.thumbnail_image(225, height=129, size="force")) < 2
    jpg = decode((await get(client, f"FIF={PLAIN_JPG}&JTL=1,1")).content)  # 320x240 level, 2x1 tiles
    assert (jpg.width, jpg.height) == (64, 240)


async def test_grey16_tiles_come_out_8bit(client: httpx.AsyncClient) -> None:
    img = decode((await get(client, f"FIF={GREY16_TIF}&PTL=2,0")).content)
    assert (img.bands, img.format, img.width, img.height) == (1, "uchar", 256, 256)
    assert 0 < img.avg() < 255


async def test_subifd_pyramid_levels(client: httpx.AsyncClient) -> None:
    r = await get(client, f"FIF={SUBIFD_TIF}&OBJ=Resolutions")
    assert r.text == "Resolutions:175 132,350 265,700 530\r\n"
    img = decode((await get(client, f"FIF={SUBIFD_TIF}&JTL=1,1")).content)
    assert (img.width, img.height) == (94, 256)


@pytest.mark.parametrize(
    ("query", "size"),
    [
        pytest.param("WID=400", (400, 280), id="wid"),
        pytest.param("HEI=300", (429, 300), id="hei"),
        pytest.param("WID=400&HEI=400", (400, 280), id="box-wide"),
        pytest.param("WID=1000&HEI=100", (143, 100), id="box-tall"),
        pytest.param("WID=500&RGN=0.25,0.25,0.5,0.5", (500, 349), id="rgn-wid"),  # 501.5 x 350.5 region
        pytest.param("RGN=0,0,0.5,0.5", (502, 351), id="rgn-native"),  # halves round up, as C
        pytest.param("RGN=0.75,0.75,0.5,0.5&WID=100", (100, 70), id="rgn-partly-outside"),
        pytest.param("WID=6000", (5000, 3495), id="clamped-to-max-cvt"),
        pytest.param("", (1003, 701), id="full"),
    ],
)
async def test_cvt_sizes(client: httpx.AsyncClient, query: str, size: tuple[int, int]) -> None:
    q = f"FIF={RGB_TIF}&{query}&CVT=jpeg" if query else f"FIF={RGB_TIF}&CVT=jpeg"
    r = await get(client, q)
    assert r.status_code == 200, r.text
    assert r.headers["content-disposition"] == 'inline;filename="rgb-3lvl-1003x701-tiled-jpeg.jpg"'
    img = decode(r.content)
    assert (img.width, img.height) == size


async def test_cvt_region_pixels(image_root: Path, client: httpx.AsyncClient) -> None:
    """RGN at native size is a plain crop of full resolution."""
    r = await get(client, f"FIF={RGB_TIF}&RGN=0.5,0.5,0.25,0.25&CVT=png")
    full = pyvips.Image.tiffload(str(image_root / RGB_TIF))
    x, y = 502, 351  # 501.5 and 350.5 round away from zero, as in C
    expected = full.crop(x, y, 752 - x, 526 - y)
    assert max_diff(decode(r.content), expected) == 0


async def test_cvt_reads_a_reduced_level(image_root: Path, client: httpx.AsyncClient) -> None:
    """WID=250 of the whole image equals the smallest stored level exactly (no resampling)."""
    r = await get(client, f"FIF={RGB_1000}&WID=250&CVT=png")
    assert max_diff(decode(r.content), pyvips.Image.tiffload(str(image_root / RGB_1000), page=2)) == 0


@pytest.mark.parametrize(
    ("fmt", "media"),
    [("jpeg", "image/jpeg"), ("png", "image/png"), ("webp", "image/webp"), ("avif", "image/avif"),
     ("tiff", "image/tiff")],
)
async def test_cvt_formats(client: httpx.AsyncClient, fmt: str, media: str) -> None:
    r = await get(client, f"FIF={RGB_TIF}&WID=120&CVT={fmt}")
    assert r.headers["content-type"] == media
    assert decode(r.content).width == 120


async def test_qlt_changes_jpeg_size(client: httpx.AsyncClient) -> None:
    lo = await get(client, f"FIF={RGB_TIF}&WID=400&QLT=10&CVT=jpeg")
    hi = await get(client, f"FIF={RGB_TIF}&WID=400&QLT=95&CVT=jpeg")
    assert len(lo.content) < len(hi.content) / 2


async def test_post_form_is_an_attachment(client: httpx.AsyncClient) -> None:
    r = await client.post("/fcgi-bin/iipsrv.fcgi", data={"FIF": RGB_TIF, "WID": "200", "QLT": "80", "CVT": "png"})
    assert r.status_code == 200
    assert r.headers["content-disposition"].startswith("attachment;")
    assert decode(r.content).width == 200


async def test_processing_changes_pixels(client: httpx.AsyncClient) -> None:
    base = decode((await get(client, f"FIF={RGB_TIF}&PTL=0,0")).content)
    inv = decode((await get(client, f"FIF={RGB_TIF}&INV=1&PTL=0,0")).content)
    assert max_diff(inv, base.linear(-1, 255).cast("uchar")) <= 1
    grey = decode((await get(client, f"FIF={RGB_TIF}&COL=grey&PTL=0,0")).content)
    assert grey.bands == 1
    binary = decode((await get(client, f"FIF={RGB_TIF}&COL=binary&PTL=0,0")).content)
    assert set(binary.hist_find().tolist()[0][i] > 0 for i in (1, 128)) == {False}
    swap = decode((await get(client, f"FIF={RGB_TIF}&CTW=[0,0,1;0,1,0;1,0,0]&PTL=0,0")).content)
    assert max_diff(swap[0], base[2]) <= 1 and max_diff(swap[2], base[0]) <= 1
    hot = decode((await get(client, f"FIF={GREY16_TIF}&CMP=hot&PTL=0,0")).content)
    assert hot.bands == 3
    darker = decode((await get(client, f"FIF={RGB_TIF}&CNT=0.5&PTL=0,0")).content)
    assert darker.avg() == pytest.approx(base.avg() / 2, abs=1.5)
    gamma = decode((await get(client, f"FIF={RGB_TIF}&GAM=2&PTL=0,0")).content)
    assert gamma.avg() < base.avg()


async def test_minmax_stretches_16bit(client: httpx.AsyncClient) -> None:
    plain = decode((await get(client, f"FIF={GREY16_TIF}&PTL=0,0")).content)
    narrow = decode((await get(client, f"FIF={GREY16_TIF}&MINMAX=0:16384,49152&PTL=0,0")).content)
    assert narrow.deviate() > plain.deviate() * 1.5


async def test_rotation_and_mirror(client: httpx.AsyncClient) -> None:
    base = decode((await get(client, f"FIF={RGB_TIF}&WID=200&CVT=png")).content)
    rot = decode((await get(client, f"FIF={RGB_TIF}&WID=200&ROT=90&CVT=png")).content)
    assert max_diff(rot, base.rot("d90")) == 0
    flip = decode((await get(client, f"FIF={RGB_TIF}&WID=200&ROT=!0&CVT=png")).content)
    assert max_diff(flip, base.fliphor()) == 0
    odd = decode((await get(client, f"FIF={RGB_TIF}&WID=200&ROT=45&CVT=png")).content)
    assert odd.bands == 4 and odd.width > 200


@pytest.mark.parametrize(
    ("limits", "query"),
    [
        pytest.param({"max_size": 400}, "WID=400&ROT=45", id="max-size-45"),
        pytest.param({"max_size": 400}, "WID=400&ROT=!30", id="max-size-mirrored-30"),
        pytest.param({"max_size": 400}, "HEI=400&ROT=10", id="max-size-10"),
        pytest.param({"max_area": 100_000}, "WID=400&ROT=45", id="max-area-45"),
        pytest.param({"max_size": 400, "max_area": 100_000}, "WID=900&ROT=60", id="both-60"),
        pytest.param({}, "WID=5000&ROT=45", id="issue-5000px-45"),
    ],
)
async def test_rotated_exports_fit_the_limits(image_root: Path, limits: dict[str, int], query: str) -> None:
    """ROT's canvas is capped as WID/HEI are (iipsrv clamps them to MAX_CVT silently): the view shrinks
    until its rotated canvas is within `max_size` and `max_area`, and is not smaller than it must be."""
    settings = Settings(root=image_root, **limits)
    async with served(settings) as c:
        r = await get(c, f"FIF={RGB_TIF}&{query}&CVT=jpeg")
        assert r.status_code == 200, r.text
    img = decode(r.content)
    max_size, max_area = settings.max_size or 10**9, settings.max_area or 10**18
    assert max(img.width, img.height) <= max_size and img.width * img.height <= max_area
    assert max(img.width, img.height) >= 0.99 * max_size or img.width * img.height >= 0.98 * max_area


async def test_til_stream(client: httpx.AsyncClient) -> None:
    r = await get(client, f"FIF={RGB_TIF}&TIL=1,0-3")  # level 1 has 2x2 tiles: rectangle (0,0)-(1,1)
    assert r.headers["content-type"] == "application/vnd.netfpx"
    body, seen = r.content, []
    while body:
        head, _, rest = body.partition(b":")
        _, res, n, rest_len = head.decode().split(",")
        assert res == "1"
        length = int(rest_len.split("/")[1])
        assert rest[:8] == b"\x02\x00\x00\x00\x00\x11\x00\x00"
        assert decode(rest[8:length]).width in (256, 245)
        assert rest[length : length + 2] == b"\r\n"
        seen.append(int(n))
        body = rest[length + 2 :]
    assert seen == [0, 2, 1, 3]


async def test_conditional_requests(client: httpx.AsyncClient) -> None:
    r = await get(client, f"FIF={RGB_TIF}&JTL=1,0")
    assert r.headers["cache-control"] == "max-age=86400"
    etag, modified = r.headers["etag"], r.headers["last-modified"]
    again = await client.get(f"/iip?FIF={RGB_TIF}&JTL=1,0", headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b""
    since = await client.get(f"/iip?FIF={RGB_TIF}&JTL=1,0", headers={"If-Modified-Since": modified})
    assert since.status_code == 304
    other = await client.get(f"/iip?FIF={RGB_TIF}&JTL=1,1", headers={"If-None-Match": etag})
    assert other.status_code == 200


async def test_head_and_cors(client: httpx.AsyncClient) -> None:
    r = await client.head(f"/iip?FIF={RGB_TIF}&JTL=1,0")
    assert r.status_code == 200 and r.content == b""
    r = await client.get(f"/iip?FIF={RGB_TIF}&JTL=1,0", headers={"Origin": "http://viewer.example"})
    assert r.headers["access-control-allow-origin"] == "*"
    pre = await client.options("/iip", headers={"Origin": "http://viewer.example",
                                                "Access-Control-Request-Method": "GET"})
    assert pre.status_code == 200 and pre.headers["access-control-allow-origin"] == "*"


async def test_empty_query_banner(client: httpx.AsyncClient) -> None:
    r = await client.get("/fcgi-bin/iipsrv.fcgi")
    assert r.status_code == 200 and "IIP" in r.text


@pytest.mark.parametrize(
    ("query", "status", "body"),
    [
        pytest.param(f"FIF={RGB_TIF}&FOO=1", 400, "Error/7:2 2 FOO\r\n", id="unknown-command"),
        pytest.param(f"FIF={RGB_TIF}", 400, f"Error/{len(RGB_TIF) + 8}:2 1 FIF={RGB_TIF}\r\n", id="no-output"),
        pytest.param("JTL=5,0", 400, "Error/4:1 3 \r\n", id="jtl-without-fif"),
        pytest.param(f"FIF={RGB_TIF}&JTL=abc", 400, "Error/11:2 1 JTL=abc\r\n", id="malformed-jtl"),
        pytest.param(f"FIF={RGB_TIF}&JTL=99,0", 404, None, id="bad-resolution"),
        pytest.param(f"FIF={RGB_TIF}&JTL=2,99999", 404, None, id="bad-tile"),
        pytest.param(f"FIF={RGB_TIF}&TIL=2,0-999", 404, None, id="bad-til-range"),
        pytest.param(f"FIF={RGB_TIF}&WID=200&RGN=1.5,1.5,0.1,0.1&CVT=jpeg", 400, None, id="rgn-outside"),
        pytest.param(f"FIF={RGB_TIF}&SDS=3&JTL=0,0", 404, None, id="missing-view"),
        pytest.param("FIF=nonexistent.tif&OBJ=IIP,1.0", 404, None, id="missing-file"),
        pytest.param("FIF=../outside/secret.tif&OBJ=Max-size", 404, None, id="dotdot"),
        pytest.param("FIF=../../../etc/passwd&OBJ=IIP,1.0", 404, None, id="etc-passwd"),
        pytest.param("FIF=/etc/passwd&OBJ=Max-size", 404, None, id="absolute"),
        pytest.param("FIF=escape.tif&OBJ=Max-size", 404, None, id="symlink-escape"),
        pytest.param("FIF=a%00b.tif&OBJ=Max-size", 400, None, id="nul-byte"),
        pytest.param("FIF=" + "x" * 5000 + "&OBJ=Max-size", 400, None, id="over-long"),
        pytest.param("FIF=not-an-image.tif&JTL=0,0", 415, None, id="undecodable-file"),
        pytest.param(f"FIF={GREY16_TIF}&CTW=[1,0,0;0,1,0;0,0,1]&JTL=0,0", 400, None, id="ctw-wrong-bands"),
    ],
)
async def test_errors(
    image_root: Path, client: httpx.AsyncClient, query: str, status: int, body: str | None
) -> None:
    r = await get(client, query)
    assert r.status_code == status, r.text
    if body is not None:
        assert r.text == body
        assert r.headers["content-type"] == "application/vnd.netfpx"
    assert r.headers["cache-control"] == "no-cache"
    assert str(image_root) not in r.text and str(image_root.parent) not in r.text
    assert "/tmp" not in r.text


async def test_server_keeps_serving_after_errors(client: httpx.AsyncClient) -> None:
    for q in ("FIF=not-an-image.tif&JTL=0,0", f"FIF={RGB_TIF}&RGN=9,9,1,1&CVT=jpeg"):
        await get(client, q)
    assert (await get(client, f"FIF={RGB_TIF}&JTL=0,0")).status_code == 200


@pytest.mark.parametrize(
    ("ident", "fmt", "bands"),
    [
        pytest.param(ALPHA_PNG, "jpeg", 3, id="rgba-to-jpeg"),
        pytest.param(ALPHA_PNG, "png", 4, id="rgba-to-png"),
        pytest.param(RGB_TIF, "jpeg", 3, id="rgb-to-jpeg"),
        pytest.param(RGB_TIF, "webp", 4, id="rgb-to-webp"),
        pytest.param(GREY16_TIF, "jpeg", 1, id="grey-to-jpeg"),
        pytest.param(GREY16_TIF, "png", 2, id="grey-to-png"),
    ],
)
async def test_arbitrary_rotation_fills_corners(client: httpx.AsyncClient, ident: str, fmt: str, bands: int) -> None:
    """Corners are the rotation fill (black by default) in JPEG and transparent where the format has alpha."""
    img = decode((await get(client, f"FIF={ident}&WID=200&ROT=30&CVT={fmt}")).content)
    assert img.bands == bands and img.width > 200
    corner = img.crop(0, 0, 3, 3).avg() if bands in (1, 3) else img.extract_band(bands - 1).crop(0, 0, 3, 3).avg()
    assert corner == pytest.approx(0, abs=3)


@pytest.mark.parametrize(
    ("name", "disposition"),
    [
        pytest.param("plain.tif", 'inline;filename="plain.jpg"', id="ascii"),
        pytest.param('ünï "q".tif', "inline;filename=\"_n_ _q_.jpg\";filename*=UTF-8''%C3%BCn%C3%AF%20%22q%22.jpg",
                     id="latin1-and-quotes"),
        pytest.param("日本.tif", "inline;filename=\"__.jpg\";filename*=UTF-8''%E6%97%A5%E6%9C%AC.jpg", id="cjk"),
    ],
)
async def test_export_file_names(image_root: Path, client: httpx.AsyncClient, name: str, disposition: str) -> None:
    """Any file name gives a valid Content-Disposition (HTTP headers are Latin-1): RFC 6266 filename*."""
    sub = image_root / "names"
    sub.mkdir(exist_ok=True)
    pyvips.Image.black(40, 30, bands=3).copy(interpretation="srgb").tiffsave(str(sub / name), tile=True)
    r = await client.get("/iip", params={"FIF": f"names/{name}", "WID": "20", "CVT": "jpeg"})
    assert r.status_code == 200
    assert r.headers["content-disposition"] == disposition


async def test_obj_replies_are_remembered_until_the_file_changes(tmp_path: Path) -> None:
    """A repeated OBJ query is answered from the remembered reply (same bytes, same ETag), and a changed
    file is seen on the next request."""
    pyvips.Image.black(300, 200, bands=3).tiffsave(str(tmp_path / "a.tif"), tile=True, pyramid=True)
    app = create_app(Settings(root=tmp_path, stat_interval=0))
    app.state.service.start()
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
            first, again = [await get(c, "FIF=a.tif&OBJ=IIP,1.0&OBJ=Max-size") for _ in range(2)]
            assert first.content == again.content == b"Max-size:300 200\r\n"
            assert first.headers["etag"] == again.headers["etag"] and again.headers["iip"] == "1.3"
            mtime = os.stat(tmp_path / "a.tif").st_mtime
            pyvips.Image.black(301, 200, bands=3).tiffsave(str(tmp_path / "a.tif"), tile=True, pyramid=True)
            os.utime(tmp_path / "a.tif", (mtime + 10, mtime + 10))
            changed = await get(c, "FIF=a.tif&OBJ=IIP,1.0&OBJ=Max-size")
            assert changed.content == b"Max-size:301 200\r\n" and changed.headers["etag"] != first.headers["etag"]
    finally:
        app.state.service.stop()
