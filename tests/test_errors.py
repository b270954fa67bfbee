"""Error answers repeat at most a short prefix of the client's input, in every protocol (errors.echo,
errors.shorten; IIP's `Error/...` body), and still say what was wrong."""

from __future__ import annotations

import httpx
import pytest

from tileserver.errors import ECHO_LIMIT, MESSAGE_LIMIT, echo, shorten

from .conftest import RGB_TIF

LONG = "7" * 5000  # under the default max_url_bytes: it reaches the protocol


@pytest.mark.parametrize(
    ("value", "limit", "expected"),
    [
        pytest.param("abc", 4, "abc", id="short"),
        pytest.param("abcd", 4, "abcd", id="at-limit"),
        pytest.param("abcde", 4, "abcd...", id="cut"),
    ],
)
def test_echo(value: str, limit: int, expected: str) -> None:
    assert echo(value, limit) == expected


def test_shorten_cuts_each_long_word_and_keeps_the_rest() -> None:
    message = f"invalid region: {'x' * 1000!r} (expected x,y,w,h)"
    short = shorten(message)
    assert short == f"invalid region: '{'x' * (ECHO_LIMIT - 1)}... (expected x,y,w,h)"


def test_shorten_bounds_many_short_words() -> None:
    assert len(shorten("ab " * 1000)) == MESSAGE_LIMIT + 3


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "says"),
    [
        pytest.param("GET", f"/iip?FIF={RGB_TIF}&JTL={LONG}", None, 400, "Error/", id="iip-arg"),
        pytest.param("GET", f"/iip?FIF={RGB_TIF}&Z{LONG}=1", None, 400, "Error/", id="iip-command"),
        pytest.param("GET", f"/iip?FIF={RGB_TIF}&OBJ=Z{LONG}", None, 400, "Error/", id="iip-object"),
        pytest.param("POST", "/iip", f"FIF={RGB_TIF}&JTL={LONG * 10}", 400, "Error/", id="iip-post"),
        pytest.param("GET", f"/iip?FIF={'a' * 1000}.tif&OBJ=Max-size", None, 404, "not found", id="iip-fif"),
        pytest.param("GET", f"/iip?FIF={RGB_TIF}&CNV=[{LONG}]&WID=9&CVT=jpeg", None, 400, "Error/", id="iip-cnv"),
        pytest.param("GET", f"/iiif/3/{RGB_TIF}/{LONG}/max/0/default.jpg", None, 400, "invalid region", id="iiif"),
        pytest.param("GET", f"/iiif/3/{RGB_TIF}/full/{LONG}/0/default.jpg", None, 400, "invalid size",
                     id="iiif-size"),
        pytest.param("GET", f"/iiif/2/{'a' * 1000}.tif/info.json", None, 404, "not found", id="iiif-ident"),
        pytest.param("GET", f"/iip?IIIF={RGB_TIF}/full/max/{LONG}/default.jpg", None, 400, "invalid rotation",
                     id="iip-iiif"),
        pytest.param("GET", f"/deepzoom/{RGB_TIF}_files/{LONG}", None, 400, "DeepZoom", id="deepzoom"),
        pytest.param("GET", f"/zoomify/{RGB_TIF}/{LONG}", None, 400, "Zoomify", id="zoomify"),
        pytest.param("GET", f"/iiif/manifests/{'a' * 1000}.tif.json", None, 404, "not found", id="manifest"),
        pytest.param("GET", f"/viewer/{'a' * 1000}.tif", None, 404, "not found", id="viewer"),
    ],
)
async def test_errors_echo_a_short_prefix(client: httpx.AsyncClient, method: str, path: str, body: str | None,
                                          status: int, says: str) -> None:
    r = await client.request(method, path, content=body,
                             headers={"Content-Type": "application/x-www-form-urlencoded"} if body else {})
    assert r.status_code == status
    assert says in r.text
    assert len(r.content) <= MESSAGE_LIMIT + 10
    assert "7" * (ECHO_LIMIT + 1) not in r.text and "a" * (ECHO_LIMIT + 1) not in r.text


async def test_iip_error_body_keeps_its_syntax(client: httpx.AsyncClient) -> None:
    r = await client.get(f"/iip?FIF={RGB_TIF}&JTL={LONG}")
    arg = f"JTL={LONG}"[:ECHO_LIMIT] + "..."
    text = f"2 1 {arg}"
    assert r.text == f"Error/{len(text)}:{text}\r\n"
