"""libjpeg-turbo codec for tile-sized jobs: decodes as libtiff does, encodes with libvips' chroma rule,
clamps qualities as libjpeg does, and embeds ICC profiles (split into chunks) that decoders read back."""

from __future__ import annotations

import numpy as np
import pytest
import pyvips

from tileserver.imaging import jpeg
from tileserver.imaging.encode import encode
from tileserver.models import OutputFormat

from ..conftest import decode, max_diff, mean_diff, pattern


def as_array(img: pyvips.Image) -> np.ndarray:
    return jpeg.from_buffer(img.write_to_memory(), img.width, img.height, img.bands)


def as_image(pixels: np.ndarray) -> pyvips.Image:
    h, w, bands = pixels.shape
    return pyvips.Image.new_from_memory(np.ascontiguousarray(pixels).tobytes(), w, h, bands, "uchar")


@pytest.mark.parametrize("bands", [1, 3])
@pytest.mark.parametrize("size", [(256, 256), (131, 77), (1, 1)])
def test_round_trip_within_jpeg_noise(bands: int, size: tuple[int, int]) -> None:
    src = pattern(*size, bands=bands)
    body = jpeg.encode(as_array(src), 90)
    out = decode(body)
    assert (out.width, out.height, out.bands) == (*size, bands)
    assert mean_diff(out, src) < 3


def test_decode_is_libjpeg_exact() -> None:
    """Our decoder gives exactly what libvips' own JPEG decoder gives for the same stream."""
    body = pattern(300, 200).jpegsave_buffer(Q=80)
    assert max_diff(as_image(jpeg.decode(body, 3)), decode(body)) == 0


@pytest.mark.parametrize(("quality", "chroma"), [(75, "4:2:0"), (89, "4:2:0"), (90, "4:4:4"), (100, "4:4:4")])
def test_chroma_subsampling_follows_libvips(quality: int, chroma: str) -> None:
    body = jpeg.encode(as_array(pattern(64, 64)), quality)
    assert decode(body).get("jpeg-chroma-subsample") == chroma


@pytest.mark.parametrize(("asked", "used"), [(None, 75), (-1, 1), (0, 1), (1, 1), (55, 55), (100, 100), (101, 100)])
def test_quality_clamped_as_libjpeg(asked: int | None, used: int) -> None:
    assert jpeg.clamp_quality(asked) == used


def test_lower_quality_is_smaller() -> None:
    pixels = as_array(pattern(256, 256))
    assert len(jpeg.encode(pixels, 30)) < len(jpeg.encode(pixels, 75)) < len(jpeg.encode(pixels, 95))


@pytest.mark.parametrize("icc_size", [3000, 200_000], ids=["one-segment", "four-segments"])
def test_icc_profile_embedded_in_chunks(icc_size: int) -> None:
    icc = bytes(range(256)) * (icc_size // 256) + b"end"
    body = jpeg.encode(as_array(pattern(40, 30)), 80, icc)
    assert body.count(jpeg.ICC_MARKER) == -(-len(icc) // jpeg.ICC_CHUNK)
    assert bytes(decode(body).get("icc-profile-data")) == icc
    plain = jpeg.encode(as_array(pattern(40, 30)), 80)
    assert max_diff(decode(body), decode(plain)) == 0


def test_icc_goes_after_the_jfif_header() -> None:
    body = jpeg.with_icc(jpeg.encode(as_array(pattern(8, 8)), 80), b"profile")
    assert body[2:4] == b"\xff\xe0" and body[20:22] == b"\xff\xe2"
    with pytest.raises(ValueError):
        jpeg.with_icc(b"not a jpeg", b"profile")


def test_corrupt_stream_raises_value_error() -> None:
    body = jpeg.encode(as_array(pattern(64, 64)), 80)
    with pytest.raises(ValueError):
        jpeg.decode(body[:200], 3)


@pytest.mark.parametrize("size", [(200, 150), (1200, 800)], ids=["direct", "streamed-by-libvips"])
@pytest.mark.parametrize("keep_icc", [True, False])
def test_encoder_keeps_icc_on_both_paths(size: tuple[int, int], keep_icc: bool) -> None:
    """Small JPEG outputs go through libjpeg-turbo, large ones through libvips; both honour keep_icc."""
    img = pattern(*size).colourspace("lab").icc_export(output_profile="srgb")
    out = decode(encode(img, OutputFormat.JPEG, 85, keep_icc=keep_icc))
    assert ("icc-profile-data" in out.get_fields()) is keep_icc
    assert mean_diff(out, img) < 3
