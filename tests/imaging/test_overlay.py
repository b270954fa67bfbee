"""imaging/overlay.py on its own: the watermark blended "over" at its opacity, placed per tile or per block as
iipsrv places it, deterministic per request; text in its corner and nowhere else; redaction rectangles mapped
from full-resolution coordinates to a level and an output, rounded outwards."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import pyvips

from tileserver.imaging import overlay
from tileserver.models import (
    ImageMeta,
    Level,
    Overlays,
    Redaction,
    TextOverlay,
    Tile,
    TileRequest,
    Watermark,
)

from ..conftest import pattern


def meta_of(width: int, height: int, levels: list[Level]) -> ImageMeta:
    return ImageMeta("x.tif", width, height, tuple(levels), 3, 8, "uint", "srgb", False, False, 0.0, 0,
                     (0.0,) * 3, (255.0,) * 3)


def flat(w: int, h: int, rgb: tuple[int, int, int] = (90, 90, 90)) -> Any:
    return (pyvips.Image.black(w, h, bands=3) + list(rgb)).cast("uchar").copy(interpretation="srgb")


@pytest.fixture
def mark(tmp_path: Path) -> str:
    """A 40 x 30 watermark: red, half transparent (alpha 128)."""
    path = tmp_path / "mark.png"
    flat(40, 30, (250, 10, 10)).bandjoin_const([128]).copy(interpretation="srgb").pngsave(str(path))
    return str(path)


def changed(a: Any, b: Any) -> Any:
    """A boolean (height, width) array: where two same-sized images differ."""
    return (a.numpy().astype(int) != b.numpy().astype(int)).any(axis=2)


def tile_req(overlays: Overlays, col: int = 0) -> TileRequest:
    return TileRequest("x.tif", tile=Tile(0, col, 0), overlays=overlays)


def test_watermark_blended_over_at_its_opacity(mark: str) -> None:
    base = flat(256, 256)
    wm = Watermark(mark, opacity=0.6)
    out = overlay.decorate(base, tile_req(Overlays(watermark=wm)), Overlays(watermark=wm), 0)
    diff = changed(out, base)
    assert diff.sum() == 40 * 30  # one whole watermark in the tile
    ys, xs = np.nonzero(diff)
    assert xs.max() - xs.min() + 1 == 40 and ys.max() - ys.min() + 1 == 30
    a = 128 / 255 * 0.6
    expected = [round(90 * (1 - a) + c * a) for c in (250, 10, 10)]
    px = out.numpy()[ys[0], xs[0]].astype(int).tolist()
    assert all(abs(p - e) <= 1 for p, e in zip(px, expected, strict=True)), (px, expected)


def test_watermark_opaque_mark_without_alpha_at_opacity_one(tmp_path: Path) -> None:
    path = tmp_path / "opaque.tif"
    flat(20, 10, (0, 200, 30)).tiffsave(str(path))
    out = overlay.watermark(flat(100, 80), Watermark(str(path)), 0, seed=7)
    values = np.unique(out.numpy().reshape(-1, 3), axis=0).tolist()
    assert values == [[0, 200, 30], [90, 90, 90]]


@pytest.mark.parametrize("probability, tiles", [(0.0, 0), (1.0, 12)])
def test_probability_zero_none_one_every_tile(mark: str, probability: float, tiles: int) -> None:
    wm = Watermark(mark, probability=probability)
    marked = 0
    for col in range(12):
        req = tile_req(Overlays(watermark=wm), col)
        out = overlay.decorate(flat(256, 256), req, req.overlays or Overlays(), 0)
        n = int(changed(out, flat(256, 256)).sum())
        assert n in (0, 1200)
        marked += n > 0
    assert marked == tiles


def test_probability_half_marks_some_tiles_and_keeps_each_tile_stable(mark: str) -> None:
    wm = Watermark(mark, probability=0.5)
    got = []
    for col in range(40):
        req = tile_req(Overlays(watermark=wm), col)
        first = overlay.watermark(flat(256, 256), wm, 0, overlay.seed_of(req)).numpy()
        again = overlay.watermark(flat(256, 256), wm, 0, overlay.seed_of(req)).numpy()
        assert (first == again).all()
        got.append(bool((first != 90).any()))
    assert 8 <= sum(got) <= 32  # 40 draws at p=0.5


def test_random_places_differ_between_tiles(mark: str) -> None:
    wm = Watermark(mark)
    corners = set()
    for col in range(6):
        out = overlay.watermark(flat(256, 256), wm, 0, overlay.seed_of(tile_req(Overlays(watermark=wm), col)))
        ys, xs = np.nonzero(changed(out, flat(256, 256)))
        corners.add((int(xs.min()), int(ys.min())))
    assert len(corners) > 1


def test_blocks_of_an_export_get_one_each(mark: str) -> None:
    """iipsrv: an output larger than the block is cut into blocks (the last ones narrower), one mark each."""
    assert overlay.blocks(600, 300, 512) == [(0, 0, 512, 300), (512, 0, 88, 300)]
    assert overlay.blocks(300, 200, 512) == [(0, 0, 300, 200)]
    out = overlay.watermark(flat(1100, 600), Watermark(mark), 512, seed=3)
    diff = changed(out, flat(1100, 600))
    for bx, by, bw, bh in overlay.blocks(1100, 600, 512):
        assert int(diff[by:by + bh, bx:bx + bw].sum()) == min(40, bw) * min(30, bh)


@pytest.mark.parametrize("position, corner", [("top-left", (0, 0)), ("bottom-right", (160, 170)),
                                              ("center", (80, 85))])
def test_fixed_positions(mark: str, position: str, corner: tuple[int, int]) -> None:
    out = overlay.watermark(flat(200, 200), Watermark(mark, position=position), 0, seed=1)
    ys, xs = np.nonzero(changed(out, flat(200, 200)))
    assert (int(xs.min()), int(ys.min())) == corner and len(xs) == 1200


def test_repeat_covers_the_output(mark: str) -> None:
    out = overlay.watermark(flat(100, 70), Watermark(mark, position="repeat"), 0, seed=1)
    assert changed(out, flat(100, 70)).all()


def test_scale_and_grey_output(mark: str) -> None:
    grey = (pyvips.Image.black(120, 90) + 90).cast("uchar").copy(interpretation="b-w")
    out = overlay.watermark(grey, Watermark(mark, scale=0.5, position="top-left"), 0, seed=1)
    assert out.bands == 1
    assert int((out.numpy() != 90).sum()) == 20 * 15


def test_alpha_output_keeps_its_alpha(mark: str) -> None:
    base = flat(64, 64).bandjoin_const([77]).copy(interpretation="srgb")
    out = overlay.watermark(base, Watermark(mark, position="top-left"), 0, seed=1)
    assert out.bands == 4 and int(out[3].max()) == 77 and int(out[3].min()) == 77


def test_text_in_its_corner_only() -> None:
    base = flat(300, 200)
    out = overlay.text(base, TextOverlay("Archive copy", size=20, opacity=1.0, colour=(255, 255, 0)))
    ys, xs = np.nonzero(changed(out, base))
    assert len(xs) > 100
    assert ys.min() >= 200 - 20 - 5 and ys.max() < 200 - 5  # 20 px high, a quarter of it from the bottom edge
    assert xs.min() > 150 and xs.max() < 300 - 5
    assert out.numpy()[ys, xs, 0].max() == 255 and out.numpy()[ys, xs, 2].min() < 90  # yellow ink


def test_text_markup_is_shown_not_parsed() -> None:
    assert overlay.text_mask("a <b>c</b> & d", 16) is not None
    assert overlay.text_mask("", 16) is None


def test_redaction_mapped_outwards_at_a_reduced_level() -> None:
    """Full 1003 x 701, level 1 is 502 x 351 (factor 2): the rectangle 301..424 x 157..234 covers level
    pixels 150.25..212 x 78.5..117.1, so 150..213 x 78..118, plus one pixel of margin."""
    meta = meta_of(1003, 701, [Level(1003, 701, 256, 256), Level(502, 351, 256, 256, 2.0)])
    img = pattern(256, 256)
    r = Redaction(301, 157, 123, 77)
    out = overlay.redact_source(img, meta, 1, (0, 0, 256, 256), (r,))
    ys, xs = np.nonzero(changed(out, img))
    painted = out.numpy()[ys, xs]
    assert (painted == 0).all()
    assert (xs.min(), xs.max() + 1, ys.min(), ys.max() + 1) == (149, 214, 77, 119)


def test_redaction_on_the_output_after_resize() -> None:
    meta = meta_of(1003, 701, [Level(1003, 701, 256, 256)])
    img = pattern(100, 70)  # the full image's box 0..1003 x 0..701 resized to 100 x 70
    r = Redaction(950, 650, 53, 51, colour=(255, 255, 255))
    out = overlay.redact_output(img, meta, 0, (0, 0, 1003, 701), (r,))
    ys, xs = np.nonzero(changed(out, img) | (out.numpy() == 255).all(axis=2))
    assert (out.numpy()[ys, xs] == 255).all()
    assert (xs.min(), ys.min(), xs.max(), ys.max()) == (93, 63, 99, 69)  # floor(94.7) - 1, floor(64.9) - 1


def test_redaction_outside_the_box_paints_nothing() -> None:
    meta = meta_of(1003, 701, [Level(1003, 701, 256, 256)])
    img = pattern(256, 256)
    out = overlay.redact_source(img, meta, 0, (512, 256, 256, 256), (Redaction(0, 0, 100, 100),))
    assert not changed(out, img).any()


def test_paint_grey_and_alpha() -> None:
    grey = (pyvips.Image.black(10, 10) + 200).cast("uchar")
    assert int(overlay.paint(grey, (0, 0, 5, 5), (255, 0, 0)).crop(0, 0, 5, 5).max()) == round(0.2126 * 255)
    rgba = flat(10, 10).bandjoin_const([0])
    out = overlay.paint(rgba, (2, 2, 3, 3), (0, 0, 0)).numpy()
    assert out[3, 3].tolist() == [0, 0, 0, 255] and out[0, 0].tolist() == [90, 90, 90, 0]


def test_unreadable_watermark_refused(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope.png")
    with pytest.raises(overlay.WatermarkError, match="cannot be read"):
        overlay.check(Overlays(watermark=Watermark(missing)))
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not an image at all")
    with pytest.raises(overlay.WatermarkError, match="cannot be read as an image"):
        overlay.check(Overlays(watermark=Watermark(str(junk))))
    with pytest.raises(ValueError, match="position"):
        overlay.check(Overlays(text=TextOverlay("x", position="middle")))


def test_watermark_kept_when_its_file_goes_away(mark: str, monkeypatch: pytest.MonkeyPatch) -> None:
    first = overlay.watermark_image(mark)
    monkeypatch.setattr(overlay, "RECHECK_SECONDS", 0.0)
    Path(mark).unlink()
    assert overlay.watermark_image(mark) is first  # no 5xx for a file removed while serving


@pytest.mark.parametrize("small", [True, False], ids=["numpy", "libvips"])
def test_add_blend_brightens_only_where_an_iipsrv_mark_is_drawn(tmp_path: Path, small: bool,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """iipsrv's watermarks are drawn on black with no alpha band: added, the black leaves the image as it
    is, the marks brighten it (clipped at 255), at the opacity."""
    path = tmp_path / "iipsrv-mark.tif"
    flat(20, 10, (0, 0, 0)).draw_rect([200, 100, 250], 5, 2, 6, 4, fill=True).tiffsave(str(path))
    if not small:
        monkeypatch.setattr(overlay, "SMALL_PIXELS", 0)
    base = flat(100, 80, (90, 90, 200))
    out = overlay.watermark(base, Watermark(str(path), opacity=0.5, blend="add"), 0, seed=7).numpy()
    diff = (out != base.numpy()).any(axis=2)
    assert diff.sum() == 6 * 4
    assert np.unique(out[diff], axis=0).tolist() == [[190, 140, 255]]  # 90 + 100, 90 + 50, 200 + 125 clipped


@pytest.mark.parametrize("blend", ["over", "add"])
@pytest.mark.parametrize("bands", [1, 3, 4])
def test_numpy_and_libvips_blends_agree(mark: str, bands: int, blend: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tiles are blended in numpy, larger outputs by libvips: the same pixels either way."""
    base = pattern(300, 200, bands=bands)
    wm = Watermark(mark, opacity=0.7, position="repeat", blend=blend)
    small = overlay.watermark(base, wm, 0, seed=5).numpy()
    monkeypatch.setattr(overlay, "SMALL_PIXELS", 0)
    large = overlay.watermark(base, wm, 0, seed=5).numpy()
    assert small.shape == large.shape and np.abs(small.astype(int) - large.astype(int)).max() <= 1
    assert (small != base.numpy()).any()
