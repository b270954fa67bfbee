from __future__ import annotations

import math

import pytest

from tileserver.errors import TileNotFound
from tileserver.levels import (
    cap_size,
    choose_level,
    fit_inside,
    fit_rotated,
    halvings,
    level_factor,
    region_at_level,
    rotated_size,
    tile_box,
    tile_index,
    virtual_levels,
    within_limits,
)
from tileserver.models import Box, ImageMeta, Level


def meta_with(levels: tuple[Level, ...]) -> ImageMeta:
    return ImageMeta("x", levels[0].width, levels[0].height, levels, 3, 8, "uint", "srgb", False, False,
                     0.0, 0, (0.0,) * 3, (255.0,) * 3)


@pytest.mark.parametrize(
    ("full", "size", "factor"),
    [
        pytest.param((20000, 15000), (1250, 937), 16.0, id="floor-rounded"),
        pytest.param((1003, 701), (502, 351), 2.0, id="ceil-rounded"),
        pytest.param((1003, 701), (501, 350), 2.0, id="floor-odd"),
        pytest.param((1000, 700), (1000, 700), 1.0, id="full"),
        pytest.param((1000, 700), (300, 210), 1000 / 300, id="not-power-of-two"),
    ],
)
def test_level_factor(full: tuple[int, int], size: tuple[int, int], factor: float) -> None:
    assert level_factor(full, size) == pytest.approx(factor)


def test_halvings_round_up_until_one_tile() -> None:
    assert halvings(1003, 701, 256) == [(1003, 701), (502, 351), (251, 176)]
    assert halvings(100, 50, 256) == [(100, 50)]
    assert halvings(1, 1000, 256) == [(1, 1000), (1, 500), (1, 250)]


def test_halvings_round_down_as_iipsrv() -> None:
    assert halvings(1003, 701, 256, floor=True) == [(1003, 701), (501, 350), (250, 175)]
    assert halvings(640, 481, 256, floor=True) == [(640, 481), (320, 240), (160, 120)]
    assert halvings(1, 1000, 256, floor=True) == [(1, 1000), (1, 500), (1, 250)]


def test_virtual_levels_mark_only_full_as_stored() -> None:
    lv = virtual_levels(513, 300, 256)
    assert [(v.width, v.height, v.stored) for v in lv] == [(513, 300, True), (257, 150, False), (129, 75, False)]
    assert [v.factor for v in lv] == [1.0, 2.0, 4.0]


def test_tile_box_clips_edge_tiles() -> None:
    lv = Level(1003, 701, 256, 256)
    assert tile_box(lv, 0, 0) == (0, 0, 256, 256)
    assert tile_box(lv, 3, 2) == (768, 512, 235, 189)


@pytest.mark.parametrize(("col", "row"), [(4, 0), (0, 3), (-1, 0)])
def test_tile_box_outside_grid_is_not_found(col: int, row: int) -> None:
    with pytest.raises(TileNotFound):
        tile_box(Level(1003, 701, 256, 256), col, row)


def test_tile_index_row_major() -> None:
    lv = Level(1003, 701, 256, 256)  # 4 x 3 tiles
    assert tile_index(lv, 0) == (0, 0)
    assert tile_index(lv, 5) == (1, 1)
    assert tile_index(lv, 11) == (3, 2)
    with pytest.raises(TileNotFound):
        tile_index(lv, 12)


def test_choose_level_picks_smallest_sufficient() -> None:
    m = meta_with((Level(1000, 700, 256, 256, 1.0), Level(500, 350, 256, 256, 2.0), Level(250, 175, 256, 256, 4.0)))
    full = Box(0, 0, 1000, 700)
    assert choose_level(m, full, (1000, 700)) == 0
    assert choose_level(m, full, (400, 280)) == 1
    assert choose_level(m, full, (250, 175)) == 2
    assert choose_level(m, full, (100, 70)) == 2
    assert choose_level(m, Box(0, 0, 512, 512), (256, 256)) == 1


def test_region_at_level_maps_and_clips() -> None:
    lv = Level(500, 350, 256, 256, 2.0)
    assert region_at_level(lv, Box(512, 0, 512, 512)) == (256, 0, 244, 256)
    assert region_at_level(lv, Box(1, 1, 3, 3)) == (0, 0, 2, 2)


@pytest.mark.parametrize(
    ("wh", "box", "out"),
    [
        pytest.param((20000, 15000), (400, None), (400, 300), id="width"),
        pytest.param((20000, 15000), (None, 300), (400, 300), id="height"),
        pytest.param((20000, 15000), (400, 400), (400, 300), id="box-wide"),
        pytest.param((1000, 2000), (400, 400), (200, 400), id="box-tall"),
        pytest.param((1000, 700), (None, None), (1000, 700), id="none"),
        pytest.param((10000, 3), (100, None), (100, 1), id="at-least-one"),
    ],
)
def test_fit_inside(wh: tuple[int, int], box: tuple[int | None, int | None], out: tuple[int, int]) -> None:
    assert fit_inside(*wh, *box) == out


def test_cap_size() -> None:
    assert cap_size((6000, 4500), 5000, None) == (5000, 3750)
    assert cap_size((100, 100), 5000, 2500) == (50, 50)
    assert cap_size((100, 100), None, None) == (100, 100)


ROTATIONS = [(5000, 3000, 45.0), (5000, 5000, 45.0), (100, 37, 33.0), (1003, 701, 359.5), (77, 51, 10.0),
             (4999, 1, 1.0), (3, 5, 200.7), (1000, 700, 135.0), (4000, 3000, 30.0), (1003, 701, 90.0),
             (1003, 701, 270.0), (1003, 701, 180.0), (1, 1, 45.0)]


@pytest.mark.parametrize(("w", "h", "angle"), ROTATIONS)
def test_rotated_size_bounds_libvips_canvas(w: int, h: int, angle: float) -> None:
    """Never smaller than the canvas libvips' `rotate` makes, at most one pixel larger."""
    import pyvips

    out = pyvips.Image.black(w, h).rotate(angle) if angle % 90 else pyvips.Image.black(w, h).rot(
        {90.0: "d90", 180.0: "d180", 270.0: "d270"}[angle])
    got = rotated_size((w, h), angle)
    assert out.width <= got[0] <= out.width + 1 and out.height <= got[1] <= out.height + 1


@pytest.mark.parametrize(("w", "h", "angle"), ROTATIONS)
@pytest.mark.parametrize(("max_size", "max_area"), [(5000, None), (400, None), (None, 250_000), (1000, 300_000)])
def test_fit_rotated_is_the_largest_within(w: int, h: int, angle: float, max_size: int | None,
                                           max_area: int | None) -> None:
    fitted = fit_rotated((w, h), angle, max_size, max_area)
    canvas = rotated_size(fitted, angle)
    assert fitted[0] <= w and fitted[1] <= h
    if fitted == (w, h):
        assert within_limits(canvas, max_size, max_area) or max(fitted) == 1
        return
    assert within_limits(canvas, max_size, max_area)
    assert abs(fitted[0] * h - fitted[1] * w) <= w + h  # the aspect ratio, to a pixel on each side
    bigger = (math.ceil(fitted[0] * 1.01) + 1, math.ceil(fitted[1] * 1.01) + 1)
    assert not within_limits(rotated_size(bigger, angle), max_size, max_area)


def test_the_issue_45_degree_export_fits() -> None:
    """A 45-degree turn of a 5000-px export made a ~7071-px canvas; fitted, the canvas is 5000."""
    assert rotated_size((5000, 5000), 45) == (7072, 7072)
    fitted = fit_rotated((5000, 5000), 45, 5000, None)
    assert fitted == (3535, 3535) and rotated_size(fitted, 45) == (5000, 5000)
