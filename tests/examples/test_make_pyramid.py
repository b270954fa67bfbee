"""examples/make_pyramid.py: `--sample` writes the demo pyramid once (what `make demo` serves), and
SRC DST writes a tiled pyramid with the chosen tile size and codec."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import pyvips

from tileserver.sources.pyramid import PyramidReader

from ..conftest import PLAIN_JPG

SCRIPT = Path(__file__).resolve().parents[2] / "examples" / "make_pyramid.py"


def load() -> Any:
    spec = importlib.util.spec_from_file_location("make_pyramid", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


make_pyramid = load()


def test_sample_is_written_once(tmp_path: Path) -> None:
    assert make_pyramid.main(["--sample", str(tmp_path / "demo")]) == 0
    sample = tmp_path / "demo" / "sample.tif"
    meta = PyramidReader().info(str(sample), "sample.tif")
    assert (meta.width, meta.height, meta.tile_size, meta.compression) == (4000, 3000, (256, 256), "jpeg")
    assert len([lv for lv in meta.levels if lv.stored]) >= 4
    mtime = sample.stat().st_mtime_ns
    assert make_pyramid.main(["--sample", str(tmp_path / "demo")]) == 0
    assert sample.stat().st_mtime_ns == mtime


def test_src_dst(image_root: Path, tmp_path: Path) -> None:
    dst = tmp_path / "out.tif"
    assert make_pyramid.main([str(image_root / PLAIN_JPG), str(dst), "--tile", "128", "--compression", "deflate"]) == 0
    meta = PyramidReader().info(str(dst), "out.tif")
    assert (meta.width, meta.height, meta.tile_size, meta.compression) == (640, 481, (128, 128), "deflate")
    out = pyvips.Image.new_from_file(str(dst))
    assert float((out.cast("float") - pyvips.Image.new_from_file(str(image_root / PLAIN_JPG))).abs().max()) == 0
