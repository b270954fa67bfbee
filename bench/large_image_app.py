"""The minimal endpoint that puts large_image in the slide benchmark (bench/slide_serve.sh): one route,
`/tile/{z}/{x}/{y}.jpg`, answering large_image's `getTile(x, y, z)` from its OpenSlide tile source
(`large_image_source_openslide`, JPEG tiles, large_image's own defaults otherwise), one source per
process opened at start. `z` counts large_image's levels: 0 is the level that fits one tile, the
largest is full resolution. Runs in its own venv (`large-image`, `large-image-source-openslide`,
uvicorn, starlette): `uvicorn large_image_app:app --workers 2`, with LI_SLIDE naming the slide.
"""

from __future__ import annotations

import os

import large_image_source_openslide  # type: ignore[import-not-found]
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

SOURCE = large_image_source_openslide.open(os.environ["LI_SLIDE"], encoding="JPEG")


async def tile(request: Request) -> Response:
    p = request.path_params
    try:
        data = await run_in_threadpool(SOURCE.getTile, p["x"], p["y"], p["z"])
    except Exception as exc:  # large_image raises TileSourceXYZRangeError and friends
        return Response(str(exc), status_code=404)
    return Response(data, media_type="image/jpeg")


async def metadata(request: Request) -> Response:
    import json

    return Response(json.dumps(SOURCE.getMetadata()), media_type="application/json")


app = Starlette(routes=[Route("/tile/{z:int}/{x:int}/{y:int}.jpg", tile), Route("/metadata", metadata)])
