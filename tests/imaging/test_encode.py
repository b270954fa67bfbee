"""Encoder: the formats libvips can write, and ICC profiles kept or stripped per settings."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import pytest
import pyvips

from tileserver.app import create_app
from tileserver.imaging.encode import available_formats, encode
from tileserver.models import OutputFormat
from tileserver.settings import Settings

from ..conftest import decode, pattern


def with_icc() -> pyvips.Image:
    """A pattern carrying libvips' built-in sRGB profile."""
    return pattern(300, 200).colourspace("lab").icc_export(output_profile="srgb")


def test_core_formats_are_available() -> None:
    assert {OutputFormat.JPEG, OutputFormat.PNG, OutputFormat.WEBP, OutputFormat.TIFF} <= set(available_formats())


@pytest.mark.parametrize("fmt", [OutputFormat.JPEG, OutputFormat.PNG, OutputFormat.WEBP, OutputFormat.TIFF])
def test_icc_kept_or_stripped(fmt: OutputFormat) -> None:
    img = with_icc()
    assert "icc-profile-data" in decode(encode(img, fmt, None, keep_icc=True)).get_fields()
    assert "icc-profile-data" not in decode(encode(img, fmt, None, keep_icc=False)).get_fields()


def test_jpeg_flattens_alpha_on_background() -> None:
    rgba = pattern(32, 32, bands=4)
    out = decode(encode(rgba, OutputFormat.JPEG, 90, background=(255, 0, 0)))
    assert out.bands == 3


async def test_icc_reported_and_embedded_per_settings(tmp_path: Path) -> None:
    with_icc().tiffsave(str(tmp_path / "icc.tif"), tile=True, pyramid=True)
    for keep in (True, False):
        app = create_app(Settings(root=tmp_path, keep_icc=keep))
        app.state.service.start()
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
            assert (await app.state.service.info("icc.tif")).has_icc
            r = await c.get("/iip?FIF=icc.tif&WID=100&CVT=jpeg")
            assert ("icc-profile-data" in decode(r.content).get_fields()) is keep
            grey = await c.get("/iip?FIF=icc.tif&WID=100&COL=grey&CVT=jpeg")
            assert "icc-profile-data" not in decode(grey.content).get_fields()
        app.state.service.stop()


@pytest.mark.parametrize("bands", [1, 2, 3, 4])
@pytest.mark.parametrize("size", [(301, 203), (1, 1), (7, 300)], ids=["301x203", "1x1", "7x300"])
def test_jp2_lossless_at_quality_100(bands: int, size: tuple[int, int]) -> None:
    """JP2 output (OpenJPEG through Pillow): Q 100 is reversible 5/3, the pixels come back exactly,
    grey, grey + alpha, RGB and RGBA, down to one pixel (as many resolutions as the size allows)."""
    import io

    from PIL import Image

    img = pattern(*size, bands=bands).copy(interpretation="srgb" if bands >= 3 else "b-w")
    data = encode(img, OutputFormat.JP2, 100)
    assert data.startswith(b"\x00\x00\x00\x0cjP  \r\n\x87\n")
    with Image.open(io.BytesIO(data)) as im:
        back = np.asarray(im)
    want = np.ndarray(buffer=img.write_to_memory(), dtype=np.uint8, shape=(size[1], size[0], bands))
    assert np.array_equal(back.reshape(want.shape), want)


def test_jp2_quality_sets_the_rate() -> None:
    img = pattern(400, 300)
    sizes = [len(encode(img, OutputFormat.JP2, q)) for q in (10, 50, 90, 100)]
    assert sizes == sorted(sizes) and sizes[0] < sizes[-1] / 5  # Q 10: 38:1; Q 100: lossless
    assert OutputFormat.JP2 in available_formats()
