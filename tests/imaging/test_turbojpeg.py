"""Lossless crops through TurboJPEG: the crop decodes to the source's decoded pixels there (exactly for 4:4:4 and
grey, within a few levels at the cut for 4:2:0), at any width and height; damaged streams and regions outside the
image are refused; each thread has its own handle."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import pytest
import simplejpeg

from tileserver.imaging import turbojpeg


def texture(width: int, height: int, bands: int = 3) -> Any:
    rng = np.random.default_rng(width * 7 + height)
    ramp = np.linspace(0, 180, width)[None, :, None] + np.linspace(0, 60, height)[:, None, None]
    return np.ascontiguousarray((ramp + rng.random((height, width, bands)) * 15).astype(np.uint8))


def jpeg_of(pixels: Any, subsampling: str, quality: int = 90) -> bytes:
    colorspace = "GRAY" if pixels.shape[2] == 1 else "RGB"
    return bytes(simplejpeg.encode_jpeg(pixels, quality, colorspace=colorspace, colorsubsampling=subsampling))


def decoded(data: bytes, bands: int = 3) -> Any:
    return simplejpeg.decode_jpeg(data, colorspace="GRAY" if bands == 1 else "RGB").astype(int)


SIZES = [(256, 256), (100, 37), (256, 19), (7, 256), (129, 200), (1, 1), (255, 255)]


@pytest.mark.parametrize(("width", "height"), SIZES)
@pytest.mark.parametrize(("bands", "subsampling"), [(3, "444"), (1, "Gray")])
def test_crop_is_exact_without_chroma_subsampling(turbojpeg_lib: turbojpeg.Library, width: int, height: int, bands: int,
                                                  subsampling: str) -> None:
    source = jpeg_of(texture(256, 256, bands), subsampling)
    out = turbojpeg_lib.crop(source, width, height)
    got, whole = decoded(out, bands), decoded(source, bands)
    assert got.shape == (height, width, bands)
    assert np.array_equal(got, whole[:height, :width])
    assert len(out) < len(source) or (width, height) in ((256, 256), (255, 255))


@pytest.mark.parametrize(("width", "height"), SIZES)
def test_crop_of_chroma_subsampled_differs_only_at_the_cut(turbojpeg_lib: turbojpeg.Library, width: int,
                                                           height: int) -> None:
    source = jpeg_of(texture(256, 256), "420", 75)
    got, whole = decoded(turbojpeg_lib.crop(source, width, height)), decoded(source)
    assert got.shape == (height, width, 3)
    diff = np.abs(got - whole[:height, :width])
    assert diff.max() <= 12 and diff.mean() < 0.5
    assert np.array_equal(got[: max(height - 2, 0), : max(width - 2, 0)],
                          whole[: max(height - 2, 0), : max(width - 2, 0)])  # away from the cut: exact


@pytest.mark.parametrize(
    ("data", "width", "height"),
    [
        pytest.param(b"", 10, 10, id="empty"),
        pytest.param(b"\xff\xd8\xff\xd9", 10, 10, id="no-frame"),
        pytest.param(b"not a jpeg at all" * 10, 10, 10, id="garbage"),
        pytest.param(None, 257, 10, id="wider-than-the-image"),
        pytest.param(None, 10, 300, id="taller-than-the-image"),
        pytest.param("damaged", 100, 100, id="damaged-entropy-data"),
    ],
)
def test_refused(turbojpeg_lib: turbojpeg.Library, data: bytes | str | None, width: int, height: int) -> None:
    source = jpeg_of(texture(256, 256), "444")
    if data is None:
        data = source
    elif data == "damaged":
        data = source[: len(source) // 2] + b"\xff\xd9"  # the entropy-coded data cut short
    assert isinstance(data, bytes)
    with pytest.raises(turbojpeg.CropError):
        turbojpeg_lib.crop(data, width, height)
    assert decoded(turbojpeg_lib.crop(source, 5, 5)).shape == (5, 5, 3)  # the thread's handle still works


def test_threads_crop_at_once_with_handles_of_their_own(turbojpeg_lib: turbojpeg.Library) -> None:
    sources = [jpeg_of(texture(256, 256 - i), "444") for i in range(4)]
    expected = [turbojpeg_lib.crop(s, 100, 90) for s in sources]
    results: dict[int, list[bytes]] = {}
    handles: dict[int, Any] = {}
    alive = threading.Barrier(4)  # a thread's handle is destroyed when it ends: its address could be reused

    def work(i: int) -> None:
        results[i] = [turbojpeg_lib.crop(sources[i], 100, 90) for _ in range(30)]
        handles[i] = turbojpeg_lib._local.handle.value
        alive.wait(timeout=30)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(out == [expected[i]] * 30 for i, out in results.items())
    assert len(set(handles.values())) == 4


def test_missing_library_is_none(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(turbojpeg, "NAMES", ("libturbojpeg-not-here.so.9",))
    monkeypatch.setattr(turbojpeg.ctypes.util, "find_library", lambda name: None)
    assert turbojpeg.library.__wrapped__() is None


def test_size_from_the_header(turbojpeg_lib: turbojpeg.Library) -> None:
    assert turbojpeg_lib.size(jpeg_of(texture(200, 75), "420")) == (200, 75)
    with pytest.raises(turbojpeg.CropError):
        turbojpeg_lib.size(b"\xff\xd8 not a frame")


def test_tileserver_info_names_the_library(turbojpeg_lib: turbojpeg.Library,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from tileserver.cli import main

    assert main(["info"]) == 0
    assert json.loads(capsys.readouterr().out)["turbojpeg"] == turbojpeg_lib.path
