"""JPEG 2000 side by side with iipsrv 1.3 (built from ../shared/vendor with OpenJPEG, behind lighttpd on
loopback; fixture `iipsrv13`) on the generated JP2 files of tests/jp2_images.py: OBJ replies (sizes,
levels, tile size, depth, sample range, colour space) byte for byte, and every JTL tile's status, size
and pixels.

1.3's JPEG 2000 behaviour we keep: levels halve rounding down and stop at the first that fits one tile;
256-px tiles. What we do not copy, each asserted below:
- `LYR`: 1.3 with OpenJPEG 2.5 decodes every quality layer whatever `LYR` asks (its code means half of
  them without `LYR`; measured, it is all); we decode all by default too, and `LYR=n` decodes n.
- 1.3 places its decode area on the reference grid without the image origin (`XOsiz`, `YOsiz`), so a
  file with an origin offset comes out shifted; we decode the image area.
- 1.3 makes virtual levels (a codestream with too few resolutions) by taking every 2nd or 4th pixel; we
  average (libvips `shrink`), as for every other format.
- 1.3 drops the alpha band of an RGBA file in a JPEG tile; we composite it on `background` (white), as
  for every other format (compared here through our PNG tile's colour bands).
- 1.3 reads no raw codestreams (`.j2k`, `.j2c`: it finds JPEG 2000 by the JP2 signature box only) and
  no HTJ2K through its JP2 path; those files are compared with the independent decoders instead
  (tests/sources/test_jp2.py).
"""

from __future__ import annotations

import httpx
import numpy as np
import pytest

from .conftest import decode, mean_diff
from .jp2_images import LAYERED, SPECS, Jp2Spec

PREFIX = "/fcgi-bin/iipsrv.fcgi"
JP2 = [pytest.param(s, id=s.name) for s in SPECS if s.name.endswith(".jp2")]
OBJECTS = "&".join(f"OBJ={o}" for o in ("IIP,1.0", "Max-size", "Tile-size", "Resolution-number", "Bits-per-channel",
                                        "Resolutions", "Min-Max-sample-values", "Colorspace,*,*"))
OFFSET = "jp2-rgb8-offset-700x500.jp2"


@pytest.mark.parametrize("spec", JP2)
async def test_obj_replies_are_identical(iipsrv13: httpx.Client, client: httpx.AsyncClient, spec: Jp2Spec) -> None:
    theirs = iipsrv13.get(f"?FIF={spec.name}&{OBJECTS}")
    mine = await client.get(f"{PREFIX}?FIF={spec.name}&{OBJECTS}")
    assert theirs.status_code == mine.status_code == 200
    assert mine.content == theirs.content


def virtual(spec: Jp2Spec, resolution: int, levels: int) -> bool:
    """Whether IIP resolution `resolution` (0 = smallest) is a virtual level of this file."""
    return levels - 1 - resolution >= spec.offered


@pytest.mark.parametrize("spec", JP2)
async def test_every_jtl_tile(iipsrv13: httpx.Client, client: httpx.AsyncClient, spec: Jp2Spec) -> None:
    """Each tile of each resolution (and one past the last): same status, size and bands, pixels within
    JPEG noise (both Q75 from the same decode)."""
    sizes = (await client.get(f"{PREFIX}?FIF={spec.name}&OBJ=Resolutions")).text.split(":")[1].strip().split(",")
    worst = {False: 0.0, True: 0.0}
    for res, size in enumerate(sizes):
        w, h = (int(v) for v in size.split())
        for n in range(-(-w // 256) * -(-h // 256) + 1):
            theirs = iipsrv13.get(f"?FIF={spec.name}&JTL={res},{n}")
            mine = await client.get(f"{PREFIX}?FIF={spec.name}&JTL={res},{n}")
            assert mine.status_code == theirs.status_code, (res, n)
            if theirs.status_code != 200:
                continue
            a, b = decode(mine.content), decode(theirs.content)
            if spec.bands == 4:  # 1.3 drops the alpha band of a JPEG tile, we composite on the background:
                png = decode((await client.get(f"{PREFIX}?FIF={spec.name}&PTL={res},{n}")).content)
                a = decode(png.extract_band(0, n=3).jpegsave_buffer(Q=75))  # our colour bands as 1.3 sends them
            assert (a.width, a.height, a.bands) == (b.width, b.height, b.bands), (res, n)
            v = virtual(spec, res, len(sizes))
            worst[v] = max(worst[v], mean_diff(a, b))
    if spec.name == OFFSET:
        assert worst[False] > 4.0  # 1.3's shifted decode (see above)
    else:
        assert worst[False] < 2.0
        assert worst[True] < 8.0  # every 2nd pixel against the average of 2 x 2


async def test_lyr(iipsrv13: httpx.Client, client: httpx.AsyncClient) -> None:
    """1.3 (OpenJPEG 2.5) decodes every quality layer whatever `LYR` says, and also without it (its code
    means half of them: measured, it is all): the same pixels as our default. Our `LYR=n` decodes n
    layers (checked against opj_decompress in tests/sources/test_jp2.py)."""
    def pixels(body: bytes) -> np.ndarray:  # type: ignore[type-arg]
        return np.asarray(decode(body).numpy(), dtype=float)

    def url(lyr: int | None) -> str:  # LYR before JTL: a tile command ends an IIP request
        return f"?FIF={LAYERED}" + (f"&LYR={lyr}" if lyr else "") + "&JTL=2,1"

    mine = {lyr: pixels((await client.get(PREFIX + url(lyr))).content) for lyr in (None, 1, 2, 3)}
    for lyr in (None, 1, 2, 3):
        assert np.abs(pixels(iipsrv13.get(url(lyr)).content) - mine[None]).mean() < 1.0, lyr
    assert np.abs(mine[None] - mine[3]).mean() < 0.01
    assert np.abs(mine[1] - mine[3]).mean() > 2.0 and np.abs(mine[2] - mine[3]).mean() > 0.5


@pytest.mark.parametrize("spec", JP2)
async def test_iiif_and_zoomify_documents_describe_the_same_levels(iipsrv13: httpx.Client, client: httpx.AsyncClient,
                                                                   spec: Jp2Spec) -> None:
    """info.json: the same size, tiles and scale factors; `sizes` the same but for the full size, which
    ours lists too (as for every format). Zoomify ImageProperties.xml: the same attributes."""
    import xml.etree.ElementTree as ET

    theirs = iipsrv13.get(f"?IIIF={spec.name}/info.json").json()
    mine = (await client.get(f"/iiif/3/{spec.name}/info.json")).json()
    assert (mine["width"], mine["height"], mine["tiles"]) == (theirs["width"], theirs["height"], theirs["tiles"])
    assert mine["sizes"] == [*theirs["sizes"], {"width": spec.width, "height": spec.height}]
    z_theirs = ET.fromstring(iipsrv13.get(f"?Zoomify={spec.name}/ImageProperties.xml").content)
    z_mine = ET.fromstring((await client.get(f"/zoomify/{spec.name}/ImageProperties.xml")).content)
    assert z_mine.attrib == z_theirs.attrib
