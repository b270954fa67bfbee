"""`tileserver convert`: every codec gives a tiled pyramid the reader serves (levels, tile size,
stored compression) with the source's pixels (exact for deflate/zstd, within JPEG/WebP tolerance);
alpha and 16-bit sources; no overwrite without --force and no partial file on failure; progress."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import pyvips

from tileserver.cli import main
from tileserver.imaging.convert import ConvertError, ConvertOptions, ProgressBar, convert, supported
from tileserver.sources.pyramid import PyramidReader

from ..conftest import ALPHA_PNG, GREY16_TIF, PLAIN_JPG, STRIPED_TIF, max_diff, mean_diff


@pytest.mark.parametrize(("compression", "tolerance"), [
    pytest.param("jpeg", 4.0, id="jpeg"), pytest.param("webp", 4.0, id="webp"),
    pytest.param("deflate", 0.0, id="deflate"),
    pytest.param("zstd", 0.0, id="zstd", marks=pytest.mark.skipif(not supported("zstd"),
                                                                   reason="this libtiff has no zstd")),
])
def test_each_codec_writes_a_served_pyramid(image_root: Path, tmp_path: Path, compression: str,
                                            tolerance: float) -> None:
    dst = tmp_path / "out.tif"
    convert(image_root / STRIPED_TIF, dst, ConvertOptions(compression, 128, 90))  # type: ignore[arg-type]
    meta = PyramidReader().info(str(dst), "out.tif")
    assert (meta.width, meta.height) == (900, 517)
    assert meta.compression == compression
    stored = [lv for lv in meta.levels if lv.stored]
    assert [(lv.width, lv.tile_width) for lv in stored] == [(900, 128), (450, 128), (225, 128), (112, 128)]
    written, source = pyvips.Image.new_from_file(str(dst)), pyvips.Image.new_from_file(str(image_root / STRIPED_TIF))
    if tolerance:
        assert mean_diff(written, source) < tolerance
    else:
        assert max_diff(written, source) == 0


def test_jpeg_flattens_alpha_and_deflate_keeps_it(image_root: Path, tmp_path: Path) -> None:
    convert(image_root / ALPHA_PNG, tmp_path / "a.tif", ConvertOptions("jpeg"))
    convert(image_root / ALPHA_PNG, tmp_path / "b.tif", ConvertOptions("deflate"))
    assert pyvips.Image.new_from_file(str(tmp_path / "a.tif")).bands == 3
    assert max_diff(pyvips.Image.new_from_file(str(tmp_path / "b.tif")),
                    pyvips.Image.new_from_file(str(image_root / ALPHA_PNG))) == 0


def test_unsupported_codec_is_refused_before_writing(image_root: Path, tmp_path: Path) -> None:
    if supported("zstd"):
        pytest.skip("this libtiff writes zstd")
    with pytest.raises(ConvertError, match="cannot write zstd"):
        convert(image_root / PLAIN_JPG, tmp_path / "z.tif", ConvertOptions("zstd"))
    assert list(tmp_path.iterdir()) == []


def test_sixteen_bit_is_kept_losslessly_and_scaled_for_jpeg(image_root: Path, tmp_path: Path) -> None:
    convert(image_root / GREY16_TIF, tmp_path / "z.tif", ConvertOptions("deflate"))
    convert(image_root / GREY16_TIF, tmp_path / "j.tif", ConvertOptions("jpeg"))
    z, j = (pyvips.Image.new_from_file(str(tmp_path / n)) for n in ("z.tif", "j.tif"))
    source = pyvips.Image.new_from_file(str(image_root / GREY16_TIF))
    assert z.format == "ushort" and max_diff(z, source) == 0
    assert j.format == "uchar" and j.bands == 1
    assert mean_diff(j, (source / 257).cast("uchar")) < 3
    convert(image_root / GREY16_TIF, tmp_path / "w.tif", ConvertOptions("webp"))
    w = pyvips.Image.new_from_file(str(tmp_path / "w.tif"))
    assert w.bands == 3 and mean_diff(w[1], (source / 257).cast("uchar")) < 3


def test_refuses_to_overwrite_without_force(image_root: Path, tmp_path: Path) -> None:
    dst = tmp_path / "exists.tif"
    dst.write_bytes(b"keep me")
    with pytest.raises(ConvertError, match="--force"):
        convert(image_root / PLAIN_JPG, dst, ConvertOptions())
    assert dst.read_bytes() == b"keep me"
    convert(image_root / PLAIN_JPG, dst, ConvertOptions(force=True))
    assert pyvips.Image.new_from_file(str(dst)).width == 640


@pytest.mark.parametrize("src", ["not-an-image.tif", "missing.tif"])
def test_a_bad_source_leaves_no_file(image_root: Path, tmp_path: Path, src: str) -> None:
    with pytest.raises(ConvertError):
        convert(image_root / src, tmp_path / "out.tif", ConvertOptions())
    assert list(tmp_path.iterdir()) == []


def test_refuses_to_overwrite_its_source(image_root: Path, tmp_path: Path) -> None:
    src = tmp_path / "same.jpg"
    src.write_bytes((image_root / PLAIN_JPG).read_bytes())
    with pytest.raises(ConvertError, match="is the source"):
        convert(src, src, ConvertOptions(force=True))


def test_progress_reaches_100_in_order(image_root: Path, tmp_path: Path) -> None:
    seen: list[int] = []
    convert(image_root / STRIPED_TIF, tmp_path / "p.tif", ConvertOptions(), seen.append)
    assert seen[-1] == 100 and seen == sorted(seen)


def test_progress_bar_draws_on_change_only() -> None:
    out = io.StringIO()
    bar = ProgressBar(out, width=10)
    for p in (0, 50, 50, 100):
        bar(p)
    assert out.getvalue() == "\r[          ]   0%\r[#####     ]  50%\r[##########] 100%\n"


def test_command_line(image_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dst = tmp_path / "cli.tif"
    args = ["convert", str(image_root / PLAIN_JPG), str(dst), "--compression", "webp", "--tile-size", "128",
            "--quality", "80"]
    assert main(args) == 0
    assert "640 x 481, 4 levels, webp 128x128 tiles" in capsys.readouterr().out
    assert main(args) == 1
    assert "exists (use --force" in capsys.readouterr().err
    assert main([*args, "--force"]) == 0
    with pytest.raises(SystemExit):
        main(["convert", "a.jpg", "b.tif", "--compression", "lzw"])
