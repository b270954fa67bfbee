"""The explicit JSON codec of the shared cache: every image's metadata round-trips exactly, requests have one
stable text, and anything that is not exactly the dataclass it claims to be is refused."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tileserver.cache import codec, shared
from tileserver.core import TileService
from tileserver.models import (
    Box,
    Channel,
    ImageMeta,
    Level,
    OutputFormat,
    Page,
    Processing,
    Quality,
    Sequence,
    StackItem,
    Tile,
    TileRequest,
)
from tileserver.settings import Settings

from ..conftest import GREY16_TIF, META_TIF, PLAIN_JPG, RGB_TIF, SUBIFD_TIF
from ..document_images import DOC_TIF
from ..jp2_images import TILED_RGB
from ..sequence_images import SEQ as SEQUENCE
from ..stack_images import STACK_TIF

META = ImageMeta(
    ident="seq", width=1003, height=701, levels=(Level(1003, 701, 256, 256), Level(502, 351, 256, 256, 2.0, False)),
    bands=3, bits=8, sample_format="uint", colorspace="srgb", has_alpha=False, has_icc=True, mtime=1764672000.123456,
    file_size=123456, min_values=(0.0, 0.0, float("-inf")), max_values=(255.0, 255.0, float("inf")),
    dpi=(300.0, 300.0), metadata=(("title", "Dusk ☾"),), stack=(StackItem("a", 0.25), StackItem()),
    resolution=(300.0, 300.0, 2), sequence=Sequence("s_pyr_", "tif", (0, 10), (90,)),
    properties=(("openslide.mpp-x", "0.25"),), associated=("label",),
    channels=(Channel("DAPI", (0, 0, 255), (100.0, 2000.0)), Channel()), pages=(Page(10, 20, "p1"),), layers=3,
    decode_pixels=65536)


def test_a_full_image_meta_round_trips() -> None:
    back = codec.loads(ImageMeta, codec.dumps(META))
    assert back == META and isinstance(back.levels[0], Level) and isinstance(back.sequence, Sequence)


@pytest.mark.parametrize("name", [RGB_TIF, GREY16_TIF, PLAIN_JPG, SUBIFD_TIF, META_TIF, STACK_TIF, DOC_TIF,
                                  f"{DOC_TIF};page=1", SEQUENCE, TILED_RGB])
async def test_the_metadata_of_real_images_round_trips(image_root: Path, name: str) -> None:
    service = TileService(Settings(root=image_root))
    meta = await service.info(name)
    assert codec.loads(ImageMeta, codec.dumps(meta)) == meta
    key = shared.entry_key("m", name)
    assert shared.unpack_meta(key, shared.pack_meta(key, meta)) == meta  # shaped as an image's: accepted
    service.stop()


REQUESTS = [
    TileRequest(ident="a.tif", tile=Tile(1, 0, 0)),
    TileRequest(ident="a.tif", fmt=OutputFormat.PNG, region=Box(0, 0, 512, 512), size=(256, 256), rotation=90.0,
                mirror=True, quality=Quality.GRAY, encoder_quality=80, page=2, layers=3,
                processing=Processing(minmax=((-1, 0.0, 4095.0),), twist=((1.0, 0.0), (0.5, 0.5)), gamma=2.2,
                                      colormap="jet", convolution=(0.0,) * 9)),
]


@pytest.mark.parametrize("req", REQUESTS, ids=["tile", "everything"])
def test_requests_have_one_stable_text_and_round_trip(req: TileRequest) -> None:
    text = codec.stable(req)
    assert text == codec.stable(codec.decode(TileRequest, json.loads(text)))
    assert codec.decode(TileRequest, json.loads(text)) == req
    assert text != codec.stable(REQUESTS[1 - REQUESTS.index(req)])


def _meta_json(**changes: Any) -> bytes:
    data = codec.encode(META)
    data.update(changes)
    return json.dumps(data).encode()


@pytest.mark.parametrize("data", [
    pytest.param(b"\x80\x04pickle", id="pickle"),
    pytest.param(b"[]", id="a-list"),
    pytest.param(_meta_json(width="1003"), id="string-for-int"),
    pytest.param(_meta_json(width=True), id="bool-for-int"),
    pytest.param(_meta_json(has_alpha=0), id="int-for-bool"),
    pytest.param(_meta_json(extra=1), id="extra-field"),
    pytest.param(json.dumps({k: v for k, v in codec.encode(META).items() if k != "bits"}).encode(), id="missing"),
    pytest.param(_meta_json(levels=[[1, 2]]), id="bad-nested"),
    pytest.param(_meta_json(dpi=[1.0]), id="short-tuple"),
    pytest.param(_meta_json(sequence={"stem": "s", "ext": "tif", "horizontal": [], "vertical": [], "x": 1}),
                 id="nested-extra"),
])
def test_anything_else_is_refused(data: bytes) -> None:
    with pytest.raises(ValueError):
        codec.loads(ImageMeta, data)


def test_enums_are_refused_unless_they_are_members() -> None:
    data = codec.encode(REQUESTS[0])
    data["fmt"] = "BMP"
    with pytest.raises(ValueError, match="OutputFormat"):
        codec.decode(TileRequest, data)
