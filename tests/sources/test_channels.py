"""The `;c=` channel spec (sources/channels.py): its grammar, 400s for bad specs, and what a view chooses
(bands, colours, windows) from an image's own channels."""

from __future__ import annotations

import pytest

from tileserver.errors import BadRequest
from tileserver.models import Channel, ImageMeta, Level
from tileserver.sources.base import Selector
from tileserver.sources.channels import (
    DEFAULT_COLOURS,
    ChannelChoice,
    chosen,
    default_colour,
    parse_spec,
    selection_ident,
    view_meta,
)


@pytest.mark.parametrize(("spec", "expected"), [
    pytest.param("2", (ChannelChoice(2),), id="one"),
    pytest.param("1:100-2000:ff0000,3::00ff00",
                 (ChannelChoice(1, (100.0, 2000.0), (255, 0, 0)), ChannelChoice(3, None, (0, 255, 0))), id="example"),
    pytest.param("3,1", (ChannelChoice(3), ChannelChoice(1)), id="order-kept"),
    pytest.param("1:0-4095", (ChannelChoice(1, (0.0, 4095.0)),), id="window-only"),
    pytest.param("1:-50--10", (ChannelChoice(1, (-50.0, -10.0)),), id="negative-window"),
    pytest.param("1:0.5-1e3:FFa0B0", (ChannelChoice(1, (0.5, 1000.0), (255, 160, 176)),), id="floats-and-case"),
    pytest.param("12:.25-.75", (ChannelChoice(12, (0.25, 0.75)),), id="two-digits"),
])
def test_parse_spec(spec: str, expected: tuple[ChannelChoice, ...]) -> None:
    assert parse_spec(spec) == expected


@pytest.mark.parametrize("spec", [
    "", ",", "0", "1,,2", "x", "1:", "1:1", "1:1-", "1:-1", "1:2-1", "1:1-1", "1::", "1::f00", "1::ff00zz",
    "1:1-2:ff0000:", "1,1", "1:1-2;3", "-1", "1.5", "1:nan-2", "1:1e999-2", ",".join(["1"] * 65),
])
def test_bad_specs(spec: str) -> None:
    with pytest.raises(BadRequest):
        parse_spec(spec)


def meta(bands: int, channels: tuple[Channel, ...] = ()) -> ImageMeta:
    return ImageMeta("x.tif", 10, 10, (Level(10, 10, 256, 256),), bands, 16, "uint", "multiband", False, False,
                     0.0, 1, (0.0,) * bands, tuple(1000.0 * (b + 1) for b in range(bands)), channels=channels)


OWN = (Channel("a", (10, 20, 30), (1.0, 2.0)), Channel("b"), Channel("c", None, (5.0, 6.0)), Channel("d", (1, 2, 3)))


@pytest.mark.parametrize(("image", "spec", "bands", "channels"), [
    pytest.param(meta(4, OWN), "2", (1,), (Channel("b"),), id="alone-is-grey"),
    pytest.param(meta(4, OWN), "1", (0,), (Channel("a", None, (1.0, 2.0)),), id="alone-keeps-window-not-colour"),
    pytest.param(meta(4, OWN), "1:0-9:ffffff", (0,), (Channel("a", (255, 255, 255), (0.0, 9.0)),), id="alone-coloured"),
    pytest.param(meta(4, OWN), "4,1", (3, 0), (Channel("d", (1, 2, 3)), Channel("a", (10, 20, 30), (1.0, 2.0))),
                 id="own-colours"),
    pytest.param(meta(4, OWN), "2,3::00ff00", (1, 2), (Channel("b", DEFAULT_COLOURS[1]),
                                                      Channel("c", (0, 255, 0), (5.0, 6.0))), id="default-by-number"),
    pytest.param(meta(3), "3,1:7-8", (2, 0), (Channel("", DEFAULT_COLOURS[2]), Channel("", DEFAULT_COLOURS[0], (7, 8))),
                 id="no-channels-of-its-own"),
])
def test_chosen(image: ImageMeta, spec: str, bands: tuple[int, ...], channels: tuple[Channel, ...]) -> None:
    assert chosen(image, spec) == (bands, channels)


def test_a_channel_the_image_lacks_is_a_400() -> None:
    with pytest.raises(BadRequest):
        chosen(meta(3), "1,4")


def test_view_meta() -> None:
    bands, channels = chosen(meta(4, OWN), "4,2")
    view = view_meta(meta(4, OWN), bands, channels, "x.tif;c=4,2")
    assert (view.ident, view.bands, view.max_values, view.compression, view.colorspace) == (
        "x.tif;c=4,2", 2, (4000.0, 2000.0), "", "multiband")


@pytest.mark.parametrize(("index", "count", "colour"), [(0, 1, (255, 255, 255)), (0, 3, (255, 0, 0)),
                                                        (5, 6, (255, 255, 0)), (7, 9, (255, 0, 0))])
def test_default_colour(index: int, count: int, colour: tuple[int, int, int]) -> None:
    assert default_colour(index, count) == colour


@pytest.mark.parametrize(("selector", "ident"), [
    (Selector(channels="1,2"), "a.tif;c=1,2"), (Selector(page=3, channels="2"), "a.tif;page=3;c=2"),
    (Selector(page=0), "a.tif;page=0"),
])
def test_selection_ident(selector: Selector, ident: str) -> None:
    assert selection_ident("a.tif", selector) == ident
