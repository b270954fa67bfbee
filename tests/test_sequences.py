"""Image sequences (iipsrv 1.3): `Source.sequence` finds the files of a name's views, safely (glob
metacharacters are literal, nothing outside the root counts, the listing is bounded); the core describes
a sequence by its first view 000_090 and notices changed views; IIP `SDS=x,y` serves file XXX_YYY (a
tile of a view decodes to that view's pixels), OBJ lists the angles, and a view that is not there is a
404. Fixture sequences: tests/sequence_images.py."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from tileserver.app import create_app
from tileserver.core import TileService
from tileserver.errors import NotFound, TileServerError
from tileserver.models import Sequence
from tileserver.protocols.iip.grammar import parse, split_query
from tileserver.protocols.iip.obj import obj_reply
from tileserver.settings import Settings
from tileserver.sources.local import Source
from tileserver.sources.pyramid import PyramidReader

from .conftest import RGB_TIF, decode, mean_diff
from .sequence_images import HORIZONTAL, SEQ, SEQ_SIZE, SEQ_VIEWS, VERTICAL, member_name, view_pixels, write_view
from .stack_images import STACK_TIF

JPEG_NOISE = 6.0
OTHER_VIEW = 15.0
SEQUENCE = Sequence(stem="seq_pyr_", ext="tif", horizontal=HORIZONTAL, vertical=VERTICAL)


def touch(folder: Path, *names: str) -> None:
    for name in names:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(b"")


# -- Source.sequence: finding the views ----------------------------------------------------------------
def test_finds_the_fixture_sequence(image_root: Path) -> None:
    seq = Source(image_root).sequence(SEQ)
    assert seq == SEQUENCE
    assert Source(image_root).resolve(seq.member(10, 45)) == str(image_root / "seq_pyr_010_045.tif")


@pytest.mark.parametrize(
    ("files", "horizontal", "vertical"),
    [
        pytest.param(["s_pyr_000_090.tif"], (0,), (90,), id="first-view-only"),
        pytest.param(["s_pyr_000_090.tif", "s_pyr_350_090.tif", "s_pyr_1000_090.tif"], (0, 350, 1000), (90,),
                     id="wide-angles-sorted-numerically"),
        pytest.param(["s_pyr_000_090.tif", "s_pyr_5_090.tif", "s_pyr_0010_090.tif", "s_pyr_x10_090.tif"], (0,),
                     (90,), id="angles-not-as-1.3-writes-them"),
        pytest.param(["s_pyr_000_090.tif", "s_pyr_010_045.tif"], (0,), (90,), id="off-both-axes"),
        pytest.param(["s_pyr_000_090.tif", "s_pyr_010_090.jpg", "s_pyr_000_045.png"], (0,), (90,),
                     id="other-extension"),
        pytest.param(["s_pyr_000_090.tif", "s_pyr_010_090.tif.bak", "s_pyr_020_090.txt"], (0,), (90,),
                     id="not-images"),
        pytest.param(["s_pyr_000_090.tif", "s_pyr_010_090.tif/x"], (0,), (90,), id="folder-named-like-a-view"),
        pytest.param(["s_pyr_000_090.TIF", "s_pyr_000_030.TIF"], (0,), (30, 90), id="upper-case-extension"),
        pytest.param(["s_pyr_000_090.tif", "s_pyr_pyr_010_090.tif", "sx_pyr_020_090.tif"], (0,), (90,),
                     id="other-names"),
    ],
)
def test_views_are_the_files_on_each_axis(tmp_path: Path, files: list[str], horizontal: tuple[int, ...],
                                          vertical: tuple[int, ...]) -> None:
    touch(tmp_path, *files)
    seq = Source(tmp_path).sequence("s")
    assert (seq.horizontal, seq.vertical) == (horizontal, vertical)


@pytest.mark.parametrize(
    ("ident", "decoys"),
    [
        pytest.param("a[1]", ["a1_pyr_000_090.tif"], id="brackets"),
        pytest.param("a*", ["ab_pyr_000_090.tif", "a_pyr_000_090.tif"], id="star"),
        pytest.param("a?", ["ab_pyr_000_090.tif"], id="question-mark"),
        pytest.param("[!x]", ["b_pyr_000_090.tif"], id="negated-class"),
        pytest.param("**", ["ab_pyr_000_090.tif", "d/e_pyr_000_090.tif"], id="double-star"),
    ],
)
def test_glob_metacharacters_are_literal(tmp_path: Path, ident: str, decoys: list[str]) -> None:
    """1.3 globs the name unescaped; a name with `*` or `[...]` would find other names' files."""
    touch(tmp_path, *decoys, *(f"{d[:-len('_pyr_000_090.tif')]}_pyr_010_090.tif" for d in decoys))
    with pytest.raises(NotFound):
        Source(tmp_path).sequence(ident)
    touch(tmp_path, f"{ident}_pyr_000_090.tif")
    seq = Source(tmp_path).sequence(ident)
    assert seq == Sequence(f"{ident}_pyr_", "tif", (0,), (90,))


@pytest.fixture
def jail(tmp_path: Path) -> Path:
    """A root beside a folder outside it holding a whole sequence, reached by symlinks from inside."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    touch(outside, "s_pyr_000_090.tif", "s_pyr_010_090.tif")
    touch(root, "in_pyr_000_090.tif")
    os.symlink(outside / "s_pyr_000_090.tif", root / "link_pyr_000_090.tif")
    os.symlink(outside / "s_pyr_010_090.tif", root / "in_pyr_010_090.tif")
    os.symlink(outside, root / "out")
    return root


@pytest.mark.parametrize(
    "ident",
    [
        pytest.param("../outside/s", id="dotdot"),
        pytest.param("sub/../../outside/s", id="dotdot-inner"),
        pytest.param("/outside/s", id="absolute"),
        pytest.param("link", id="first-view-links-outside"),
        pytest.param("out/s", id="folder-links-outside"),
        pytest.param("s", id="only-outside"),
    ],
)
def test_nothing_outside_the_root(jail: Path, ident: str) -> None:
    with pytest.raises(NotFound) as exc:
        Source(jail).sequence(ident)
    assert str(jail.parent) not in exc.value.message


def test_views_linking_outside_are_not_listed(jail: Path) -> None:
    src = Source(jail)
    assert src.sequence("in").horizontal == (0,)
    with pytest.raises(NotFound):
        src.resolve(src.sequence("in").member(10, 90))


def test_first_view_in_two_formats_is_not_found(tmp_path: Path) -> None:
    touch(tmp_path, "s_pyr_000_090.tif", "s_pyr_000_090.jpg")
    with pytest.raises(NotFound, match="more than one format"):
        Source(tmp_path).sequence("s")


def test_listing_is_bounded(tmp_path: Path) -> None:
    touch(tmp_path, *(f"s_pyr_{x:03d}_090.tif" for x in range(6)))
    assert len(Source(tmp_path, max_sequence_files=6).sequence("s").horizontal) == 6
    with pytest.raises(TileServerError) as exc:
        Source(tmp_path, max_sequence_files=5).sequence("s")
    assert str(tmp_path) not in exc.value.message


@pytest.mark.parametrize(
    ("kwargs", "files", "ident", "member"),
    [
        pytest.param({"prefix": "img_"}, ["img_s_pyr_000_090.tif"], "s", "img_s_pyr_000_090.tif", id="prefix"),
        pytest.param({"suffix": ".v1"}, ["s_pyr_000_090.tif.v1"], "s", "s_pyr_000_090.tif.v1", id="suffix"),
        pytest.param({"pattern": "-v"}, ["s-v000_090.tif"], "s", "s-v000_090.tif", id="pattern"),
        pytest.param({"pattern": ""}, ["s000_090.tif"], "s", "s000_090.tif", id="empty-pattern"),
        pytest.param({}, ["d/s_pyr_000_090.tif"], "d/s", "d/s_pyr_000_090.tif", id="in-a-folder"),
        pytest.param({"prefix": "p_"}, ["d/p_s_pyr_000_090.tif"], "d/s", "d/p_s_pyr_000_090.tif",
                     id="prefix-in-a-folder"),
    ],
)
def test_members_are_ordinary_identifiers(tmp_path: Path, kwargs: dict[str, Any], files: list[str], ident: str,
                                          member: str) -> None:
    """A view's identifier resolves (prefix, suffix, traversal checks) to the view's file."""
    touch(tmp_path, *files)
    src = Source(tmp_path, **kwargs)
    assert src.resolve(src.sequence(ident).member(0, 90)) == str(tmp_path / member)


def test_unknown_name_scans_no_folder(image_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a first view (a few stats), no glob: a flood of unknown names costs no folder scans."""
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("globbed")

    monkeypatch.setattr("tileserver.sources.local.glob.iglob", refuse)
    with pytest.raises(NotFound):
        Source(image_root).sequence("nothing")


@pytest.mark.parametrize("ident", ["nothing", "seq_pyr_000", "se", RGB_TIF + "x"])
def test_not_a_sequence(image_root: Path, ident: str) -> None:
    with pytest.raises(NotFound) as exc:
        Source(image_root).sequence(ident)
    assert exc.value.message == f"image not found: {ident}"


# -- settings --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("env", "expected"),
    [
        pytest.param({}, "_pyr_", id="default"),
        pytest.param({"FILENAME_PATTERN": "_v_"}, "_v_", id="iipsrv"),
        pytest.param({"TILESERVER_FILENAME_PATTERN": "-", "FILENAME_PATTERN": "_v_"}, "-", id="ours-first"),
    ],
)
def test_filename_pattern_setting(monkeypatch: pytest.MonkeyPatch, env: dict[str, str], expected: str) -> None:
    for name in ("FILENAME_PATTERN", "TILESERVER_FILENAME_PATTERN"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert Settings().filename_pattern == expected


@pytest.mark.parametrize("pattern", ["a/b", "..\\", "x\x00"])
def test_filename_pattern_is_one_name(pattern: str) -> None:
    with pytest.raises(ValueError, match="filename_pattern"):
        Settings(filename_pattern=pattern)


# -- core: metadata of a sequence ------------------------------------------------------------------------
@pytest.fixture
async def service(tmp_path: Path, image_root: Path) -> AsyncIterator[TileService]:
    for x, y in ((0, 90), (10, 90)):
        shutil.copy(image_root / member_name(SEQ, x, y), tmp_path / member_name("s", x, y))
    svc = TileService(Settings(root=tmp_path, stat_interval=0))
    svc.start()
    yield svc
    svc.stop()


async def test_sequence_metadata_is_the_first_views(service: TileService, image_root: Path) -> None:
    meta = await service.info("s")
    first = await service.info("s_pyr_000_090.tif")
    assert (meta.ident, meta.views) == ("s", ((0, 10), (90,)))
    assert (meta.width, meta.height, meta.levels, meta.mtime) == (first.width, first.height, first.levels,
                                                                   first.mtime)
    assert (first.sequence, (await service.info("s")) is meta) == (None, True)  # cached while unchanged


async def test_new_view_is_seen(service: TileService, tmp_path: Path, image_root: Path) -> None:
    before = await service.info("s")
    shutil.copy(image_root / member_name(SEQ, 20, 90), tmp_path / member_name("s", 30, 90))
    after = await service.info("s")
    assert after.views == ((0, 10, 30), (90,)) and after is not before


async def test_changed_first_view_is_reloaded(service: TileService, tmp_path: Path, image_root: Path) -> None:
    before = await service.info("s")
    first = tmp_path / member_name("s", 0, 90)
    shutil.copy(image_root / RGB_TIF, first)
    os.utime(first, (before.mtime + 10, before.mtime + 10))
    after = await service.info("s")
    assert (after.width, after.views) == (1003, before.views)


async def test_sequence_gone(service: TileService, tmp_path: Path) -> None:
    await service.info("s")
    (tmp_path / member_name("s", 0, 90)).unlink()
    with pytest.raises(NotFound):
        await service.info("s")


async def test_a_file_of_the_name_wins(service: TileService, tmp_path: Path, image_root: Path) -> None:
    """As in 1.3, a name is a sequence only when it is no file."""
    shutil.copy(image_root / RGB_TIF, tmp_path / "s")
    assert (await service.info("s")).sequence is None


# -- IIP -------------------------------------------------------------------------------------------------
async def iip(client: httpx.AsyncClient, query: str) -> httpx.Response:
    return await client.get(f"/fcgi-bin/iipsrv.fcgi?{query}")


def expected(view: tuple[int, int], level_size: tuple[int, int], box: tuple[int, int, int, int]) -> Any:
    full = view_pixels(*SEQ_SIZE, SEQ_VIEWS.index(view))
    level = full if full.width == level_size[0] else full.thumbnail_image(level_size[0], height=level_size[1],
                                                                         size="force")
    return level.crop(*box)


@pytest.mark.parametrize("view", SEQ_VIEWS, ids=[f"{x}-{y}" for x, y in SEQ_VIEWS])
@pytest.mark.parametrize(
    ("jtl", "level_size", "box"),
    [
        pytest.param("2,0", (301, 203), (0, 0, 128, 128), id="stored"),
        pytest.param("2,5", (301, 203), (256, 128, 45, 75), id="edge"),
        pytest.param("0,0", (75, 50), (0, 0, 75, 50), id="smallest"),
    ],
)
async def test_jtl_of_a_view_is_that_file(client: httpx.AsyncClient, view: tuple[int, int], jtl: str,
                                          level_size: tuple[int, int], box: tuple[int, int, int, int]) -> None:
    r = await iip(client, f"FIF={SEQ}&SDS={view[0]},{view[1]}&JTL={jtl}")
    assert r.status_code == 200, r.text
    got = decode(r.content)
    assert mean_diff(got, expected(view, level_size, box)) < JPEG_NOISE
    for other in set(SEQ_VIEWS) - {view}:
        assert mean_diff(got, expected(other, level_size, box)) > OTHER_VIEW


@pytest.mark.parametrize(
    ("sds", "view"),
    [pytest.param("", (0, 90), id="no-sds"), pytest.param("SDS=0&", (0, 0), id="x-alone-is-y-0"),
     pytest.param("SDS=0,45&", (0, 45), id="vertical")],
)
async def test_cvt_of_a_view(client: httpx.AsyncClient, sds: str, view: tuple[int, int]) -> None:
    r = await iip(client, f"FIF={SEQ}&{sds}RGN=0.5,0.5,0.5,0.5&CVT=png")
    assert r.status_code == 200, r.text
    got = decode(r.content)
    assert (got.width, got.height) == (150, 101)
    assert mean_diff(got, expected(view, SEQ_SIZE, (151, 102, 150, 101))) < JPEG_NOISE


async def test_til_and_etags_differ_per_view(client: httpx.AsyncClient) -> None:
    tils = [await iip(client, f"FIF={SEQ}&SDS={x},90&TIL=2,0-1") for x in HORIZONTAL]
    tiles = [await iip(client, f"FIF={SEQ}&SDS={x},90&JTL=2,0") for x in HORIZONTAL]
    for responses in (tils, tiles):
        assert all(r.status_code == 200 for r in responses)
        assert len({r.content for r in responses}) == len({r.headers["etag"] for r in responses}) == 3


@pytest.mark.parametrize(
    "query",
    [
        pytest.param(f"FIF={SEQ}&SDS=30,90&JTL=0,0", id="missing-horizontal"),
        pytest.param(f"FIF={SEQ}&SDS=0,30&JTL=0,0", id="missing-vertical"),
        pytest.param(f"FIF={SEQ}&SDS=10&JTL=0,0", id="x-alone-means-y-0"),
        pytest.param(f"FIF={SEQ}&SDS=20,45&CVT=jpeg", id="cvt"),
        pytest.param(f"FIF={SEQ}&SDS=20,45&TIL=0,0-0", id="til"),
        pytest.param(f"FIF={SEQ}&SDS=10,90&JTL=3,0", id="resolution-past-the-view"),
        pytest.param("FIF=noseq&JTL=0,0", id="no-sequence"),
        pytest.param("FIF=noseq&OBJ=Horizontal-views", id="no-sequence-obj"),
    ],
)
async def test_missing_is_404(client: httpx.AsyncClient, image_root: Path, query: str) -> None:
    r = await iip(client, query)
    assert r.status_code == 404
    assert str(image_root) not in r.text


async def test_negative_view_is_malformed(client: httpx.AsyncClient) -> None:
    assert (await iip(client, f"FIF={SEQ}&SDS=-10,90&JTL=0,0")).status_code == 400


@pytest.mark.parametrize(
    ("ident", "expected_body"),
    [
        pytest.param(SEQ, b"Horizontal-views:0 10 20\r\nVertical-views:0 45 90\r\n", id="sequence"),
        pytest.param(STACK_TIF, b"Horizontal-views:0 1 2\r\nVertical-views:90\r\n", id="stack"),
        pytest.param(RGB_TIF, b"Horizontal-views:0\r\nVertical-views:90\r\n", id="one-image"),
        pytest.param(member_name(SEQ, 10, 90), b"Horizontal-views:0\r\nVertical-views:90\r\n", id="a-view-alone"),
    ],
)
async def test_obj_views(client: httpx.AsyncClient, ident: str, expected_body: bytes) -> None:
    r = await iip(client, f"FIF={ident}&OBJ=Horizontal-views&OBJ=Vertical-views")
    assert (r.status_code, r.content) == (200, expected_body)


def test_obj_views_pure(image_root: Path) -> None:
    meta = PyramidReader().info(str(image_root / member_name(SEQ, 0, 90)), SEQ)
    seq_meta = replace(meta, sequence=Sequence("seq_pyr_", "tif", (0, 5, 355), (30, 90)))
    query = "FIF=seq&OBJ=Vertical-views&OBJ=Horizontal-views"
    assert obj_reply(seq_meta, parse(split_query(query), query)).body == (b"Vertical-views:30 90\r\n"
                                                                         b"Horizontal-views:0 5 355\r\n")


# -- a sequence that changes, a sequence whose views differ in size ------------------------------------------
@pytest.fixture
async def mixed(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    """`m`: view 0,90 is 301 x 203, view 10,90 is 140 x 90 (one tile); files checked on every request."""
    write_view(tmp_path / member_name("m", 0, 90), *SEQ_SIZE, 0)
    write_view(tmp_path / member_name("m", 10, 90), 140, 90, 1)
    application = create_app(Settings(root=tmp_path, stat_interval=0))
    async with application.router.lifespan_context(application), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=application), base_url="http://testserver") as c:
        yield c


async def test_added_view_changes_the_reply_and_etag(mixed: httpx.AsyncClient, tmp_path: Path) -> None:
    """Asked twice first, so the reply is remembered (documents, replay): a new file is still seen."""
    query = "FIF=m&OBJ=Horizontal-views"
    before = [await iip(mixed, query) for _ in range(2)]
    assert before[0].content == before[1].content == b"Horizontal-views:0 10\r\n"
    shutil.copy(tmp_path / member_name("m", 10, 90), tmp_path / member_name("m", 20, 90))
    after = await iip(mixed, query)
    assert after.content == b"Horizontal-views:0 10 20\r\n"
    assert after.headers["etag"] != before[0].headers["etag"]
    stale = {"If-None-Match": before[0].headers["etag"]}
    assert (await mixed.get(f"/fcgi-bin/iipsrv.fcgi?{query}", headers=stale)).status_code == 200


async def test_removed_view_is_404(mixed: httpx.AsyncClient, tmp_path: Path) -> None:
    query = "FIF=m&SDS=10,90&JTL=0,0"
    assert [(await iip(mixed, query)).status_code for _ in range(2)] == [200, 200]
    (tmp_path / member_name("m", 10, 90)).unlink()
    assert (await iip(mixed, query)).status_code == 404


async def test_each_view_has_its_own_grid(mixed: httpx.AsyncClient) -> None:
    """1.3 checks tile numbers against the first view; we check them against the view asked for."""
    r = await iip(mixed, "FIF=m&SDS=10,90&JTL=1,1")
    got = decode(r.content)
    assert (r.status_code, got.width, got.height) == (200, 12, 90)
    assert mean_diff(got, view_pixels(140, 90, 1).crop(128, 0, 12, 90)) < JPEG_NOISE
    assert (await iip(mixed, "FIF=m&SDS=10,90&JTL=1,2")).status_code == 404
    assert (await iip(mixed, "FIF=m&SDS=0,90&JTL=2,5")).status_code == 200
    assert (await iip(mixed, "FIF=m&OBJ=Max-size")).content == b"Max-size:301 203\r\n"
