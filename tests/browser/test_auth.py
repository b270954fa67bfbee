"""IIIF Auth end to end in headless chromium against a live `tileserver serve` with an access policy (anonymous
viewers see sample.tif capped at 800 px wide, that is its 750-px level; logged-in ones the full 3001 px), a user
file and an access key:

- Auth 1.0 in Mirador 4: the image opens degraded (its info.json names the public substitute: tiles come from
  /public/iiif/3/..., no region past 750 px), the login bar opens the access service in a popup, the login form
  sets the cookie and closes the popup, Mirador fetches the token through its frame and info.json again, now the
  full image's (3001 px, its own id). Mirador 4.0.0 keeps the tiled image it has already added to an open canvas
  (its OpenSeadragonTileSource effect depends on the tile source's url only, and an info.json source has none),
  so the full image's tiles (regions past 750 px, from /iiif/3/...) come when the canvas is opened again: here,
  the page reloaded with the login cookie.
- Auth 2.0 with a small page following the spec's client steps (tests/browser/auth2_client.html), served from
  another origin of the same site: probe (401 + substitute), substitute shown, token service before login
  (missingAspect), access service in a window, token through postMessage, probe again (200), the full image.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tileserver.access.users import hash_line

from ..live import clean_env, live_tileserver
from .conftest import IMAGE, NODE_MODULES, SIZE
from .harness import static_origin

VIEW = 750  # sample.tif's largest level within the anonymous cap (3001 -> 1500 -> 750)
POLICY = {"default": {"anonymous": {"max_width": 800}, "authorised": "full"}}
KEY = "browser-auth-key-0123456789"
USER, PASSWORD = "curator", "open sesame"
REGION = re.compile(r"/iiif/3/[^/]+/(\d+),(\d+),(\d+),(\d+)/")


@pytest.fixture(scope="module")
def auth_server(browser_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("auth-server")
    users = folder / "users"
    users.write_text(hash_line(USER, PASSWORD, rounds=4) + "\n")
    env = clean_env(TILESERVER_VIEWER_ASSETS=str(NODE_MODULES), TILESERVER_ACCESS_POLICY=json.dumps(POLICY),
                    TILESERVER_ACCESS_KEY=KEY, TILESERVER_ACCESS_USERS=str(users), TILESERVER_CORS="*",
                    TILESERVER_ACCESS_LABEL="the test museum")
    with live_tileserver(browser_root, folder / "server.log", env=env) as base:
        yield base


async def log_in(popup: Any) -> None:
    """Fill the login page's form in the access service's window and wait for the page to close it."""
    await popup.fill("input[name=username]", USER)
    await popup.fill("input[name=password]", PASSWORD)
    async with popup.expect_event("close", timeout=15_000):
        await popup.click("button[type=submit]", no_wait_after=True)


def right_edge(url: str) -> int | None:
    m = REGION.search(url)
    return None if m is None else int(m.group(1)) + int(m.group(3))


async def test_auth1_login_in_mirador(page: Any, auth_server: str) -> None:
    tiles: list[str] = []
    infos: list[tuple[str, bool, int]] = []

    async def on_response(response: Any) -> None:
        url = response.url
        if url.endswith("/info.json"):
            body = await response.json() if response.status in (200, 401) else {}
            infos.append((url, "authorization" in response.request.headers, int(body.get("width", 0))))
        elif REGION.search(url) and response.status == 200:
            tiles.append(url)

    page.on("response", on_response)
    await page.goto(f"{auth_server}/mirador/{IMAGE}?drawer=canvas")
    # degraded: the login bar, and tiles of the public substitute only, none past the capped width
    bar = page.get_by_text("Log in to the test museum")
    await bar.wait_for(timeout=30_000)
    await page.wait_for_function("document.querySelectorAll('.openseadragon-canvas canvas').length > 0")
    await page.wait_for_timeout(1500)
    before = list(tiles)
    assert before, "no tiles before the login"
    assert all("/public/iiif/3/" in u for u in before), before[:3]
    assert max(e for e in map(right_edge, before) if e is not None) <= VIEW
    assert (f"{auth_server}/iiif/3/{IMAGE}/info.json", False, VIEW) in infos
    # the login bar (header and description: expand it, then confirm), the access service in a popup
    await bar.click()
    async with page.expect_popup() as popup_info:
        await page.get_by_role("button", name="Log in", exact=True).click()
    popup = await popup_info.value
    await popup.wait_for_load_state()
    assert popup.url.startswith(f"{auth_server}/auth/login?origin=")
    await log_in(popup)
    # Mirador: the token frame, then info.json again: the full image's, with its own id
    await page.wait_for_function(
        "() => performance.getEntriesByType('resource').some(e => e.name.includes('/auth/1/token'))", timeout=20_000)
    for _ in range(80):
        if any(width == SIZE[0] for url, _, width in infos if "/public/" not in url):
            break
        await page.wait_for_timeout(250)
    else:
        raise AssertionError(f"Mirador did not fetch the full info.json after the login: {infos}")
    # the canvas opened again (Mirador 4.0.0 keeps an open canvas's tiled image): the full image's tiles
    await page.reload()
    for _ in range(60 * 4):
        full = [u for u in tiles[len(before):] if "/public/" not in u]
        if full and max(e for e in map(right_edge, full) if e is not None) > VIEW:
            break
        await page.wait_for_timeout(250)
    else:
        raise AssertionError(f"no full-resolution tiles after the login: {tiles[len(before):][:5]}, {infos}")
    # the pixels: a full-image tile decodes at the tile size of the full pyramid, past the public view
    edge_tile = next(u for u in full if (right_edge(u) or 0) > VIEW)
    got = await page.evaluate("""async (url) => {
        const r = await fetch(url, {credentials: 'include'});
        const b = await createImageBitmap(await r.blob());
        return [r.status, b.width, b.height];
    }""", edge_tile)
    assert got[0] == 200 and 0 < got[1] <= 256 and 0 < got[2] <= 256


@pytest.fixture(scope="module")
def client_origin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The Auth 2.0 client page from a second loopback server: another origin of the tileserver's site."""
    site = tmp_path_factory.mktemp("auth2-client")
    (site / "client.html").write_bytes((Path(__file__).parent / "auth2_client.html").read_bytes())
    with static_origin(site) as origin:
        yield origin


async def test_auth2_flow_from_a_spec_client(page: Any, auth_server: str, client_origin: str) -> None:
    service = f"{auth_server}/iiif/3/{IMAGE}"
    failures: list[str] = []
    page.on("requestfailed", lambda r: failures.append(f"{r.url} {r.failure}"))
    page.on("console", lambda m: failures.append(f"console: {m.text}"))
    await page.goto(f"{client_origin}/client.html?service={service}")
    try:
        await page.wait_for_selector("#login:not([disabled])", timeout=30_000)
    except Exception as exc:
        raise AssertionError(f"{await page.evaluate('JSON.stringify(window.results)')} {failures}") from exc
    async with page.expect_popup() as popup_info:
        await page.click("#login")
    popup = await popup_info.value
    await popup.wait_for_load_state()
    await log_in(popup)
    await page.wait_for_function("window.results.done === true", timeout=30_000)
    results = await page.evaluate("window.results")
    assert "error" not in results, results
    steps = {s["step"]: s for s in results["steps"]}
    assert steps["info"] == {"step": "info", "id": f"{auth_server}/public/iiif/3/{IMAGE}", "width": VIEW}
    assert steps["probe"]["http"] == 200 and steps["probe"]["status"] == 401
    assert steps["probe"]["substitute"][0]["id"] == f"{auth_server}/public/iiif/3/{IMAGE}"
    assert steps["substitute"]["width"] == VIEW and steps["substitute"]["size"][0] == VIEW
    assert steps["token-before"] == {"step": "token-before", "type": "AuthAccessTokenError2",
                                     "profile": "missingAspect"}
    assert steps["token"]["type"] == "AuthAccessToken2" and steps["token"]["expiresIn"] == 600
    assert steps["probe-again"] == {"step": "probe-again", "http": 200, "status": 200}
    resource = steps["resource"]
    assert resource["id"] == service and resource["width"] == SIZE[0]
    assert resource["size"] == [1500, 1001] and resource["tile"] == [477, 513]
