"""LYR in the TileRequest (pure): carried for layered sources only (JPEG 2000 with quality layers), so other
sources keep one cache entry."""

from __future__ import annotations

from dataclasses import replace

import pytest

from tileserver.models import ImageMeta, Level
from tileserver.protocols.iip import to_tile_request
from tileserver.protocols.iip.grammar import parse, split_query
from tileserver.settings import Settings

META = ImageMeta(ident="a", width=300, height=200, levels=(Level(300, 200, 256, 256), Level(150, 100, 256, 256)),
                 bands=3, bits=8, sample_format="uint", colorspace="srgb", has_alpha=False, has_icc=False,
                 mtime=0.0, file_size=1, min_values=(0.0,) * 3, max_values=(255.0,) * 3, loader="tiffload")


@pytest.mark.parametrize(("stored", "layers"), [(5, 3), (0, None), (1, None)])
def test_lyr_reaches_layered_sources_only(stored: int, layers: int | None) -> None:
    q = parse(split_query("FIF=a&LYR=3&JTL=1,0"))
    req = to_tile_request(q, replace(META, layers=stored), Settings(root="/tmp"))
    assert req.layers == layers
    plain = to_tile_request(parse(split_query("FIF=a&JTL=1,0")), replace(META, layers=stored), Settings(root="/tmp"))
    assert (req == plain) is (layers is None)  # the cache key splits only where layers can matter
