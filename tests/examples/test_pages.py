"""The example HTML pages without a browser (the browser tests run them): each says in one line
what it shows, loads only the pinned viewer packages with the same SRI hashes as the built-in
pages, and uses only URL forms this server answers."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tileserver.pages.viewers import ASSETS, PACKAGES

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
PAGES = sorted(p.name for p in EXAMPLES.glob("*.html"))
LOAD = re.compile(r'load\("([^"]+)", "([^"]+)", "([^"]+)", "([^"]+)"\)')


def test_every_example_is_listed_in_the_readme() -> None:
    readme = (EXAMPLES / "README.md").read_text()
    for name in [*PAGES, "fetch_tiles.py", "make_pyramid.py"]:
        assert f"`{name}`" in readme, name


@pytest.mark.parametrize("name", PAGES)
def test_page_says_what_it_shows(name: str) -> None:
    lines = (EXAMPLES / name).read_text().splitlines()
    assert lines[0] == "<!DOCTYPE html>"
    assert re.fullmatch(r"<!-- Shows: .{20,200} -->", lines[1]), lines[1]


@pytest.mark.parametrize("name", PAGES)
def test_page_loads_pinned_packages_with_their_hashes(name: str) -> None:
    known = {(a.package, PACKAGES[a.package], a.path): a.integrity for a in ASSETS.values()}
    for package, version, path, integrity in LOAD.findall((EXAMPLES / name).read_text()):
        assert known.get((package, version, path)) == integrity, (package, path)
