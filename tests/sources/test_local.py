from __future__ import annotations

from pathlib import Path

import pytest

from tileserver.errors import BadRequest, NotFound, SourceError
from tileserver.sources.local import Source

from ..conftest import PLAIN_JPG, RGB_TIF, SUBIFD_TIF


def test_resolves_inside_root(image_root: Path) -> None:
    src = Source(image_root)
    assert src.resolve(RGB_TIF) == str((image_root / RGB_TIF).resolve())
    assert src.resolve(SUBIFD_TIF).endswith(SUBIFD_TIF)


@pytest.mark.parametrize(
    "ident",
    [
        pytest.param("../outside/secret.tif", id="dotdot"),
        pytest.param("sub/../../outside/secret.tif", id="dotdot-inner"),
        pytest.param("/etc/passwd", id="absolute"),
        pytest.param("escape.tif", id="symlink-out"),
        pytest.param("nope.tif", id="missing"),
        pytest.param("sub", id="folder"),
        pytest.param("./" + RGB_TIF, id="dot-segment"),
        pytest.param("sub//rgba-300x200.png", id="empty-segment"),
    ],
)
def test_refuses_outside_or_missing(image_root: Path, ident: str) -> None:
    with pytest.raises(NotFound) as exc:
        Source(image_root).resolve(ident)
    assert str(image_root) not in exc.value.message


@pytest.mark.parametrize(
    "ident",
    [pytest.param("a\x00b.tif", id="nul"), pytest.param("a\\b.tif", id="backslash"),
     pytest.param("x" * 2000, id="too-long"), pytest.param("", id="empty")],
)
def test_rejects_malformed(image_root: Path, ident: str) -> None:
    with pytest.raises(BadRequest):
        Source(image_root).resolve(ident)


def test_prefix_and_suffix(image_root: Path) -> None:
    src = Source(image_root, prefix="rgb-", suffix=".jpg")
    assert src.resolve("640x481").endswith(PLAIN_JPG)


def test_listing_is_sorted_and_skips_non_images(image_root: Path) -> None:
    names = Source(image_root).listing()
    assert names == sorted(names)
    assert RGB_TIF in names and SUBIFD_TIF in names
    assert "escape.tif" in names  # listed, but resolving it is refused


@pytest.mark.parametrize(("name", "error"), [("folder.tif", SourceError), ("pipe.jpg", SourceError),
                                              ("folder", NotFound), ("missing.tif", NotFound)])
def test_something_not_a_file_named_like_an_image(tmp_path: Path, name: str, error: type[Exception]) -> None:
    """A folder or a pipe named like an image is there but is no image file: a 415 (never opened: a pipe
    would block the reader); a folder without an image's name, like any missing name, is a 404."""
    import os

    (tmp_path / "folder.tif").mkdir()
    (tmp_path / "folder").mkdir()
    os.mkfifo(tmp_path / "pipe.jpg")
    with pytest.raises(error):
        Source(tmp_path).resolve(name)
