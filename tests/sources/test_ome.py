"""OME-TIFF (sources/ome.py): found by content, described from its OME-XML, pixels equal to tifffile's own
read of the same file at every stored level (partial edge tiles included), channels as bands, Z/T planes
as pages, and the rendering every protocol serves from it: the channel composite, `;c=` views, 16-bit
single channels, IIP's raw-channel processing, and 415 for broken files."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import numpy as np
import pytest
import pyvips

from tileserver.errors import NotFound, SourceError
from tileserver.levels import halvings
from tileserver.models import Channel
from tileserver.settings import Settings
from tileserver.sources.base import HEAD_BYTES, Selector
from tileserver.sources.ome import OmeFormat, ome_color, parse_ome
from tileserver.sources.pyramid import PyramidReader

from ..conftest import served
from ..ome_images import (
    ALL,
    FIVE,
    FOUR,
    INTERLEAVED,
    NAMES,
    PLAIN,
    RGB8,
    RGB_COLOURS,
    THREE,
    ZT,
    OmeFixture,
    composite_reference,
    make_ome_images,
    percentile_windows,
    reference,
    same_composite,
)

OMES = [f for f in ALL if f.ome]
BROKEN = "broken-xml.ome.tif"
MISSING_IFD = "missing-ifd.ome.tif"


@pytest.fixture(scope="module")
def ome_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ome") / "root"
    make_ome_images(root)
    shutil.copy(root / FOUR.name, root / "renamed.tif")  # found by content, not by name
    write_bad(root)
    return root


def write_bad(root: Path) -> None:
    import tifffile

    data = np.zeros((64, 80), np.uint16)
    ns = 'xmlns="http://www.openmicroscopy.org/Schemas/OME/2016-06"'
    tifffile.imwrite(root / BROKEN, data, description=f'<?xml version="1.0"?><OME {ns}><Image><Pixels', metadata=None)
    xml = (f'<?xml version="1.0"?><OME {ns}><Image ID="Image:0"><Pixels DimensionOrder="XYCZT" Type="uint16" '
           'SizeX="80" SizeY="64" SizeC="2" SizeZ="1" SizeT="1"><Channel/><Channel/>'
           '<TiffData IFD="0" FirstC="0"/><TiffData IFD="7" FirstC="1"/></Pixels></Image></OME>')
    tifffile.imwrite(root / MISSING_IFD, data, description=xml, metadata=None)


@pytest.fixture(scope="module")
def fmt() -> OmeFormat:
    return OmeFormat(PyramidReader(256, 8))


@pytest.fixture(scope="module")
async def ome_client(ome_root: Path) -> AsyncIterator[httpx.AsyncClient]:
    async with served(Settings(root=ome_root)) as c:
        yield c


def head(path: Path) -> bytes:
    return path.read_bytes()[:HEAD_BYTES]


def pixels(img: Any) -> np.ndarray:
    """(bands, height, width) of a pyvips image."""
    arr = np.asarray(img.numpy())
    return arr[None] if arr.ndim == 2 else np.moveaxis(arr, -1, 0)


async def get_image(client: httpx.AsyncClient, url: str) -> np.ndarray:
    r = await client.get(url)
    assert r.status_code == 200, (url, r.status_code, r.text)
    return pixels(pyvips.Image.new_from_buffer(r.content, ""))


def iiif(ident: str, rest: str) -> str:
    return f"/iiif/3/{quote(ident, safe='')}/{rest}"


# -- OME-XML ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(("value", "rgb"), [
    ("-16776961", (255, 0, 0)), ("16711935", (0, 255, 0)), ("65535", (0, 0, 255)), ("-1", (255, 255, 255)),
    ("-16711681", (255, 0, 255)), ("255", (0, 0, 0)), ("-65281", (255, 255, 0)), (None, None), ("red", None),
])
def test_ome_color_is_signed_rgba(value: str | None, rgb: tuple[int, int, int] | None) -> None:
    assert ome_color(value) == rgb


def pixels_xml(body: str, order: str = "XYCZT", c: int = 2, z: int = 3, t: int = 1, uuid: str = "") -> bytes:
    root_uuid = f' UUID="{uuid}"' if uuid else ""
    return (f'<OME xmlns="http://www.openmicroscopy.org/Schemas/OME/2016-06"{root_uuid}><Image ID="Image:0">'
            f'<Pixels DimensionOrder="{order}" Type="uint16" SizeX="10" SizeY="8" SizeC="{c}" SizeZ="{z}" '
            f'SizeT="{t}">{body}</Pixels></Image></OME>').encode()


@pytest.mark.parametrize(("xml", "planes"), [
    pytest.param(pixels_xml(""), {(0, 0, 0): 0, (1, 0, 0): 1, (0, 1, 0): 2, (1, 1, 0): 3, (0, 2, 0): 4,
                                  (1, 2, 0): 5}, id="no-tiffdata-xyczt"),
    pytest.param(pixels_xml("", order="XYZCT"), {(0, 0, 0): 0, (0, 1, 0): 1, (0, 2, 0): 2, (1, 0, 0): 3,
                                                 (1, 1, 0): 4, (1, 2, 0): 5}, id="no-tiffdata-xyzct"),
    pytest.param(pixels_xml('<TiffData IFD="0" PlaneCount="6"/>'), {(0, 0, 0): 0, (1, 0, 0): 1, (0, 1, 0): 2,
                                                                    (1, 1, 0): 3, (0, 2, 0): 4, (1, 2, 0): 5},
                 id="one-block"),
    pytest.param(pixels_xml('<TiffData IFD="4" FirstC="1" FirstZ="0"/><TiffData IFD="2" FirstZ="2"/>'),
                 {(1, 0, 0): 4, (0, 2, 0): 2}, id="one-plane-each"),
    pytest.param(pixels_xml('<TiffData IFD="1" FirstZ="1" PlaneCount="2"/>'), {(0, 1, 0): 1, (1, 1, 0): 2},
                 id="first-and-count"),
    pytest.param(pixels_xml('<TiffData IFD="0" PlaneCount="2"><UUID FileName="x.ome.tif">urn:uuid:a</UUID>'
                            '</TiffData><TiffData IFD="0" FirstZ="1" PlaneCount="2"><UUID FileName="y.ome.tif">'
                            'urn:uuid:b</UUID></TiffData>', uuid="urn:uuid:a"),
                 {(0, 0, 0): 0, (1, 0, 0): 1}, id="other-file-left-out"),
])
def test_tiffdata_planes(xml: bytes, planes: dict[tuple[int, int, int], int]) -> None:
    assert parse_ome(xml).planes == planes


def test_huge_declared_sizes_stay_bounded() -> None:
    """SizeZ and SizeT of a billion, PlaneCount of a billion: only the planes a TIFF can hold are listed."""
    xml = pixels_xml('<TiffData PlaneCount="1000000000"/>', z=10**9, t=10**9)
    assert len(parse_ome(xml).planes) == 4096


@pytest.mark.parametrize("xml", [
    pytest.param(b"<OME><Image><Pixels", id="not-well-formed"),
    pytest.param(b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "b">]><OME/>', id="doctype"),
    pytest.param(b'<OME xmlns="http://www.openmicroscopy.org/Schemas/OME/2016-06"/>', id="no-image"),
    pytest.param(pixels_xml("").replace(b'Type="uint16"', b'Type="bit16"'), id="unknown-type"),
    pytest.param(pixels_xml("").replace(b'SizeX="10"', b'SizeX="0"'), id="zero-width"),
    pytest.param(pixels_xml("<Channel/>"), id="channels-not-sizec"),
    pytest.param(pixels_xml("", c=10**9), id="a-billion-channels"),
])
def test_bad_ome_xml(xml: bytes) -> None:
    with pytest.raises(ValueError):
        parse_ome(xml)


# -- format -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(("name", "claimed"), [
    *[pytest.param(f.name, True, id=f.name) for f in OMES],
    pytest.param(RGB8, True, id="rgb8"), pytest.param("renamed.tif", True, id="renamed"),
    pytest.param(PLAIN.name, False, id="plain-tiff"), pytest.param(BROKEN, True, id="broken-but-ome"),
])
def test_probe_by_content(fmt: OmeFormat, ome_root: Path, name: str, claimed: bool) -> None:
    assert fmt.probe(str(ome_root / name), head(ome_root / name)) is claimed


def test_probe_refuses_non_tiff(fmt: OmeFormat, tmp_path: Path) -> None:
    (tmp_path / "x.ome.tif").write_bytes(b"<OME xmlns='http://www.openmicroscopy.org/Schemas/OME/'/>")
    assert not fmt.probe(str(tmp_path / "x.ome.tif"), head(tmp_path / "x.ome.tif"))


@pytest.mark.parametrize("f", OMES, ids=lambda f: f.name)
def test_meta(fmt: OmeFormat, ome_root: Path, f: OmeFixture) -> None:
    meta = fmt.open(str(ome_root / f.name), f.name).meta
    assert (meta.width, meta.height, meta.bands, meta.bits, meta.sample_format) == (f.width, f.height, f.channels,
                                                                                   16, "uint")
    import tifffile

    with tifffile.TiffFile(ome_root / f.name) as tif:
        stored = [(lv.shape[-1], lv.shape[-2]) if not f.interleaved else (lv.shape[1], lv.shape[0])
                  for lv in tif.series[0].levels]
    assert [(lv.width, lv.height) for lv in meta.levels if lv.stored] == stored
    assert [lv.subifd for lv in meta.levels if lv.stored] == list(range(-1, f.levels - 1))
    last = meta.levels[-1]
    assert max(last.width, last.height) <= 256 and all(not lv.stored for lv in meta.levels[f.levels:])
    if f.colours:
        assert meta.channels == tuple(Channel(n, c) for n, c in zip(NAMES, RGB_COLOURS[: f.channels], strict=False))
    else:
        assert meta.channels == (Channel(),) * f.channels
    assert meta.resolution is not None and meta.resolution[2] == 3
    assert meta.resolution[0] == pytest.approx(1e4 / 0.325)
    props = dict(meta.properties)
    assert props["ome.SizeC"] == str(f.channels) and props["ome.Type"] == "uint16"
    assert props["ome.PhysicalSizeX"] == "0.325"
    assert meta.microns_per_pixel == pytest.approx((0.325, 0.325))
    assert len(meta.stack) == (f.z * f.t if f.z * f.t > 1 else 0)
    assert meta.compression == ""  # channels are rendered, never passed through


BOXES = [pytest.param(None, id="whole"), pytest.param((100, 40, 128, 128), id="inner-box"),
         pytest.param("edge", id="edge-tile")]


@pytest.mark.parametrize("box", BOXES)
@pytest.mark.parametrize(("f", "level"), [pytest.param(f, level, id=f"{f.name}-level{level}")
                                          for f in OMES for level in range(f.levels)])
def test_pixels_equal_tifffile(fmt: OmeFormat, ome_root: Path, f: OmeFixture, level: int,
                               box: tuple[int, int, int, int] | str | None) -> None:
    image = fmt.open(str(ome_root / f.name), f.name)
    lv = image.meta.levels[level]
    if box is None:
        box = (0, 0, lv.width, lv.height)
    elif box == "edge":
        box = ((lv.columns() - 1) * 256, (lv.rows() - 1) * 256, lv.width - (lv.columns() - 1) * 256,
               lv.height - (lv.rows() - 1) * 256)
    assert isinstance(box, tuple)
    x, y, w, h = box
    got = image.read(level, box)
    assert (got.format, got.bands) == ("ushort", f.channels)
    assert np.array_equal(pixels(got), reference(ome_root, f, level)[:, y:y + h, x:x + w])


@pytest.mark.parametrize("f", [THREE, INTERLEAVED, FIVE], ids=lambda f: f.name)
def test_virtual_levels_keep_16_bits(fmt: OmeFormat, ome_root: Path, f: OmeFixture) -> None:
    """Levels below the stored ones are reductions of the samples, still 16-bit and every band: close to
    a 2x2 box average of tifffile's level above (our kernel is lanczos3)."""
    image = fmt.open(str(ome_root / f.name), f.name)
    index = f.levels
    lv = image.meta.levels[index]
    got = image.read(index, (0, 0, lv.width, lv.height))
    assert (got.format, got.bands, got.width, got.height) == ("ushort", f.channels, lv.width, lv.height)
    above = reference(ome_root, f, f.levels - 1).astype(np.float64)
    for _ in range(index - f.levels + 1):
        h, w = above.shape[1] // 2 * 2, above.shape[2] // 2 * 2
        above = above[:, :h, :w].reshape(above.shape[0], h // 2, 2, w // 2, 2).mean(axis=(2, 4))
    got_px = pixels(got).astype(np.float64)
    assert np.abs(got_px - above).mean() / above.mean() < 0.1  # lanczos3 vs box, on a noisy texture
    assert np.allclose(got_px.mean(axis=(1, 2)), above.mean(axis=(1, 2)), rtol=0.02)  # every band its own


@pytest.mark.parametrize("page", range(6))
def test_z_t_planes_are_pages(fmt: OmeFormat, ome_root: Path, page: int) -> None:
    image = fmt.open(str(ome_root / ZT.name), ZT.name)
    assert [s.name for s in image.meta.stack] == [f"z={z} t={t}" for t in range(2) for z in range(3)]
    box = (0, 0, ZT.width, ZT.height)
    expected = reference(ome_root, ZT, 0, page)
    assert np.array_equal(pixels(image.read(0, box, page)), expected)
    selected = image.select(Selector(page=page))
    assert selected.meta.stack == () and selected.meta.ident == f"{ZT.name};page={page}"
    assert np.array_equal(pixels(selected.read(0, box)), expected)
    both = image.select(Selector(page=page, channels="2"))
    assert np.array_equal(pixels(both.read(0, box)), expected[1:2])


def test_missing_page_and_associated(fmt: OmeFormat, ome_root: Path) -> None:
    image = fmt.open(str(ome_root / ZT.name), ZT.name)
    with pytest.raises(NotFound):
        image.select(Selector(page=6))
    with pytest.raises(NotFound):
        image.select(Selector(associated="label"))
    with pytest.raises(NotFound):
        fmt.open(str(ome_root / FOUR.name), FOUR.name).select(Selector(page=0))


@pytest.mark.parametrize("spec", ["2", "3,1", "1,2,3,4", "4:0-100"])
def test_channel_view_reads_only_its_channels(fmt: OmeFormat, ome_root: Path, spec: str) -> None:
    image = fmt.open(str(ome_root / FOUR.name), FOUR.name).select(Selector(channels=spec))
    bands = [int(item.split(":")[0]) - 1 for item in spec.split(",")]
    assert image.meta.ident == f"{FOUR.name};c={spec}" and image.meta.bands == len(bands)
    assert [c.name for c in image.meta.channels] == [NAMES[b] for b in bands]
    got = image.read(1, (0, 0, 502, 351))
    assert np.array_equal(pixels(got), reference(ome_root, FOUR, 1)[bands])


def test_rgb_brightfield_is_an_rgb_image(fmt: OmeFormat, ome_root: Path) -> None:
    image = fmt.open(str(ome_root / RGB8), RGB8)
    assert (image.meta.channels, image.meta.colorspace, image.meta.bands, image.meta.bits) == ((), "srgb", 3, 8)


@pytest.mark.parametrize(("name", "error"), [(BROKEN, SourceError), (MISSING_IFD, SourceError)])
def test_bad_files_are_source_errors(fmt: OmeFormat, ome_root: Path, name: str, error: type[Exception]) -> None:
    with pytest.raises(error):
        fmt.open(str(ome_root / name), name)


@pytest.mark.parametrize("url", [
    "/iiif/3/{}/info.json", "/iiif/3/{}/full/max/0/default.jpg", "/iip?FIF={}&OBJ=IIP,1.0",
    "/iip?FIF={}&JTL=0,0", "/deepzoom/{}.dzi", "/zoomify/{}/ImageProperties.xml",
])
@pytest.mark.parametrize("name", [BROKEN, MISSING_IFD])
async def test_bad_files_are_415_everywhere(ome_client: httpx.AsyncClient, name: str, url: str) -> None:
    r = await ome_client.get(url.format(name))
    assert r.status_code == 415, r.text
    assert "/tmp" not in r.text and str(Path.cwd()) not in r.text


# -- rendering through the protocols ------------------------------------------------------------------
def default_windows(root: Path) -> list[tuple[float, float]]:
    """FOUR's data windows: percentiles of its smallest level (stored, 251 x 176: tifffile reads it)."""
    return percentile_windows(reference(root, FOUR, 2))


@pytest.mark.parametrize("box", [(256, 256, 256, 256), (768, 512, 235, 189), (0, 0, 1003, 701)])
async def test_default_composite(ome_client: httpx.AsyncClient, ome_root: Path, box: tuple[int, int, int, int]
                                 ) -> None:
    """The image in its OME colours, each channel scaled from its data window, at full resolution."""
    x, y, w, h = box
    got = await get_image(ome_client, iiif(FOUR.name, f"{x},{y},{w},{h}/max/0/default.png"))
    data = reference(ome_root, FOUR)[:, y:y + h, x:x + w]
    expected = composite_reference(data, RGB_COLOURS[:4], default_windows(ome_root))
    assert same_composite(np.moveaxis(got, 0, -1), expected)


@pytest.mark.parametrize(("spec", "colours", "windows"), [
    pytest.param("1:100-2000:ff0000,3::00ff00", [(255, 0, 0), (0, 255, 0)], [(100, 2000), None], id="two"),
    pytest.param("2:500-4000", [(255, 255, 255)], [(500, 4000)], id="one-grey"),
    pytest.param("4:0-9000:ffa000", [(255, 160, 0)], [(0, 9000)], id="one-coloured"),
    pytest.param("4,3,2", [(255, 255, 255), (0, 0, 255), (0, 255, 0)], [None, None, None], id="own-colours"),
    pytest.param("2:1000.5-1e4:00ffff,1:-5-3000", [(0, 255, 255), (255, 0, 0)], [(1000.5, 1e4), (-5, 3000)],
                 id="numbers"),
])
async def test_channel_spec_changes_the_tiles(ome_client: httpx.AsyncClient, ome_root: Path, spec: str,
                                              colours: list[tuple[int, int, int]],
                                              windows: list[tuple[float, float] | None]) -> None:
    bands = [int(item.split(":")[0]) - 1 for item in spec.split(",")]
    own = default_windows(ome_root)
    wins = [w if w is not None else own[b] for w, b in zip(windows, bands, strict=True)]
    ident = f"{FOUR.name};c={spec}"
    got = await get_image(ome_client, iiif(ident, "256,0,512,256/max/0/default.png"))
    expected = composite_reference(reference(ome_root, FOUR)[bands, 0:256, 256:768], colours, wins)
    assert same_composite(got if expected.ndim == 2 else np.moveaxis(got, 0, -1),
                          expected[None] if expected.ndim == 2 else expected)
    plain = await get_image(ome_client, iiif(FOUR.name, "256,0,512,256/max/0/default.png"))
    assert plain.shape != got.shape or not np.array_equal(plain, got)


@pytest.mark.parametrize("spec", ["0", "5", "1,1", "1:5-3", "1:3-3", "1:abc", "1::ff00", "1:1-2:ff0000:x", "",
                                  "a", "1;2", "1:1-2:gg0000", "1:inf-2", ",1"])
async def test_bad_specs_are_400(ome_client: httpx.AsyncClient, spec: str) -> None:
    r = await ome_client.get(iiif(f"{FOUR.name};c={spec}", "info.json"))
    assert r.status_code in ((404,) if ";" in spec else (400,)), (spec, r.status_code, r.text)


async def test_info_id_carries_the_spec(ome_client: httpx.AsyncClient, ome_root: Path) -> None:
    ident = f"{FOUR.name};c=2:500-4000:ff00ff,4"
    info = (await ome_client.get(iiif(ident, "info.json"))).json()
    assert info["id"] == "http://t" + iiif(ident, "")[:-1]
    physdim = [s for s in info.get("service", []) if s.get("type") == "PhysicalDimensions"]
    assert physdim and physdim[0]["physicalScale"] == pytest.approx(0.325e-3) and physdim[0]["physicalUnits"] == "mm"
    assert (info["width"], info["height"]) == (1003, 701)
    tile = await get_image(ome_client, info["id"].removeprefix("http://t") + "/0,0,512,512/256,/0/default.png")
    full = composite_reference(reference(ome_root, FOUR)[[1, 3]], [(255, 0, 255), (255, 255, 255)],
                               [(500, 4000), default_windows(ome_root)[3]])
    assert tile.shape == (3, 256, 256)
    assert np.abs(np.moveaxis(tile, 0, -1).astype(int) - full[0:512:2, 0:512:2].astype(int)).mean() < 12


@pytest.mark.parametrize("ident", [FOUR.name, f"{FOUR.name};c=1:100-2000:ff0000,3::00ff00", f"{FIVE.name}",
                                   f"{INTERLEAVED.name};c=3,1", f"{PLAIN.name};c=2,4"])
async def test_protocol_parity(ome_client: httpx.AsyncClient, ident: str) -> None:
    """The tile at column 1, row 1 of full resolution through IIIF, IIP, DeepZoom (PNG) and Zoomify, IIP
    (JPEG): the same pixels."""
    q = quote(ident, safe="")
    png = await get_image(ome_client, iiif(ident, "256,256,256,256/max/0/default.png"))
    jpg = await get_image(ome_client, iiif(ident, "256,256,256,256/max/0/default.jpg"))
    info = (await ome_client.get(f"/iip?FIF={q}&OBJ=Resolution-number&OBJ=Max-size")).text
    top = int(info.split("Resolution-number:")[1].split()[0]) - 1
    width = int(info.split("Max-size:")[1].split()[0])
    index = (width + 255) // 256 + 1
    assert np.array_equal(png, await get_image(ome_client, f"/iip?FIF={q}&PTL={top},{index}"))
    assert np.array_equal(jpg, await get_image(ome_client, f"/iip?FIF={q}&JTL={top},{index}"))
    dz = (await ome_client.get(f"/deepzoom/{q}.dzi")).text
    assert 'TileSize="256"' in dz and 'Overlap="0"' in dz
    height = int(info.split("Max-size:")[1].split()[1])
    level = int(np.ceil(np.log2(max(width, height))))
    assert np.array_equal(png, await get_image(ome_client, f"/deepzoom/{q}_files/{level}/1_1.png"))
    zoomify = await ome_client.get(f"/zoomify/{q}/ImageProperties.xml")
    assert zoomify.status_code == 200
    tier = len(halvings(width, height, 256)) - 1  # tiers count up from the first that fits one tile
    got = await get_image(ome_client, f"/zoomify/{q}/TileGroup0/{tier}-1-1.jpg")
    assert np.array_equal(jpg, got)


# -- 16-bit single channels and raw-channel processing -------------------------------------------------
@pytest.mark.parametrize("url", [
    "/iiif/3/{q}/full/max/0/gray.png", "/iiif/3/{q}/full/max/0/default.png", "/iiif/3/{q}/full/max/0/default.tif",
    "/iiif/2/{q}/full/full/0/gray.tif", "/iip?FIF={q}&CVT=png", "/iip?FIF={q}&CVT=tiff",
])
@pytest.mark.parametrize(("f", "channel"), [(FOUR, 2), (FIVE, 5), (INTERLEAVED, 1), (PLAIN, 3)],
                         ids=lambda v: v.name if isinstance(v, OmeFixture) else str(v))
async def test_single_channel_keeps_16_bits(ome_client: httpx.AsyncClient, ome_root: Path, url: str, f: OmeFixture,
                                            channel: int) -> None:
    r = await ome_client.get(url.format(q=quote(f"{f.name};c={channel}", safe="")))
    assert r.status_code == 200, r.text
    img = pyvips.Image.new_from_buffer(r.content, "")
    assert (img.format, img.bands) == ("ushort", 1)
    assert np.array_equal(pixels(img)[0], reference(ome_root, f)[channel - 1])


@pytest.mark.parametrize("url", ["/iiif/3/{q}/full/max/0/default.jpg", "/iiif/3/{q}/full/max/0/color.png",
                                 "/iiif/3/{q}/full/max/0/default.webp", "/iip?FIF={q}&CVT=jpeg"])
async def test_single_channel_in_8_bits_is_windowed_grey(ome_client: httpx.AsyncClient, ome_root: Path, url: str
                                                         ) -> None:
    r = await ome_client.get(url.format(q=quote(f"{FOUR.name};c=2", safe="")))
    assert r.status_code == 200, r.text
    img = pyvips.Image.new_from_buffer(r.content, "")
    assert img.format == "uchar"
    grey = composite_reference(reference(ome_root, FOUR)[1:2], [(255, 255, 255)], default_windows(ome_root)[1:2])
    got = pixels(img)
    if url.endswith(".png"):
        assert same_composite(got[0], grey)
    else:  # JPEG and WebP noise on a noisy texture, but the window's brightness
        assert np.abs(got[0].astype(int) - grey.astype(int)).mean() < 12
        assert abs(float(got[0].mean()) - float(grey.mean())) < 1.5
    if img.bands == 3 and url.endswith(".png"):
        assert np.array_equal(got[0], got[1]) and np.array_equal(got[1], got[2])


def iip_normalised(data: np.ndarray, lo: list[float], hi: list[float]) -> np.ndarray:
    """iipsrv 1.3's float chain without further steps: (v - lo) * float(1 / (hi - lo)), truncated to 8 bits."""
    out = []
    for c in range(data.shape[0]):
        scale = np.float32(1.0 / (hi[c] - lo[c]))
        v = ((data[c].astype(np.float64) - lo[c]).astype(np.float32) * scale).astype(np.float32)
        out.append(np.clip(np.trunc(v.astype(np.float64) * 255.0), 0, 255).astype(np.uint8))
    return np.stack(out)


async def test_minmax_works_on_raw_channels(ome_client: httpx.AsyncClient, ome_root: Path) -> None:
    """MINMAX skips the composite: the 4 raw channels, normalised, as a 4-band PNG (iipsrv keeps 4 bands
    in PNG); the 5-channel image is cut to its first 3 (iipsrv's flatten)."""
    got = await get_image(ome_client, f"/iip?FIF={FOUR.name}&MINMAX=-:0,16000&MINMAX=1:1000,3000&CVT=png")
    lo, hi = [0.0, 1000.0, 0.0, 0.0], [16000.0, 3000.0, 16000.0, 16000.0]
    expected = iip_normalised(reference(ome_root, FOUR), lo, hi)
    assert got.shape == (4, 701, 1003)
    assert np.abs(got.astype(int) - expected.astype(int)).max() <= 1
    five = await get_image(ome_client, f"/iip?FIF={FIVE.name}&MINMAX=-:0,16000&CVT=png")
    assert five.shape == (3, 555, 777)


async def test_ctw_works_on_raw_channels(ome_client: httpx.AsyncClient, ome_root: Path) -> None:
    """CTW on a 4-channel image: a 3x4 matrix over the MINMAX-normalised raw channels, as iipsrv computes it."""
    url = f"/iip?FIF={FOUR.name}&MINMAX=-:0,12000&CTW=[1,0,0,0.5;0,1,0,0.5;0,0,1,0]&CVT=png"
    got = await get_image(ome_client, url)
    norm = np.stack([(reference(ome_root, FOUR)[c].astype(np.float64)) / 12000.0 for c in range(4)])
    matrix = np.array([[1, 0, 0, 0.5], [0, 1, 0, 0.5], [0, 0, 1, 0]])
    expected = np.clip(np.trunc(np.einsum("kc,chw->khw", matrix, norm) * 255.0), 0, 255)
    assert got.shape == (3, 701, 1003)
    assert np.abs(got.astype(int) - expected.astype(int)).max() <= 1
    composite = await get_image(ome_client, f"/iip?FIF={FOUR.name}&CVT=png")
    assert np.abs(composite.astype(int) - got.astype(int)).mean() > 10  # not the composite


async def test_greyscale_and_equalisation_apply_to_the_composite(ome_client: httpx.AsyncClient, ome_root: Path
                                                                 ) -> None:
    colour = await get_image(ome_client, iiif(FOUR.name, "full/max/0/default.png"))
    grey = await get_image(ome_client, iiif(FOUR.name, "full/max/0/gray.png"))
    weights = np.array([1254097, 2462056, 478151], np.float64)
    expected = np.floor(np.einsum("k,khw->hw", weights, colour.astype(np.float64)) / (1 << 22))
    assert grey.shape == (1, 701, 1003) and np.array_equal(grey[0], expected.astype(np.uint8))
    eq = await get_image(ome_client, f"/iip?FIF={FOUR.name}&CNT=eq&CVT=png")
    assert eq.shape == (3, 701, 1003) and not np.array_equal(eq, colour)
    bitonal = await get_image(ome_client, iiif(FOUR.name, "full/max/0/bitonal.png"))
    assert set(np.unique(bitonal)) <= {0, 255}


async def test_plain_multiband_tiff_selector(ome_client: httpx.AsyncClient, ome_root: Path) -> None:
    """`;c=` on a TIFF that is not OME (4 samples, 16 bits, read by libvips): the chosen bands composited."""
    ident = f"{PLAIN.name};c=1:200-2500:ff0000,3:600-7000:0000ff,4:0-20000"
    got = await get_image(ome_client, iiif(ident, "100,50,300,200/max/0/default.png"))
    data = reference(ome_root, PLAIN)[[0, 2, 3], 50:250, 100:400]
    expected = composite_reference(data, [(255, 0, 0), (0, 0, 255), (0, 255, 255)],
                                   [(200, 2500), (600, 7000), (0, 20000)])
    assert same_composite(np.moveaxis(got, 0, -1), expected)


async def test_selector_on_a_one_band_image(ome_client: httpx.AsyncClient, ome_root: Path) -> None:
    import tifffile

    data = reference(ome_root, FOUR)[0, :300, :400].copy()
    tifffile.imwrite(ome_root / "grey16.tif", data, tile=(256, 256), metadata=None)
    got = await get_image(ome_client, "/iiif/3/grey16.tif%3Bc%3D1/full/max/0/default.png")
    assert np.array_equal(got[0], data)
    r = await ome_client.get("/iiif/3/grey16.tif%3Bc%3D2/info.json")
    assert r.status_code == 400


@pytest.mark.parametrize("page", [0, 4, 5])
async def test_z_t_pages_through_the_protocols(ome_client: httpx.AsyncClient, ome_root: Path, page: int) -> None:
    """A Z/T plane as `;page=<n>` (IIIF) and as stack page `SDS=<n>` (IIP): that plane's composite (its
    default windows from its own smallest level, the same on both)."""
    data = reference(ome_root, ZT, 0, page)
    windows = [(200.0, 3000.0), (400.0, 6000.0)]
    expected = np.moveaxis(composite_reference(data, RGB_COLOURS[:2], windows), -1, 0)
    spec = ",".join(f"{c + 1}:{lo:g}-{hi:g}" for c, (lo, hi) in enumerate(windows))
    got = await get_image(ome_client, iiif(f"{ZT.name};page={page};c={spec}", "full/max/0/default.png"))
    assert same_composite(got, expected)
    default = await get_image(ome_client, iiif(f"{ZT.name};page={page}", "full/max/0/default.png"))
    assert np.array_equal(await get_image(ome_client, f"/iip?FIF={ZT.name}&SDS={page}&CVT=png"), default)
    other = await get_image(ome_client, iiif(f"{ZT.name};page={(page + 1) % 6}", "full/max/0/default.png"))
    assert not np.array_equal(default, other)
    stack = (await ome_client.get(f"/iip?FIF={ZT.name}&OBJ=stack")).json()
    assert [item["name"] for item in stack][page] == f"z={page % 3} t={page // 3}"
