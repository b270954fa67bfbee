"""The pixel budget (sources/budget.py): which declared sizes are refused, what each format says one
of its reads decodes at once (`ImageMeta.decode_pixels`), that every format checks before it decodes
anything, and that files libvips reads whole never leave a temporary file behind."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import pyvips
import tifffile

from tileserver.errors import SourceTooLarge
from tileserver.levels import virtual_levels, with_virtual
from tileserver.models import ImageMeta, Level, OutputFormat
from tileserver.settings import Settings
from tileserver.sources.budget import PixelBudget, TooLargeImage, shrunk_level, streamed_pixels
from tileserver.sources.jp2 import Jp2Format
from tileserver.sources.ome import OmeFormat
from tileserver.sources.pyramid import PyramidReader
from tileserver.sources.slide import SlideFormat, SlideImage, SlideReader
from tileserver.sources.tiff import IMAGE_LENGTH, IMAGE_WIDTH, ROWS_PER_STRIP, Ifd

from ..bomb_images import jp2_whole_bomb, tiff_tiled_bomb
from ..conftest import ALPHA_PNG, PLAIN_JPG, RGB_TIF, STRIPED_TIF, pattern
from ..jp2_images import SPECS
from ..ome_images import FOUR, make_ome_images
from ..slide_images import make_svs

MP = 1_000_000


def meta_of(levels: tuple[Level, ...], decode: int = 0) -> ImageMeta:
    w, h = levels[0].width, levels[0].height
    return ImageMeta(ident="x.tif", width=w, height=h, levels=levels, bands=3, bits=8, sample_format="uint",
                     colorspace="srgb", has_alpha=False, has_icc=False, mtime=0.0, file_size=1,
                     min_values=(0.0,) * 3, max_values=(255.0,) * 3, decode_pixels=decode)


PYRAMID = tuple(Level(2000 >> k, 1000 >> k, 256, 256, float(1 << k)) for k in range(4))  # every level stored
UNTILED = virtual_levels(3000, 2000, 256)  # one stored level, the rest shrunk from it
ONE_LEVEL_TILED = with_virtual([Level(3000, 2000, 256, 256)], (3000, 2000))


@pytest.mark.parametrize(("levels", "decode", "budget", "refused"), [
    pytest.param(PYRAMID, 65536, PixelBudget(2 * MP, 1, 65536), None, id="pyramid-within"),
    pytest.param(PYRAMID, 65536, PixelBudget(2 * MP - 1, 10 * MP, MP), "max_image_megapixels", id="pyramid-past-image"),
    pytest.param(PYRAMID, 65537 * 4, PixelBudget(10 * MP, 10 * MP, 65537 * 4 - 1), "max_decode_megapixels",
                 id="pyramid-huge-tiles"),
    pytest.param(UNTILED, 0, PixelBudget(10 * MP, 6 * MP, 6 * MP), None, id="untiled-within"),
    pytest.param(UNTILED, 0, PixelBudget(10 * MP, 6 * MP - 1, 6 * MP), "max_untiled_megapixels",
                 id="untiled-past-whole"),
    pytest.param(UNTILED, 0, PixelBudget(10 * MP, 6 * MP, 6 * MP - 1), "max_decode_megapixels",
                 id="untiled-past-decode"),
    pytest.param(ONE_LEVEL_TILED, 65536, PixelBudget(10 * MP, 6 * MP - 1, MP), "max_untiled_megapixels",
                 id="one-level-tiled-past-whole"),
    pytest.param(ONE_LEVEL_TILED, 65536, PixelBudget(10 * MP, 6 * MP, MP), None, id="one-level-tiled-within"),
])
def test_check(levels: tuple[Level, ...], decode: int, budget: PixelBudget, refused: str | None) -> None:
    meta = meta_of(levels, decode)
    if refused is None:
        budget.check(meta)
        return
    with pytest.raises(SourceTooLarge, match=refused) as info:
        budget.check(meta)
    assert "x.tif" in info.value.message and "/" not in info.value.message.replace("x.tif", "")


def test_held_replaces_decode_pixels() -> None:
    """A read from top to bottom (a conversion) holds a few rows, not the whole file."""
    meta = meta_of(UNTILED)
    budget = PixelBudget(10 * MP, 10 * MP, MP)
    with pytest.raises(SourceTooLarge):
        budget.check(meta)
    budget.check(meta, held=3000 * 16)


def test_shrunk_level() -> None:
    assert shrunk_level(PYRAMID) is None
    assert shrunk_level(UNTILED) == UNTILED[0]
    stored_two = with_virtual(list(PYRAMID[:2]), (2000, 1000))
    assert shrunk_level(stored_two) == PYRAMID[1]


def test_budget_of_settings(tmp_path: Path) -> None:
    b = PixelBudget.of(Settings(root=tmp_path, max_image_megapixels=2.5, max_untiled_megapixels=1.5,
                                max_decode_megapixels=0.5))
    assert (b.image, b.whole, b.decode) == (2_500_000, 1_500_000, 500_000)
    d = PixelBudget.of(Settings(root=tmp_path))
    assert (d.image, d.whole, d.decode) == (100_000 * MP, 1000 * MP, 100 * MP)


# -- what each format says one read decodes ----------------------------------------------------------------
def test_libvips_sources_decode_pixels(image_root: Path) -> None:
    reader = PyramidReader(256, 8)
    assert reader.info(str(image_root / RGB_TIF), RGB_TIF).decode_pixels == 256 * 256
    # strips are read only in order: for random access libvips decodes a striped TIFF whole
    assert reader.info(str(image_root / STRIPED_TIF), STRIPED_TIF).decode_pixels == 900 * 517
    assert reader.info(str(image_root / PLAIN_JPG), PLAIN_JPG).decode_pixels == 640 * 481  # decoded whole
    assert reader.info(str(image_root / ALPHA_PNG), ALPHA_PNG).decode_pixels == 300 * 200


@pytest.mark.parametrize("rows", [7, 203])
def test_a_strip_is_what_a_read_in_order_holds(tmp_path: Path, rows: int) -> None:
    """A conversion reads a striped TIFF strip by strip."""
    path = tmp_path / "striped-301x203.tif"
    tifffile.imwrite(path, pattern(301, 203).numpy(), rowsperstrip=rows, photometric="rgb", metadata=None)
    meta = PyramidReader().info(str(path), path.name)
    assert meta.decode_pixels == 301 * 203
    assert streamed_pixels(str(path), meta) == 301 * rows


def test_no_rows_per_strip_is_one_strip() -> None:
    """The TIFF default of RowsPerStrip is 2**32 - 1: the whole image in one strip."""
    size = {IMAGE_WIDTH: (301,), IMAGE_LENGTH: (203,)}
    assert Ifd(values=dict(size)).decode_pixels == 301 * 203
    assert Ifd(values={**size, ROWS_PER_STRIP: (2**32 - 1,)}).decode_pixels == 301 * 203


@pytest.mark.parametrize(("name", "expected"), [
    ("jp2-rgb8-tiled384x320-1023x767.jp2", 384 * 320),
    ("jp2-rgb8-untiled-1023x767.jp2", 1023 * 767),  # one tile, under `whole` a side: decoded whole
    ("jp2-rgb8-untiled-2res-1003x701.jp2", 1003 * 701),
])
def test_jp2_decode_pixels(image_root: Path, name: str, expected: int) -> None:
    assert name in {s.name for s in SPECS}
    meta = Jp2Format(1 << 20).open(str(image_root / name), name).meta
    assert meta.decode_pixels == expected


def test_jp2_large_untiled_is_decoded_in_blocks(image_root: Path) -> None:
    name = "jp2-rgb8-untiled-1023x767.jp2"
    meta = Jp2Format(1 << 20, block=128, whole=128).open(str(image_root / name), name).meta
    assert meta.decode_pixels == 128 * 128


@pytest.fixture(scope="module")
def ome_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ome-budget")
    make_ome_images(root)
    return root


def test_ome_decode_pixels_counts_every_channel_plane(ome_root: Path) -> None:
    with tifffile.TiffFile(ome_root / FOUR.name) as tif:
        tile = tif.pages[0].tilewidth * tif.pages[0].tilelength
    meta = OmeFormat(PyramidReader(256, 8)).open(str(ome_root / FOUR.name), FOUR.name).meta
    assert meta.decode_pixels == tile * FOUR.channels


def test_slide_decode_pixels_is_its_tile(tmp_path: Path) -> None:
    path = tmp_path / "slide-1201x901.svs"
    make_svs(path, 1201, 901, levels=2, tile=240)
    meta = SlideFormat(SlideReader()).open(str(path), path.name).meta
    assert meta.decode_pixels == 240 * 240


# -- formats that decode when they open a file check first --------------------------------------------------
def test_jp2_is_refused_before_its_probe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "bomb.j2k"
    jp2_whole_bomb(path)

    def no_decode(*args: object) -> None:
        raise AssertionError("decoded before the budget was checked")

    monkeypatch.setattr(Jp2Format, "_probe", no_decode)
    with pytest.raises(SourceTooLarge, match="megapixels"):
        Jp2Format(1 << 20, budget=PixelBudget(100_000 * MP, 1000 * MP, 100 * MP)).open(str(path), path.name)


def test_slide_is_refused_before_its_first_tile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "slide-1201x901.svs"
    make_svs(path, 1201, 901, levels=2, tile=240)

    def no_decode(self: SlideImage) -> None:
        raise AssertionError("decoded before the budget was checked")

    monkeypatch.setattr(SlideImage, "_check_readable", no_decode)
    with pytest.raises(SourceTooLarge, match="max_decode_megapixels"):
        SlideFormat(SlideReader(budget=PixelBudget(10 * MP, 10 * MP, 240 * 240 - 1))).open(str(path), path.name)
    with pytest.raises(SourceTooLarge, match="max_image_megapixels"):
        SlideFormat(SlideReader(budget=PixelBudget(1201 * 901 - 1, MP, MP))).open(str(path), path.name)


def test_a_tiled_bomb_is_refused_from_its_directory(tmp_path: Path) -> None:
    """50000 x 50000 in one level of tiles: no tile is large, but its smaller levels would read all of it."""
    path = tmp_path / "bomb.tif"
    tiff_tiled_bomb(path)
    meta = PyramidReader().info(str(path), path.name)
    assert (meta.width, meta.height, meta.decode_pixels) == (50000, 50000, 65536)
    with pytest.raises(SourceTooLarge, match="max_untiled_megapixels"):
        PixelBudget(100_000 * MP, 1000 * MP, 100 * MP).check(meta)


# -- derived pyramids: what a conversion holds ---------------------------------------------------------------
@pytest.mark.parametrize(("save", "streamed"), [
    pytest.param({"suffix": ".jpg"}, 16, id="baseline-jpeg"),
    pytest.param({"suffix": ".jpg", "interlace": True}, None, id="progressive-jpeg"),
    pytest.param({"suffix": ".png"}, 16, id="png"),
    pytest.param({"suffix": ".png", "interlace": True}, None, id="interlaced-png"),
    pytest.param({"suffix": ".webp"}, None, id="webp"),
])
def test_streamed_pixels(tmp_path: Path, save: dict[str, object], streamed: int | None) -> None:
    """Rows for what libvips decodes top to bottom; the whole image for what it decodes in one piece."""
    options = dict(save)
    path = tmp_path / f"image-333x222{options.pop('suffix')}"
    pattern(333, 222).write_to_file(str(path), **options)
    meta = PyramidReader().info(str(path), path.name)
    assert streamed_pixels(str(path), meta) == (333 * streamed if streamed else 333 * 222)


def test_too_large_image_refuses_its_reads(image_root: Path) -> None:
    meta = PyramidReader().info(str(image_root / PLAIN_JPG), PLAIN_JPG)
    image = TooLargeImage(meta, "too large")
    with pytest.raises(SourceTooLarge, match="too large"):
        image.read(0, (0, 0, 10, 10))
    assert image.stored_tile(0, 0, 0, OutputFormat.JPEG) is None


# -- no temporary file ---------------------------------------------------------------------------------------
SCRIPT = textwrap.dedent("""
    import os, sys
    from tileserver.sources.pyramid import PyramidReader, configure_vips
    configure_vips()
    reader = PyramidReader(256, 8)
    for name in sys.argv[2:]:
        path = os.path.join(sys.argv[1], name)
        meta = reader.info(path, name)
        for level in range(len(meta.levels)):
            lv = meta.levels[level]
            reader.read(path, meta, level, (0, 0, min(lv.width, 256), min(lv.height, 256))).avg()
    tmp = os.environ["TMPDIR"]
    held = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            held += os.readlink(f"/proc/self/fd/{fd}").startswith(tmp)
        except OSError:  # the descriptor listdir itself used
            pass
    print(len(os.listdir(tmp)), held)
""")


def test_files_read_whole_leave_no_temporary_file(image_root: Path, tmp_path: Path) -> None:
    """With libvips' disc threshold at 1 kB, a random-access open of a JPEG or PNG would decode it into a
    temporary file kept open with the handle; the reader decodes such files into memory instead."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = {**os.environ, "TMPDIR": str(tmp), "VIPS_DISC_THRESHOLD": "1k"}
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(image_root), PLAIN_JPG, ALPHA_PNG, STRIPED_TIF],
                         env=env, capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.split() == ["0", "0"], out.stderr
    assert pyvips.Image.new_from_file(str(image_root / PLAIN_JPG)).width == 640
