"""The identifier selectors every format shares (`;page=`, `;associated=`, `;c=`), and the registry's choice
of format by content."""

from __future__ import annotations

from pathlib import Path

import pytest
import pyvips

from tileserver.core import TileService
from tileserver.errors import BadRequest, NotFound, SourceError
from tileserver.settings import Settings
from tileserver.sources.base import Selector, split_selector
from tileserver.sources.pyramid import PyramidReader, PyvipsFormat
from tileserver.sources.registry import Registry


@pytest.mark.parametrize(("ident", "expected"), [
    ("a.tif", None),
    ("a;b.tif", None),
    ("dir/a.tif;page=2", ("dir/a.tif", Selector(page=2))),
    ("a.svs;associated=label", ("a.svs", Selector(associated="label"))),
    ("a;b.tif;page=0", ("a;b.tif", Selector(page=0))),
    ("a.ome.tif;c=1:0-4095:ff0000,2", ("a.ome.tif", Selector(channels="1:0-4095:ff0000,2"))),
    ("a.tif;page=1;c=2", ("a.tif", Selector(page=1, channels="2"))),
])
def test_selectors_split(ident: str, expected: tuple[str, Selector] | None) -> None:
    assert split_selector(ident) == expected


@pytest.mark.parametrize("ident", ["a.tif;pages=1", "a.tif;page=x", "a.tif;page=-1", "a.tif;page=1;page=2",
                                   "a.svs;associated=../x", "a.tif;associated="])
def test_bad_selectors_are_a_400(ident: str) -> None:
    with pytest.raises(BadRequest):
        split_selector(ident)


class Claims:
    name = "claims"

    def __init__(self, magic: bytes) -> None:
        self.magic = magic
        self.opened: list[str] = []

    def probe(self, path: str, head: bytes) -> bool:
        return head.startswith(self.magic)

    def open(self, path: str, ident: str) -> object:
        self.opened.append(ident)
        return self


def test_registry_picks_by_content_not_by_name(tmp_path: Path) -> None:
    (tmp_path / "looks.tif").write_bytes(b"MAGIC and more")
    first = Claims(b"MAGIC")
    registry = Registry([first, PyvipsFormat(PyramidReader())])  # type: ignore[list-item]
    assert registry.open(str(tmp_path / "looks.tif"), "looks.tif") is first
    (tmp_path / "other.tif").write_bytes(b"not an image")
    with pytest.raises(SourceError):
        registry.open(str(tmp_path / "other.tif"), "other.tif")  # the last format (libvips) refuses it: 415
    with pytest.raises(NotFound):
        registry.open(str(tmp_path / "gone.tif"), "gone.tif")
    assert first.opened == ["looks.tif"]


async def test_a_selector_on_an_image_without_pages_is_a_404(tmp_path: Path) -> None:
    pyvips.Image.black(40, 30).tiffsave(str(tmp_path / "one.tif"))
    svc = TileService(Settings(root=tmp_path))
    with pytest.raises(NotFound):
        await svc.info("one.tif;page=3")
    with pytest.raises(NotFound):
        await svc.info("one.tif;associated=label")
    with pytest.raises(NotFound):
        await svc.info("gone.tif;page=0")
    with pytest.raises(BadRequest):
        await svc.info("one.tif;bogus=1")
    assert (await svc.info("one.tif")).width == 40
