"""Imports point one way (STYLE.md Part 5): pages -> protocols -> web -> core -> imaging -> sources, with the
plain values and settings at the bottom. A module may import its own layer or any layer below, never above."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "tileserver"
LAYERS = ["models", "errors", "settings", "metrics", "levels", "cache", "sources", "imaging", "admission", "access",
          "core", "web", "protocols", "pages", "warmup", "app", "cli", "__main__", "__init__"]


def layer(module: str) -> int:
    """The layer of `tileserver.<first part>...`."""
    return LAYERS.index(module.split(".")[1] if "." in module else "__init__")


def imports(path: Path) -> list[str]:
    parts = ["tileserver", *path.relative_to(SRC).with_suffix("").parts]
    package = parts if parts[-1] == "__init__" else parts[:-1]
    package = [p for p in package if p != "__init__"]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            target = ".".join([*base, *([node.module] if node.module else [])])
            names = [f"{target}.{a.name}" for a in node.names] if not node.module else [target]
            found += [n for n in names if n.startswith("tileserver.") and n.split(".")[1] in LAYERS]
        elif isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.startswith("tileserver.")]
    return found


MODULES = sorted(p for p in SRC.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=[str(p.relative_to(SRC)) for p in MODULES])
def test_imports_point_down(path: Path) -> None:
    own = ".".join(["tileserver", *path.relative_to(SRC).with_suffix("").parts])
    upward = [m for m in imports(path) if layer(m) > layer(own)]
    assert not upward, f"{own} imports a higher layer: {upward}"


def test_the_check_sees_an_upward_import() -> None:
    assert layer("tileserver.pages.index") > layer("tileserver.sources.pyramid")
    assert "tileserver.web.http" in imports(SRC / "protocols" / "zoomify.py")
