"""The browser harness's pure parts (no browser): tile URLs to levels for each protocol, the deepest
level of each, and the blankness measure."""

from __future__ import annotations

import pytest
import pyvips

from .harness import blank_share, deepest, rgb, tile_level


@pytest.mark.parametrize(("url", "level"), [
    pytest.param("http://h/deepzoom/sample.tif_files/12/3_4.jpg", "dzi 12", id="dzi"),
    pytest.param("http://h/deepzoom/a/b.tif_files/0/0_0.jpg", "dzi 0", id="dzi-subfolder"),
    pytest.param("http://h/zoomify/sample.tif/TileGroup0/4-5-3.jpg", "zoomify 4", id="zoomify"),
    pytest.param("http://h/iiif/3/sample.tif/0,0,1024,1024/256,256/0/default.jpg", "iiif 1/4", id="iiif3-wh"),
    pytest.param("http://h/iiif/2/sample.tif/2048,0,953,1024/239,/0/default.jpg", "iiif 1/4", id="iiif2-edge"),
    pytest.param("http://h/iiif/3/a%2Fb.tif/full/188,126/0/default.jpg", "iiif 1/16", id="iiif-full"),
    pytest.param("http://h/iiif/3/sample.tif/0,0,256,256/max/0/default.jpg", "iiif 1/1", id="iiif-max"),
    pytest.param("http://h/iiif/3/sample.tif/info.json", None, id="info"),
    pytest.param("http://h/deepzoom/sample.tif.dzi", None, id="dzi-descriptor"),
])
def test_tile_level(url: str, level: str | None) -> None:
    assert tile_level(url, 3001, 2003) == level


def test_deepest() -> None:
    assert [deepest(p, 3001, 2003) for p in ("dzi", "zoomify", "iiif")] == ["dzi 12", "zoomify 4", "iiif 1/1"]


def test_blank_share() -> None:
    flat = pyvips.Image.black(100, 100, bands=3).write_to_buffer(".png")
    ramp = pyvips.Image.xyz(256, 256)[0].cast("uchar").bandjoin([pyvips.Image.xyz(256, 256)[1].cast("uchar")] * 2)
    assert blank_share(rgb(flat)) == 1.0
    assert blank_share(rgb(ramp.write_to_buffer(".png"))) < 0.2
