"""JPEG 2000 sources (sources/jp2.py): levels and metadata, pixels of whole levels, tiles and regions
compared with the pixels each lossless file was written from (full resolution) and with Pillow's own
OpenJPEG binding (reductions), decoding in units (codestream tiles, blocks of untiled codestreams),
once each, single-flight, in a bounded cache; quality layers; HTJ2K; bad files; and the same pixels
through IIIF, IIP (JTL, PTL, CVT), DeepZoom and Zoomify. Fixtures: tests/jp2_images.py."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tileserver.errors import NotImplementedFeature, SourceError
from tileserver.levels import dz_max_level, scaled_size, scaled_tile
from tileserver.sources import jp2 as jp2_module
from tileserver.sources.jp2 import Jp2Format, Jp2Image, Units
from tileserver.sources.openjpeg import Decoded, library

from ..conftest import RGB_TIF, decode, served
from ..iipsrv_ref import unavailable
from ..jp2_images import BY_NAME, LAYERED, SPECS, TILED_RGB, UNTILED_RGB, Jp2Spec, pillow_level, source

LEVEL_PARAMS = [pytest.param(s, r, id=f"{s.name}-r{r}") for s in SPECS for r in range(s.offered)]
SPEC_PARAMS = [pytest.param(s, id=s.name) for s in SPECS]


@pytest.fixture(scope="module")
def fmt() -> Jp2Format:
    return Jp2Format(64 << 20)


def opened(fmt: Jp2Format, root: Path, spec: Jp2Spec) -> Jp2Image:
    return fmt.open(str(root / spec.name), spec.name)


def array(img: Any) -> np.ndarray[Any, Any]:
    """A pyvips image as (height, width, bands)."""
    return np.asarray(img.numpy()).reshape(img.height, img.width, img.bands)


def reference(spec: Jp2Spec, root: Path, r: int, layers: int = 0) -> np.ndarray[Any, Any]:
    """Level r as an independent reader sees it: the written pixels at full resolution (lossless files,
    all layers), else Pillow's decode; where Pillow cannot size the reduction (see pillow_level), one
    whole-image OpenJPEG decode, which shares only the library with the reader's tiled path. Fewer
    layers than all: OpenJPEG's own opj_decompress (Pillow's `layers` decodes other pixels than
    opj_decompress -l does)."""
    if layers:
        return opj_decompress(root / spec.name, r, layers)[: spec.height >> r, : spec.width >> r]
    if r == 0 and spec.lossless:
        return source(spec)
    found = pillow_level(spec, root / spec.name, r)
    if found is not None:
        return found
    lib = library()
    assert lib is not None
    x0, y0 = spec.offset
    whole = lib.decode(str(root / spec.name), 0 if spec.name.endswith((".j2k", ".j2c")) else 2, r, layers,
                       area=(x0, y0, x0 + spec.width, y0 + spec.height))
    return whole.pixels[: spec.height >> r, : spec.width >> r]


def opj_decompress(path: Path, r: int, layers: int) -> np.ndarray[Any, Any]:
    """OpenJPEG's reference decoder (Debian libopenjp2-tools; .ci/run installs it)."""
    import shutil
    import subprocess
    import tempfile

    from PIL import Image

    tool = shutil.which("opj_decompress")
    if tool is None:
        unavailable("opj_decompress is not installed (apt-get install libopenjp2-tools)")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out.ppm"
        subprocess.run([str(tool), "-i", str(path), "-o", str(out), "-r", str(r), "-l", str(layers)],
                       check=True, capture_output=True, timeout=60)
        with Image.open(out) as im:
            return np.asarray(im)


# -- description ----------------------------------------------------------------------------------
@pytest.mark.parametrize("spec", SPEC_PARAMS)
def test_levels_are_iipsrvs_floor_halvings_then_virtual(fmt: Jp2Format, image_root: Path, spec: Jp2Spec) -> None:
    meta = opened(fmt, image_root, spec).meta
    stored = [(spec.width >> r, spec.height >> r) for r in range(spec.offered)]
    assert max(stored[-1]) <= 256 or spec.offered == spec.resolutions  # smaller ones are not offered
    w, h = stored[-1]
    virtual = []
    while w > 256 or h > 256:
        w, h = w // 2, h // 2
        virtual.append((w, h))
    assert [(lv.width, lv.height) for lv in meta.levels] == stored + virtual
    assert [lv.stored for lv in meta.levels] == [True] * len(stored) + [False] * len(virtual)
    assert {(lv.tile_width, lv.tile_height) for lv in meta.levels} == {(256, 256)}
    assert (meta.width, meta.height, meta.bands, meta.bits, meta.layers) == (
        spec.width, spec.height, spec.bands, spec.bits, spec.layers)
    assert meta.has_alpha == (spec.bands == 4)
    assert meta.max_values == ((1 << spec.bits) - 1,) * spec.bands
    assert meta.colorspace == ("grey" if spec.bands == 1 else "srgb" if spec.bands <= 4 else "multiband")
    assert dict(meta.properties)["jpeg2000.htj2k"] == ("yes" if spec.ht else "no")


@pytest.mark.parametrize(
    ("head", "claimed"),
    [
        pytest.param(b"\x00\x00\x00\x0cjP  \r\n\x87\n\x00\x00\x00\x14ftypjp2 ", True, id="jp2"),
        pytest.param(b"\x00\x00\x00\x0cjP  \r\n\x87\n\x00\x00\x00\x14ftypjpx ", True, id="jpx"),
        pytest.param(b"\xff\x4f\xff\x51\x00\x2f\x00\x00", True, id="j2k-codestream"),
        pytest.param(b"\xff\x4f\xff\x52", False, id="soc-without-siz"),
        pytest.param(b"II*\x00\x08\x00\x00\x00", False, id="tiff"),
        pytest.param(b"\xff\xd8\xff\xe0", False, id="jpeg"),
        pytest.param(b"\x00\x00\x00\x0cjP  \r\n\x87", False, id="cut-signature"),
    ],
)
def test_claimed_by_content(fmt: Jp2Format, head: bytes, claimed: bool) -> None:
    assert fmt.probe("any.tif", head) is claimed


# -- pixels ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(("spec", "r"), LEVEL_PARAMS)
def test_every_stored_level_matches_an_independent_decode(fmt: Jp2Format, image_root: Path, spec: Jp2Spec,
                                                         r: int) -> None:
    image = opened(fmt, image_root, spec)
    lv = image.meta.levels[r]
    got = array(image.read(r, (0, 0, lv.width, lv.height)))
    assert np.array_equal(got, reference(spec, image_root, r))


@pytest.mark.parametrize("spec", SPEC_PARAMS)
def test_tiles_and_regions(fmt: Jp2Format, image_root: Path, spec: Jp2Spec) -> None:
    """Every 256-px tile of the two largest levels (edge tiles are partial) and regions that straddle
    codestream tiles, cut from the reference level."""
    image = opened(fmt, image_root, spec)
    for r in range(min(2, spec.resolutions)):
        ref = reference(spec, image_root, r)
        lv = image.meta.levels[r]
        boxes = [(c * 256, t * 256, min(256, lv.width - c * 256), min(256, lv.height - t * 256))
                 for t in range(lv.rows()) for c in range(lv.columns())]
        boxes += [(lv.width // 3, lv.height // 5, lv.width // 2, lv.height // 3), (lv.width - 1, lv.height - 1, 1, 1),
                  (1, 2, 3, lv.height - 2)]
        for x, y, w, h in boxes:
            assert np.array_equal(array(image.read(r, (x, y, w, h))), ref[y: y + h, x: x + w]), (r, x, y, w, h)


def few_levels(spec: Jp2Spec) -> bool:
    return max(spec.width, spec.height) >> (spec.resolutions - 1) > 256


@pytest.mark.parametrize("spec", [pytest.param(s, id=s.name) for s in SPECS if few_levels(s)])
def test_virtual_levels_average_the_smallest_stored_level(fmt: Jp2Format, image_root: Path, spec: Jp2Spec) -> None:
    image = opened(fmt, image_root, spec)
    s = spec.resolutions - 1
    base = reference(spec, image_root, s).astype(float)
    for k, lv in enumerate(image.meta.levels[s + 1:], start=1):
        f = 1 << k
        expect = base[: lv.height * f, : lv.width * f].reshape(lv.height, f, lv.width, f, -1).mean(axis=(1, 3))
        got = array(image.read(s + k, (0, 0, lv.width, lv.height)))
        assert np.abs(got - expect).max() <= 1.0, k


@pytest.mark.parametrize("name", [UNTILED_RGB, TILED_RGB, "jp2-rgb8-offset-700x500.jp2",
                                  "jp2-grey16-rows100-511x383.jp2"])
@pytest.mark.parametrize(("block", "whole"), [(160, 200), (100, 64)], ids=["block160", "block100"])
def test_blocks_decode_the_same_pixels(image_root: Path, name: str, block: int, whole: int) -> None:
    """Codestream tiles larger than `whole` at a level are decoded as aligned area blocks."""
    spec = BY_NAME[name]
    small = Jp2Format(64 << 20, block=block, whole=whole)
    image = opened(small, image_root, spec)
    for r in range(min(2, spec.resolutions)):
        lv = image.meta.levels[r]
        for box in [(0, 0, lv.width, lv.height), (block - 7, block - 3, 2 * block + 5, block + 9)]:
            x, y, w, h = box
            w, h = min(w, lv.width - x), min(h, lv.height - y)
            got = array(image.read(r, (x, y, w, h)))
            assert np.array_equal(got, reference(spec, image_root, r)[y: y + h, x: x + w]), (r, box)
    assert small.units.decodes > spec.resolutions


def test_each_codestream_tile_is_decoded_once(image_root: Path) -> None:
    spec = BY_NAME[TILED_RGB]
    own = Jp2Format(64 << 20)
    image = opened(own, image_root, spec)
    lv = image.meta.levels[0]
    for _ in range(2):
        for t in range(lv.rows()):
            for c in range(lv.columns()):
                image.read(0, (c * 256, t * 256, min(256, lv.width - c * 256), min(256, lv.height - t * 256)))
    assert own.units.decodes == -(-1023 // 384) * -(-767 // 320)  # 3 x 3 codestream tiles


def test_two_threads_wanting_one_unit_decode_it_once() -> None:
    units = Units(1 << 20)
    calls = []

    def slow() -> Decoded:
        calls.append(1)
        time.sleep(0.1)
        return Decoded(np.zeros((4, 4, 1), np.uint8), 0, 0, 8, False, (False,), "grey", False)

    got: list[Decoded] = []
    threads = [threading.Thread(target=lambda: got.append(units.get(("f", 0.0, 0, 0, -1, 0, 0), slow)))
               for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and len(got) == 6 and all(g is got[0] for g in got)


def test_a_failed_unit_fails_its_waiters_and_is_retried() -> None:
    units = Units(1 << 20)

    def broken() -> Decoded:
        raise SourceError("bad")

    for _ in range(2):
        with pytest.raises(SourceError):
            units.get(("f", 0.0, 0, 0, -1, 0, 0), broken)
    assert units.cache.stats()["entries"] == 0


def test_the_unit_cache_is_bounded(image_root: Path) -> None:
    spec = BY_NAME[UNTILED_RGB]
    tiny = Jp2Format(300_000, block=128, whole=128)  # room for 6 blocks of 128 x 128 x 3
    image = opened(tiny, image_root, spec)
    image.read(0, (0, 0, 1023, 767))
    assert 0 < tiny.units.cache.bytes <= 300_000
    assert tiny.units.decodes == 8 * 6


# -- quality layers -------------------------------------------------------------------------------
@pytest.mark.parametrize("layers", [1, 2])
def test_fewer_layers_decode_other_pixels(fmt: Jp2Format, image_root: Path, layers: int) -> None:
    spec = BY_NAME[LAYERED]
    image = opened(fmt, image_root, spec)
    box = (100, 50, 400, 300)
    all_layers = array(image.read(0, box))
    fewer = array(image.read(0, box, layers=layers))
    assert not np.array_equal(fewer, all_layers)
    ref = reference(spec, image_root, 0, layers)[50:350, 100:500]
    assert np.array_equal(fewer, ref)
    assert np.array_equal(array(image.read(0, box)), all_layers)  # the cache keeps the layers apart


@pytest.mark.parametrize("layers", [None, 3, 7])
def test_all_layers(fmt: Jp2Format, image_root: Path, layers: int | None) -> None:
    spec = BY_NAME[LAYERED]
    image = opened(fmt, image_root, spec)
    got = array(image.read(1, (0, 0, 383, 255), layers=layers))
    assert np.array_equal(got, reference(spec, image_root, 1))


# -- HTJ2K ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("spec", [pytest.param(s, id=s.name) for s in SPECS if s.ht])
def test_htj2k_is_read_in_whole_tiles(fmt: Jp2Format, image_root: Path, spec: Jp2Spec) -> None:
    data = (image_root / spec.name).read_bytes()
    assert b"\xff\x50" in data[: data.index(b"\xff\x90")]  # the CAP marker is in the main header
    image = opened(fmt, image_root, spec)
    region = array(image.read(0, (37, 21, 90, 77)))
    assert np.array_equal(region, source(spec)[21:98, 37:127])


def test_htj2k_without_ht_support_is_501(image_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lib = library()
    assert lib is not None

    class Old:
        version, reads_ht, decode = "2.4.0", False, lib.decode

    monkeypatch.setattr(jp2_module, "library", lambda: Old())
    with pytest.raises(NotImplementedFeature, match="HTJ2K"):
        Jp2Format(1 << 20).open(str(image_root / "jp2-rgb8-ht-tiled128-517x301.j2c"), "x")
    Jp2Format(1 << 20).open(str(image_root / TILED_RGB), "x")  # Part 1 files still open


def test_htj2k_tiles_too_large_for_a_whole_decode_are_501(image_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(jp2_module, "HT_WHOLE_PIXELS", 200 * 200)
    image = opened(Jp2Format(1 << 20), image_root, BY_NAME["jp2-grey8-ht-untiled-300x211.j2c"])
    with pytest.raises(NotImplementedFeature):
        image.read(0, (0, 0, 10, 10))
    assert image.read(1, (0, 0, 150, 105)).width == 150  # 150 x 106 at reduction 1: whole, within the limit


# -- bad files ------------------------------------------------------------------------------------
def damaged(root: Path) -> dict[str, bytes]:
    good = (root / TILED_RGB).read_bytes()
    raw = (root / "jp2-grey8-tiled200x136-447x319.j2k").read_bytes()
    sot = good.index(b"\xff\x90")
    return {
        "jp2-garbage.jp2": good[:12] + b"\x00garbage" * 40,
        "jp2-header-cut.jp2": good[: sot - 40],
        "j2k-header-cut.j2k": raw[:30],
        "jp2-no-codestream.jp2": good[:12] + good[12:12 + 20],
        "j2k-zero-size.j2k": raw[:8] + b"\x00" * 8 + raw[16:],
    }


@pytest.mark.parametrize("name", ["jp2-garbage.jp2", "jp2-header-cut.jp2", "j2k-header-cut.j2k",
                                  "jp2-no-codestream.jp2", "j2k-zero-size.j2k"])
def test_bad_headers_are_source_errors(image_root: Path, tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(damaged(image_root)[name])
    with pytest.raises(SourceError):
        Jp2Format(1 << 20).open(str(path), name)


def test_a_truncated_codestream_fails_per_tile_and_the_rest_still_reads(image_root: Path, tmp_path: Path) -> None:
    good = (image_root / TILED_RGB).read_bytes()
    path = tmp_path / "cut.jp2"
    path.write_bytes(good[: len(good) * 2 // 3])
    own = Jp2Format(1 << 20)
    image = own.open(str(path), "cut.jp2")  # the header and the first tiles are intact
    assert np.array_equal(array(image.read(0, (0, 0, 64, 64))), source(BY_NAME[TILED_RGB])[:64, :64])
    with pytest.raises(SourceError):
        image.read(0, (1000, 700, 23, 67))  # the last codestream tile is cut off
    assert opened(own, image_root, BY_NAME[TILED_RGB]).read(0, (1000, 700, 23, 67)).width == 23


# -- through the protocols ------------------------------------------------------------------------
async def get_pixels(client: httpx.AsyncClient, url: str) -> np.ndarray[Any, Any]:
    r = await client.get(url)
    assert r.status_code == 200, (url, r.status_code, r.text[:200])
    return array(decode(r.content))


@pytest.mark.parametrize("spec", SPEC_PARAMS)
async def test_full_resolution_tiles_agree_in_every_protocol(client: httpx.AsyncClient, image_root: Path,
                                                             spec: Jp2Spec) -> None:
    """Tile (c, t) of full resolution: IIP PTL, IIIF png, DeepZoom png, CVT png with RGN are the
    reference pixels (lossless); JTL, Zoomify and IIIF jpg are one JPEG encode of them."""
    name, w, h = spec.name, spec.width, spec.height
    ident = name
    cols = -(-w // 256)
    resolution = len(opened(Jp2Format(1 << 20), image_root, spec).meta.levels) - 1
    top = dz_max_level(w, h)
    ref = reference(spec, image_root, 0)
    for c, t in {(0, 0), (cols - 1, -(-h // 256) - 1), (1, 0)}:
        x, y = c * 256, t * 256
        tw, th = min(256, w - x), min(256, h - y)
        want = ref[y: y + th, x: x + tw]
        pngs = [f"/iip?FIF={ident}&PTL={resolution},{t * cols + c}",
                f"/iiif/3/{ident}/{x},{y},{tw},{th}/{tw},{th}/0/default.png",
                f"/deepzoom/{ident}_files/{top}/{c}_{t}.png"]
        if spec.bands < 4:  # CVT flattens alpha (iipsrv 1.3 does too)
            pngs.append(f"/iip?FIF={ident}&RGN={x / w!r},{y / h!r},{tw / w!r},{th / h!r}&WID={tw}&HEI={th}&CVT=png")
        # outputs: 8-bit; more than 4 bands are cut to 3 for PNG (iipsrv 1.3's flatten)
        eight = (want if spec.bits == 8 else (want >> 8).astype(np.uint8))[:, :, : 4 if spec.bands <= 4 else 3]
        for url in pngs:
            assert np.array_equal(await get_pixels(client, url), eight), url
        jpegs = [f"/iip?FIF={ident}&JTL={resolution},{t * cols + c}",
                 f"/zoomify/{ident}/TileGroup0/{len(_tiers(w, h)) - 1}-{c}-{t}.jpg",
                 f"/iiif/3/{ident}/{x},{y},{tw},{th}/{tw},{th}/0/default.jpg"]
        first, *others = [await get_pixels(client, url) for url in jpegs]
        assert all(np.array_equal(first, o) for o in others)
        colour = want if spec.bands <= 4 else want[:, :, :3]  # JPEG: the first three of more than 4 bands
        assert np.abs(first[:, :, :3].astype(int) - _flat(colour)).mean() < 8  # Q75 JPEG, noisy pattern


def _tiers(w: int, h: int) -> list[tuple[int, int]]:
    from tileserver.levels import zoomify_tiers

    return zoomify_tiers(w, h)


def _flat(a: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """What JPEG output makes of the reference: 8 bits (16-bit sources keep their top byte), grey as
    one band, alpha flattened on white."""
    b = a.astype(int)
    if a.dtype == np.uint16:
        b = b >> 8
    if b.shape[2] in (2, 4):
        alpha = b[:, :, -1:] / 255.0
        b = np.rint(b[:, :, :-1] * alpha + 255 * (1 - alpha)).astype(int)
    return b


async def test_reduced_levels_agree_where_the_level_grids_coincide(client: httpx.AsyncClient,
                                                                   image_root: Path) -> None:
    """700x500 halves exactly (350x250, 175x125), so DeepZoom's and Zoomify's levels are the JPEG 2000
    resolutions: the same tiles through DeepZoom, Zoomify, IIP and IIIF are the reference pixels."""
    spec = BY_NAME["jp2-rgb8-offset-700x500.jp2"]
    name, w, h = spec.name, spec.width, spec.height
    top = dz_max_level(w, h)
    n_levels = len(opened(Jp2Format(1 << 20), image_root, spec).meta.levels)
    for shift in (1, 2):
        lw, lh = scaled_size(w, h, shift)
        ref = reference(spec, image_root, shift)
        cols = -(-lw // 256)
        for t in range(-(-lh // 256)):
            for c in range(cols):
                box, size = scaled_tile(w, h, shift, 256, 0, c, t)
                x, y = c * 256, t * 256
                want = ref[y: y + size[1], x: x + size[0]]
                urls = [f"/deepzoom/{name}_files/{top - shift}/{c}_{t}.png",
                        f"/iip?FIF={name}&PTL={n_levels - 1 - shift},{t * cols + c}",
                        f"/iiif/3/{name}/{box.x},{box.y},{box.w},{box.h}/{size[0]},{size[1]}/0/default.png"]
                for url in urls:
                    assert np.array_equal(await get_pixels(client, url), want), url


async def test_lyr_reaches_the_decoder(client: httpx.AsyncClient, image_root: Path) -> None:
    base = f"/fcgi-bin/iipsrv.fcgi?FIF={LAYERED}"
    plain = await get_pixels(client, f"{base}&PTL=2,5")
    one = await get_pixels(client, f"{base}&LYR=1&PTL=2,5")
    three = await get_pixels(client, f"{base}&LYR=3&PTL=2,5")
    assert not np.array_equal(one, plain) and np.array_equal(three, plain)
    layers = (await client.get(f"{base}&OBJ=IIP,1.0")).status_code
    assert layers == 200
    ref = reference(BY_NAME[LAYERED], image_root, 0, 1)
    assert np.array_equal(one, ref[256:511, 512:767])


async def test_jp2_output(client: httpx.AsyncClient, image_root: Path) -> None:
    """IIIF `jp2` and IIP `CVT=jp2`: JP2 files (Pillow decodes them); QLT=100 is lossless."""
    spec = BY_NAME[TILED_RGB]
    r = await client.get(f"/iiif/3/{spec.name}/0,0,300,200/300,200/0/default.jp2")
    assert r.headers["content-type"] == "image/jp2"
    lossy = array(decode(r.content))
    assert np.abs(lossy.astype(int) - source(spec)[:200, :300]).mean() < 4
    lossless = await get_pixels(client, f"/iip?FIF={spec.name}&RGN=0,0,{300 / 1023!r},{200 / 767!r}"
                                        "&WID=300&HEI=200&QLT=100&CVT=jp2")
    assert np.array_equal(lossless, source(spec)[:200, :300])
    assert "jp2" in (await client.get(f"/iiif/3/{RGB_TIF}/info.json")).json()["extraFormats"]


BAD = ["jp2-garbage.jp2", "jp2-header-cut.jp2", "j2k-header-cut.j2k", "jp2-no-codestream.jp2", "j2k-zero-size.j2k"]


@pytest.fixture(scope="module")
async def bad_jp2_client(image_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    from tileserver.settings import Settings

    root = tmp_path_factory.mktemp("badjp2")
    for name, data in damaged(image_root).items():
        (root / name).write_bytes(data)
    good = (image_root / TILED_RGB).read_bytes()
    (root / "cut.jp2").write_bytes(good[: len(good) * 2 // 3])
    async with served(Settings(root=root)) as c:
        yield c


@pytest.mark.parametrize("name", BAD)
async def test_bad_jp2_files_are_415_in_every_protocol(bad_jp2_client: httpx.AsyncClient, name: str) -> None:
    from ..test_bad_files import urls

    for url in urls(name):
        r = await bad_jp2_client.get(url)
        assert r.status_code == 415, (url, r.status_code, r.text)
        assert "/tmp" not in r.text


async def test_a_cut_codestream_is_415_for_the_lost_tiles_only(bad_jp2_client: httpx.AsyncClient) -> None:
    ok = await bad_jp2_client.get("/iip?FIF=cut.jp2&JTL=2,0")
    lost = await bad_jp2_client.get("/iip?FIF=cut.jp2&JTL=2,11")
    assert (ok.status_code, lost.status_code) == (200, 415)
    assert "/tmp" not in lost.text
    assert (await bad_jp2_client.get("/iip?FIF=cut.jp2&JTL=2,1")).status_code == 200
