"""The expected tile sizes of `tile_grid` against sizes worked out by hand for a 1003 x 701 image with
256-pixel tiles (levels 1003 x 701, 502 x 351 and 251 x 176 rounding up; IIP's 501 x 350 and 250 x 175
as the server lists them)."""

from __future__ import annotations

import pytest

from .tile_grid import Grid, dzi_grid, expect, halvings, iiif_grid, iip_grid, zoomify_grid

IIP = iip_grid("Max-size:1003 701\r\nTile-size:256 256\r\nResolution-number:3\r\n"
               "Resolutions:250 175,501 350,1003 701\r\nDPI:1000.0 1000.0\r\n")
ZOOMIFY = zoomify_grid('<IMAGE_PROPERTIES WIDTH="1003" HEIGHT="701" NUMTILES="17" NUMIMAGES="1" '
                       'VERSION="1.8" TILESIZE="256" />')
DZI_XML = ('<Image xmlns="http://schemas.microsoft.com/deepzoom/2008" Format="jpg" Overlap="{}" TileSize="256">'
           '<Size Height="701" Width="1003" /></Image>')
IIIF = iiif_grid('{"width": 1003, "height": 701, "tiles": [{"width": 256, "scaleFactors": [1, 2, 4]}]}')


def test_grids_read_the_metadata() -> None:
    assert IIP.levels == ((1003, 701), (501, 350), (250, 175))
    assert ZOOMIFY.levels == ((1003, 701), (502, 351), (251, 176))
    assert dzi_grid(DZI_XML.format(0)).levels == halvings(1003, 701, 11)
    assert IIIF.tile == (256, 256) and IIIF.counts(0) == (4, 3)


def test_zoomify_numtiles_is_checked() -> None:
    with pytest.raises(AssertionError):
        zoomify_grid('<IMAGE_PROPERTIES WIDTH="1003" HEIGHT="701" NUMTILES="16" TILESIZE="256" />')


H = "http://h"


@pytest.mark.parametrize(("url", "grid", "sizes", "where"), [
    pytest.param(f"{H}/iip?FIF=a.tif&JTL=2,3", IIP, {(235, 256)}, (0, 3, 0), id="iip-right-edge"),
    pytest.param(f"{H}/fcgi-bin/iipsrv.fcgi?FIF=a.tif&JTL=2,11", IIP, {(235, 189)}, (0, 3, 2), id="iip-corner"),
    pytest.param(f"{H}/iip?FIF=a.tif&JTL=1,3", IIP, {(245, 94)}, (1, 1, 1), id="iip-level1-listed-sizes"),
    pytest.param(f"{H}/iip?FIF=a.tif&JTL=0,0", IIP, {(250, 175)}, (2, 0, 0), id="iip-smallest"),
    pytest.param(f"{H}/iip?FIF=a.tif&JTL=2,12", IIP, set(), (0, 0, 3), id="iip-past-the-grid"),
    pytest.param(f"{H}/iip?FIF=a.tif&WID=200&QLT=98&CVT=jpeg", IIP, {(200, 139), (200, 140)}, None, id="iip-export"),
    pytest.param(f"{H}/zoomify/a.tif/TileGroup0/0-0-0.jpg", ZOOMIFY, {(251, 176)}, (2, 0, 0), id="zoomify-top"),
    pytest.param(f"{H}/zoomify/s/a.tif/TileGroup0/1-1-1.jpg", ZOOMIFY, {(246, 95)}, (1, 1, 1), id="zoomify-edge"),
    pytest.param(f"{H}/deepzoom/a.tif_files/10/3_2.jpg", dzi_grid(DZI_XML.format(0)), {(235, 189)}, (0, 3, 2),
                 id="dzi-corner"),
    pytest.param(f"{H}/deepzoom/a.tif_files/9/1_1.jpg", dzi_grid(DZI_XML.format(0)), {(246, 95)}, (1, 1, 1),
                 id="dzi-level9"),
    pytest.param(f"{H}/deepzoom/a.tif_files/1/0_0.jpg", dzi_grid(DZI_XML.format(0)), {(2, 2)}, (9, 0, 0),
                 id="dzi-level1"),
    pytest.param(f"{H}/deepzoom/a.tif_files/10/1_1.jpg", dzi_grid(DZI_XML.format(1)), {(258, 258)}, (0, 1, 1),
                 id="dzi-overlap-inner"),
    pytest.param(f"{H}/deepzoom/a.tif_files/10/3_2.jpg", dzi_grid(DZI_XML.format(1)), {(236, 190)}, (0, 3, 2),
                 id="dzi-overlap-corner"),
    pytest.param(f"{H}/iiif/3/a.tif/768,512,256,256/max/0/default.jpg", IIIF, {(235, 189)}, (0, 3, 2),
                 id="iiif-max-corner"),
    pytest.param(f"{H}/iiif/2/a.tif/512,512,512,512/!256,256/0/default.jpg", IIIF, {(256, 98), (256, 99)},
                 (1, 1, 1), id="iiif-confined-width"),
    pytest.param(f"{H}/iiif/3/a.tif/512,512,512,512/!245,94/0/default.jpg", IIIF, {(244, 94), (245, 94)},
                 (1, 1, 1), id="iiif-confined-height"),
    pytest.param(f"{H}/iiif/3/s%2Fa.tif/full/200,/0/default.jpg", IIIF, {(200, 139), (200, 140)}, None,
                 id="iiif-thumbnail"),
])
def test_expected_sizes(url: str, grid: Grid, sizes: set[tuple[int, int]],
                        where: tuple[int, int, int] | None) -> None:
    e = expect(url, grid)
    assert e is not None
    assert e.sizes == sizes
    assert (None if e.index is None else (e.index, e.col, e.row)) == where


@pytest.mark.parametrize("url", [
    f"{H}/iip?FIF=a.tif&obj=IIP,1.0&obj=Max-size&obj=dpi",
    f"{H}/iiif/3/a.tif/info.json",
    f"{H}/zoomify/a.tif/ImageProperties.xml",
    f"{H}/deepzoom/a.tif.dzi",
    f"{H}/iipmooviewer/images/zoomIn.svg",
])
def test_metadata_and_other_urls_are_no_images(url: str) -> None:
    assert expect(url, IIP) is None


def test_unknown_iip_export_is_an_error() -> None:
    with pytest.raises(ValueError, match="RGN"):
        expect(f"{H}/iip?FIF=a.tif&RGN=0,0,0.5,0.5&WID=100&CVT=jpeg", IIP)
