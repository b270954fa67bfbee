"""info.json: golden files per version (canonicalised as sorted JSON; regenerate with
`TILESERVER_UPDATE_GOLDEN=1 pytest tests/protocols/iiif/test_info.py`), plus structural checks
against the spec (3.0 §5, 2.1 §5) and the image's real pyramid."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette

from tileserver.models import ImageMeta, Level, OutputFormat
from tileserver.protocols.iiif.grammar import Limits, Version
from tileserver.protocols.iiif.info import Service, info_media_type, render_info, tiles

from ...conftest import RGB_TIF

GOLDEN = Path(__file__).parents[2] / "golden"
SERVICE = Service(tuple(OutputFormat), Limits(5000, None, True), cors=True, rights="")
BASE = "https://example.org/iiif/3/rgb.tif"


def canonical(doc: Any) -> str:
    return json.dumps(doc, sort_keys=True, indent=1) + "\n"


def check_golden(name: str, doc: Any) -> None:
    path = GOLDEN / name
    if os.environ.get("TILESERVER_UPDATE_GOLDEN"):
        path.write_text(canonical(doc))
    assert canonical(doc) == path.read_text(), f"{name} changed; rerun with TILESERVER_UPDATE_GOLDEN=1 if intended"


@pytest.fixture(scope="module")
async def meta(app: Starlette) -> ImageMeta:
    result: ImageMeta = await app.state.service.info(RGB_TIF)
    return result


@pytest.mark.parametrize("version", [3, 2])
def test_golden(meta: ImageMeta, version: Version) -> None:
    body = render_info(meta, BASE, SERVICE, version)
    check_golden(f"iiif{version}-rgb-1003x701.json", json.loads(body))


def test_v3_structure(meta: ImageMeta) -> None:
    doc = json.loads(render_info(meta, BASE, SERVICE, 3))
    assert next(iter(doc)) == "@context"
    assert doc["@context"] == "http://iiif.io/api/image/3/context.json"
    assert (doc["id"], doc["type"], doc["profile"]) == (BASE, "ImageService3", "level2")
    assert (doc["width"], doc["height"]) == (1003, 701)
    assert doc["sizes"] == [{"width": lv.width, "height": lv.height} for lv in reversed(meta.levels)]
    assert doc["tiles"] == [{"width": 256, "height": 256, "scaleFactors": [1, 2, 4]}]
    assert set(doc["preferredFormats"]) <= {"jpg", "png", *doc["extraFormats"]}
    assert "jpg" not in doc["extraFormats"] and "png" not in doc["extraFormats"]
    assert {"sizeUpscaling", "mirroring", "rotationArbitrary", "regionSquare", "cors"} <= set(doc["extraFeatures"])
    assert doc["maxWidth"] == 5000  # required whenever sizeUpscaling is offered
    assert "rights" not in doc


def test_v2_structure(meta: ImageMeta) -> None:
    doc = json.loads(render_info(meta, BASE, SERVICE, 2))
    assert doc["@context"] == "http://iiif.io/api/image/2/context.json"
    assert doc["@id"] == BASE and "id" not in doc and "type" not in doc
    level, extra = doc["profile"]
    assert level == "http://iiif.io/api/image/2/level2.json"
    assert extra["formats"][:2] == ["jpg", "png"]
    assert extra["qualities"] == ["default", "color", "gray", "bitonal"]
    assert {"sizeAboveFull", "sizeByDistortedWh", "regionSquare"} <= set(extra["supports"])
    assert "sizeUpscaling" not in extra["supports"]
    assert (extra["maxWidth"], extra["maxHeight"]) == (5000, 5000)


@pytest.mark.parametrize(
    ("rights", "v3", "v2"),
    [
        pytest.param("http://rightsstatements.org/vocab/InC/1.0/", "rights", "license", id="uri"),
        pytest.param("(c) Somebody 2024", None, "attribution", id="text"),
    ],
)
def test_rights(meta: ImageMeta, rights: str, v3: str | None, v2: str) -> None:
    service = Service(SERVICE.formats, SERVICE.limits, rights=rights)
    doc3 = json.loads(render_info(meta, BASE, service, 3))
    assert doc3.get("rights") == (rights if v3 else None)
    assert json.loads(render_info(meta, BASE, service, 2))[v2] == rights


def test_image_rights_win_over_settings(meta: ImageMeta) -> None:
    own = replace(meta, metadata=(("rights", "http://creativecommons.org/publicdomain/zero/1.0/"),))
    service = Service(SERVICE.formats, SERVICE.limits, rights="http://example.org/default")
    assert json.loads(render_info(own, BASE, service, 3))["rights"] == "http://creativecommons.org/publicdomain/zero/1.0/"


def test_scale_factors_for_odd_sizes_and_mixed_tiles() -> None:
    """Levels 1001 -> 501 -> 251 halve (rounding up): factors 1, 2, 4, where iipsrv's integer
    division gives 1001 // 501 == 1. Levels with another tile size get their own entry."""
    levels = (Level(1001, 999, 512, 512, 1.0), Level(501, 500, 512, 512, 2.0), Level(251, 250, 256, 256, 4.0))
    meta = ImageMeta("odd", 1001, 999, levels, 3, 8, "uint", "srgb", False, False, 0.0, 0, (0.0,), (255.0,))
    assert tiles(meta) == [{"width": 512, "height": 512, "scaleFactors": [1, 2]},
                           {"width": 256, "height": 256, "scaleFactors": [4]}]


def test_sizes_respect_limits(meta: ImageMeta) -> None:
    service = Service(SERVICE.formats, Limits(600, None, False))
    doc = json.loads(render_info(meta, BASE, service, 3))
    assert [s["width"] for s in doc["sizes"]] == [250, 501]
    assert "sizeUpscaling" not in doc["extraFeatures"]


@pytest.mark.parametrize(
    ("accept", "version", "media_type"),
    [
        ("", 3, 'application/ld+json;profile="http://iiif.io/api/image/3/context.json"'),
        ("application/json, application/ld+json;q=0.9", 3,
         'application/ld+json;profile="http://iiif.io/api/image/3/context.json"'),
        ("application/json", 3, "application/json"),
        ("", 2, "application/json"),
        ("application/ld+json", 2, "application/ld+json"),
    ],
)
def test_info_media_type(accept: str, version: Version, media_type: str) -> None:
    assert info_media_type(accept, version) == media_type
