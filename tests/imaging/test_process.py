"""Greyscale as iipsrv 1.3 computes it, for every colour; processing values past the single-precision
range (found by tests/test_fuzz.py): iipsrv 1.3 computes
contrast and MINMAX scale factors in C floats, which become infinite there; they must give an image
(saturated), not numpy's overflow warning (a 500 wherever warnings are errors)."""

from __future__ import annotations

import math

import httpx
import numpy as np
import pytest
import pyvips

from tileserver.imaging.process import GREY_WEIGHTS, apply_quality, single
from tileserver.models import Quality

from ..conftest import RGB_TIF, decode


@pytest.mark.parametrize("query", [
    pytest.param("CNT=1e300", id="contrast-huge"),
    pytest.param("CNT=-1e300", id="contrast-huge-negative"),
    pytest.param("MINMAX=1:0,1e-300", id="minmax-tiny-range"),
    pytest.param("MINMAX=-:-1e308,1e308&CNT=1e38", id="minmax-huge-range-contrast-past-float"),
])
async def test_values_past_the_float_range_saturate(client: httpx.AsyncClient, query: str) -> None:
    r = await client.get(f"/iip?FIF={RGB_TIF}&WID=120&{query}&CVT=png")
    assert r.status_code == 200, r.text
    img = decode(r.content)
    assert (img.width, img.height, img.bands) == (120, 84, 3)
    saturated = (img == 0) | (img == 255)  # each sample black or white: the factor was infinite
    band = 1 if query.startswith("MINMAX=1") else 0
    assert saturated[band].min() == 255


@pytest.mark.parametrize(("x", "expected"), [(1e300, math.inf), (-1e300, -math.inf), (0.1, 0.10000000149011612),
                                              (3.4e38, 3.3999999521443642e38)])
def test_single_is_a_c_float(x: float, expected: float) -> None:
    assert single(x) == expected


def test_grey_is_1_3_fixed_point_formula_for_every_colour() -> None:
    """Every one of the 2^24 8-bit colours (a 4096 x 4096 image) against iipsrv 1.3's integer formula."""
    v = np.arange(1 << 24, dtype=np.uint32)
    rgb = np.stack([(v >> 16) & 255, (v >> 8) & 255, v & 255], -1).astype(np.uint8)
    img = pyvips.Image.new_from_array(rgb.reshape(4096, 4096, 3), interpretation="srgb")
    got = np.frombuffer(apply_quality(img, Quality.GRAY).write_to_memory(), np.uint8)
    x = rgb.astype(np.uint64)
    expected = (x[:, 0] * GREY_WEIGHTS[0] + x[:, 1] * GREY_WEIGHTS[1] + x[:, 2] * GREY_WEIGHTS[2]) >> 22
    assert np.array_equal(got, expected.astype(np.uint8))


def test_grey_keeps_alpha() -> None:
    rgba = np.array([[[255, 0, 0, 7], [0, 255, 0, 200], [10, 20, 30, 255]]], dtype=np.uint8)
    out = apply_quality(pyvips.Image.new_from_array(rgba, interpretation="srgb"), Quality.GRAY)
    assert out.bands == 2 and out.interpretation == "b-w"
    assert out.numpy().tolist() == [[[76, 7], [149, 200], [18, 255]]]
