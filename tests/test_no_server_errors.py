"""No request a client can make gets a 5xx: every source kind x processing x output combination of IIP,
and a sample of IIIF parameter combinations, answer 200 or a 4xx."""

from __future__ import annotations

import itertools
from urllib.parse import quote

import httpx
import pytest

from .conftest import ALPHA_PNG, GREY16_TIF, PLAIN_JPG, RGB_TIF, STRIPED_TIF, SUBIFD_TIF

IDENTS = [RGB_TIF, GREY16_TIF, STRIPED_TIF, PLAIN_JPG, ALPHA_PNG, SUBIFD_TIF]
MODIFIERS = ["", "COL=grey&", "COL=binary&", "INV=1&", "CMP=jet&", "GAM=log&", "CNT=st&", "CNT=eq&", "ROT=33&",
             "ROT=!270&", "MINMAX=-:10,200&", "CTW=[0,0,1;0,1,0;1,0,0]&", "QLT=5&", "RGN=0.9,0.9,0.5,0.5&"]
OUTPUTS = ["WID=77&CVT=jpeg", "HEI=33&CVT=png", "WID=50&CVT=webp", "WID=40&CVT=tiff", "JTL=0,0", "PTL=1,0",
           "TIL=0,0"]


@pytest.mark.parametrize("ident", IDENTS)
async def test_iip_combinations(client: httpx.AsyncClient, ident: str) -> None:
    failures = []
    for mod, out in itertools.product(MODIFIERS, OUTPUTS):
        r = await client.get(f"/iip?FIF={ident}&{mod}{out}")
        if r.status_code >= 500 or r.status_code not in (200, 400, 404):
            failures.append((mod + out, r.status_code, r.text[:60]))
    assert failures == []


@pytest.mark.parametrize("ident", IDENTS)
async def test_iiif_combinations(client: httpx.AsyncClient, ident: str) -> None:
    regions = ["full", "square", "0,0,100,50", "pct:10,10,50,50", "590,400,100,100"]
    sizes = ["max", "50,", ",40", "pct:10", "60,70", "!60,70", "^200,"]
    rotations = ["0", "90", "!45", "359.5"]
    rest = [f"{q}.{f}" for q, f in itertools.product(["default", "color", "gray", "bitonal"],
                                                     ["jpg", "png", "webp", "gif", "tif"])]
    failures = []
    for i, combo in enumerate(itertools.product(regions, sizes, rotations, rest)):
        if i % 25:  # a fixed 1 in 25 of the 2800 combinations per image
            continue
        url = f"/iiif/3/{quote(ident, safe='')}/{'/'.join(combo)}"
        r = await client.get(url)
        if r.status_code >= 500:
            failures.append((url, r.status_code, r.text[:60]))
    assert failures == []
