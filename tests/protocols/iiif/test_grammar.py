"""IIIF grammar: every accepted form, every malformed form (400), and canonical round trips."""

from __future__ import annotations

import pytest

from tileserver.errors import BadRequest, ImageTooLarge, NotImplementedFeature, UnsupportedFormat
from tileserver.models import Box, OutputFormat, Quality
from tileserver.protocols.iiif.grammar import (
    ImageParams,
    Limits,
    Region,
    Rotation,
    Size,
    Version,
    canonical_size,
    number,
    parse_format,
    parse_quality,
)

W, H = 1003, 701
LIMITS = Limits(max_size=5000, max_area=None, upscaling=True)
ALL = tuple(OutputFormat)


# -- region ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "box"),
    [
        pytest.param("full", Box(0, 0, W, H), id="full"),
        pytest.param("square", Box(151, 0, 701, 701), id="square-centred"),
        pytest.param("0,0,256,256", Box(0, 0, 256, 256), id="px"),
        pytest.param("768,512,512,512", Box(768, 512, 235, 189), id="px-cropped-at-edge"),
        pytest.param("1002,700,5,5", Box(1002, 700, 1, 1), id="px-last-pixel"),
        pytest.param("pct:0,0,100,100", Box(0, 0, W, H), id="pct-all"),
        pytest.param("pct:10,10,20,20", Box(100, 70, 201, 140), id="pct"),
        pytest.param("pct:50.5,0.5,10.25,.5", Box(507, 4, 102, 3), id="pct-decimals"),
        pytest.param("pct:90,90,50,50", Box(903, 631, 100, 70), id="pct-cropped"),
        pytest.param("pct:0,0,0.0001,0.0001", Box(0, 0, 1, 1), id="pct-tiny-is-one-pixel"),
    ],
)
def test_region_box(text: str, box: Box) -> None:
    assert Region.parse(text).box(W, H) == box


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("", id="empty"),
        pytest.param("FULL", id="upper-case"),
        pytest.param("0,0,256", id="three-numbers"),
        pytest.param("0,0,256,256,1", id="five-numbers"),
        pytest.param("-1,0,256,256", id="negative"),
        pytest.param("0.5,0,256,256", id="px-decimal"),
        pytest.param("0,0,0,256", id="zero-width"),
        pytest.param("0,0,256,0", id="zero-height"),
        pytest.param("pct:0,0,0,10", id="pct-zero-width"),
        pytest.param("pct:1e2,0,10,10", id="pct-exponent"),
        pytest.param("pct:+1,0,10,10", id="pct-sign"),
        pytest.param("pct:nan,0,10,10", id="pct-nan"),
        pytest.param("pct:0,0,10", id="pct-three"),
        pytest.param("pct0,0,10,10", id="pct-no-colon"),
        pytest.param("0, 0,256,256", id="space"),
        pytest.param("99999999999,0,1,1", id="too-many-digits"),
    ],
)
def test_region_malformed(text: str) -> None:
    with pytest.raises(BadRequest):
        Region.parse(text)


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("1003,0,10,10", id="x-past-width"),
        pytest.param("0,701,10,10", id="y-past-height"),
        pytest.param("pct:100,0,10,10", id="pct-x-100"),
    ],
)
def test_region_outside_is_400(text: str) -> None:
    with pytest.raises(BadRequest):
        Region.parse(text).box(W, H)


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        pytest.param("full", "full", id="full"),
        pytest.param("0,0,1003,701", "full", id="px-whole-is-full"),
        pytest.param("0,0,2000,2000", "full", id="px-past-edges-is-full"),
        pytest.param("pct:0,0,100,100", "full", id="pct-whole-is-full"),
        pytest.param("square", "151,0,701,701", id="square"),
        pytest.param("768,512,512,512", "768,512,235,189", id="cropped"),
        pytest.param("pct:10,10,20,20", "100,70,201,140", id="pct"),
    ],
)
def test_region_canonical(text: str, canonical: str) -> None:
    region = Region.parse(text)
    assert region.canonical(W, H) == canonical
    assert Region.parse(canonical).box(W, H) == region.box(W, H)


def test_square_of_square_image_is_full() -> None:
    assert Region.parse("square").canonical(500, 500) == "full"


# -- size -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "version", "size"),
    [
        pytest.param("max", 3, (W, H), id="max"),
        pytest.param("max", 2, (W, H), id="max-v2"),
        pytest.param("full", 2, (W, H), id="full-v2"),
        pytest.param("^max", 3, (W, H), id="up-max-is-max"),
        pytest.param("500,", 3, (500, 349), id="w"),
        pytest.param(",350", 3, (501, 350), id="h"),
        pytest.param("pct:50", 3, (502, 351), id="pct"),
        pytest.param("pct:12.5", 2, (125, 88), id="pct-decimal"),
        pytest.param("300,300", 3, (300, 300), id="wh-distorted"),
        pytest.param("!300,300", 3, (300, 210), id="confined"),
        pytest.param("!1003,10", 3, (14, 10), id="confined-by-height"),
        pytest.param("^2006,", 3, (2006, 1402), id="up-w"),
        pytest.param("^,1402", 3, (2006, 1402), id="up-h"),
        pytest.param("^pct:200", 3, (2006, 1402), id="up-pct"),
        pytest.param("^2000,100", 3, (2000, 100), id="up-wh"),
        pytest.param("^!2006,2000", 3, (2006, 1402), id="up-confined"),
        pytest.param("^!300,300", 3, (300, 210), id="caret-without-upscaling"),
        pytest.param("2006,", 2, (2006, 1402), id="v2-above-full"),
        pytest.param("pct:200", 2, (2006, 1402), id="v2-pct-above-full"),
    ],
)
def test_size_resolve(text: str, version: Version, size: tuple[int, int]) -> None:
    assert Size.parse(text, version).resolve((W, H), LIMITS, version) == size


@pytest.mark.parametrize(
    ("text", "version"),
    [
        pytest.param("", 3, id="empty"),
        pytest.param("full", 3, id="full-is-2.1-only"),
        pytest.param("^full", 3, id="up-full"),
        pytest.param("^max", 2, id="caret-in-2.1"),
        pytest.param("^500,", 2, id="caret-w-in-2.1"),
        pytest.param(",", 3, id="comma-only"),
        pytest.param("500", 3, id="no-comma"),
        pytest.param("-500,", 3, id="negative"),
        pytest.param("500.5,", 3, id="decimal-w"),
        pytest.param("!500,", 3, id="confined-w-only"),
        pytest.param("!,500", 3, id="confined-h-only"),
        pytest.param("pct:", 3, id="pct-empty"),
        pytest.param("pct:-5", 3, id="pct-negative"),
        pytest.param("pct:1e2", 3, id="pct-exponent"),
        pytest.param("pct:50,50", 3, id="pct-two"),
        pytest.param("^^max", 3, id="double-caret"),
        pytest.param("!^500,500", 3, id="caret-after-bang"),
        pytest.param("MAX", 3, id="upper-case"),
        pytest.param("9999999999,", 3, id="too-many-digits"),
    ],
)
def test_size_malformed(text: str, version: Version) -> None:
    with pytest.raises(BadRequest):
        Size.parse(text, version)


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("0,", id="zero-w"),
        pytest.param(",0", id="zero-h"),
        pytest.param("0,0", id="zero-wh"),
        pytest.param("pct:0", id="pct-zero"),
        pytest.param("pct:0.01", id="pct-under-a-pixel"),
        pytest.param("1004,", id="w-above-region-without-caret"),
        pytest.param(",702", id="h-above-region-without-caret"),
        pytest.param("pct:101", id="pct-above-100-without-caret"),
        pytest.param("1004,701", id="wh-above-region-without-caret"),
        pytest.param("!2000,3000", id="confined-above-region-without-caret"),
    ],
)
def test_size_values_that_are_400(text: str) -> None:
    with pytest.raises(BadRequest):
        Size.parse(text, 3).resolve((W, H), LIMITS, 3)


@pytest.mark.parametrize(("text", "version"), [pytest.param("^2000,", 3, id="v3-caret"),
                                               pytest.param("2000,", 2, id="v2-above-full")])
def test_upscaling_disabled_is_501(text: str, version: Version) -> None:
    limits = Limits(5000, None, upscaling=False)
    with pytest.raises(NotImplementedFeature):
        Size.parse(text, version).resolve((W, H), limits, version)


@pytest.mark.parametrize(
    ("text", "version"),
    [
        pytest.param("^6000,", 3, id="w-past-max-size"),
        pytest.param("6000,", 2, id="v2-w-past-max-size"),
        pytest.param("^1000,1000", 3, id="past-max-area"),
        pytest.param("full", 2, id="v2-full-past-limits"),
    ],
)
def test_explicit_size_past_limits_is_403(text: str, version: Version) -> None:
    limits = Limits(max_size=5000, max_area=500_000)
    region = (6000, 600) if "full" in text else (W, H)
    with pytest.raises(ImageTooLarge):
        Size.parse(text, version).resolve(region, limits, version)


@pytest.mark.parametrize(
    ("region", "limits", "size"),
    [
        pytest.param((8000, 6000), Limits(5000), (5000, 3750), id="max-size"),
        pytest.param((6000, 8000), Limits(5000), (3750, 5000), id="max-size-portrait"),
        pytest.param((6001, 4001), Limits(5000), (5000, 3334), id="max-size-rounds"),
        pytest.param((1000, 1000), Limits(None, 250_000), (500, 500), id="max-area"),
        pytest.param((1003, 701), Limits(None, 100_000), (378, 264), id="max-area-truncates"),
        pytest.param((1003, 701), Limits(None, None), (1003, 701), id="no-limits"),
    ],
)
def test_max_is_capped_by_limits(region: tuple[int, int], limits: Limits, size: tuple[int, int]) -> None:
    out = Size.parse("max", 3).resolve(region, limits, 3)
    assert out == size
    assert limits.within(*out)


@pytest.mark.parametrize(
    ("text", "version", "canonical"),
    [
        pytest.param("max", 3, "max", id="v3-max"),
        pytest.param("1003,", 3, "max", id="v3-w-full-is-max"),
        pytest.param("pct:100", 3, "max", id="v3-pct-100-is-max"),
        pytest.param("500,", 3, "500,349", id="v3-w"),
        pytest.param("!300,300", 3, "300,210", id="v3-confined"),
        pytest.param("300,300", 3, "300,300", id="v3-distorted"),
        pytest.param("^2006,", 3, "^2006,1402", id="v3-upscaled"),
        pytest.param("full", 2, "full", id="v2-full"),
        pytest.param("max", 2, "full", id="v2-max-is-full"),
        pytest.param("500,", 2, "500,", id="v2-w"),
        pytest.param(",350", 2, "501,", id="v2-h-is-w"),
        pytest.param("!300,300", 2, "300,", id="v2-confined"),
        pytest.param("300,300", 2, "300,300", id="v2-distorted"),
        pytest.param("2006,", 2, "2006,", id="v2-upscaled"),
    ],
)
def test_size_canonical_round_trip(text: str, version: Version, canonical: str) -> None:
    size = Size.parse(text, version)
    assert size.canonical((W, H), LIMITS, version) == canonical
    again = Size.parse(canonical, version)
    assert again.resolve((W, H), LIMITS, version) == size.resolve((W, H), LIMITS, version)


def test_v2_capped_max_is_w_comma() -> None:
    assert canonical_size((5000, 3750), (8000, 6000), Limits(5000), 2) == "5000,"


# -- rotation, quality, format --------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "rotation", "canonical"),
    [
        pytest.param("0", Rotation(0, False), "0", id="zero"),
        pytest.param("90", Rotation(90, False), "90", id="ninety"),
        pytest.param("!0", Rotation(0, True), "!0", id="mirror"),
        pytest.param("!180", Rotation(180, True), "!180", id="mirror-180"),
        pytest.param("22.50", Rotation(22.5, False), "22.5", id="trailing-zero"),
        pytest.param("90.0", Rotation(90, False), "90", id="integral-float"),
        pytest.param(".5", Rotation(0.5, False), "0.5", id="leading-dot"),
        pytest.param("360", Rotation(360, False), "0", id="full-turn-is-0"),
        pytest.param("0.00001", Rotation(0.00001, False), "0.00001", id="tiny-no-exponent"),
    ],
)
def test_rotation(text: str, rotation: Rotation, canonical: str) -> None:
    parsed = Rotation.parse(text)
    assert parsed == rotation
    assert parsed.canonical() == canonical
    assert Rotation.parse(canonical).angle == parsed.angle


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("", id="empty"),
        pytest.param("-90", id="negative"),
        pytest.param("+90", id="plus"),
        pytest.param("360.5", id="over-360"),
        pytest.param("1e2", id="exponent"),
        pytest.param("!!90", id="double-bang"),
        pytest.param("90!", id="bang-after"),
        pytest.param("ninety", id="word"),
        pytest.param("nan", id="nan"),
        pytest.param("inf", id="inf"),
    ],
)
def test_rotation_malformed(text: str) -> None:
    with pytest.raises(BadRequest):
        Rotation.parse(text)


@pytest.mark.parametrize("text", ["default", "color", "gray", "bitonal"])
def test_quality(text: str) -> None:
    assert parse_quality(text).value == text


@pytest.mark.parametrize("text", ["", "grey", "native", "Default", "colour", "bitonal "])
def test_quality_malformed(text: str) -> None:
    with pytest.raises(BadRequest):
        parse_quality(text)


@pytest.mark.parametrize("fmt", list(OutputFormat), ids=lambda f: f.suffix)
def test_format(fmt: OutputFormat) -> None:
    assert parse_format(fmt.suffix, ALL) is fmt


@pytest.mark.parametrize(
    ("text", "available", "error"),
    [
        pytest.param("jp2", (OutputFormat.JPEG,), UnsupportedFormat, id="jp2-without-openjpeg"),
        pytest.param("pdf", ALL, UnsupportedFormat, id="pdf-not-written"),
        pytest.param("avif", (OutputFormat.JPEG,), UnsupportedFormat, id="avif-without-libheif"),
        pytest.param("jpeg", ALL, BadRequest, id="jpeg-is-not-iiif"),
        pytest.param("tiff", ALL, BadRequest, id="tiff-is-not-iiif"),
        pytest.param("JPG", ALL, BadRequest, id="upper-case"),
        pytest.param("", ALL, BadRequest, id="empty"),
        pytest.param("x;y", ALL, BadRequest, id="garbage"),
    ],
)
def test_format_errors_are_400(text: str, available: tuple[OutputFormat, ...], error: type[Exception]) -> None:
    with pytest.raises(error):
        parse_format(text, available)


def test_unsupported_format_is_a_bad_request() -> None:
    assert issubclass(UnsupportedFormat, BadRequest)


# -- whole requests -------------------------------------------------------------------------------
def test_image_params() -> None:
    p = ImageParams.parse("full", "max", "!90", "gray.png", 3, ALL)
    assert p == ImageParams(Region("full"), Size("max"), Rotation(90, True), Quality.GRAY, OutputFormat.PNG)


@pytest.mark.parametrize("filename", ["default", "default.", ".jpg", "default.jpg.x", "gray"])
def test_image_params_filename_malformed(filename: str) -> None:
    with pytest.raises(BadRequest):
        ImageParams.parse("full", "max", "0", filename, 3, ALL)


@pytest.mark.parametrize(("x", "text"), [(0.0, "0"), (90.0, "90"), (22.5, "22.5"), (1e-05, "0.00001"),
                                         (0.1, "0.1"), (359.999, "359.999")])
def test_number(x: float, text: str) -> None:
    assert number(x) == text
