"""IIP image processing side by side with iipsrv 1.3 (fixture `iipsrv13`, the same generated images):
every processing command, alone and combined, on a PNG tile (PTL: lossless, so pixels compare exactly)
and on a PNG export (CVT) at a level's own size, of 8-bit RGB and 16-bit grey; and on a resized export.

What 1.3 does (JTL.cc, CVT.cc, Transforms.cc), and so do we (process.py):
- one histogram per image, from its smallest resolution (a tile), of each pixel's band mean (8-bit
  samples; wider ones scaled through the sample range first), kept for the image; CNT=st normalises
  every band to its used bins, COL=binary thresholds at its Otsu level, CNT=eq maps every band
  through its CDF: the same mapping for every tile of an image, so no seams;
- order: normalise (MINMAX or stretch) -> SHD -> CTW -> GAM/log -> INV -> CMP -> CNV -> contrast and
  truncation to 8 bits -> (CVT: resize) -> COL=grey/binary -> CNT=eq -> mirror/rotate;
- GAM=log: log(1 + 255 v) / log(256); COL=grey: (1254097 R + 2462056 G + 478151 B) >> 22 of the 8-bit
  values (0.299/0.587/0.114, no linearisation); CMP maps the first band (red of an RGB image);
- 16-bit without floating-point processing (alone or with CNT=eq, COL): the top 8 bits (v >> 8).

Before this (tile PTL=1,1 of the RGB image unless said; mean / max difference from 1.3): GAM=log
65 / 118; CNT=eq 63 / 147; CNT=st 13.8 / 40; COL=grey 6.5 / 41; COL=binary 16 / 255; CMP=jet 97 / 255,
CMP=hot 55 / 252 (every map on RGB: we mapped the band mean); 16-bit grey: plain 0.40 / 1, CMP=jet
1.2 / 5, CNT=eq 9.1 / 20, CNT=st 6.7 / 27, GAM=log 74 / 99, COL=binary 16 / 255; a resized export with
CNT=eq 39 / 107. Now all tiles and unscaled exports are identical to 1.3's.

Where we differ on purpose (tested below): COL=grey of a grey image's colour map is grey here (1.3
greys sRGB sources only, so it sends colour); alpha is kept out of the histogram and the equalisation
(1.3 averages and maps it as a colour band); 1.3's equalisation subtracts cdf(first bin) / (pixels of
the tile), under 1/256 of a level, which we leave out. A resized export resizes before processing
here and after the floating-point chain in 1.3, with another kernel: within resize noise.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import pyvips

from tileserver.cache.memory import ByteLRU
from tileserver.imaging.process import Histogram, apply_quality, histogram
from tileserver.imaging.render import image_histogram
from tileserver.models import Quality
from tileserver.sources.pyramid import PyramidReader, PyvipsFormat

from .conftest import ALPHA_PNG, GREY16_TIF, RGB_TIF, decode, max_diff, mean_diff

COMMON = [
    "", "CNT=1.5", "CNT=0.6", "CNT=eq", "CNT=st", "GAM=0.5", "GAM=2", "GAM=log", "INV=1",
    "CMP=hot", "CMP=cold", "CMP=jet", "CMP=red", "CMP=green", "CMP=blue", "COL=grey", "COL=binary",
    # combinations, to check the order
    "GAM=log&INV=1&CMP=jet", "CNT=st&COL=binary", "CNT=eq&COL=grey", "CMP=jet&COL=binary", "INV=1&CNT=eq",
    "CNT=eq&CNT=st", "CNT=st&GAM=2&INV=1", "CNT=eq&COL=binary", "CMP=cold&CNT=eq", "CNT=0.6&GAM=2",
    "GAM=log&CNT=0.7&ROT=90", "COL=binary&ROT=90",
]
RGB_ONLY = [
    "CTW=[0,0,1;0,1,0;1,0,0]", "CTW=[0.5,0.5,0;0,1,0;0,0,1]", "MINMAX=-:0,128", "MINMAX=1:50,200",
    "MINMAX=-:0,128&GAM=0.5&CNT=2", "MINMAX=0:1000,30000&CNT=st", "CMP=hot&COL=grey",
]
# MINMAX is not combined with histogram commands on 16 bits: 1.3 keeps the histogram of the first
# request that needed one, scaled through that request's MINMAX range.
GREY_ONLY = ["CTW=[2]", "CTW=[0.5]", "MINMAX=0:1000,30000", "MINMAX=0:1000,30000&GAM=0.5&CNT=2"]
# (ident, what, query): a tile, an edge tile, an export at a level's own size (no resizing)
TARGETS = [
    (RGB_TIF, "tile", "PTL=1,1"), (RGB_TIF, "edge-tile", "PTL=2,11"), (RGB_TIF, "export", "WID=501&CVT=png"),
    (GREY16_TIF, "tile", "PTL=1,1"), (GREY16_TIF, "edge-tile", "PTL=2,3"), (GREY16_TIF, "export", "WID=300&CVT=png"),
]
CASES = [
    pytest.param(ident, cmd, target, id=f"{'rgb' if ident == RGB_TIF else 'grey16'}-{what}-{cmd or 'plain'}")
    for ident, what, target in TARGETS
    for cmd in COMMON + (RGB_ONLY if ident == RGB_TIF else GREY_ONLY)
]
RESIZED = "WID=300&CVT=png"  # RGB level 1 (501 wide) resized: our kernel vs 1.3's bilinear


async def ours(client: httpx.AsyncClient, query: str) -> httpx.Response:
    return await client.get(f"/fcgi-bin/iipsrv.fcgi?{query}")


async def both(iipsrv13: httpx.Client, client: httpx.AsyncClient, query: str) -> tuple[Any, Any]:
    theirs, mine = iipsrv13.get(f"?{query}"), await ours(client, query)
    assert (mine.status_code, theirs.status_code) == (200, 200), mine.text
    return decode(mine.content), decode(theirs.content)


def query_of(ident: str, cmd: str, target: str) -> str:
    return "&".join(part for part in (f"FIF={ident}", cmd, target) if part)


@pytest.mark.parametrize(("ident", "cmd", "target"), CASES)
async def test_processing_matches_iipsrv13(iipsrv13: httpx.Client, client: httpx.AsyncClient, ident: str,
                                           cmd: str, target: str) -> None:
    """Identical pixels: same size and bands, no sample one level apart."""
    mine, theirs = await both(iipsrv13, client, query_of(ident, cmd, target))
    assert (mine.width, mine.height, mine.bands) == (theirs.width, theirs.height, theirs.bands)
    assert max_diff(mine, theirs) == 0


@pytest.mark.parametrize("cmd", [c for c in COMMON + RGB_ONLY if c])
async def test_resized_export_within_resize_noise(iipsrv13: httpx.Client, client: httpx.AsyncClient,
                                                  cmd: str) -> None:
    """A resized export: the plain export already differs by resizing (mean 1.14, max 15), which
    processing amplifies at most 3x (CNT=eq&CNT=st: 3.45); the old code gave means of 11.9 (COL=grey)
    to 120 (CMP=jet&COL=binary): CNT=eq 38.7, CNT=st 14.3, GAM=log 69.7, CMP=jet 79.6, COL=binary 16.6."""
    plain = mean_diff(*await both(iipsrv13, client, query_of(RGB_TIF, "", RESIZED)))
    mine, theirs = await both(iipsrv13, client, query_of(RGB_TIF, cmd, RESIZED))
    assert (mine.width, mine.height, mine.bands) == (theirs.width, theirs.height, theirs.bands)
    assert mean_diff(mine, theirs) <= 3 * plain + 0.5


@pytest.mark.parametrize("cmd", ["CNT=eq", "CNT=st", "COL=binary", "CNT=eq&COL=grey"])
@pytest.mark.parametrize(("ident", "level_width", "tile", "box"), [
    pytest.param(RGB_TIF, 501, "PTL=1,1", (256, 0, 245, 256), id="rgb"),
    pytest.param(GREY16_TIF, 600, "PTL=2,3", (0, 256, 256, 154), id="grey16"),
])
async def test_histogram_commands_have_no_seams(client: httpx.AsyncClient, cmd: str, ident: str,
                                                level_width: int, tile: str, box: tuple[int, int, int, int]
                                                ) -> None:
    """A tile is the same crop of the whole level's export: one mapping per image, not per tile."""
    whole = decode((await ours(client, f"FIF={ident}&{cmd}&WID={level_width}&CVT=png")).content)
    part = decode((await ours(client, f"FIF={ident}&{cmd}&{tile}")).content)
    assert max_diff(part, whole.crop(*box)) == 0


def grey601(rgb: Any) -> Any:
    """1.3's Transform::greyscale in numpy."""
    px = rgb.numpy().astype(np.int64)
    return (1254097 * px[..., 0] + 2462056 * px[..., 1] + 478151 * px[..., 2]) >> 22


async def test_grey_of_a_grey_images_colour_map(iipsrv13: httpx.Client, client: httpx.AsyncClient) -> None:
    """CMP then COL=grey on a grey image: 1.3 greys sRGB sources only and sends the colour map; we send
    its grey, by 1.3's own formula."""
    mine, theirs = await both(iipsrv13, client, f"FIF={GREY16_TIF}&CMP=hot&COL=grey&PTL=1,1")
    assert (mine.bands, theirs.bands) == (1, 3)
    assert np.array_equal(mine.numpy(), grey601(theirs))


async def test_alpha_is_kept_out(client: httpx.AsyncClient) -> None:
    """Our own (1.3 reads no PNG): COL=grey greys the colour bands and keeps alpha; CNT=eq maps the
    colour bands only."""
    plain = decode((await ours(client, f"FIF={ALPHA_PNG}&PTL=0,0")).content)
    grey = decode((await ours(client, f"FIF={ALPHA_PNG}&COL=grey&PTL=0,0")).content)
    assert grey.bands == 2
    assert np.array_equal(grey.numpy()[..., 0], grey601(plain))
    assert np.array_equal(grey.numpy()[..., 1], plain.numpy()[..., 3])
    equalised = decode((await ours(client, f"FIF={ALPHA_PNG}&CNT=eq&PTL=0,0")).content)
    assert np.array_equal(equalised.numpy()[..., 3], plain.numpy()[..., 3])
    assert max_diff(equalised.extract_band(0, n=3), plain.extract_band(0, n=3)) > 0


def otsu_reference(counts: list[int]) -> int:
    """Otsu's method in double precision: the first bin maximising the between-class variance."""
    h = np.asarray(counts, dtype=np.float64)
    levels = np.arange(len(h))
    wb = np.cumsum(h)
    wf = h.sum() - wb
    mb = np.cumsum(h * levels) / np.where(wb > 0, wb, 1)
    mf = (np.sum(h * levels) - np.cumsum(h * levels)) / np.where(wf > 0, wf, 1)
    between = np.where((wb > 0) & (wf > 0), wb * wf * (mb - mf) ** 2, 0)
    return int(np.argmax(between))


@pytest.mark.parametrize("counts", [
    pytest.param([0] * 40 + [500] + [0] * 100 + [300] + [0] * 115, id="two-spikes"),
    pytest.param([int(1000 * np.exp(-((i - 60) / 15) ** 2) + 600 * np.exp(-((i - 190) / 25) ** 2))
                  for i in range(256)], id="bimodal"),
    pytest.param([1] * 256, id="flat"),
])
def test_otsu(counts: list[int]) -> None:
    assert Histogram(tuple(counts)).otsu() == otsu_reference(counts)


@pytest.mark.parametrize(("counts", "lut_at"), [
    pytest.param([0] * 10 + [100] * 2 + [0] * 244, {0: 0, 10: 128, 11: 255, 255: 255}, id="two-bins"),
    pytest.param([1] * 256, {0: 1, 127: 128, 255: 255}, id="flat"),
])
def test_equalisation_lut(counts: list[int], lut_at: dict[int, int]) -> None:
    """round(255 * cdf / total); 10: 255 * 100 / 200 = 127.5 rounds up, as C's round."""
    lut = Histogram(tuple(counts)).equalisation_lut()
    assert {i: lut[i] for i in lut_at} == lut_at


def test_histogram_is_the_band_mean(tmp_path: Path) -> None:
    """Each pixel counts once, at its rounded band mean; 16-bit samples are scaled to 8 bits and
    truncated in single precision, as 1.3 (65535 -> 255, 258 -> 1, 257 -> 0: 257 / 65535 * 255 is 1 exactly,
    0.99999994 in single precision)."""
    reader = PyramidReader()
    rgb = pyvips.Image.new_from_array([[10, 20, 31, 200], [0, 0, 1, 0]]).cast("uchar")
    rgb = rgb.extract_area(0, 0, 3, 1).bandjoin([rgb.extract_area(1, 0, 3, 1), rgb.extract_area(0, 1, 3, 1)])
    rgb.copy(interpretation="srgb").tiffsave(str(tmp_path / "rgb.tif"))  # (10,20,0) (20,31,0) (31,200,1)
    meta = reader.info(str(tmp_path / "rgb.tif"), "rgb.tif")
    counts = histogram(reader.read(str(tmp_path / "rgb.tif"), meta, 0, (0, 0, 3, 1)), meta).counts
    assert {i: n for i, n in enumerate(counts) if n} == {10: 1, 17: 1, 77: 1}
    grey = pyvips.Image.new_from_array([[65535, 258, 257]]).cast("ushort").copy(interpretation="grey16")
    grey.tiffsave(str(tmp_path / "grey.tif"))
    meta = reader.info(str(tmp_path / "grey.tif"), "grey.tif")
    counts = histogram(reader.read(str(tmp_path / "grey.tif"), meta, 0, (0, 0, 3, 1)), meta).counts
    assert {i: n for i, n in enumerate(counts) if n} == {255: 1, 1: 1, 0: 1}


def test_histogram_cache_follows_the_file(tmp_path: Path) -> None:
    """Kept per image until the file changes (mtime, size)."""
    fmt = PyvipsFormat(PyramidReader())
    derived: ByteLRU[object, object] = ByteLRU(1 << 20)
    path = str(tmp_path / "a.tif")
    pyvips.Image.black(64, 64).cast("uchar").tiffsave(path)
    first = image_histogram(fmt.open(path, "a.tif"), 0, derived)
    assert first.bounds() == (0, 0)
    assert image_histogram(fmt.open(path, "a.tif"), 0, derived) is first
    (pyvips.Image.black(64, 64) + 200).cast("uchar").tiffsave(path)
    os.utime(path, (1e9, 1e9))
    assert image_histogram(fmt.open(path, "a.tif"), 0, derived).bounds() == (200, 200)


def test_bitonal_without_a_histogram_uses_128() -> None:
    img = pyvips.Image.new_from_array([[127, 128]]).cast("uchar")
    assert apply_quality(img, Quality.BITONAL).numpy().tolist() == [[0, 255]]
