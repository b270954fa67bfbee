"""Forwarded headers count only from trusted proxies (web/proxies.py): the ids of info.json and
manifests follow `X-Forwarded-*`/`Forwarded` from a trusted peer and ignore them from any other, also
for a URL that replay has recorded; a trusted peer's `X-Forwarded-For`/`-Proto` become the scope's
client and scheme."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from tileserver.app import create_app
from tileserver.settings import Settings
from tileserver.web.proxies import TrustedProxies, TrustedProxyMiddleware, host_of

from ..conftest import RGB_TIF

FORGED = {"X-Forwarded-Host": "evil.example", "X-Forwarded-Proto": "https"}
INFO = f"/iiif/3/{RGB_TIF}/info.json"


@pytest.mark.parametrize(
    ("entries", "host", "trusted"),
    [
        pytest.param(("127.0.0.1", "::1"), "127.0.0.1", True, id="default-v4"),
        pytest.param(("127.0.0.1", "::1"), "::1", True, id="default-v6"),
        pytest.param(("127.0.0.1", "::1"), "0:0:0:0:0:0:0:1", True, id="v6-spelled-out"),
        pytest.param(("127.0.0.1", "::1"), "127.0.0.2", False, id="other-loopback"),
        pytest.param(("127.0.0.1", "::1"), "203.0.113.9", False, id="remote"),
        pytest.param(("10.0.0.0/8",), "10.20.30.40", True, id="in-network"),
        pytest.param(("10.0.0.0/8",), "11.0.0.1", False, id="outside-network"),
        pytest.param(("fd00::/8",), "fd12::5", True, id="v6-network"),
        pytest.param(("*",), "203.0.113.9", True, id="everyone"),
        pytest.param(("*",), "testclient", True, id="everyone-even-names"),
        pytest.param((), "127.0.0.1", False, id="nobody"),
        pytest.param(("127.0.0.1",), "testclient", False, id="a-name-is-no-address"),
        pytest.param(("127.0.0.1",), "", False, id="empty"),
    ],
)
def test_trusted_proxies(entries: tuple[str, ...], host: str, trusted: bool) -> None:
    assert (host in TrustedProxies(entries)) is trusted


@pytest.mark.parametrize(
    ("entries", "chain", "client"),
    [
        pytest.param(("127.0.0.1",), "203.0.113.9", "203.0.113.9", id="one-hop"),
        pytest.param(("127.0.0.1", "10.0.0.0/8"), "198.51.100.1, 203.0.113.9, 10.0.0.2", "203.0.113.9",
                     id="last-untrusted-hop"),
        pytest.param(("127.0.0.1", "10.0.0.0/8"), "10.0.0.3, 10.0.0.2", "10.0.0.3", id="all-trusted"),
        pytest.param(("*",), "198.51.100.1, 203.0.113.9", "198.51.100.1", id="everyone-first"),
        pytest.param(("127.0.0.1",), "[2001:db8::1]:443, 203.0.113.9:80", "203.0.113.9", id="ports"),
        pytest.param(("127.0.0.1",), " , ", None, id="empty"),
    ],
)
def test_client_of(entries: tuple[str, ...], chain: str, client: str | None) -> None:
    assert TrustedProxies(entries).client_of(chain) == client


@pytest.mark.parametrize(("hop", "host"), [("1.2.3.4", "1.2.3.4"), ("1.2.3.4:80", "1.2.3.4"), ("[::1]:80", "::1"),
                                           ("::1", "::1"), (" 2001:db8::1 ", "2001:db8::1")])
def test_host_of(hop: str, host: str) -> None:
    assert host_of(hop) == host


@pytest.mark.parametrize("value", ["localhost", "10.0.0.0/33", "1.2.3.4, nope"])
def test_a_bad_entry_fails_loudly(value: str) -> None:
    with pytest.raises(ValidationError, match="trusted_proxies"):
        Settings(trusted_proxies=value)  # type: ignore[arg-type]


def test_entries_are_comma_separated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TILESERVER_TRUSTED_PROXIES", " 10.0.0.0/8, ::1 ,")
    assert Settings().trusted_proxies == ("10.0.0.0/8", "::1")
    monkeypatch.setenv("TILESERVER_TRUSTED_PROXIES", "")
    assert Settings().trusted_proxies == ()


@asynccontextmanager
async def app_client(root: Path, trusted: str, peer: str) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(Settings(root=root, trusted_proxies=trusted))  # type: ignore[arg-type]
    app.state.service.start()
    try:
        transport = httpx.ASGITransport(app=app, client=(peer, 5000))
        async with httpx.AsyncClient(transport=transport, base_url="http://tiles.local") as c:
            yield c
    finally:
        app.state.service.stop()


async def info_id(client: httpx.AsyncClient, headers: dict[str, str]) -> str:
    r = await client.get(INFO, headers=headers)
    assert r.status_code == 200
    ident: str = r.json()["id"]
    return ident


@pytest.mark.parametrize(
    ("trusted", "peer", "expected"),
    [
        pytest.param("127.0.0.1,::1", "203.0.113.9", f"http://tiles.local/iiif/3/{RGB_TIF}", id="untrusted"),
        pytest.param("127.0.0.1,::1", "127.0.0.1", f"https://evil.example/iiif/3/{RGB_TIF}", id="trusted"),
        pytest.param("192.0.2.0/24", "192.0.2.77", f"https://evil.example/iiif/3/{RGB_TIF}", id="trusted-net"),
        pytest.param("*", "203.0.113.9", f"https://evil.example/iiif/3/{RGB_TIF}", id="everyone"),
        pytest.param("", "127.0.0.1", f"http://tiles.local/iiif/3/{RGB_TIF}", id="nobody"),
    ],
)
async def test_info_ids_follow_forwarded_headers_of_trusted_peers_only(image_root: Path, trusted: str, peer: str,
                                                                       expected: str) -> None:
    async with app_client(image_root, trusted, peer) as c:
        assert await info_id(c, FORGED) == expected
        assert await info_id(c, {"Forwarded": "proto=https;host=evil.example"}) == expected


async def test_manifest_ids_ignore_an_untrusted_peers_headers(image_root: Path) -> None:
    async with app_client(image_root, "127.0.0.1", "203.0.113.9") as c:
        r = await c.get(f"/iiif/manifests/{RGB_TIF}.json", headers=FORGED)
        assert r.status_code == 200 and "evil.example" not in r.text
        assert r.json()["id"].startswith("http://tiles.local/")


async def test_replay_does_not_hand_a_trusted_answer_to_an_untrusted_peer(image_root: Path) -> None:
    """The same URL and headers, first from the proxy (recorded for replay), then from a client."""
    app = create_app(Settings(root=image_root, trusted_proxies=("10.0.0.1",)))
    app.state.service.start()
    try:
        for peer, expected in (("10.0.0.1", "https://evil.example"), ("203.0.113.9", "http://tiles.local"),
                               ("10.0.0.1", "https://evil.example"), ("203.0.113.9", "http://tiles.local")):
            transport = httpx.ASGITransport(app=app, client=(peer, 5000))
            async with httpx.AsyncClient(transport=transport, base_url="http://tiles.local") as c:
                assert (await info_id(c, FORGED)).startswith(expected + "/"), peer
    finally:
        app.state.service.stop()


async def scope_seen(trusted: tuple[str, ...], peer: tuple[str, int], headers: list[tuple[bytes, bytes]]
                     ) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.update(scope)

    scope = {"type": "http", "scheme": "http", "client": peer, "headers": headers}
    await TrustedProxyMiddleware(app, trusted)(scope, None, None)  # type: ignore[arg-type]
    return seen


HEADERS = [(b"host", b"tiles.local"), (b"x-forwarded-for", b"203.0.113.9, 10.0.0.2"),
           (b"x-forwarded-proto", b"https"), (b"x-forwarded-host", b"evil.example"), (b"forwarded", b"for=1.2.3.4")]


async def test_a_trusted_peer_sets_client_and_scheme() -> None:
    seen = await scope_seen(("127.0.0.1", "10.0.0.0/8"), ("127.0.0.1", 5000), HEADERS)
    assert seen["client"] == ("203.0.113.9", 0) and seen["scheme"] == "https"
    assert seen["headers"] == HEADERS


async def test_an_untrusted_peers_forwarded_headers_are_removed() -> None:
    seen = await scope_seen(("127.0.0.1",), ("203.0.113.7", 5000), HEADERS)
    assert seen["client"] == ("203.0.113.7", 5000) and seen["scheme"] == "http"
    assert seen["headers"] == [(b"host", b"tiles.local")]
