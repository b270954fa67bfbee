"""Identifier resolution beyond the image root (sources/resolve.py): templates per prefix and a Python
hook, always confined to the configured roots."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from tileserver.core import TileService
from tileserver.errors import Forbidden, NotFound, TileServerError
from tileserver.settings import Settings
from tileserver.sources.resolve import Resolver, template_root

from ..conftest import RGB_TIF, decode, pattern, served


@pytest.fixture(scope="module")
def roots(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("resolve")
    out = {name: base / name for name in ("images", "archive", "extra", "outside")}
    for folder in out.values():
        folder.mkdir()
    pattern(301, 203).tiffsave(str(out["images"] / "a.tif"), tile=True, pyramid=True, compression="jpeg")
    pattern(257, 190, seed=2).tiffsave(str(out["archive"] / "b.tif"), tile=True, pyramid=True, compression="deflate")
    pattern(120, 99, seed=3).tiffsave(str(out["extra"] / "c.tif"))
    pattern(64, 64, seed=4).tiffsave(str(out["outside"] / "secret.tif"))
    (out["archive"] / "link.tif").symlink_to(out["outside"] / "secret.tif")
    hook = base / "resolver_hook_module.py"
    hook.write_text(f'''
from tileserver.errors import Forbidden
ROOTS = {{"images": {str(out["images"])!r}, "extra": {str(out["extra"])!r}, "outside": {str(out["outside"])!r}}}

def resolve(ident):
    if ident == "private":
        raise Forbidden("not for you")
    if ident == "broken":
        raise RuntimeError("bug in the hook")
    if ident == "number":
        return 42
    if ident.startswith("hook-"):
        where, _, name = ident[5:].partition("-")
        return ROOTS[where] + "/" + name
    return None
''')
    sys.path.insert(0, str(base))
    out["base"] = base
    yield out
    sys.path.remove(str(base))
    sys.modules.pop("resolver_hook_module", None)


def service(roots: dict[str, Path], **kw: Any) -> TileService:
    return TileService(Settings(root=roots["images"], derive_dir=None, **kw))


@pytest.mark.parametrize(("template", "root"), [
    ("s3://bucket/scans/{id}.svs", "s3://bucket/scans/"),
    ("/data/{id}", "/data/"),
    ("https://h/x/pre{id}.tif", "https://h/x/"),
    ("/data/a/{ident}/{id}", "/data/a/"),
])
def test_template_root(template: str, root: str) -> None:
    assert template_root(template) == root


@pytest.mark.parametrize("resolvers", [{"x/": "relative/{id}"}, {"x/": "/data/no-placeholder"}, {"": "/d/{id}"}])
def test_bad_templates_are_refused_at_start(resolvers: dict[str, str]) -> None:
    with pytest.raises(ValidationError):
        Settings(resolvers=resolvers)


def test_template_maps_a_prefix_to_another_root(roots: dict[str, Path]) -> None:
    s = service(roots, resolvers={"arch/": str(roots["archive"]) + "/{id}.tif"})
    assert isinstance(s.source, Resolver)
    assert s.source.resolve("arch/b") == str((roots["archive"] / "b.tif").resolve())
    assert s.source.resolve("a.tif") == str((roots["images"] / "a.tif").resolve())  # the image root after
    with pytest.raises(NotFound):
        s.source.resolve("arch/missing")


@pytest.mark.parametrize("ident", ["arch/link", "arch/../outside/secret", "arch/./b", "arch/", "arch//b"])
def test_template_locations_stay_under_its_root(roots: dict[str, Path], ident: str) -> None:
    s = service(roots, resolvers={"arch/": str(roots["archive"]) + "/{id}.tif"})
    with pytest.raises(NotFound):
        s.source.resolve(ident)


def test_longest_prefix_wins(roots: dict[str, Path]) -> None:
    s = service(roots, resolvers={"a/": str(roots["images"]) + "/{id}.tif",
                                  "a/b/": str(roots["archive"]) + "/{id}.tif"})
    assert s.source.resolve("a/b/b") == str((roots["archive"] / "b.tif").resolve())


def test_hook_answers_first_and_is_confined(roots: dict[str, Path]) -> None:
    s = service(roots, resolver_hook="resolver_hook_module:resolve", resolver_roots=[str(roots["extra"])])
    assert s.source.resolve("hook-extra-c.tif") == str((roots["extra"] / "c.tif").resolve())
    assert s.source.resolve("hook-images-a.tif") == str((roots["images"] / "a.tif").resolve())
    assert s.source.resolve("a.tif") == str((roots["images"] / "a.tif").resolve())  # None: the image root
    with pytest.raises(NotFound):
        s.source.resolve("hook-outside-secret.tif")  # not a configured root
    with pytest.raises(Forbidden):
        s.source.resolve("private")
    for ident in ("broken", "number"):
        with pytest.raises(TileServerError) as info:
            s.source.resolve(ident)
        assert type(info.value) is TileServerError and "hook" not in info.value.message.lower()


def test_hook_checks_identifiers_first(roots: dict[str, Path]) -> None:
    s = service(roots, resolver_hook="resolver_hook_module:resolve")
    with pytest.raises(NotFound):
        s.source.resolve("../outside/secret.tif")


@pytest.mark.parametrize("spec", ["no_colon", "resolver_hook_module:missing", "no_such_module_here:f"])
def test_bad_hook_is_a_start_error(roots: dict[str, Path], spec: str) -> None:
    with pytest.raises((ValueError, ImportError)):
        service(roots, resolver_hook=spec)


async def test_every_protocol_reads_through_a_template(roots: dict[str, Path]) -> None:
    settings = Settings(root=roots["images"], derive_dir=None,
                        resolvers={"arch/": str(roots["archive"]) + "/{id}.tif"})
    async with served(settings) as client:
        info = (await client.get("/iiif/3/arch%2Fb/info.json")).json()
        assert (info["width"], info["height"]) == (257, 190)
        for url in ("/iiif/3/arch%2Fb/full/100,/0/default.png", "/iiif/2/arch%2Fb/full/100,/0/default.png",
                    "/fcgi-bin/iipsrv.fcgi?FIF=arch/b&WID=100&CVT=png", "/deepzoom/arch/b_files/0/0_0.jpg",
                    "/zoomify/arch/b/TileGroup0/0-0-0.jpg"):
            r = await client.get(url)
            assert r.status_code == 200, url
            img = decode(r.content)
            assert img.width >= 1
        assert (await client.get("/iiif/3/arch%2Flink/info.json")).status_code == 404
        assert (await client.get(f"/iiif/3/{RGB_TIF}/info.json")).status_code == 404  # not in this root
