"""Shared fixtures: small odd-sized images generated with pyvips (never committed), an app built
with `create_app(Settings(root=...))`, and an async HTTP client bound to it in-process."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import pyvips
from starlette.applications import Starlette

from tileserver.app import create_app
from tileserver.settings import Settings

# the apps and servers the tests start do not warm up (warmup.py: ~0.3 s each); tests/test_warmup.py turns it on
os.environ.setdefault("TILESERVER_WARM_UP", "0")

from .document_images import make_documents
from .jp2_images import make_jp2s
from .sequence_images import make_sequences
from .stack_images import make_stacks
from .stores import FileServer, S3Service, moto_server, nginx_files

RGB_TIF = "rgb-3lvl-1003x701-tiled-jpeg.tif"
RGB_1000 = "rgb-3lvl-1000x700-tiled-jpeg.tif"
GREY16_TIF = "grey16-3lvl-600x410-tiled-deflate.tif"
STRIPED_TIF = "rgb-900x517-striped.tif"
PLAIN_JPG = "rgb-640x481.jpg"
SUBIFD_TIF = "sub/rgb-3lvl-700x530-subifd-jpeg.tif"
ALPHA_PNG = "sub/rgba-300x200.png"
META_TIF = "meta-2lvl-509x383-tiled-deflate.tif"  # every descriptive tag iipsrv reads, 300 dpi
META_CM_TIF = "meta-1lvl-300x211-cm.tif"  # 118.11 pixels/cm, no descriptive tags
META_FIELDS = {"title": "Harbour at dusk", "description": "A test image with metadata", "make": "Phase One",
               "model": "IQ4 150MP", "software": "tileserver tests", "date": "2026:12:02 10:11:12",
               "creator": "Jane Doe", "rights": "CC BY 4.0", "pagename": "recto"}
XMP_PACKET = '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF/></x:xmpmeta>'


def pattern(width: int, height: int, bands: int = 3, seed: int = 1) -> Any:
    """Deterministic texture: smooth gradients plus blurred noise, so tiles differ and JPEG is stable."""
    xyz = pyvips.Image.xyz(width, height)
    x, y = xyz[0], xyz[1]
    chans = [
        (x * (255.0 / width)).cast("uchar"),
        (y * (255.0 / height)).cast("uchar"),
        pyvips.Image.gaussnoise(width, height, mean=128, sigma=60, seed=seed).gaussblur(2).cast("uchar"),
        ((x + y) * (255.0 / (width + height))).cast("uchar"),
    ]
    img = chans[0].bandjoin(chans[1:bands]) if bands > 1 else chans[2]
    return img.copy(interpretation="srgb" if bands >= 3 else "b-w")


def make_images(root: Path) -> None:
    (root / "sub").mkdir(parents=True, exist_ok=True)
    opts = {"tile": True, "pyramid": True, "tile_width": 256, "tile_height": 256}
    pattern(1003, 701).tiffsave(str(root / RGB_TIF), compression="jpeg", Q=90, **opts)
    pattern(1000, 700, seed=3).tiffsave(str(root / RGB_1000), compression="jpeg", Q=90, **opts)
    (pattern(600, 410, bands=1, seed=2).cast("ushort") * 257).cast("ushort").copy(interpretation="grey16").tiffsave(
        str(root / GREY16_TIF), compression="deflate", **opts)
    pattern(900, 517, seed=4).tiffsave(str(root / STRIPED_TIF), compression="jpeg", Q=90)
    pattern(640, 481, seed=5).jpegsave(str(root / PLAIN_JPG), Q=90)
    pattern(700, 530, seed=6).tiffsave(str(root / SUBIFD_TIF), compression="jpeg", Q=90, subifd=True, **opts)
    pattern(300, 200, bands=4, seed=7).copy(interpretation="srgb").pngsave(str(root / ALPHA_PNG))
    (root / "not-an-image.tif").write_bytes(b"this is not a tiff")
    write_meta_tiffs(root)
    outside = root.parent / "outside"
    outside.mkdir(exist_ok=True)
    pattern(64, 64).tiffsave(str(outside / "secret.tif"))
    os.symlink(outside / "secret.tif", root / "escape.tif")
    make_stacks(root)
    make_sequences(root)
    make_documents(root)
    make_jp2s(root)


def write_meta_tiffs(root: Path) -> None:
    """Tiled TIFFs carrying the tags libvips does not write (Artist, Copyright, DocumentName, StoNits, ...)."""
    import numpy as np
    import tifffile

    tags = {"title": 269, "make": 271, "model": 272, "creator": 315, "rights": 33432, "pagename": 285}
    full = np.ndarray(buffer=pattern(509, 383).write_to_memory(), dtype=np.uint8, shape=(383, 509, 3))
    extra = [(tags[k], "s", 0, META_FIELDS[k], True) for k in tags]
    extra += [(700, "B", len(XMP_PACKET), XMP_PACKET.encode(), True), (37439, "d", 1, 0.25, True)]
    with tifffile.TiffWriter(root / META_TIF) as tif:
        tif.write(full, tile=(256, 256), compression="zlib", photometric="rgb", resolution=(300, 300),
                  resolutionunit="INCH", description=META_FIELDS["description"], software=META_FIELDS["software"],
                  datetime=META_FIELDS["date"], extratags=extra, metadata=None)
        tif.write(full[::2, ::2].copy(), tile=(256, 256), compression="zlib", photometric="rgb", subfiletype=1,
                  metadata=None)
    small = np.ndarray(buffer=pattern(300, 211, seed=9).write_to_memory(), dtype=np.uint8, shape=(211, 300, 3))
    tifffile.imwrite(root / META_CM_TIF, small, tile=(256, 256), photometric="rgb", resolution=(118.11, 118.11),
                     resolutionunit="CENTIMETER", metadata=None, software=None)


@pytest.fixture(scope="session")
def image_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("images") / "root"
    make_images(root)
    return root


@pytest.fixture(scope="session")
def settings(image_root: Path) -> Settings:
    return Settings(root=image_root, cors="*")


@pytest.fixture(scope="session")
def app(settings: Settings) -> Iterator[Starlette]:
    application = create_app(settings)
    application.state.service.start()
    yield application
    application.state.service.stop()


@pytest.fixture(scope="session")
async def client(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as c:
        yield c


@asynccontextmanager
async def served_app(settings: Settings) -> AsyncIterator[Starlette]:
    """An in-process app for `settings` with its service started; stopped after."""
    application = create_app(settings)
    application.state.service.start()
    try:
        yield application
    finally:
        application.state.service.stop()


@asynccontextmanager
async def served(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """An in-process app for `settings` with its service started, and a client for it; stopped after."""
    async with served_app(settings) as application, httpx.AsyncClient(
            transport=httpx.ASGITransport(app=application), base_url="http://t") as c:
        yield c


def decode(body: bytes) -> Any:
    """Decode an image response body with pyvips (pixels, not bytes, are what tests compare); JPEG 2000
    bodies, which the project's libvips does not load, through Pillow (OpenJPEG)."""
    if body.startswith(b"\x00\x00\x00\x0cjP  \r\n\x87\n"):
        import io

        import numpy as np
        from PIL import Image

        with Image.open(io.BytesIO(body)) as im:
            px = np.asarray(im)
        img = pyvips.Image.new_from_array(px if px.ndim == 3 else px[:, :, None])
        return img.copy(interpretation="srgb" if img.bands >= 3 else "b-w")
    return pyvips.Image.new_from_buffer(body, "")


def max_diff(a: Any, b: Any) -> float:
    """Largest absolute per-pixel difference between two same-sized images."""
    assert (a.width, a.height, a.bands) == (b.width, b.height, b.bands)
    return float((a.cast("float") - b.cast("float")).abs().max())


def mean_diff(a: Any, b: Any) -> float:
    assert (a.width, a.height, a.bands) == (b.width, b.height, b.bands)
    return float((a.cast("float") - b.cast("float")).abs().avg())


@pytest.fixture(scope="session")
def iipsrv13(image_root: Path) -> Iterator[httpx.Client]:
    """iipsrv 1.3 (built from ../shared/vendor) behind lighttpd on loopback, serving `image_root`."""
    from .iipsrv_ref import iipsrv13_binary, running_iipsrv

    with running_iipsrv(iipsrv13_binary(), image_root) as c:
        yield c


@pytest.fixture(scope="session")
def s3_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Service]:
    """moto's S3 server on loopback for the whole session (tests/stores.py), started when first asked for."""
    with moto_server(tmp_path_factory.mktemp("moto") / "moto.log") as s3:
        yield s3


@pytest.fixture(scope="session")
def http_files(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FileServer]:
    """nginx on loopback for the whole session, serving an empty folder that tests write files into."""
    root = tmp_path_factory.mktemp("http-files")
    with nginx_files(root) as base:
        yield FileServer(root, base)


@pytest.fixture(scope="session")
def turbojpeg_lib() -> Any:
    """The system's TurboJPEG (lossless edge-tile crops); its tests skip without it, and fail under CI."""
    from tileserver.imaging import turbojpeg

    found = turbojpeg.library()
    if found is None:
        why = "libturbojpeg is not installed (Debian: libturbojpeg0)"
        if os.environ.get("CI"):
            pytest.fail(f"the lossless crop tests must run in CI: {why}")
        pytest.skip(why)
    return found
