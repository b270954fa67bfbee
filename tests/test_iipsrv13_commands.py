"""iipsrv 1.3's processing and sample commands side by side with 1.3 itself (fixture `iipsrv13`, the same
generated images): CNV, PFL, SPECTRA, JTLS, LYR, ICC; and SHD against 1.3's formula (1.3 cannot be asked).

Tiles are compared as PNG (PTL, no JPEG noise: at most one level apart) and as JPEG (JTL, within JPEG
noise); documents field by field, and byte for byte where 1.3's bytes mean what they say.
Where we differ on purpose, a test says so:
- malformed arguments are 400 `Error/..:2 1 CMD=arg` here; 1.3 ignores a kernel of the wrong size,
  reads an unknown kernel name as the 1x1 kernel [0] (a black tile), and reads `LYR=0`, a diagonal
  PFL line and unparsable numbers as they come (atoi);
- 1.3's IIP errors arrive with status 200 and their `Content-Disposition` line inside the body (its
  status line is empty); we send 400 and the header; only the `Error/N:...` line is compared;
- SHD: 1.3's Transform::shade loops over width x height x channels pixels reading 3 samples each (9x
  the buffer for RGB) and crashes the process (500, then 503 until restarted), so SHD is never sent
  to the shared 1.3 fixture; we check our tiles against 1.3's formula computed here with numpy;
- PFL: from a stack's second page on, 1.3 sends `pages x` too many values (its length grows per page);
  SPECTRA: 1.3 reads sample y*tile_width+x of the interleaved tile, right for one-band images only.
"""

from __future__ import annotations

import json
import math
from typing import Any

import httpx
import numpy as np
import pytest

from tileserver.errors import echo

from .conftest import ALPHA_PNG, GREY16_TIF, RGB_TIF, decode, mean_diff
from .stack_images import STACK_NAMES, STACK_SCALES, STACK_TIF

KERNELS = {
    "sobel": (-1, 0, 1, -2, 0, 2, -1, 0, 1), "prewitt": (1, 0, -1, 1, 0, -1, 1, 0, -1),
    "scharr": (-3, 0, 3, -10, 0, 10, -3, 0, 3), "laplace": (-1, -1, -1, -1, 8, -1, -1, -1, -1),
    "gaussian": (1, 2, 1, 2, 4, 2, 1, 2, 1), "sharpen": (0, -1, 0, -1, 5, -1, 0, -1, 0),
    "emboss": (-2, -1, 0, -1, 1, 1, 0, 1, 2),
    "[1,0,-1,2,0,-2,1,0,-1]": (1, 0, -1, 2, 0, -2, 1, 0, -1),  # custom 3x3, sobel mirrored
    "[" + ",".join(["1"] * 12 + ["-24"] + ["1"] * 12) + "]": (1,) * 12 + (-24,) + (1,) * 12,  # custom 5x5
    "[0.0625,0.125,0.0625,0.125,0.25,0.125,0.0625,0.125,0.0625]": (0.0625, 0.125, 0.0625, 0.125, 0.25, 0.125,
                                                                    0.0625, 0.125, 0.0625),  # floats
}
TILES = [pytest.param(RGB_TIF, "2,5", id="rgb-interior"), pytest.param(RGB_TIF, "2,11", id="rgb-edge"),
         pytest.param(RGB_TIF, "0,0", id="rgb-smallest"), pytest.param(GREY16_TIF, "2,3", id="grey16")]
JPEG_NOISE = 2.0  # both re-encoded at Q75 from the same pixels
STORED_NOISE = 4.0  # our stored Q90 tile passed through vs 1.3's Q75 re-encode


async def ours(client: httpx.AsyncClient, query: str) -> httpx.Response:
    return await client.get(f"/fcgi-bin/iipsrv.fcgi?{query}")


def pixels(body: bytes) -> Any:
    return decode(body).numpy().astype(np.float64)


def correlate(img: Any, kernel: tuple[float, ...]) -> Any:
    """1.3's Transform::convolution on 8-bit pixels, in numpy: the kernel unflipped, edges extended,
    divided by the kernel's sum when positive, clipped and truncated to 8 bits."""
    side = math.isqrt(len(kernel))
    k = np.array(kernel, dtype=np.float64).reshape(side, side)
    img = img if img.ndim == 3 else img[:, :, None]
    half = side // 2
    padded = np.pad(img, ((half, half), (half, half), (0, 0)), mode="edge")
    h, w = img.shape[:2]
    out = sum(padded[fy:fy + h, fx:fx + w] * k[fy, fx] for fy in range(side) for fx in range(side))
    total = k.sum()
    out = out / total if total > 0 else out
    return np.floor(np.clip(out, 0, 255) + 1e-6)


# -- CNV ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("ident,tile", TILES)
@pytest.mark.parametrize("cnv", list(KERNELS))
async def test_cnv_tiles_match_iipsrv13(iipsrv13: httpx.Client, client: httpx.AsyncClient, ident: str, tile: str,
                                        cnv: str) -> None:
    """PNG tiles: same size and bands, at most one level from 1.3 (1.3 rounds each product to a float and
    truncates some integer results one lower) and from the exact correlation of the unprocessed tile;
    JPEG tiles within JPEG noise of 1.3's."""
    plain = pixels((await ours(client, f"FIF={ident}&PTL={tile}")).content)
    mine = await ours(client, f"FIF={ident}&CNV={cnv}&PTL={tile}")
    theirs = iipsrv13.get(f"?FIF={ident}&CNV={cnv}&PTL={tile}")
    assert (mine.status_code, theirs.status_code) == (200, 200)
    a, b = pixels(mine.content), pixels(theirs.content)
    assert a.shape == b.shape
    assert np.abs(a - b).max() <= 1 and np.abs(a - b).mean() < 0.5
    if ident != GREY16_TIF:  # 16-bit sources convolve at 16 bits: an 8-bit reference cannot tell
        assert np.abs(a - correlate(plain, KERNELS[cnv]).reshape(a.shape)).max() <= 1
    jm = decode((await ours(client, f"FIF={ident}&CNV={cnv}&JTL={tile}")).content)
    jt = decode(iipsrv13.get(f"?FIF={ident}&CNV={cnv}&JTL={tile}").content)
    assert mean_diff(jm, jt) < JPEG_NOISE


@pytest.mark.parametrize("cnv", ["sobel", "laplace", "emboss", "[0,0,0,0,-1,0,0,0,2]"])
async def test_cnv_changes_the_tile(client: httpx.AsyncClient, cnv: str) -> None:
    """Not the stored tile passed through, nor a cached unprocessed one: a known value changes."""
    plain = pixels((await ours(client, f"FIF={RGB_TIF}&PTL=2,5")).content)
    done = pixels((await ours(client, f"FIF={RGB_TIF}&CNV={cnv}&PTL=2,5")).content)
    assert np.abs(plain - done).mean() > 2
    jpeg_plain = (await ours(client, f"FIF={RGB_TIF}&JTL=2,5")).content
    jpeg_done = (await ours(client, f"FIF={RGB_TIF}&CNV={cnv}&JTL=2,5")).content
    assert mean_diff(decode(jpeg_plain), decode(jpeg_done)) > 2


async def test_cnv_known_pixels(client: httpx.AsyncClient) -> None:
    """The 1x1 kernel [2] (its positive sum is divided out): the tile itself; [-1] (sum not positive, so
    not divided): every value negated, clipped to black."""
    plain = pixels((await ours(client, f"FIF={RGB_TIF}&PTL=2,5")).content)
    assert np.array_equal(pixels((await ours(client, f"FIF={RGB_TIF}&CNV=[2]&PTL=2,5")).content), plain)
    assert pixels((await ours(client, f"FIF={RGB_TIF}&CNV=[-1]&PTL=2,5")).content).max() == 0


@pytest.mark.parametrize("extra", ["CMP=jet", "GAM=0.5&INV=1", "CNT=3", "MINMAX=-:0,128"])
async def test_cnv_in_the_pipeline_order(iipsrv13: httpx.Client, client: httpx.AsyncClient, extra: str) -> None:
    """Convolution after gamma, inversion and colour map, before contrast, as 1.3 (JTL.cc)."""
    query = f"FIF={RGB_TIF}&{extra}&CNV=sobel&JTL=1,0"
    mine, theirs = decode((await ours(client, query)).content), decode(iipsrv13.get(f"?{query}").content)
    assert mean_diff(mine, theirs) < JPEG_NOISE


async def test_cnv_cvt_matches_iipsrv13(iipsrv13: httpx.Client, client: httpx.AsyncClient) -> None:
    """CVT at a level's own size; 1.3 convolves before its final resize, we after ours (JPEG + that)."""
    query = f"FIF={RGB_TIF}&CNV=sobel&WID=251&CVT=jpeg"
    mine, theirs = decode((await ours(client, query)).content), decode(iipsrv13.get(f"?{query}").content)
    assert (mine.width, mine.height) == (theirs.width, theirs.height)
    assert mean_diff(mine, theirs) < 4


async def test_cnv_keeps_alpha(client: httpx.AsyncClient) -> None:
    """Alpha is not convolved (1.3 convolves every channel, alpha too; it cannot read this PNG)."""
    plain = pixels((await ours(client, f"FIF={ALPHA_PNG}&PTL=0,0")).content)
    done = pixels((await ours(client, f"FIF={ALPHA_PNG}&CNV=sobel&PTL=0,0")).content)
    assert done.shape == plain.shape and done.shape[2] == 4
    assert np.array_equal(done[:, :, 3], plain[:, :, 3])
    assert np.abs(done[:, :, :3] - correlate(plain[:, :, :3], KERNELS["sobel"])).max() <= 1


@pytest.mark.parametrize(
    "cnv,theirs_is",
    [pytest.param("[1,2,3,4]", "plain", id="even-side"), pytest.param("[1,2,3]", "plain", id="not-square"),
     pytest.param("[" + ",".join(["1"] * 49) + "]", "plain", id="7x7"),
     pytest.param("blur", "black", id="unknown-name")],
)
async def test_cnv_malformed_is_400_where_iipsrv13_ignores_it(iipsrv13: httpx.Client, client: httpx.AsyncClient,
                                                             cnv: str, theirs_is: str) -> None:
    mine = await ours(client, f"FIF={RGB_TIF}&CNV={cnv}&PTL=2,5")
    assert mine.status_code == 400
    text = "2 1 " + echo(f"CNV={cnv}")  # a long argument repeated in part only
    assert mine.text == f"Error/{len(text)}:{text}\r\n"
    theirs = iipsrv13.get(f"?FIF={RGB_TIF}&CNV={cnv}&PTL=2,5")
    assert theirs.status_code == 200
    got = pixels(theirs.content)
    if theirs_is == "black":
        assert got.max() == 0
    else:
        assert np.array_equal(got, pixels(iipsrv13.get(f"?FIF={RGB_TIF}&PTL=2,5").content))


# -- SHD (1.3 crashes on it: checked against its formula) ---------------------------------------------
def shade(img: Any, h: int, v: int) -> Any:
    """1.3's Transform::shade on an 8-bit RGB normal map, in numpy."""
    sy = math.cos(math.radians(h))
    sx = math.sqrt(1 - sy * sy) * (-1 if h > 180 else 1)
    sz = -math.sin(math.radians(v))
    light = np.array([sx, sy, sz]) / math.sqrt(sx * sx + sy * sy + sz * sz)
    n = img / 255.0
    normal = np.where(np.all(n == 0, axis=2, keepdims=True), 0.0, 1 - 2 * n)
    return np.floor(np.clip((normal @ light) * 0.5, 0, 1) * 255 + 1e-6)


@pytest.mark.parametrize("angles", ["0,0", "45,30", "90,0", "180,45", "270,-30", "315,60", "360,90"])
async def test_shd_matches_iipsrv13_formula(client: httpx.AsyncClient, angles: str) -> None:
    h, v = (int(a) for a in angles.split(","))
    plain = pixels((await ours(client, f"FIF={RGB_TIF}&PTL=2,5")).content)
    r = await ours(client, f"FIF={RGB_TIF}&SHD={angles}&PTL=2,5")
    got = decode(r.content)
    assert (got.width, got.height, got.bands) == (plain.shape[1], plain.shape[0], 1)
    assert np.abs(got.numpy().astype(np.float64) - shade(plain, h, v)).max() <= 1


async def test_shd_differs_by_angle_and_can_be_coloured(client: httpx.AsyncClient) -> None:
    a = decode((await ours(client, f"FIF={RGB_TIF}&SHD=0,0&JTL=2,5")).content)
    b = decode((await ours(client, f"FIF={RGB_TIF}&SHD=180,0&JTL=2,5")).content)
    assert mean_diff(a, b) > 10
    coloured = decode((await ours(client, f"FIF={RGB_TIF}&SHD=45,30&CMP=hot&JTL=2,5")).content)
    assert coloured.bands == 3


async def test_shd_keeps_alpha(client: httpx.AsyncClient) -> None:
    got = decode((await ours(client, f"FIF={ALPHA_PNG}&SHD=45,30&PTL=0,0")).content)
    assert got.bands == 2


async def test_shd_needs_three_bands(client: httpx.AsyncClient) -> None:
    """A one-band image has no normals: 400 (1.3 reads past its buffer and dies)."""
    r = await ours(client, f"FIF={GREY16_TIF}&SHD=45,30&JTL=1,0")
    assert r.status_code == 400


# -- PFL ----------------------------------------------------------------------------------------------
PROFILES = [
    pytest.param(RGB_TIF, "2:10,10-13,10", id="rgb-row-full"),
    pytest.param(RGB_TIF, "2:0,700-1003,700", id="rgb-whole-last-row"),
    pytest.param(RGB_TIF, "1:100,5-100,170", id="rgb-column-half"),
    pytest.param(RGB_TIF, "0:3,4", id="rgb-point-smallest"),
    pytest.param(RGB_TIF, "0:0,0-250,0", id="rgb-row-smallest"),
    pytest.param(GREY16_TIF, "2:10,10-20,10", id="grey16-row"),
    pytest.param(GREY16_TIF, "1:7,3-7,200", id="grey16-column"),
    pytest.param(GREY16_TIF, "0:149,101", id="grey16-point-corner"),
]


@pytest.mark.parametrize("ident,arg", PROFILES)
async def test_pfl_matches_iipsrv13(iipsrv13: httpx.Client, client: httpx.AsyncClient, ident: str, arg: str) -> None:
    mine, theirs = await ours(client, f"FIF={ident}&PFL={arg}"), iipsrv13.get(f"?FIF={ident}&PFL={arg}")
    assert (mine.status_code, theirs.status_code) == (200, 200)
    assert mine.headers["content-type"] == theirs.headers["content-type"] == "application/json"
    assert json.loads(mine.content) == json.loads(theirs.content)
    assert mine.content == theirs.content  # 1.3's layout too


async def test_pfl_known_values(client: httpx.AsyncClient) -> None:
    """16-bit samples stay 16-bit; RGB is interleaved per pixel; the end is excluded."""
    grey = json.loads((await ours(client, f"FIF={GREY16_TIF}&PFL=2:10,10-20,10")).content)["profile"]
    assert len(grey) == 10 and max(grey) > 255 and all(v % 257 == 0 for v in grey)  # written as v * 257
    rgb = json.loads((await ours(client, f"FIF={RGB_TIF}&PFL=2:500,0-503,0")).content)["profile"]
    assert len(rgb) == 9 and [abs(rgb[i] - 127) <= 3 for i in (0, 3, 6)] == [True] * 3  # R = x * 255 / 1003


async def test_pfl_stack_pages(iipsrv13: httpx.Client, client: httpx.AsyncClient) -> None:
    """A stack: one list per page, named and scaled; 1.3's lists from the second page on carry extra
    values past the line (its bug), so only the line's own values are compared."""
    query = f"FIF={STACK_TIF}&PFL=2:10,10-13,10"
    mine = json.loads((await ours(client, query)).content)["profile"]
    theirs = json.loads(iipsrv13.get(f"?{query}").content)["profile"]
    assert list(mine) == list(theirs) == list(STACK_NAMES)
    for name in STACK_NAMES:
        assert len(mine[name]) == 9
        assert mine[name] == theirs[name][:9]
    assert len(theirs[STACK_NAMES[1]]) > 9  # the 1.3 bug we do not copy
    assert mine[STACK_NAMES[1]][0] % STACK_SCALES[1] == 0


@pytest.mark.parametrize(
    "arg,status", [pytest.param("2:1000,10-1004,10", 404, id="past-right-edge"),
                   pytest.param("2:1003,10", 404, id="point-at-width"), pytest.param("9:1,1", 404, id="no-resolution"),
                   pytest.param("2:10,10-20,15", 400, id="diagonal"), pytest.param("abc", 400, id="letters")],
)
async def test_pfl_errors(iipsrv13: httpx.Client, client: httpx.AsyncClient, arg: str, status: int) -> None:
    """Ours: 404 outside the level, 400 malformed. 1.3: its HTML banner (200) for an impossible line or
    resolution, and a profile of whatever it reads for the rest (a point at the width reads past the row,
    a diagonal is read as a row, letters as the point 0,0)."""
    mine = await ours(client, f"FIF={RGB_TIF}&PFL={arg}")
    assert mine.status_code == status
    theirs = iipsrv13.get(f"?FIF={RGB_TIF}&PFL={arg}")
    assert theirs.status_code == 200


# -- SPECTRA ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("arg", ["2,0,10,10", "2,3,100,150", "1,1,0,0", "0,0,0,0"])
async def test_spectra_grey16_is_byte_identical(iipsrv13: httpx.Client, client: httpx.AsyncClient, arg: str) -> None:
    query = f"FIF={GREY16_TIF}&SPECTRA={arg}"
    mine, theirs = await ours(client, query), iipsrv13.get(f"?{query}")
    assert mine.status_code == theirs.status_code == 200
    assert mine.headers["content-type"] == theirs.headers["content-type"] == "application/xml"
    assert mine.content == theirs.content


async def test_spectra_edge_tile_reads_the_pixel(iipsrv13: httpx.Client, client: httpx.AsyncClient) -> None:
    """In a narrow edge tile 1.3 indexes with the full tile width (y*256+x of a 150-wide tile): another
    pixel. Ours is the pixel the profile command reads there."""
    body = (await ours(client, f"FIF={GREY16_TIF}&SPECTRA=0,0,140,90")).text
    pfl = json.loads((await ours(client, f"FIF={GREY16_TIF}&PFL=0:140,90")).content)["profile"]
    assert f"<reflectance>{pfl[0] / 65535:f}</reflectance>" in body
    assert iipsrv13.get(f"?FIF={GREY16_TIF}&SPECTRA=0,0,140,90").text != body


async def test_spectra_rgb_per_band(iipsrv13: httpx.Client, client: httpx.AsyncClient) -> None:
    """RGB: a point per band (`0:0`..`0:2`), each the pixel's band / 255; 1.3 gives one point, right
    only at 0,0 (band 0) where its index into the interleaved tile happens to be the pixel's."""
    import xml.etree.ElementTree as ET

    def points(body: bytes) -> list[tuple[str, float]]:
        return [(p.findtext("wavelength") or "", float(p.findtext("reflectance") or "nan"))
                for p in ET.fromstring(body).iter("point")]

    mine = points((await ours(client, f"FIF={RGB_TIF}&SPECTRA=2,5,0,0")).content)
    theirs = points(iipsrv13.get(f"?FIF={RGB_TIF}&SPECTRA=2,5,0,0").content)
    assert [n for n, _ in mine] == ["0:0", "0:1", "0:2"]
    assert theirs == [("0", mine[0][1])]
    pfl = json.loads((await ours(client, f"FIF={RGB_TIF}&PFL=2:256,256")).content)["profile"]
    assert [round(v * 255) for _, v in mine] == pfl  # tile 5 of 4x3 starts at 256,256


async def test_spectra_stack_pages(client: httpx.AsyncClient) -> None:
    body = (await ours(client, f"FIF={STACK_TIF}&SPECTRA=2,0,10,10")).text
    assert [f"<wavelength>{n}:{b}</wavelength>" in body for n in STACK_NAMES for b in range(3)] == [True] * 9


@pytest.mark.parametrize(
    "arg,status,theirs_status",
    [pytest.param("2,0,300,10", 400, 400, id="x-past-tile-width"),
     pytest.param("2,11,200,200", 400, 200, id="past-edge-tile"),  # 1.3: no points
     pytest.param("2,999,1,1", 404, 200, id="no-such-tile"),  # 1.3: a 404 line inside its XML
     pytest.param("9,0,1,1", 404, 200, id="no-such-resolution")],
)
async def test_spectra_errors(iipsrv13: httpx.Client, client: httpx.AsyncClient, arg: str, status: int,
                              theirs_status: int) -> None:
    assert (await ours(client, f"FIF={RGB_TIF}&SPECTRA={arg}")).status_code == status
    assert iipsrv13.get(f"?FIF={RGB_TIF}&SPECTRA={arg}").status_code == theirs_status


# -- JTLS, LYR, ICC -------------------------------------------------------------------------------------
@pytest.mark.parametrize("arg,jtl", [("0,2,5,90", "2,5"), ("0,1,3,0", "1,3"), ("0,0,0,90", "0,0")])
async def test_jtls_is_jtl(iipsrv13: httpx.Client, client: httpx.AsyncClient, arg: str, jtl: str) -> None:
    mine = await ours(client, f"FIF={RGB_TIF}&JTLS={arg}")
    assert mine.content == (await ours(client, f"FIF={RGB_TIF}&JTL={jtl}")).content
    assert mean_diff(decode(mine.content), decode(iipsrv13.get(f"?FIF={RGB_TIF}&JTLS={arg}").content)) < STORED_NOISE


async def test_jtls_stack_page(iipsrv13: httpx.Client, client: httpx.AsyncClient) -> None:
    mine = decode((await ours(client, f"FIF={STACK_TIF}&JTLS=2,2,1,90")).content)
    theirs = decode(iipsrv13.get(f"?FIF={STACK_TIF}&JTLS=2,2,1,90").content)
    page0 = decode((await ours(client, f"FIF={STACK_TIF}&JTL=2,1")).content)
    assert mean_diff(mine, theirs) < 4 < mean_diff(mine, page0)


@pytest.mark.parametrize("cmd", ["LYR=3", "ICC=anything", "LYR=256&ICC=1"])
async def test_lyr_and_icc_leave_tiff_tiles_alone(iipsrv13: httpx.Client, client: httpx.AsyncClient, cmd: str) -> None:
    plain = (await ours(client, f"FIF={RGB_TIF}&JTL=2,5")).content
    assert (await ours(client, f"FIF={RGB_TIF}&{cmd}&JTL=2,5")).content == plain
    assert iipsrv13.get(f"?FIF={RGB_TIF}&{cmd}&JTL=2,5").content == iipsrv13.get(f"?FIF={RGB_TIF}&JTL=2,5").content


@pytest.mark.parametrize("cmd", ["LYR=0", "LYR=999", "JTLS=1,0", "SHD=45", "PFL=2:10,10-", "SPECTRA=2,0"])
async def test_malformed_error_lines(iipsrv13: httpx.Client, client: httpx.AsyncClient, cmd: str) -> None:
    """Ours: 400 with `2 1 CMD=arg`. 1.3 answers most of these with an image or nothing; where it
    answers an IIP error, the `Error/` line is the same."""
    query = f"FIF={RGB_TIF}&{cmd}" + ("" if cmd.startswith(("JTLS", "PFL", "SPECTRA")) else "&JTL=0,0")
    mine = await ours(client, query)
    assert mine.status_code == 400
    assert mine.text == f"Error/{len('2 1 ' + cmd)}:2 1 {cmd}\r\n"
    theirs = iipsrv13.get(f"?{query}")
    if theirs.headers["content-type"] == "application/vnd.netfpx":
        line = next(x for x in theirs.text.splitlines() if x.startswith("Error/"))
        assert line.startswith("Error/") and "2 1" in line


def test_iipsrv13_answers_an_image_for_lyr0(iipsrv13: httpx.Client) -> None:
    """How 1.3 differs: `LYR=0` (out of 1..256) is logged and the tile sent."""
    r = iipsrv13.get(f"?FIF={RGB_TIF}&LYR=0&JTL=0,0")
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"


def test_reference_helpers() -> None:
    """The numpy references used above: correlation unflipped with edge extension; shading of a flat
    normal (0, 0, -1) lit from 12 o'clock, 90 degrees down and up (1.3 keeps the horizontal part at full
    length, so 'straight down' is 45 degrees)."""
    img = np.arange(16, dtype=np.float64).reshape(4, 4, 1) * 10
    out = correlate(img, KERNELS["sobel"])[:, :, 0]
    assert out[1, 1] == 80 and out[0, 0] == 40  # right minus left, edge pixel repeated
    flat = np.full((1, 1, 3), [127.5, 127.5, 255.0])
    assert shade(flat, 0, 90)[0, 0] == 90 and shade(flat, 0, -90)[0, 0] == 0  # light (0, 1, -+1) / sqrt 2
