"""DeepZoom and Zoomify geometry in `levels.py`, without a server. Expected values are the ones
verified against libvips `dzsave` and OpenSeadragon in /work/shared/reference/protocols.md §3-4."""

from __future__ import annotations

import pytest

from tileserver.errors import TileNotFound
from tileserver.levels import (
    dz_max_level,
    dz_shift,
    grid,
    level_factor,
    scaled_size,
    scaled_tile,
    zoomify_num_tiles,
    zoomify_shift,
    zoomify_tiers,
    zoomify_tile_group,
)
from tileserver.models import Box


@pytest.mark.parametrize(("size", "top"), [
    pytest.param((1, 1), 0, id="1x1"),
    pytest.param((2, 1), 1, id="2x1"),
    pytest.param((1000, 700), 10, id="1000x700"),
    pytest.param((1024, 1024), 10, id="power-of-two"),
    pytest.param((1025, 3), 11, id="just-past-power-of-two"),
    pytest.param((1, 1000), 10, id="1x1000"),
    pytest.param((3000, 2000), 12, id="3000x2000"),
    pytest.param((4097, 3001), 13, id="4097x3001"),
])
def test_dz_max_level(size: tuple[int, int], top: int) -> None:
    assert dz_max_level(*size) == top


@pytest.mark.parametrize(("level", "size"), [
    pytest.param(0, (1, 1), id="level0-1px"),
    pytest.param(1, (2, 1), id="level1"),
    pytest.param(8, (188, 125), id="level8"),
    pytest.param(12, (3000, 2000), id="full"),
])
def test_dz_level_sizes_3000x2000(level: int, size: tuple[int, int]) -> None:
    assert scaled_size(3000, 2000, dz_shift(3000, 2000, level)) == size


@pytest.mark.parametrize("level", [-1, 13, 40])
def test_dz_level_outside_is_not_found(level: int) -> None:
    with pytest.raises(TileNotFound):
        dz_shift(3000, 2000, level)


def test_nested_ceil_halving_equals_direct_ceil() -> None:
    w, h = 4097, 3001
    for k in range(14):
        assert scaled_size(w, h, k) == (-(-w // 2**k), -(-h // 2**k))
        if k:
            pw, ph = scaled_size(w, h, k - 1)
            assert scaled_size(w, h, k) == (-(-pw // 2), -(-ph // 2))


@pytest.mark.parametrize(("col", "row", "box", "size"), [
    pytest.param(0, 0, Box(0, 0, 255, 255), (255, 255), id="top-left-one-overlap"),
    pytest.param(1, 0, Box(253, 0, 256, 255), (256, 255), id="interior-two-overlaps"),
    pytest.param(11, 0, Box(2793, 0, 207, 255), (207, 255), id="last-column-leftover"),
    pytest.param(11, 7, Box(2793, 1777, 207, 223), (207, 223), id="bottom-right"),
])
def test_overlap_tiles_full_level(col: int, row: int, box: Box, size: tuple[int, int]) -> None:
    """T=254, O=1 on 3000x2000 full resolution (OSD getTileBounds; libvips dzsave default)."""
    assert scaled_tile(3000, 2000, 0, 254, 1, col, row) == (box, size)


def test_tile_box_is_scaled_and_clipped() -> None:
    # 1000x700, level 2 halvings below full is 250x175: one 256 tile covers the whole image
    assert scaled_tile(1000, 700, 2, 256, 0, 0, 0) == (Box(0, 0, 1000, 700), (250, 175))
    # 4097x3001 one halving down is 2049x1501; the last column is 1 pixel = 1 full pixel
    assert scaled_tile(4097, 3001, 1, 256, 0, 8, 0) == (Box(4096, 0, 1, 512), (1, 256))
    # overlap at a reduced level: the box is the level box times 2**shift
    assert scaled_tile(4097, 3001, 2, 254, 1, 1, 1) == (Box(253 * 4, 253 * 4, 256 * 4, 256 * 4), (256, 256))


@pytest.mark.parametrize(("col", "row"), [(2, 0), (0, 2), (-1, 0), (0, -1), (5, 5)])
def test_tile_outside_grid_is_not_found(col: int, row: int) -> None:
    with pytest.raises(TileNotFound):
        scaled_tile(300, 300, 0, 256, 0, col, row)


def test_grid() -> None:
    assert grid((3000, 2000), 254) == (12, 8)
    assert grid((1, 1), 256) == (1, 1)
    assert grid((257, 150), 256) == (2, 1)


@pytest.mark.parametrize(("size", "tiers"), [
    pytest.param((513, 300), [(129, 75), (257, 150), (513, 300)], id="513x300-round-up"),
    pytest.param((3000, 2000), [(188, 125), (375, 250), (750, 500), (1500, 1000), (3000, 2000)], id="3000x2000"),
    pytest.param((256, 256), [(256, 256)], id="one-tile"),
    pytest.param((1, 1000), [(1, 250), (1, 500), (1, 1000)], id="1x1000"),
])
def test_zoomify_tiers(size: tuple[int, int], tiers: list[tuple[int, int]]) -> None:
    assert zoomify_tiers(*size) == tiers


@pytest.mark.parametrize(("size", "numtiles"), [
    pytest.param((3000, 2000), 129, id="3000x2000"),
    pytest.param((10000, 7000), 1499, id="10000x7000"),
    pytest.param((1000, 700), 1 + 4 + 12, id="1000x700"),
])
def test_zoomify_numtiles(size: tuple[int, int], numtiles: int) -> None:
    assert zoomify_num_tiles(*size) == numtiles


@pytest.mark.parametrize(("tier", "col", "row", "group"), [
    pytest.param(0, 0, 0, 0, id="first"),
    pytest.param(5, 16, 7, 0, id="index-255"),
    pytest.param(5, 17, 7, 1, id="index-256"),
    pytest.param(6, 39, 27, 5, id="last"),
])
def test_zoomify_tile_group_10000x7000(tier: int, col: int, row: int, group: int) -> None:
    assert zoomify_tile_group(10000, 7000, tier, col, row) == group


def test_zoomify_tile_group_outside() -> None:
    with pytest.raises(TileNotFound):
        zoomify_tile_group(10000, 7000, 5, 20, 0)
    with pytest.raises(TileNotFound):
        zoomify_tile_group(10000, 7000, 7, 0, 0)


@pytest.mark.parametrize("tier", [-1, 3])
def test_zoomify_tier_outside(tier: int) -> None:
    with pytest.raises(TileNotFound):
        zoomify_shift(513, 300, tier)


def test_zoomify_tier_is_the_deepzoom_level_with_256_tiles() -> None:
    """Zoomify tier z and the DeepZoom level with the same shift cut identical 256/0 tiles."""
    w, h = 4097, 3001
    for tier in range(len(zoomify_tiers(w, h))):
        shift = zoomify_shift(w, h, tier)
        assert dz_shift(w, h, dz_max_level(w, h) - shift) == shift


@pytest.mark.parametrize(("full", "size", "factor"), [
    pytest.param((1, 1000), (1, 500), 2.0, id="1-pixel-wide"),
    pytest.param((1000, 1), (250, 1), 4.0, id="1-pixel-high"),
    pytest.param((4097, 3001), (2048, 1500), 2.0, id="rounded-down"),
    pytest.param((4097, 3001), (2049, 1501), 2.0, id="rounded-up"),
])
def test_level_factor_uses_the_long_side(full: tuple[int, int], size: tuple[int, int], factor: float) -> None:
    """A 1-pixel side stays 1 at every level, so the factor must come from the long side."""
    assert level_factor(full, size) == factor


def test_settings_refuse_overlap_not_below_tile_size() -> None:
    from pydantic import ValidationError

    from tileserver.settings import Settings

    assert Settings(deepzoom_tile_size=254, deepzoom_overlap=1).deepzoom_overlap == 1
    with pytest.raises(ValidationError):
        Settings(deepzoom_tile_size=16, deepzoom_overlap=16)
