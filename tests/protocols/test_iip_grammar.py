"""IIP grammar: every command form, every malformed form (pure; no server)."""

from __future__ import annotations

from urllib.parse import parse_qsl

import pytest

from tileserver.errors import BadRequest
from tileserver.models import OutputFormat, Quality
from tileserver.protocols.iip.grammar import (
    KERNELS,
    CvtOut,
    EntryOut,
    IIPError,
    IIPQuery,
    ProfileOut,
    SpectraOut,
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
        pytest.param("FIF=a.tif&ZZZ=10,20&JTL=0,0", "2 2", id="unknown-before-output"),
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


# -- iipsrv 1.3's CNV, SHD, LYR, ICC, JTLS, PFL, SPECTRA --------------------------------------------
SOBEL = (-1.0, 0.0, 1.0, -2.0, 0.0, 2.0, -1.0, 0.0, 1.0)


@pytest.mark.parametrize(
    ("arg", "kernel"),
    [
        pytest.param("sobel", SOBEL, id="sobel"),
        pytest.param("SOBEL", SOBEL, id="name-any-case"),
        pytest.param("[sobel]", SOBEL, id="name-in-brackets"),
        pytest.param("prewitt", (1, 0, -1, 1, 0, -1, 1, 0, -1), id="prewitt"),
        pytest.param("scharr", (-3, 0, 3, -10, 0, 10, -3, 0, 3), id="scharr"),
        pytest.param("laplace", (-1, -1, -1, -1, 8, -1, -1, -1, -1), id="laplace"),
        pytest.param("gaussian", (1, 2, 1, 2, 4, 2, 1, 2, 1), id="gaussian"),
        pytest.param("sharpen", (0, -1, 0, -1, 5, -1, 0, -1, 0), id="sharpen"),
        pytest.param("emboss", (-2, -1, 0, -1, 1, 1, 0, 1, 2), id="emboss"),
        pytest.param("[0,-1,0,-1,5,-1,0,-1,0]", (0, -1, 0, -1, 5, -1, 0, -1, 0), id="custom-3x3"),
        pytest.param("0,-1,0,-1,5,-1,0,-1,0", (0, -1, 0, -1, 5, -1, 0, -1, 0), id="custom-no-brackets"),
        pytest.param("[ 0.5, 1e-1 ,0,0,1,0,0,0,-.25]", (0.5, 0.1, 0, 0, 1, 0, 0, 0, -0.25), id="custom-floats"),
        pytest.param("[" + ",".join(["1"] * 25) + "]", (1.0,) * 25, id="custom-5x5"),
        pytest.param("[2]", (2.0,), id="custom-1x1"),
    ],
)
def test_cnv_kernels(arg: str, kernel: tuple[float, ...]) -> None:
    q = p(f"FIF=a.tif&CNV={arg}&JTL=0,0")
    assert q.processing.convolution == kernel
    assert not q.processing.is_identity  # so stored tiles are not passed through


def test_cnv_percent_encoded() -> None:
    assert p("FIF=a.tif&CNV=%5B1,2,1,2,4,2,1,2,1%5D&JTL=0,0").processing.convolution == KERNELS["gaussian"]


@pytest.mark.parametrize(
    ("arg", "angles"),
    [pytest.param("45,30", (45, 30), id="plain"), pytest.param("0,0", (0, 0), id="zero"),
     pytest.param("360,-90", (360, -90), id="extremes"), pytest.param("270, +10", (270, 10), id="spaces-sign")],
)
def test_shd_angles(arg: str, angles: tuple[int, int]) -> None:
    assert p(f"FIF=a.tif&SHD={arg}&JTL=0,0").processing.shade == angles


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        pytest.param("FIF=a.tif&PFL=2:10,10-13,10", ProfileOut(2, 10, 10, 3, 1), id="pfl-row"),
        pytest.param("FIF=a.tif&PFL=0:5,1-5,9", ProfileOut(0, 5, 1, 1, 8), id="pfl-column"),
        pytest.param("FIF=a.tif&PFL=1:7,8", ProfileOut(1, 7, 8, 1, 1), id="pfl-point"),
        pytest.param("FIF=a.tif&PFL=1:7,8-7,8", ProfileOut(1, 7, 8, 1, 1), id="pfl-point-as-line"),
        pytest.param("FIF=a.tif&SPECTRA=2,3,10,20", SpectraOut(2, 3, 10, 20), id="spectra"),
        pytest.param("FIF=a.tif&JTLS=0,2,5,90", TileOut(2, 5, OutputFormat.JPEG), id="jtls"),
    ],
)
def test_sample_and_legacy_outputs(query: str, expected: object) -> None:
    assert p(query).output == expected


def test_jtls_sets_the_view() -> None:
    q = p("FIF=a.tif&JTLS=1,2,5,0")
    assert (q.view, q.output) == ((1, 0), TileOut(2, 5, OutputFormat.JPEG))


def test_lyr_and_icc() -> None:
    assert p("FIF=a.tif&LYR=3&JTL=0,0").layers == 3
    assert p("FIF=a.tif&LYR=256&JTL=0,0").layers == 256
    assert p("FIF=a.tif&JTL=0,0").layers is None
    with_icc, without = p("FIF=a.tif&ICC=anything&JTL=0,0"), p("FIF=a.tif&JTL=0,0")
    assert (with_icc.output, with_icc.processing, with_icc.layers) == (without.output, without.processing, None)


@pytest.mark.parametrize(
    "query",
    [
        pytest.param("FIF=a.tif&CNV=blur&JTL=0,0", id="cnv-unknown-name"),  # 1.3: the 1x1 kernel [0], black
        pytest.param("FIF=a.tif&CNV=[1,2,3,4]&JTL=0,0", id="cnv-even-side"),  # 1.3: ignored
        pytest.param("FIF=a.tif&CNV=[1,2,3]&JTL=0,0", id="cnv-not-square"),  # 1.3: ignored
        pytest.param("FIF=a.tif&CNV=[" + ",".join(["1"] * 49) + "]&JTL=0,0", id="cnv-7x7"),  # 1.3: ignored
        pytest.param("FIF=a.tif&CNV=[1,2,x,4,5,6,7,8,9]&JTL=0,0", id="cnv-letter"),  # 1.3: x read as 0
        pytest.param("FIF=a.tif&CNV=[1,2,nan,4,5,6,7,8,9]&JTL=0,0", id="cnv-nan"),
        pytest.param("FIF=a.tif&CNV=[1,2,,4,5,6,7,8,9]&JTL=0,0", id="cnv-empty-value"),
        pytest.param("FIF=a.tif&CNV=[1,2,3&JTL=0,0", id="cnv-unclosed"),
        pytest.param("FIF=a.tif&SHD=45&JTL=0,0", id="shd-one-angle"),
        pytest.param("FIF=a.tif&SHD=45,30,10&JTL=0,0", id="shd-three-angles"),
        pytest.param("FIF=a.tif&SHD=361,0&JTL=0,0", id="shd-h-range"),
        pytest.param("FIF=a.tif&SHD=0,91&JTL=0,0", id="shd-v-range"),
        pytest.param("FIF=a.tif&SHD=4.5,3&JTL=0,0", id="shd-float"),  # 1.3: atoi, 4
        pytest.param("FIF=a.tif&SHD=a,b&JTL=0,0", id="shd-letters"),
        pytest.param("FIF=a.tif&LYR=0&JTL=0,0", id="lyr-zero"),  # 1.3: logged, used
        pytest.param("FIF=a.tif&LYR=257&JTL=0,0", id="lyr-too-many"),
        pytest.param("FIF=a.tif&LYR=two&JTL=0,0", id="lyr-letters"),
        pytest.param("FIF=a.tif&JTLS=1,0", id="jtls-two-values"),  # 1.3: no output, 2 1 as well
        pytest.param("FIF=a.tif&JTLS=0,1,-1,90", id="jtls-negative"),
        pytest.param("FIF=a.tif&PFL=abc", id="pfl-letters"),  # 1.3: the point 0,0 of resolution 0
        pytest.param("FIF=a.tif&PFL=2:10,10-20,15", id="pfl-diagonal"),  # 1.3: the row from 10,10
        pytest.param("FIF=a.tif&PFL=2:20,10-5,10", id="pfl-backwards"),  # 1.3: the point 20,10
        pytest.param("FIF=a.tif&PFL=2:10,10-", id="pfl-no-end"),
        pytest.param("FIF=a.tif&PFL=10,10-20,10", id="pfl-no-resolution"),
        pytest.param("FIF=a.tif&SPECTRA=2,0,10", id="spectra-three-values"),
        pytest.param("FIF=a.tif&SPECTRA=2,0,-1,5", id="spectra-negative"),
    ],
)
def test_new_commands_malformed(query: str) -> None:
    with pytest.raises(IIPError) as exc:
        p(query)
    assert exc.value.code == "2 1"
    assert isinstance(exc.value, BadRequest)


@pytest.mark.parametrize("query", ["PFL=2:1,1", "SPECTRA=2,0,1,1", "JTLS=0,1,0,90"])
def test_sample_outputs_need_fif(query: str) -> None:
    with pytest.raises(IIPError) as exc:
        p(query)
    assert exc.value.code == "1 3"


@pytest.mark.parametrize("query", [
    "FIF=a.tif&JTL=1,2", "FIF=a.tif&&JTL=1,2&", "&", "", "FIF", "FIF=", "INV&FIF=a.tif", "inv=&FIF=a.tif",
    "FIF=a=b&CVT=jpeg", "=x&FIF=a.tif", "FIF=a.tif;JTL=1,2", "FIF=a%20b.tif&JTL=1,2", "FIF=a+b.tif&QLT=%37%35",
    "FIF=%E2%82%AC.tif&JTL=0,0", "FIF=a.tif&JTL=1%2C2&%46IF=b", "FIF=a.tif&RGN=0.1,0.1,0.5,0.5&WID=100&CVT=png",
])
def test_split_query_pairs_are_parse_qsls(query: str) -> None:
    """Queries with nothing to unquote are split without parse_qsl: the same pairs as through it."""
    expected = [(k, v) for k, v in parse_qsl(query, keep_blank_values=True) if v != "" or k.lower() == "inv"]
    assert split_query(query) == expected
