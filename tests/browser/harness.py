"""Browser-test helpers with no browser in them: which level a tile URL asks for, the tile log a
page produces, colour statistics of screenshots against the source image, and a static page server."""

from __future__ import annotations

import functools
import http.server
import math
import re
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pyvips

DZI = re.compile(r"/deepzoom/.+_files/(\d+)/\d+_\d+\.\w+")
ZOOMIFY = re.compile(r"/zoomify/.+/TileGroup\d+/(\d+)-\d+-\d+\.jpg")
IIIF = re.compile(r"/iiif/[23]/[^/]+/([^/]+)/([^/]+)/[^/]+/[^/]+\.\w+")


def iiif_scale(region: str, size: str, width: int, height: int) -> int:
    """The scale factor of a IIIF image request (1 = full resolution), rounded to a power of two:
    `iiif_scale("0,0,1024,1024", "256,", ...) == 4`."""
    rw = width if region == "full" else int(region.split(",")[2])
    if size in ("max", "full"):
        return 1
    w = size.lstrip("!").split(",")[0]
    if not w:
        rh = height if region == "full" else int(region.split(",")[3])
        return 2 ** round(math.log2(rh / int(size.split(",")[1])))
    return 2 ** max(0, round(math.log2(rw / int(w))))


def tile_level(url: str, width: int, height: int) -> str | None:
    """`"dzi 12"`, `"zoomify 4"`, `"iiif 1/8"` (scale factor), or None for a request that is no tile."""
    path = unquote(urlsplit(url).path)
    if m := DZI.search(path):
        return f"dzi {m[1]}"
    if m := ZOOMIFY.search(path):
        return f"zoomify {m[1]}"
    if (m := IIIF.search(urlsplit(url).path)) is not None:
        return f"iiif 1/{iiif_scale(unquote(m[1]), unquote(m[2]), width, height)}"
    return None


def deepest(protocol: str, width: int, height: int, tile: int = 256) -> str:
    """The level label of full resolution for a protocol."""
    if protocol == "dzi":
        return f"dzi {math.ceil(math.log2(max(width, height)))}"
    if protocol == "zoomify":
        tiers, w, h = 1, width, height
        while w > tile or h > tile:
            w, h, tiers = -(-w // 2), -(-h // 2), tiers + 1
        return f"zoomify {tiers - 1}"
    return "iiif 1/1"


@dataclass
class TileLog:
    """Every request a page made: tiles counted per level, failures, requests still open."""

    width: int
    height: int
    levels: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    aborted: list[str] = field(default_factory=list)
    pending: set[Any] = field(default_factory=set)

    def started(self, request: Any) -> None:
        self.pending.add(request)

    def responded(self, response: Any) -> None:
        level = tile_level(response.url, self.width, self.height)
        if response.status >= 400:
            self.failures.append(f"{response.status} {response.url}")
        elif level is not None:
            self.levels[level] += 1

    def finished(self, request: Any) -> None:
        self.pending.discard(request)

    def failed(self, request: Any) -> None:
        self.pending.discard(request)
        error = request.failure or ""
        # a viewer that drops a tile it no longer needs (Leaflet on zoom) aborts it: not a server failure
        (self.aborted if "ERR_ABORTED" in error else self.failures).append(f"{error} {request.url}")


def channel_stats(img: Any) -> list[tuple[float, float]]:
    """(mean, standard deviation) of each of the first three bands."""
    return [(img[b].avg(), img[b].deviate()) for b in range(3)]


def rgb(png: bytes) -> Any:
    img = pyvips.Image.new_from_buffer(png, "")
    return img.flatten() if img.hasalpha() else img


def trim_to_image(shot: Any, threshold: float = 40) -> Any:
    """The part of a viewer screenshot that differs from its background (the top-left pixel)."""
    background = shot(0, 0)[:3]
    left, top, w, h = shot.find_trim(threshold=threshold, background=background)
    assert w > 50 and h > 50, f"nothing but background ({background}) in the screenshot"
    return shot.crop(left, top, w, h)


def compare_with_source(shot: Any, source: Any) -> dict[str, Any]:
    """Colour statistics of the drawn image (the screenshot trimmed to it) and of the source resized
    to the same size; also the share of the drawn area that has the image's aspect ratio."""
    drawn = trim_to_image(shot)
    ref = source.resize(drawn.width / source.width, vscale=drawn.height / source.height)
    aspect = (drawn.width / drawn.height) / (source.width / source.height)
    return {"drawn": (drawn.width, drawn.height), "aspect": aspect,
            "shot": channel_stats(centre(drawn)), "source": channel_stats(centre(ref))}


def centre(img: Any, share: float = 0.8) -> Any:
    """The middle `share` of an image in each direction (viewer buttons sit in the corners and edges)."""
    w, h = round(img.width * share), round(img.height * share)
    return img.crop((img.width - w) // 2, (img.height - h) // 2, w, h)


def blank_share(shot: Any) -> float:
    """The share of pixels in the most common colour (8 levels a channel): 1.0 for a blank canvas."""
    hist = shot.extract_band(0, n=3).hist_find_ndim(bins=8)
    return float(hist.max()) / (shot.width * shot.height)


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def static_origin(directory: Path) -> Iterator[str]:
    """A static server for `directory` on its own loopback port: another origin than the tileserver's (of the
    same site, and in chromium's loopback address space, so its pages may fetch from the tileserver)."""
    handler = functools.partial(QuietHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
