"""DeepZoom against libvips `dzsave`: the grammar without a server, then every level and every tile
dzsave writes (256/0 and 254/1) fetched from the app: identical pixel size, pixels within JPEG
tolerance, a 404 for each tile dzsave did not write, the .dzi field by field, and pixel parity
with Zoomify and IIP `JTL` where their levels coincide.

Pixel metric: mean absolute difference over all pixels and bands of the decoded tiles (0..255),
our JPEG (Q75, resampled from the stored pyramid) against dzsave's JPEG (Q95, 2x2 box averages of
full resolution), at most `MEAN_BOUND` for tiles of 256 pixels or more. Tiles under 256 pixels
(the 1x1 .. 17x12 levels) only get `TINY_BOUND`: dzsave duplicates the last row and column at each
odd halving, so its tiny levels weigh the image edge heavily (the 1x1 of 513x300 is half the last
column), while ours are area averages (see `test_level0_is_the_image_mean`). The worst values are
printed (`pytest -s`).
"""

from __future__ import annotations

import random
import re
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import pyvips
from starlette.applications import Starlette

from tileserver.app import create_app
from tileserver.errors import BadRequest, UnsupportedFormat
from tileserver.levels import dz_max_level, dz_shift, grid, scaled_size, scaled_tile
from tileserver.models import OutputFormat
from tileserver.protocols.deepzoom import DziInfo, DziTile, parse
from tileserver.settings import Settings

from ..conftest import decode, max_diff, mean_diff, pattern

NS = "{http://schemas.microsoft.com/deepzoom/2008}"
GOLDEN = Path(__file__).parent.parent / "golden"
MEAN_BOUND = 6.0  # mean |ours - dzsave| per pixel and band; JPEG Q75 vs Q95 plus resampling
TINY_BOUND = 60.0  # the same for tiles under 256 pixels, where dzsave's edge weighting dominates
SAMPLE = 24  # tiles checked per level beyond the edges (big levels only; every level is checked)

# (identifier, width, height); sub-folders named like protocol parts test the path splitting
FIXTURES = [
    ("dz-rgb-1000x700-tiled-jpeg.tif", 1000, 700),
    ("odd_files/TileGroup3/dz-rgb-513x300-tiled-jpeg.tif", 513, 300),
    ("dz-rgb-4097x3001-tiled-jpeg.tif", 4097, 3001),
    ("dz-rgb-1x1000-tiled-jpeg.tif", 1, 1000),
]
LAYOUTS = {"256-0": (256, 0), "254-1": (254, 1)}
DZ_TILE_NAME = r"(?P<level>\d+)/(?P<col>\d+)_(?P<row>\d+)\.jpg"


def make_dz_images(root: Path) -> None:
    """Tiled pyramid TIFFs (256 tiles, JPEG Q90), as `tiffsave(pyramid=True)` writes them."""
    for i, (ident, w, h) in enumerate(FIXTURES):
        (root / ident).parent.mkdir(parents=True, exist_ok=True)
        pattern(w, h, seed=20 + i).tiffsave(str(root / ident), compression="jpeg", Q=90, tile=True,
                                            pyramid=True, tile_width=256, tile_height=256)


def tiles_written(folder: Path, pattern_: str) -> dict[int, set[tuple[int, int]]]:
    """{level: {(col, row)}} of the tile files under `folder` whose names match `pattern_`."""
    out: dict[int, set[tuple[int, int]]] = {}
    for f in folder.rglob("*.jpg"):
        m = re.fullmatch(pattern_, f.relative_to(folder).as_posix())
        assert m is not None, f
        out.setdefault(int(m["level"]), set()).add((int(m["col"]), int(m["row"])))
    return out


def dz_written(dzi: Path) -> dict[int, set[tuple[int, int]]]:
    return tiles_written(dzi.with_name(dzi.stem + "_files"), DZ_TILE_NAME)


def sample(tiles: set[tuple[int, int]], seed: int) -> list[tuple[int, int]]:
    """All tiles of small levels; of big ones the first and last row and column plus a random few."""
    if len(tiles) <= 2 * SAMPLE:
        return sorted(tiles)
    cols, rows = max(c for c, _ in tiles), max(r for _, r in tiles)
    edge = {t for t in tiles if t[0] in (0, cols) or t[1] in (0, rows)}
    rest = sorted(tiles - edge)
    return sorted(edge) + random.Random(seed).sample(rest, min(SAMPLE, len(rest)))


@dataclass
class Worst:
    value: float = 0.0
    where: str = ""

    def update(self, value: float, where: str) -> None:
        if value > self.value:
            self.value, self.where = value, where


# -- grammar, no server -------------------------------------------------------------------------
@pytest.mark.parametrize(("path", "expected"), [
    pytest.param("a.tif.dzi", DziInfo("a.tif"), id="dzi"),
    pytest.param("maps/a.tif.dzi", DziInfo("maps/a.tif"), id="dzi-subfolder"),
    pytest.param("a_files/b.tif.dzi", DziInfo("a_files/b.tif"), id="dzi-folder-named-files"),
    pytest.param("a.tif_files/9/1_0.jpg", DziTile("a.tif", 9, 1, 0, OutputFormat.JPEG), id="tile"),
    pytest.param("a.tif_files/0/0_0.jpeg", DziTile("a.tif", 0, 0, 0, OutputFormat.JPEG), id="jpeg"),
    pytest.param("a.tif_files/3/2_5.png", DziTile("a.tif", 3, 2, 5, OutputFormat.PNG), id="png"),
    pytest.param("a.tif_files/3/2_5.webp", DziTile("a.tif", 3, 2, 5, OutputFormat.WEBP), id="webp"),
    pytest.param("x_files/a.tif_files/12/10_7.jpg", DziTile("x_files/a.tif", 12, 10, 7, OutputFormat.JPEG),
                 id="split-at-last-files"),
    pytest.param("a.tif_files/99/0_0.jpg", DziTile("a.tif", 99, 0, 0, OutputFormat.JPEG), id="big-level-parses"),
])
def test_parse(path: str, expected: DziInfo | DziTile) -> None:
    assert parse(path) == expected


@pytest.mark.parametrize("path", [
    pytest.param("a.tif", id="no-suffix"),
    pytest.param(".dzi", id="empty-ident"),
    pytest.param("a.tif_files/x/0_0.jpg", id="level-not-a-number"),
    pytest.param("a.tif_files/-1/0_0.jpg", id="negative-level"),
    pytest.param("a.tif_files/1/0-0.jpg", id="dash-not-underscore"),
    pytest.param("a.tif_files/1/0_0", id="no-extension"),
    pytest.param("a.tif_files/1/0_0_0.jpg", id="three-numbers"),
    pytest.param("a.tif_files/1/1e3_0.jpg", id="exponent"),
    pytest.param("a.tif_files/1/0_0.jpg/x", id="trailing-part"),
])
def test_parse_malformed(path: str) -> None:
    with pytest.raises(BadRequest):
        parse(path)


def test_parse_unknown_format() -> None:
    with pytest.raises(UnsupportedFormat):
        parse("a.tif_files/1/0_0.gif")


# -- fixtures: generated pyramids, dzsave folders, apps -----------------------------------------
@pytest.fixture(scope="module")
def dz_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("dz") / "images"
    make_dz_images(root)
    return root


@pytest.fixture(scope="module")
def dzsaved(dz_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], Path]:
    """dzsave of each fixture's full resolution, per layout: {(ident, layout): path of the .dzi}."""
    out_dir = tmp_path_factory.mktemp("dzsave")
    out: dict[tuple[str, str], Path] = {}
    for i, (ident, _, _) in enumerate(FIXTURES):
        img = pyvips.Image.new_from_file(str(dz_root / ident))
        for name, (tile, overlap) in LAYOUTS.items():
            base = out_dir / f"{i}-{name}"
            img.dzsave(str(base), tile_size=tile, overlap=overlap, suffix=".jpg[Q=95]")
            out[ident, name] = base.with_suffix(".dzi")
    return out


def _app(root: Path, **kw: Any) -> Starlette:
    return create_app(Settings(root=root, protocols=("iip", "iiif", "deepzoom", "zoomify"), **kw))


@pytest.fixture(scope="module")
async def dz_clients(dz_root: Path) -> AsyncIterator[dict[str, httpx.AsyncClient]]:
    """One app per layout: the default (the file's 256 tiles, overlap 0) and 254/1."""
    apps = {"256-0": _app(dz_root), "254-1": _app(dz_root, deepzoom_tile_size=254, deepzoom_overlap=1)}
    clients = {}
    for name, app in apps.items():
        app.state.service.start()
        clients[name] = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")
    yield clients
    for name, app in apps.items():
        await clients[name].aclose()
        app.state.service.stop()


@pytest.fixture(scope="module")
def worst() -> Iterator[dict[str, Worst]]:
    table: dict[str, Worst] = {}
    yield table
    for name, w in sorted(table.items()):
        print(f"\nworst mean abs diff {name}: {w.value:.2f} at {w.where}")


# -- against dzsave -----------------------------------------------------------------------------
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("ident", [f[0] for f in FIXTURES])
async def test_dzi_matches_dzsave(ident: str, layout: str, dz_clients: dict[str, httpx.AsyncClient],
                                  dzsaved: dict[tuple[str, str], Path]) -> None:
    r = await dz_clients[layout].get(f"/deepzoom/{ident}.dzi")
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/xml"
    ours, theirs = ET.fromstring(r.content), ET.parse(dzsaved[ident, layout]).getroot()
    assert ours.tag == theirs.tag == f"{NS}Image"
    assert ours.attrib == theirs.attrib
    (size,), (their_size,) = list(ours), list(theirs)
    assert size.tag == their_size.tag == f"{NS}Size"
    assert size.attrib == their_size.attrib


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("ident", [f[0] for f in FIXTURES])
async def test_tiles_match_dzsave(ident: str, layout: str, dz_clients: dict[str, httpx.AsyncClient],
                                  dzsaved: dict[tuple[str, str], Path], worst: dict[str, Worst]) -> None:
    """Every level dzsave wrote, every tile (sampled on big levels): same size, close pixels."""
    client, dzi = dz_clients[layout], dzsaved[ident, layout]
    folder = dzi.with_name(dzi.stem + "_files")
    written = dz_written(dzi)
    w, h = next((f[1], f[2]) for f in FIXTURES if f[0] == ident)
    assert sorted(written) == list(range(dz_max_level(w, h) + 1))
    for level, tiles in written.items():
        for col, row in sample(tiles, level):
            r = await client.get(f"/deepzoom/{ident}_files/{level}/{col}_{row}.jpg")
            assert r.status_code == 200, (level, col, row, r.text)
            ours, theirs = decode(r.content), pyvips.Image.new_from_file(str(folder / f"{level}/{col}_{row}.jpg"))
            assert (ours.width, ours.height) == (theirs.width, theirs.height), (level, col, row)
            diff = mean_diff(ours, theirs)
            tiny = ours.width * ours.height < 256
            track = worst.setdefault(f"{layout} {'tiny' if tiny else 'tiles'}", Worst())
            track.update(diff, f"{ident} {level}/{col}_{row} {ours.width}x{ours.height}")
            assert diff <= (TINY_BOUND if tiny else MEAN_BOUND), (level, col, row, diff)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("ident", [f[0] for f in FIXTURES])
async def test_tiles_dzsave_did_not_write_are_404(ident: str, layout: str, dz_clients: dict[str, httpx.AsyncClient],
                                                  dzsaved: dict[tuple[str, str], Path]) -> None:
    client, dzi = dz_clients[layout], dzsaved[ident, layout]
    written = dz_written(dzi)
    missing = [(len(written), 0, 0), (len(written) + 5, 0, 0)]
    for level, tiles in written.items():
        cols, rows = max(c for c, _ in tiles) + 1, max(r for _, r in tiles) + 1
        missing += [(level, cols, 0), (level, 0, rows), (level, cols, rows)]
    for level, col, row in missing:
        r = await client.get(f"/deepzoom/{ident}_files/{level}/{col}_{row}.jpg")
        assert r.status_code == 404, (level, col, row)


def test_geometry_table(dzsaved: dict[tuple[str, str], Path]) -> None:
    """Levels and tiles per level, ours (levels.py) vs dzsave; printed for the closing note."""
    lines = []
    for ident, w, h in FIXTURES:
        for layout, (tile, _) in LAYOUTS.items():
            dzi = dzsaved[ident, layout]
            written = dz_written(dzi)
            ours = [grid(scaled_size(w, h, dz_shift(w, h, lv)), tile) for lv in range(dz_max_level(w, h) + 1)]
            theirs = [(max(c for c, _ in t) + 1, max(r for _, r in t) + 1) for _, t in sorted(written.items())]
            assert ours == theirs
            assert [len(written[lv]) for lv in sorted(written)] == [c * r for c, r in ours]
            counts = " ".join(f"{c}x{r}" for c, r in ours)
            lines.append(f"{w}x{h} {layout}: levels 0..{len(ours) - 1}, tiles {sum(c * r for c, r in ours)} "
                         f"(dzsave {sum(len(t) for t in written.values())}); per level {counts}")
    print("\n" + "\n".join(lines))


# -- HTTP behaviour -----------------------------------------------------------------------------
async def test_query_form_equals_path_form(dz_clients: dict[str, httpx.AsyncClient]) -> None:
    client = dz_clients["256-0"]
    ident = FIXTURES[1][0]
    for tail in (".dzi", "_files/9/1_0.jpg", "_files/0/0_0.jpg"):
        a = await client.get(f"/deepzoom/{ident}{tail}")
        b = await client.get("/fcgi-bin/iipsrv.fcgi", params={"DeepZoom": ident + tail})
        assert a.status_code == b.status_code == 200
        assert a.content == b.content
        assert a.headers["content-type"] == b.headers["content-type"]


async def test_query_form_errors_are_plain(dz_clients: dict[str, httpx.AsyncClient]) -> None:
    client = dz_clients["256-0"]
    r = await client.get("/iip", params={"DeepZoom": f"{FIXTURES[0][0]}_files/11/0_0.jpg"})
    assert r.status_code == 404
    assert r.headers["content-type"].startswith("text/plain")
    r = await client.get("/iip", params={"DeepZoom": "nope.tif.dzi"})
    assert r.status_code == 404


async def test_encoded_slash_identifier(dz_clients: dict[str, httpx.AsyncClient]) -> None:
    client = dz_clients["256-0"]
    ident = FIXTURES[1][0]
    a = await client.get(f"/deepzoom/{ident}.dzi")
    b = await client.get(f"/deepzoom/{ident.replace('/', '%2F')}.dzi")
    assert a.status_code == b.status_code == 200
    assert a.content == b.content


@pytest.mark.parametrize(("path", "status"), [
    pytest.param("/deepzoom/nope.tif.dzi", 404, id="unknown-image"),
    pytest.param(f"/deepzoom/{FIXTURES[0][0]}_files/x/0_0.jpg", 400, id="malformed"),
    pytest.param(f"/deepzoom/{FIXTURES[0][0]}_files/1/0_0.gif", 400, id="unknown-format"),
    pytest.param(f"/deepzoom/{FIXTURES[0][0]}", 400, id="no-suffix"),
    pytest.param(f"/deepzoom/{FIXTURES[0][0]}_files/11/0_0.jpg", 404, id="level-past-top"),
    pytest.param(f"/deepzoom/{FIXTURES[0][0]}_files/0/1_0.jpg", 404, id="past-1x1"),
])
async def test_errors(path: str, status: int, dz_clients: dict[str, httpx.AsyncClient]) -> None:
    r = await dz_clients["256-0"].get(path)
    assert r.status_code == status
    assert r.headers["cache-control"] == "no-cache"


async def test_every_level_exact_size_and_formats(dz_clients: dict[str, httpx.AsyncClient]) -> None:
    """Levels below the file's smallest pyramid level are real (iipsrv clamps them); png/webp too."""
    ident, w, h = FIXTURES[0]
    client = dz_clients["256-0"]
    for level in range(dz_max_level(w, h) + 1):
        r = await client.get(f"/deepzoom/{ident}_files/{level}/0_0.jpg")
        img = decode(r.content)
        lw, lh = scaled_size(w, h, dz_max_level(w, h) - level)
        assert (img.width, img.height) == (min(lw, 256), min(lh, 256)), level
    for ext, media in (("png", "image/png"), ("webp", "image/webp"), ("jpeg", "image/jpeg")):
        r = await client.get(f"/deepzoom/{ident}_files/8/0_0.{ext}")
        assert r.headers["content-type"] == media
        assert (decode(r.content).width, decode(r.content).height) == (250, 175)


@pytest.mark.parametrize("fixture", FIXTURES, ids=[f"{f[1]}x{f[2]}" for f in FIXTURES])
async def test_level0_is_the_image_mean(fixture: tuple[str, int, int], dz_root: Path,
                                        dz_clients: dict[str, httpx.AsyncClient]) -> None:
    """DeepZoom level 0 is one pixel: the mean colour of the whole image (lossless PNG; the 4/255
    allow for the lanczos3 kernel and the JPEG-compressed stored levels it is shrunk from)."""
    ident = fixture[0]
    r = await dz_clients["256-0"].get(f"/deepzoom/{ident}_files/0/0_0.png")
    pixel = decode(r.content).getpoint(0, 0)
    full = pyvips.Image.new_from_file(str(dz_root / ident))
    mean = [full.extract_band(b).avg() for b in range(full.bands)]
    assert max(abs(a - b) for a, b in zip(pixel, mean, strict=True)) <= 4


async def test_dzi_caching_headers(dz_clients: dict[str, httpx.AsyncClient]) -> None:
    client = dz_clients["256-0"]
    url = f"/deepzoom/{FIXTURES[0][0]}.dzi"
    r = await client.get(url)
    assert r.headers["cache-control"] == "max-age=86400"
    again = await client.get(url, headers={"If-None-Match": r.headers["etag"]})
    assert again.status_code == 304
    other = await dz_clients["254-1"].get(url)
    assert other.headers["etag"] != r.headers["etag"]
    head = await client.head(url)
    assert head.status_code == 200 and head.content == b""


async def test_dzi_golden(dz_clients: dict[str, httpx.AsyncClient]) -> None:
    """The document for 1000x700 with the default layout, canonicalised (tests/golden)."""
    r = await dz_clients["256-0"].get(f"/deepzoom/{FIXTURES[0][0]}.dzi")
    assert r.content.startswith(b"<?xml")
    golden = (GOLDEN / "dz-1000x700-256-0.dzi").read_text()
    assert ET.canonicalize(r.content.decode()) == ET.canonicalize(golden)


# -- parity -------------------------------------------------------------------------------------
async def test_parity_deepzoom_zoomify_jtl_iiif(dz_clients: dict[str, httpx.AsyncClient]) -> None:
    """Where the stored levels coincide with DeepZoom/Zoomify levels (1000x700: 1000x700, 500x350,
    250x175 at 256/0), the same tile decodes to identical pixels through DeepZoom, Zoomify, IIP JTL
    and IIIF (region x,y,w,h at full resolution, size w,h)."""
    client = dz_clients["256-0"]
    ident, w, h = FIXTURES[0]
    top = dz_max_level(w, h)
    for tier, resolution in ((2, 2), (1, 1), (0, 0)):
        shift = 2 - tier
        lw, lh = scaled_size(w, h, shift)
        cols = -(-lw // 256)
        for row in range(-(-lh // 256)):
            for col in range(cols):
                dz = await client.get(f"/deepzoom/{ident}_files/{top - shift}/{col}_{row}.jpg")
                zf = await client.get(f"/zoomify/{ident}/TileGroup0/{tier}-{col}-{row}.jpg")
                jtl = await client.get("/iip", params={"FIF": ident, "JTL": f"{resolution},{row * cols + col}"})
                box, size = scaled_tile(w, h, shift, 256, 0, col, row)
                iiif = await client.get(f"/iiif/3/{ident}/{box.x},{box.y},{box.w},{box.h}/{size[0]},{size[1]}"
                                        "/0/default.jpg")
                responses = (dz, zf, jtl, iiif)
                assert [r.status_code for r in responses] == [200] * 4
                a, *others = (decode(r.content) for r in responses)
                assert [max_diff(a, o) for o in others] == [0, 0, 0], (tier, col, row)


async def test_parity_overlap_tiles_with_iiif(dz_clients: dict[str, httpx.AsyncClient]) -> None:
    """254/1 tiles (no stored level lines up) equal the IIIF request for the same full-resolution
    region and size, on the odd-sized 4097x3001, at every level (edge tiles and a few others)."""
    client = dz_clients["254-1"]
    ident, w, h = FIXTURES[2]
    top = dz_max_level(w, h)
    for level in range(top + 1):
        cols, rows = grid(scaled_size(w, h, top - level), 254)
        for col, row in {(0, 0), (cols - 1, rows - 1), (cols // 2, rows // 2), (cols - 1, 0)}:
            box, size = scaled_tile(w, h, top - level, 254, 1, col, row)
            dz = await client.get(f"/deepzoom/{ident}_files/{level}/{col}_{row}.jpg")
            iiif = await client.get(f"/iiif/3/{ident}/{box.x},{box.y},{box.w},{box.h}/{size[0]},{size[1]}"
                                    "/0/default.jpg")
            assert dz.status_code == iiif.status_code == 200
            assert max_diff(decode(dz.content), decode(iiif.content)) == 0, (level, col, row)
