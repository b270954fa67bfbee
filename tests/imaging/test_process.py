"""Processing values past the single-precision range (found by tests/test_fuzz.py): iipsrv 1.3 computes
contrast and MINMAX scale factors in C floats, which become infinite there; they must give an image
(saturated), not numpy's overflow warning (a 500 wherever warnings are errors)."""

from __future__ import annotations

import math

import httpx
import pytest

from tileserver.imaging.process import single

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
