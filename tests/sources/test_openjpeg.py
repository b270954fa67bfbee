"""The libopenjp2 binding (sources/openjpeg.py): which library is loaded, decodes from many threads at
once, and errors as DecodeError (never a crash, never a stale message from another thread)."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from tileserver.sources.openjpeg import CODEC_JP2, DecodeError, Library, bundled_library, library

from ..jp2_images import BY_NAME, TILED_RGB, source


def lib() -> Library:
    found = library()
    assert found is not None
    return found


def test_pillows_bundled_library_is_used_when_there_is_one() -> None:
    bundled = bundled_library()
    if bundled is None:
        pytest.skip("this Pillow is built against a system libopenjp2")
    assert lib().path == bundled and "pillow.libs" in bundled.replace(os.sep, "/")
    assert lib().version_tuple >= (2, 5, 0) and lib().reads_ht


def test_decodes_in_parallel_threads_agree(image_root: Path) -> None:
    path = str(image_root / TILED_RGB)
    tiles = [t % 9 for t in range(36)]
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda t: lib().decode(path, CODEC_JP2, 0, 0, tile=t), tiles))
    src = source(BY_NAME[TILED_RGB])
    for d in got:
        h, w = d.pixels.shape[:2]
        assert np.array_equal(d.pixels, src[d.y0: d.y0 + h, d.x0: d.x0 + w])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        pytest.param({"reduce": 9}, "setup|header|tile|resolution", id="reduce-past-the-levels"),
        pytest.param({"tile": 99}, "tile", id="no-such-tile"),
        pytest.param({"area": (5000, 0, 6000, 10)}, "area", id="area-outside"),
    ],
)
def test_bad_parameters_are_decode_errors(image_root: Path, kwargs: dict[str, object], message: str) -> None:
    args = {"reduce": 0, **kwargs}
    reduce = int(args.pop("reduce"))  # type: ignore[call-overload]
    with pytest.raises(DecodeError, match=message):
        lib().decode(str(image_root / TILED_RGB), CODEC_JP2, reduce, 0, **args)  # type: ignore[arg-type]


def test_missing_and_garbage_files(tmp_path: Path) -> None:
    with pytest.raises(DecodeError):
        lib().decode(str(tmp_path / "missing.jp2"), CODEC_JP2, 0, 0, tile=0)
    bad = tmp_path / "bad.jp2"
    bad.write_bytes(b"\x00\x00\x00\x0cjP  \r\n\x87\n" + os.urandom(600))
    with pytest.raises(DecodeError):
        lib().decode(str(bad), CODEC_JP2, 0, 0, tile=0)


def test_tileserver_info_names_the_decoder(capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from tileserver.cli import main

    assert main(["info"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["openjpeg"] == {"version": lib().version, "library": lib().path}
    assert "jp2" in info["output_formats"]
