"""Zoomify against libvips `dzsave --layout zoomify`: the grammar without a server, then every tier
and every tile dzsave writes fetched from the app (identical pixel size, the same TileGroup number,
pixels within JPEG tolerance, the metric of test_deepzoom.py), a 404 for each tile dzsave did not
write, and ImageProperties.xml field by field."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import pyvips

from tileserver.app import create_app
from tileserver.errors import BadRequest, UnsupportedFormat
from tileserver.levels import grid, zoomify_tiers, zoomify_tile_group
from tileserver.protocols.zoomify import ZoomifyInfo, ZoomifyTile, parse
from tileserver.settings import Settings

from ..conftest import decode, mean_diff
from .test_deepzoom import FIXTURES, GOLDEN, MEAN_BOUND, TINY_BOUND, Worst, make_dz_images, sample, tiles_written

ZOOMIFY_TILE_NAME = r"TileGroup(?P<group>\d+)/(?P<level>\d+)-(?P<col>\d+)-(?P<row>\d+)\.jpg"


# -- grammar, no server -------------------------------------------------------------------------
@pytest.mark.parametrize(("path", "expected"), [
    pytest.param("a.tif/ImageProperties.xml", ZoomifyInfo("a.tif"), id="properties"),
    pytest.param("maps/a.tif/ImageProperties.xml", ZoomifyInfo("maps/a.tif"), id="properties-subfolder"),
    pytest.param("a.tif/TileGroup0/2-1-0.jpg", ZoomifyTile("a.tif", 0, 2, 1, 0), id="tile"),
    pytest.param("a.tif/TileGroup17/6-30-20.jpg", ZoomifyTile("a.tif", 17, 6, 30, 20), id="any-group"),
    pytest.param("a.tif/TileGroup0/0-0-0.JPG", ZoomifyTile("a.tif", 0, 0, 0, 0), id="upper-case-suffix"),
    pytest.param("TileGroup1/a.tif/TileGroup2/1-0-0.jpg", ZoomifyTile("TileGroup1/a.tif", 2, 1, 0, 0),
                 id="split-at-last-tilegroup"),
])
def test_parse(path: str, expected: ZoomifyInfo | ZoomifyTile) -> None:
    assert parse(path) == expected


@pytest.mark.parametrize("path", [
    pytest.param("a.tif", id="no-document"),
    pytest.param("/ImageProperties.xml", id="empty-ident"),
    pytest.param("a.tif/imageproperties.xml", id="wrong-case-document"),
    pytest.param("a.tif/TileGroup/0-0-0.jpg", id="group-without-number"),
    pytest.param("a.tif/TileGroup0/0-0.jpg", id="two-numbers"),
    pytest.param("a.tif/TileGroup0/0_0_0.jpg", id="underscores"),
    pytest.param("a.tif/TileGroup0/-1-0-0.jpg", id="negative"),
    pytest.param("a.tif/TileGroup0/0-0-0", id="no-extension"),
])
def test_parse_malformed(path: str) -> None:
    with pytest.raises(BadRequest):
        parse(path)


def test_parse_png_is_unsupported() -> None:
    with pytest.raises(UnsupportedFormat):
        parse("a.tif/TileGroup0/0-0-0.png")


# -- fixtures -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def zf_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("zoomify") / "images"
    make_dz_images(root)
    return root


@pytest.fixture(scope="module")
def zf_saved(zf_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """dzsave --layout zoomify of each fixture: {ident: folder holding ImageProperties.xml}."""
    out_dir = tmp_path_factory.mktemp("zfsave")
    out: dict[str, Path] = {}
    for i, (ident, _, _) in enumerate(FIXTURES):
        pyvips.Image.new_from_file(str(zf_root / ident)).dzsave(str(out_dir / str(i)), layout="zoomify",
                                                                 suffix=".jpg[Q=95]")
        out[ident] = out_dir / str(i)
    return out


@pytest.fixture(scope="module")
async def zf_client(zf_root: Path) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(Settings(root=zf_root, protocols=("iip", "zoomify")))
    app.state.service.start()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as c:
        yield c
    app.state.service.stop()


@pytest.fixture(scope="module")
def zf_worst() -> Iterator[dict[str, Worst]]:
    table: dict[str, Worst] = {}
    yield table
    for name, w in sorted(table.items()):
        print(f"\nzoomify worst mean abs diff {name}: {w.value:.2f} at {w.where}")


def groups_written(folder: Path) -> dict[tuple[int, int, int], int]:
    """{(tier, col, row): TileGroup number} of the tiles dzsave wrote."""
    out = {}
    for f in folder.glob("TileGroup*/*.jpg"):
        tier, col, row = (int(n) for n in f.stem.split("-"))
        out[tier, col, row] = int(f.parent.name.removeprefix("TileGroup"))
    return out


# -- against dzsave -----------------------------------------------------------------------------
@pytest.mark.parametrize("ident", [f[0] for f in FIXTURES])
async def test_image_properties_match_dzsave(ident: str, zf_client: httpx.AsyncClient,
                                             zf_saved: dict[str, Path]) -> None:
    r = await zf_client.get(f"/zoomify/{ident}/ImageProperties.xml")
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/xml"
    ours, theirs = ET.fromstring(r.content), ET.parse(zf_saved[ident] / "ImageProperties.xml").getroot()
    assert ours.tag == theirs.tag == "IMAGE_PROPERTIES"
    assert ours.attrib == theirs.attrib
    assert list(ours) == list(theirs) == []


@pytest.mark.parametrize("ident", [f[0] for f in FIXTURES])
async def test_tiles_match_dzsave(ident: str, zf_client: httpx.AsyncClient, zf_saved: dict[str, Path],
                                  zf_worst: dict[str, Worst]) -> None:
    """Every tier, every tile (sampled on big tiers): same size, same TileGroup, close pixels."""
    folder = zf_saved[ident]
    written = tiles_written(folder, ZOOMIFY_TILE_NAME)
    groups = groups_written(folder)
    w, h = next((f[1], f[2]) for f in FIXTURES if f[0] == ident)
    assert sorted(written) == list(range(len(zoomify_tiers(w, h))))
    for tier, tiles in written.items():
        for col, row in sample(tiles, tier):
            group = zoomify_tile_group(w, h, tier, col, row)
            assert group == groups[tier, col, row]
            r = await zf_client.get(f"/zoomify/{ident}/TileGroup{group}/{tier}-{col}-{row}.jpg")
            assert r.status_code == 200, (tier, col, row, r.text)
            ours = decode(r.content)
            theirs = pyvips.Image.new_from_file(str(folder / f"TileGroup{group}/{tier}-{col}-{row}.jpg"))
            assert (ours.width, ours.height) == (theirs.width, theirs.height), (tier, col, row)
            diff = mean_diff(ours, theirs)
            tiny = ours.width * ours.height < 256
            zf_worst.setdefault("tiny" if tiny else "tiles", Worst()).update(
                diff, f"{ident} {tier}-{col}-{row} {ours.width}x{ours.height}")
            assert diff <= (TINY_BOUND if tiny else MEAN_BOUND), (tier, col, row, diff)


@pytest.mark.parametrize("ident", [f[0] for f in FIXTURES])
async def test_tiles_dzsave_did_not_write_are_404(ident: str, zf_client: httpx.AsyncClient,
                                                  zf_saved: dict[str, Path]) -> None:
    written = tiles_written(zf_saved[ident], ZOOMIFY_TILE_NAME)
    missing = [(len(written), 0, 0)]
    for tier, tiles in written.items():
        cols, rows = max(c for c, _ in tiles) + 1, max(r for _, r in tiles) + 1
        missing += [(tier, cols, 0), (tier, 0, rows), (tier, cols, rows)]
    for tier, col, row in missing:
        r = await zf_client.get(f"/zoomify/{ident}/TileGroup0/{tier}-{col}-{row}.jpg")
        assert r.status_code == 404, (tier, col, row)


def test_geometry_table(zf_saved: dict[str, Path]) -> None:
    """Tiers, tiles per tier and NUMTILES, ours (levels.py) vs dzsave; printed for the closing note."""
    lines = []
    for ident, w, h in FIXTURES:
        written = tiles_written(zf_saved[ident], ZOOMIFY_TILE_NAME)
        ours = [grid(size, 256) for size in zoomify_tiers(w, h)]
        theirs = [(max(c for c, _ in t) + 1, max(r for _, r in t) + 1) for _, t in sorted(written.items())]
        assert ours == theirs
        sizes = " ".join(f"{a}x{b}" for a, b in zoomify_tiers(w, h))
        groups = len(set(groups_written(zf_saved[ident]).values()))
        lines.append(f"{w}x{h} zoomify: tiers {sizes}; grids {' '.join(f'{c}x{r}' for c, r in ours)}; "
                     f"NUMTILES {sum(c * r for c, r in ours)} (dzsave {sum(len(t) for t in written.values())}), "
                     f"{groups} group(s)")
    print("\n" + "\n".join(lines))


# -- HTTP behaviour -----------------------------------------------------------------------------
async def test_group_number_is_not_checked(zf_client: httpx.AsyncClient) -> None:
    """Clients compute TileGroup differently (OpenLayers divides by the tile size); any answer works."""
    ident = FIXTURES[0][0]
    a = await zf_client.get(f"/zoomify/{ident}/TileGroup0/2-3-2.jpg")
    b = await zf_client.get(f"/zoomify/{ident}/TileGroup99/2-3-2.jpg")
    assert a.status_code == b.status_code == 200
    assert a.content == b.content


async def test_query_form_equals_path_form(zf_client: httpx.AsyncClient) -> None:
    ident = FIXTURES[1][0]  # lives under odd_files/TileGroup3/
    for tail in ("ImageProperties.xml", "TileGroup0/2-1-1.jpg", "TileGroup0/0-0-0.jpg"):
        a = await zf_client.get(f"/zoomify/{ident}/{tail}")
        b = await zf_client.get("/fcgi-bin/iipsrv.fcgi", params={"Zoomify": f"{ident}/{tail}"})
        assert a.status_code == b.status_code == 200
        assert a.content == b.content


@pytest.mark.parametrize(("path", "status"), [
    pytest.param("/zoomify/nope.tif/ImageProperties.xml", 404, id="unknown-image"),
    pytest.param(f"/zoomify/{FIXTURES[0][0]}/TileGroup0/0-0.jpg", 400, id="malformed"),
    pytest.param(f"/zoomify/{FIXTURES[0][0]}/TileGroup0/0-0-0.png", 400, id="png"),
    pytest.param(f"/zoomify/{FIXTURES[0][0]}/TileGroup0/3-0-0.jpg", 404, id="tier-past-top"),
    pytest.param(f"/zoomify/{FIXTURES[0][0]}/TileGroup0/0-1-0.jpg", 404, id="past-tier-0"),
])
async def test_errors(path: str, status: int, zf_client: httpx.AsyncClient) -> None:
    r = await zf_client.get(path)
    assert r.status_code == status
    assert r.headers["cache-control"] == "no-cache"


async def test_properties_golden_and_caching(zf_client: httpx.AsyncClient) -> None:
    url = f"/zoomify/{FIXTURES[0][0]}/ImageProperties.xml"
    r = await zf_client.get(url)
    golden = (GOLDEN / "zoomify-1000x700-ImageProperties.xml").read_text()
    assert ET.canonicalize(r.content.decode()) == ET.canonicalize(golden)
    assert not r.content.startswith(b"<?xml")  # as libvips and iipsrv write it
    again = await zf_client.get(url, headers={"If-None-Match": r.headers["etag"]})
    assert again.status_code == 304


async def test_openseadragon_floor_rule_differs_near_powers_of_two(zf_client: httpx.AsyncClient) -> None:
    """513x300: libvips/OpenLayers tiers 129x75, 257x150, 513x300; OpenSeadragon's Zoomify source
    halves with floor and expects 256x150, 513x300, so its `1-2-1.jpg` (full resolution, last
    column) falls outside our tier 1 (2x1 tiles) and is a 404. Documented in the README."""
    ident = FIXTURES[1][0]
    assert zoomify_tiers(513, 300) == [(129, 75), (257, 150), (513, 300)]
    r = await zf_client.get(f"/zoomify/{ident}/TileGroup0/1-2-1.jpg")
    assert r.status_code == 404
    r = await zf_client.get(f"/zoomify/{ident}/TileGroup0/2-2-1.jpg")
    assert r.status_code == 200


async def test_openseadragon_rounding_setting(zf_root: Path) -> None:
    """With `zoomify_rounding="down"` the tiers are OpenSeadragon's: for 513x300, 256x150 and 513x300,
    so OSD's `1-2-1.jpg` is the last full-resolution tile (a 1x44 strip) and NUMTILES counts 1 + 6."""
    ident = FIXTURES[1][0]
    assert zoomify_tiers(513, 300, floor=True) == [(256, 150), (513, 300)]
    app = create_app(Settings(root=zf_root, protocols=("zoomify",), zoomify_rounding="down"))
    app.state.service.start()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        props = ET.fromstring((await c.get(f"/zoomify/{ident}/ImageProperties.xml")).text)
        assert props.attrib["NUMTILES"] == "7"
        tile = await c.get(f"/zoomify/{ident}/TileGroup0/1-2-1.jpg")
        assert tile.status_code == 200
        img = pyvips.Image.new_from_buffer(tile.content, "")
        assert (img.width, img.height) == (1, 44)
        small = pyvips.Image.new_from_buffer((await c.get(f"/zoomify/{ident}/TileGroup0/0-0-0.jpg")).content, "")
        assert (small.width, small.height) == (256, 150)
        assert (await c.get(f"/zoomify/{ident}/TileGroup0/2-0-0.jpg")).status_code == 404
    app.state.service.stop()
