"""IIP grammar: every command form, every malformed form (pure; no server)."""

from __future__ import annotations

import pytest

from tileserver.models import OutputFormat, Quality
from tileserver.protocols.iip.grammar import (
    CvtOut,
    EntryOut,
    IIPError,
    IIPQuery,
    TileOut,
    TilesOut,
    parse,
    split_query,
)


def p(query: str) -> IIPQuery:
    return parse(split_query(query), query)


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        pytest.param("FIF=a.tif&JTL=3,17", TileOut(3, 17, OutputFormat.JPEG), id="jtl"),
        pytest.param("fif=a.tif&jtl=0,0", TileOut(0, 0, OutputFormat.JPEG), id="lowercase"),
        pytest.param("FIF=a.tif&PTL=1,2", TileOut(1, 2, OutputFormat.PNG), id="ptl"),
        pytest.param("FIF=a.tif&WTL=1,2", TileOut(1, 2, OutputFormat.WEBP), id="wtl"),
        pytest.param("FIF=a.tif&ATL=1,2", TileOut(1, 2, OutputFormat.AVIF), id="atl"),
        pytest.param("FIF=a.tif&TTL=1,2", TileOut(1, 2, OutputFormat.TIFF), id="ttl"),
        pytest.param("FIF=a.tif&TIL=2,0-5", TilesOut(2, 0, 5), id="til-range"),
        pytest.param("FIF=a.tif&TIL=2,4", TilesOut(2, 4, 4), id="til-single"),
        pytest.param("FIF=a.tif&TIL=2,5-1", TilesOut(2, 5, 5), id="til-backwards"),
        pytest.param("FIF=a.tif&CVT=jpeg", CvtOut(OutputFormat.JPEG), id="cvt-jpeg"),
        pytest.param("FIF=a.tif&CVT=JPG", CvtOut(OutputFormat.JPEG), id="cvt-jpg"),
        pytest.param("FIF=a.tif&CVT=png", CvtOut(OutputFormat.PNG), id="cvt-png"),
        pytest.param("FIF=a.tif&CVT=webp", CvtOut(OutputFormat.WEBP), id="cvt-webp"),
        pytest.param("FIF=a.tif&CVT=avif", CvtOut(OutputFormat.AVIF), id="cvt-avif"),
        pytest.param("FIF=a.tif&CVT=tiff", CvtOut(OutputFormat.TIFF), id="cvt-tiff"),
        pytest.param("IIIF=a.tif/info.json", EntryOut("iiif", "a.tif/info.json"), id="iiif-entry"),
        pytest.param("DeepZoom=a.tif.dzi", EntryOut("deepzoom", "a.tif.dzi"), id="deepzoom-entry"),
        pytest.param("Zoomify=a.tif/ImageProperties.xml", EntryOut("zoomify", "a.tif/ImageProperties.xml"),
                     id="zoomify-entry"),
    ],
)
def test_outputs(query: str, expected: object) -> None:
    assert p(query).output == expected


def test_modifiers() -> None:
    q = p("FIF=dir/a%20b.tif&WID=400&HEI=300&RGN=0.1,0.2,0.5,0.25&QLT=60&SDS=0,90&ROT=!90&CVT=png")
    assert q.fif == "dir/a b.tif"
    assert (q.width, q.height, q.region, q.encoder_quality) == (400, 300, (0.1, 0.2, 0.5, 0.25), 60)
    assert (q.view, q.rotation, q.mirror) == ((0, 90), 90.0, True)


def test_processing_commands() -> None:
    q = p("FIF=a.tif&CNT=1.5&GAM=0.8&INV=1&CMP=jet&CTW=[1,0,0;0,1,0;0,0,1]&MINMAX=-:10,200&MINMAX=1:0,100"
          "&COL=gray&JTL=0,0")
    pr = q.processing
    assert (pr.contrast, pr.gamma, pr.invert, pr.colormap) == (1.5, 0.8, True, "jet")
    assert pr.twist == ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))
    assert pr.minmax == ((-1, 10.0, 200.0), (1, 0.0, 100.0))
    assert q.quality is Quality.GRAY


@pytest.mark.parametrize(
    ("query", "field", "value"),
    [
        pytest.param("CNT=eq", "equalize", True, id="cnt-eq"),
        pytest.param("CNT=equalization", "equalize", True, id="cnt-equalization"),
        pytest.param("CNT=st", "stretch", True, id="cnt-st"),
        pytest.param("GAM=log", "log", True, id="gam-log"),
        pytest.param("INV", "invert", True, id="inv-bare"),
    ],
)
def test_keyword_processing(query: str, field: str, value: object) -> None:
    assert getattr(p(f"FIF=a.tif&{query}&JTL=0,0").processing, field) == value


def test_tiff_codec_quality() -> None:
    q = p("FIF=a.tif&QLT=zstd:9&CVT=tiff")
    assert (q.tiff_codec, q.encoder_quality) == ("zstd", 9)


def test_commands_after_output_are_ignored() -> None:
    assert p("FIF=a.tif&CVT=jpeg&WID=10&FOO=1").width is None


def test_col_binary_and_obj_accumulates() -> None:
    assert p("FIF=a.tif&COL=binary&JTL=0,0").quality is Quality.BITONAL
    assert p("FIF=a.tif&OBJ=IIP,1.0&OBJ=Max-size").objs == ("iip,1.0", "max-size")


def test_empty_values_are_dropped_like_iipsrv() -> None:
    assert p("FIF=a.tif&WID=&JTL=0,0").width is None


@pytest.mark.parametrize(
    ("query", "code"),
    [
        pytest.param("FIF=a.tif&JTL=abc", "2 1", id="jtl-letters"),
        pytest.param("FIF=a.tif&JTL=1", "2 1", id="jtl-one-value"),
        pytest.param("FIF=a.tif&JTL=1,2,3", "2 1", id="jtl-three-values"),
        pytest.param("FIF=a.tif&JTL=-1,0", "2 1", id="jtl-negative"),
        pytest.param("FIF=a.tif&TIL=1,a-b", "2 1", id="til-letters"),
        pytest.param("FIF=a.tif&CVT=bmp", "2 1", id="cvt-unknown"),
        pytest.param("FIF=a.tif&WID=0&CVT=jpeg", "2 1", id="wid-zero"),
        pytest.param("FIF=a.tif&WID=-5&CVT=jpeg", "2 1", id="wid-negative"),
        pytest.param("FIF=a.tif&WID=1e3&CVT=jpeg", "2 1", id="wid-float"),
        pytest.param("FIF=a.tif&HEI=x&CVT=jpeg", "2 1", id="hei-letters"),
        pytest.param("FIF=a.tif&RGN=0,0,1&CVT=jpeg", "2 1", id="rgn-three"),
        pytest.param("FIF=a.tif&RGN=0,0,0,1&CVT=jpeg", "2 1", id="rgn-zero-width"),
        pytest.param("FIF=a.tif&RGN=0,0,nan,1&CVT=jpeg", "2 1", id="rgn-nan"),
        pytest.param("FIF=a.tif&RGN=0,0,inf,1&CVT=jpeg", "2 1", id="rgn-inf"),
        pytest.param("FIF=a.tif&QLT=101&CVT=jpeg", "2 1", id="qlt-too-high"),
        pytest.param("FIF=a.tif&QLT=foo:5&CVT=tiff", "2 1", id="qlt-bad-codec"),
        pytest.param("FIF=a.tif&SDS=a&JTL=0,0", "2 1", id="sds-letters"),
        pytest.param("FIF=a.tif&CNT=lots&JTL=0,0", "2 1", id="cnt-word"),
        pytest.param("FIF=a.tif&GAM=0&JTL=0,0", "2 1", id="gam-zero"),
        pytest.param("FIF=a.tif&CMP=rainbow&JTL=0,0", "2 1", id="cmp-unknown"),
        pytest.param("FIF=a.tif&CTW=[1,0;0,1,0]&JTL=0,0", "2 1", id="ctw-ragged"),
        pytest.param("FIF=a.tif&CTW=[a,b]&JTL=0,0", "2 1", id="ctw-letters"),
        pytest.param("FIF=a.tif&COL=purple&JTL=0,0", "2 1", id="col-unknown"),
        pytest.param("FIF=a.tif&ROT=400&CVT=jpeg", "2 1", id="rot-range"),
        pytest.param("FIF=a.tif&ROT=x&CVT=jpeg", "2 1", id="rot-letters"),
        pytest.param("FIF=a.tif&MINMAX=0:5&JTL=0,0", "2 1", id="minmax-one-value"),
        pytest.param("FIF=a.tif&MINMAX=0:9,1&JTL=0,0", "2 1", id="minmax-reversed"),
        pytest.param("FIF=a.tif&FOO=1", "2 2", id="unknown-command"),
        pytest.param("FIF=a.tif&SHD=10,20&JTL=0,0", "2 2", id="shd-not-supported"),
        pytest.param("FIF=a.tif", "2 1", id="no-output"),
        pytest.param("FIF=a.tif&OBJ=IIP,1.0&JTL=0,0", "2 1", id="obj-and-image"),
        pytest.param("JTL=1,0", "1 3", id="jtl-without-fif"),
        pytest.param("WID=100&CVT=jpeg", "1 3", id="cvt-without-fif"),
    ],
)
def test_malformed(query: str, code: str) -> None:
    with pytest.raises(IIPError) as exc:
        p(query)
    assert exc.value.code == code


def test_error_body_syntax() -> None:
    assert IIPError("2 2", "FOO").body == "Error/7:2 2 FOO\r\n"
    assert IIPError("1 3", "").body == "Error/4:1 3 \r\n"
    assert IIPError("2 1", "FIF=big.tif").body == "Error/15:2 1 FIF=big.tif\r\n"
