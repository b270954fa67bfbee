"""IIIF URL handling: raw-path splitting, decoding once, the iipsrv query form, and the public base."""

from __future__ import annotations

import pytest
from starlette.datastructures import Headers

from tileserver.errors import BadRequest, NotFound
from tileserver.protocols.iiif.urls import (
    Target,
    decode,
    path_target,
    public_base,
    query_target,
    raw_query_value,
    raw_tail,
    scope_base,
)

PARAMS = ("full", "max", "0", "default.jpg")


@pytest.mark.parametrize(
    ("raw_path", "root", "tail"),
    [
        pytest.param(b"/iiif/3/a%2Fb/info.json", "", ["a%2Fb", "info.json"], id="encoded-slash-kept"),
        pytest.param(b"/iiif/3/a/b/info.json", "", ["a", "b", "info.json"], id="raw-slash"),
        pytest.param(b"/tiles/iiif/3/x/full/max/0/default.jpg", "/tiles", ["x", "full", "max", "0", "default.jpg"],
                     id="root-path"),
        pytest.param(b"/iiif/3/x/info.json", "/tiles", ["x", "info.json"], id="root-path-stripped-by-proxy"),
    ],
)
def test_raw_tail(raw_path: bytes, root: str, tail: list[str]) -> None:
    scope = {"raw_path": raw_path, "root_path": root, "path": raw_path.decode()}
    assert raw_tail(scope, "/iiif/3") == tail


@pytest.mark.parametrize(
    ("segments", "target"),
    [
        pytest.param(["a%2Fb"], Target("redirect", "a/b"), id="base"),
        pytest.param(["a%2Fb", ""], Target("redirect", "a/b"), id="base-trailing-slash"),
        pytest.param(["a%252Fb", "info.json"], Target("info", "a%2Fb"), id="decoded-once"),
        pytest.param(["x", *PARAMS], Target("image", "x", PARAMS), id="image"),
    ],
)
def test_path_target(segments: list[str], target: Target) -> None:
    assert path_target(segments) == target


@pytest.mark.parametrize("segments", [[], [""], ["a", "b"], ["a", "b", "info.json"], ["a", "b", "c", "d", "e", "f"]])
def test_path_target_not_found(segments: list[str]) -> None:
    with pytest.raises(NotFound):
        path_target(segments)


def test_decode_rejects_invalid_utf8() -> None:
    assert decode("caf%C3%A9") == "café"
    with pytest.raises(BadRequest):
        decode("%FF")


@pytest.mark.parametrize(
    ("raw", "target"),
    [
        pytest.param("sub/a.tif/info.json", Target("info", "sub/a.tif"), id="info-raw-slash"),
        pytest.param("/a.tif/info.json", Target("info", "a.tif"), id="leading-slash"),
        pytest.param("sub%2Fa.tif/info.json", Target("info", "sub/a.tif"), id="info-encoded-slash"),
        pytest.param("sub/a.tif/full/max/0/default.jpg", Target("image", "sub/a.tif", PARAMS), id="image"),
        pytest.param("sub/a.tif", Target("redirect", "sub/a.tif"), id="base"),
        pytest.param("a.tif/", Target("redirect", "a.tif"), id="base-trailing-slash"),
    ],
)
def test_query_target(raw: str, target: Target) -> None:
    assert query_target(raw) == target


def test_raw_query_value() -> None:
    assert raw_query_value("FOO=1&iiif=a%2Fb/info.json", "iiif") == "a%2Fb/info.json"
    assert raw_query_value("IIIF=x", "iiif") == "x"
    assert raw_query_value("FIF=x", "iiif") is None


@pytest.mark.parametrize(
    ("headers", "configured", "base"),
    [
        pytest.param({"host": "h:8000"}, "", "http://h:8000/r", id="host"),
        pytest.param({"host": "h", "x-forwarded-proto": "https, http", "x-forwarded-host": "p.org, q"}, "",
                     "https://p.org/r", id="x-forwarded-first-hop"),
        pytest.param({"host": "h", "forwarded": "proto=https;host=[::1]:8443", "x-forwarded-host": "no"}, "",
                     "https://[::1]:8443/r", id="forwarded-wins"),
        pytest.param({"host": "h", "x-forwarded-host": "a b"}, "", "http://h/r", id="bad-host-ignored"),
        pytest.param({"host": "h"}, "https://pub.org/base/", "https://pub.org/base", id="configured"),
    ],
)
def test_public_base(headers: dict[str, str], configured: str, base: str) -> None:
    assert public_base("http", headers, "/r", configured) == base


@pytest.mark.parametrize(
    "fields",
    [
        pytest.param([(b"host", b"h:8000")], id="host"),
        pytest.param([(b"host", b"h"), (b"x-forwarded-proto", b"https"), (b"x-forwarded-host", b"p.org")], id="xf"),
        pytest.param([(b"host", b"h"), (b"forwarded", b"proto=https;host=q"), (b"forwarded", b"host=r")], id="twice"),
        pytest.param([(b"accept", b"*/*"), (b"host", b"a"), (b"host", b"b")], id="first-host"),
        pytest.param([], id="no-host"),
    ],
)
@pytest.mark.parametrize("configured", ["", "https://pub.org/base/"])
def test_scope_base_is_public_base(fields: list[tuple[bytes, bytes]], configured: str) -> None:
    """The memoized base of a scope is `public_base` of its headers as Starlette reads them (the first of each)."""
    scope = {"type": "http", "scheme": "http", "root_path": "/r", "headers": fields}
    for _ in range(2):  # made, then remembered
        assert scope_base(scope, configured) == public_base("http", Headers(scope=scope), "/r", configured)
