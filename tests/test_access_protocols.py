"""Access tiers through every protocol: no protocol returns more pixels than the viewer's tier allows (decoded
sizes, tier x protocol), denied images answer 401/403, credentials (cookie, bearer, signed URL, trusted proxy
header) raise anonymous viewers to their authorised tier, and tiered responses share no cache entry or ETag."""

from __future__ import annotations

import json
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tileserver.access.tokens import Keys
from tileserver.models import TileRequest
from tileserver.settings import Settings

from .conftest import (
    ALPHA_PNG,
    GREY16_TIF,
    META_CM_TIF,
    META_TIF,
    PLAIN_JPG,
    RGB_1000,
    RGB_TIF,
    STRIPED_TIF,
    SUBIFD_TIF,
    decode,
    max_diff,
    served,
    served_app,
)

KEY = "test-access-key-0123456789"
KEYS = Keys.parse(KEY)
POLICY = {
    "tiers": {"preview": {"max_width": 600, "max_height": 600},
              "small": {"max_area": 50_000},
              "narrow": {"max_width": 400},
              "stamped": {"max_width": 400, "text": {"text": "sample", "opacity": 0.5}},
              "blackout": {"redactions": [[0, 0, 100, 80]]}},
    "rules": [
        {"match": RGB_TIF, "anonymous": "preview"},
        {"match": GREY16_TIF, "anonymous": "small"},
        {"match": STRIPED_TIF, "anonymous": "preview"},
        {"match": PLAIN_JPG, "anonymous": "narrow"},
        {"match": RGB_1000, "anonymous": "denied", "authorised": "preview"},
        {"match": META_TIF, "anonymous": "denied", "authorised": "denied"},
        {"match": "sub/*-subifd-*.tif", "anonymous": "stamped"},
        {"match": "sub/*.png", "anonymous": "blackout"},
    ],
}
# the anonymous view of each capped image (its largest level within the cap), and the cap
CAPPED = {RGB_TIF: ((501, 350), (600, 600, None)), GREY16_TIF: ((150, 102), (None, None, 50_000)),
          STRIPED_TIF: ((450, 258), (600, 600, None)), PLAIN_JPG: ((320, 240), (400, None, None)),
          SUBIFD_TIF: ((350, 265), (400, None, None))}  # the last one watermarked (a text) as well as capped
FULL_SIZE = {RGB_TIF: (1003, 701), GREY16_TIF: (600, 410), STRIPED_TIF: (900, 517), PLAIN_JPG: (640, 481),
             SUBIFD_TIF: (700, 530)}
OVERLAID = {SUBIFD_TIF}  # pixels differ from the image's own once imaging/overlay.py draws the overlays


def access_settings(root: Path, **more: Any) -> Settings:
    return Settings(root=root, access_policy=json.dumps(POLICY), access_key=KEY, **more)


@pytest.fixture(scope="module")
async def client(image_root: Path) -> AsyncIterator[httpx.AsyncClient]:
    async with served(access_settings(image_root)) as c:
        yield c


def bearer(tier: str = "authorised", ttl: float = 600) -> dict[str, str]:
    return {"Authorization": f"Bearer {KEYS.issue_token('alice', tier, time.time() + ttl)}"}


def within(size: tuple[int, int], cap: tuple[int | None, int | None, int | None]) -> bool:
    w, h = size
    mw, mh, area = cap
    return (mw is None or w <= mw) and (mh is None or h <= mh) and (area is None or w * h <= area)


async def image(c: httpx.AsyncClient, url: str, headers: dict[str, str] | None = None) -> tuple[int, int]:
    r = await c.get(url, headers=headers or {})
    assert r.status_code == 200, (url, r.status_code, r.text[:200])
    im = decode(r.content)
    return im.width, im.height


def dz_levels(size: tuple[int, int]) -> int:
    return max(size).bit_length() if max(size) & (max(size) - 1) else max(size).bit_length() - 1


# -- the matrix: capped tiers x protocols -------------------------------------------------------------------
@pytest.mark.parametrize("name", list(CAPPED))
async def test_iiif_presents_the_capped_image(client: httpx.AsyncClient, name: str) -> None:
    view, cap = CAPPED[name]
    size, overlaid = FULL_SIZE[name], name in OVERLAID
    name = name.replace("/", "%2F")  # an IIIF identifier is one path segment
    for version in (2, 3):
        info = (await client.get(f"/iiif/{version}/{name}/info.json")).json()
        assert (info["width"], info["height"]) == view
        assert all(within((s["width"], s["height"]), cap) for s in info.get("sizes", []))
        top = max(f for t in info["tiles"] for f in t["scaleFactors"])
        assert top < 2 * max(view) / info["tiles"][0]["width"] + 1
    assert await image(client, f"/iiif/3/{name}/full/max/0/default.jpg") == view
    assert await image(client, f"/iiif/2/{name}/full/full/0/default.jpg") == view
    assert within(await image(client, f"/iiif/3/{name}/full/^2000,/0/default.jpg"), cap)  # no upscale past it
    assert within(await image(client, f"/iiif/3/{name}/full/^pct:400/0/default.png"), cap)
    r = await client.get(f"/iiif/3/{name}/full/{view[0] + 1},/0/default.jpg")
    assert r.status_code == 400  # above the (capped) full size without ^, as for any image
    # a region of the view is the same part of the image, drawn from its own larger pixels
    factor = size[0] / view[0]
    w = min(view) // 2
    anon = decode((await client.get(f"/iiif/3/{name}/0,0,{w},{w}/{w},/0/default.png")).content)
    full_w = round(w * factor)
    auth = decode((await client.get(f"/iiif/3/{name}/0,0,{full_w},{full_w}/{w},/0/default.png",
                                    headers=bearer())).content)
    assert (anon.width, anon.height) == (auth.width, auth.height) == (w, w)
    assert overlaid or max_diff(anon, auth) < 64
    # authorised: the whole image
    info = (await client.get(f"/iiif/3/{name}/info.json", headers=bearer())).json()
    assert (info["width"], info["height"]) == size
    assert await image(client, f"/iiif/3/{name}/full/max/0/default.jpg", bearer()) == size


@pytest.mark.parametrize("name", list(CAPPED))
async def test_iip_obj_jtl_and_cvt_are_capped(client: httpx.AsyncClient, name: str) -> None:
    view, cap = CAPPED[name]
    text = (await client.get(f"/iip?FIF={name}&OBJ=Max-size&OBJ=Resolution-number")).text
    assert f"Max-size:{view[0]} {view[1]}" in text
    count = int(re.search(r"Resolution-number:(\d+)", text)[1])  # type: ignore[index]
    full_text = (await client.get(f"/iip?FIF={name}&OBJ=Resolution-number", headers=bearer())).text
    full_count = int(re.search(r"Resolution-number:(\d+)", full_text)[1])  # type: ignore[index]
    assert count < full_count
    # IIP counts resolutions from the smallest: the view's top one is the image's resolution of that number,
    # pixel for pixel, and the next one up is the authorised viewer's only
    anon = decode((await client.get(f"/iip?FIF={name}&JTL={count - 1},0")).content)
    auth = decode((await client.get(f"/iip?FIF={name}&JTL={count - 1},0", headers=bearer())).content)
    assert anon.width <= min(256, view[0]) and (name in OVERLAID or max_diff(anon, auth) == 0)
    above = await client.get(f"/iip?FIF={name}&JTL={count},0", headers=bearer())
    assert above.status_code == 200
    r = await client.get(f"/iip?FIF={name}&JTL={count},0")  # past the allowed resolutions
    assert r.status_code >= 400 and not r.headers["content-type"].startswith("image/")
    assert within(await image(client, f"/iip?FIF={name}&WID=5000&CVT=jpeg"), cap)
    assert within(await image(client, f"/iip?FIF={name}&HEI=5000&CVT=png"), cap)
    assert await image(client, f"/iip?FIF={name}&CVT=jpeg") == view
    assert within(await image(client, f"/iip?FIF={name}&RGN=0,0,0.5,0.5&WID=4000&CVT=jpeg"), cap)
    assert await image(client, f"/iip?FIF={name}&CVT=jpeg", bearer()) == FULL_SIZE[name]


@pytest.mark.parametrize("name", list(CAPPED))
async def test_deepzoom_levels_stop_at_the_cap(client: httpx.AsyncClient, name: str) -> None:
    view, cap = CAPPED[name]
    dzi = (await client.get(f"/deepzoom/{name}.dzi")).text
    assert f'Height="{view[1]}" Width="{view[0]}"' in dzi
    top = dz_levels(view)
    tile = await image(client, f"/deepzoom/{name}_files/{top}/0_0.jpg")
    assert within(tile, cap) and tile[0] <= 256
    assert (await client.get(f"/deepzoom/{name}_files/{top + 1}/0_0.jpg")).status_code == 404
    cols = -(-view[0] // 256)
    assert (await client.get(f"/deepzoom/{name}_files/{top}/{cols}_0.jpg")).status_code == 404
    assert (await client.get(f"/deepzoom/{name}_files/{top + 1}/0_0.jpg", headers=bearer())).status_code == 200


@pytest.mark.parametrize("name", list(CAPPED))
async def test_zoomify_tiers_stop_at_the_cap(client: httpx.AsyncClient, name: str) -> None:
    view, cap = CAPPED[name]
    props = (await client.get(f"/zoomify/{name}/ImageProperties.xml")).text
    assert f'WIDTH="{view[0]}" HEIGHT="{view[1]}"' in props
    tiers = 1
    w, h = view
    while w > 256 or h > 256:
        w, h, tiers = -(-w // 2), -(-h // 2), tiers + 1
    top = tiers - 1
    ntiles = int(re.search(r'NUMTILES="(\d+)"', props)[1])  # type: ignore[index]
    group = (ntiles - 1) // 256
    last = (await client.get(f"/zoomify/{name}/TileGroup{group}/{top}-0-0.jpg"))
    if last.status_code != 200:  # the tile's group is counted from the tiles before it
        last = await client.get(f"/zoomify/{name}/TileGroup0/{top}-0-0.jpg")
    assert last.status_code == 200 and within((decode(last.content).width, decode(last.content).height), cap)
    assert (await client.get(f"/zoomify/{name}/TileGroup0/{top + 1}-0-0.jpg")).status_code == 404


# -- denied ----------------------------------------------------------------------------------------------
DENIED_URLS = ["/iiif/3/{n}/info.json", "/iiif/3/{n}/full/max/0/default.jpg", "/iiif/2/{n}/info.json",
               "/iip?FIF={n}&OBJ=Max-size", "/iip?FIF={n}&JTL=0,0", "/iip?FIF={n}&WID=100&CVT=jpeg",
               "/deepzoom/{n}.dzi", "/deepzoom/{n}_files/0/0_0.jpg", "/zoomify/{n}/ImageProperties.xml",
               "/zoomify/{n}/TileGroup0/0-0-0.jpg"]


@pytest.mark.parametrize("url", DENIED_URLS)
async def test_denied_is_401_for_anonymous_and_403_for_authorised(client: httpx.AsyncClient, url: str) -> None:
    for _ in range(2):  # the second time through every cache and replay
        refused = await client.get(url.format(n=RGB_1000))
        assert refused.status_code == 401 and refused.headers["www-authenticate"].startswith("Bearer")
        assert not refused.headers["content-type"].startswith("image/")
        assert (await client.get(url.format(n=META_TIF))).status_code == 401
        assert (await client.get(url.format(n=META_TIF), headers=bearer())).status_code == 403
        r = await client.get(url.format(n=RGB_1000), headers=bearer())  # authorised: its preview tier
        assert r.status_code == 200
        if r.headers["content-type"].startswith("image/"):
            assert within((decode(r.content).width, decode(r.content).height), (600, 600, None))


# -- credentials -----------------------------------------------------------------------------------------
INFO = f"/iiif/3/{RGB_TIF}/info.json"


async def width(c: httpx.AsyncClient, headers: dict[str, str] | None = None, url: str = INFO) -> int:
    r = await c.get(url, headers=headers or {})
    assert r.status_code == 200
    return int(r.json()["width"])


async def test_cookie_bearer_and_bad_tokens(client: httpx.AsyncClient) -> None:
    token = KEYS.issue_token("alice", "authorised", time.time() + 60)
    assert await width(client) == 501
    assert await width(client, bearer()) == 1003
    assert await width(client, {"Cookie": f"other=1; tileserver_access={token}"}) == 1003
    assert await width(client, bearer(ttl=-1)) == 501  # expired: anonymous
    assert await width(client, bearer("anonymous")) == 501
    assert await width(client, {"Authorization": "Bearer " + token[:-2] + "AA"}) == 501  # forged
    other = Keys.parse("some-other-key-0123456789").issue_token("eve", "authorised", time.time() + 60)
    assert await width(client, {"Authorization": f"Bearer {other}"}) == 501
    assert await width(client, {"Cookie": "tileserver_access=garbage"}) == 501
    assert await width(client, {"Cookie": '"bad cookie'}) == 501


async def test_signed_urls_grant_one_resource_and_expire(client: httpx.AsyncClient) -> None:
    query = KEYS.sign_url("/iip", f"FIF={RGB_TIF}&CVT=jpeg", "authorised", time.time() + 60)
    assert await image(client, f"/iip?{query}") == (1003, 701)  # the IIP grammar never saw sig/exp/tier
    assert await image(client, f"/iip?FIF={RGB_TIF}&CVT=jpeg") == (501, 350)
    other = query.replace(RGB_TIF, STRIPED_TIF)
    assert await image(client, f"/iip?{other}") == (450, 258)  # the signature covers the image: anonymous
    expired = KEYS.sign_url("/iip", f"FIF={RGB_TIF}&CVT=jpeg", "authorised", time.time() - 1)
    assert await image(client, f"/iip?{expired}") == (501, 350)
    path = f"/iiif/3/{RGB_1000}/full/max/0/default.jpg"
    signed = KEYS.sign_url(path, "", "authorised", time.time() + 60)
    assert await image(client, f"{path}?{signed}") == (500, 350)  # denied anonymously, its authorised tier here
    assert (await client.get(f"{path}?sig=AAAA&exp=9999999999&tier=authorised")).status_code == 401
    assert (await client.get(path)).status_code == 401


async def test_trusted_proxy_identity_header(image_root: Path) -> None:
    for trusted, expected in (("127.0.0.1", 1003), ("10.9.9.9", 501)):
        settings = access_settings(image_root, access_identity_header="X-Remote-User", trusted_proxies=trusted)
        async with served_app(settings) as application:
            transport = httpx.ASGITransport(app=application, client=("127.0.0.1", 5000))
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
                assert await width(c, {"X-Remote-User": "alice"}) == expected
                assert await width(c, {"X-Remote-User": ""}) == 501


async def test_tokens_verify_on_any_replica(image_root: Path) -> None:
    """Two app instances with the same key and no shared state: a token from either works on both."""
    settings = access_settings(image_root)
    token = Keys.parse(KEY).issue_token("alice", "authorised", time.time() + 60)
    async with served(settings) as one, served(settings) as two:
        for c in (one, two):
            assert await width(c, {"Authorization": f"Bearer {token}"}) == 1003
            assert await width(c) == 501


# -- caching ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("url", [INFO, f"/iiif/3/{RGB_TIF}/full/max/0/default.jpg",
                                 f"/iiif/3/{RGB_TIF}/0,0,256,256/256,/0/default.jpg",
                                 f"/iip?FIF={RGB_TIF}&WID=800&CVT=jpeg", f"/iip?FIF={RGB_TIF}&OBJ=Max-size",
                                 f"/deepzoom/{RGB_TIF}_files/9/0_0.jpg", f"/zoomify/{RGB_TIF}/TileGroup0/1-0-0.jpg"])
async def test_tiers_never_share_a_response(client: httpx.AsyncClient, url: str) -> None:
    """Anonymous, authorised, anonymous again, authorised again: each answer is its tier's (replay, the tile
    cache and translations included), ETags differ by tier, and every answer is private and varies by the
    credentials."""
    seen: dict[str, tuple[bytes, str]] = {}
    for who in ("anonymous", "authorised", "anonymous", "authorised"):
        r = await client.get(url, headers=bearer() if who == "authorised" else {})
        assert r.status_code == 200
        assert r.headers["cache-control"] == "private"
        assert "Cookie" in r.headers["vary"] and "Authorization" in r.headers["vary"]
        if who in seen:
            assert (r.content, r.headers["etag"]) == seen[who]
        seen[who] = (r.content, r.headers["etag"])
    assert seen["anonymous"][1] != seen["authorised"][1]
    assert seen["anonymous"][0] != seen["authorised"][0]
    if not seen["anonymous"][0].startswith((b"{", b"Max")):  # an image: the anonymous one within its cap
        anon, auth = decode(seen["anonymous"][0]), decode(seen["authorised"][0])
        assert within((anon.width, anon.height), (600, 600, None)) and anon.width * anon.height <= 501 * 350
        assert auth.width * auth.height >= anon.width * anon.height
    # a validator of one tier does not answer 304 to the other
    r = await client.get(url, headers={**bearer(), "If-None-Match": seen["anonymous"][1]})
    assert r.status_code == 200 and r.content == seen["authorised"][0]


async def test_unrestricted_images_stay_public_and_passed_through(client: httpx.AsyncClient,
                                                                  image_root: Path) -> None:
    """An image no rule restricts is answered as with no policy (same body, ETag and Cache-Control, no Vary on
    the credentials); native tiles of the full and of a capped tier are still passed through untouched."""
    async with served(Settings(root=image_root)) as plain:
        for url in (f"/iiif/3/{META_CM_TIF}/info.json", f"/iip?FIF={META_CM_TIF}&JTL=0,0",
                    f"/iiif/3/{META_CM_TIF}/full/max/0/default.jpg"):
            ours, theirs = await client.get(url), await plain.get(url)
            assert ours.status_code == theirs.status_code == 200
            assert ours.content == theirs.content and ours.headers["etag"] == theirs.headers["etag"]
            assert ours.headers.get("cache-control") == theirs.headers.get("cache-control") != "private"
            assert "Cookie" not in ours.headers.get("vary", "")
    async with served(access_settings(image_root)) as fresh:  # nothing cached or recorded yet
        full = await fresh.get(f"/iip?FIF={RGB_TIF}&JTL=2,0", headers=bearer())
        capped = await fresh.get(f"/iip?FIF={RGB_TIF}&JTL=1,0")
        assert "passthrough" in full.headers["server-timing"] and "passthrough" in capped.headers["server-timing"]
        same = await fresh.get(f"/iip?FIF={RGB_TIF}&JTL=1,0", headers=bearer())
        assert same.content == capped.content and same.headers["etag"] != capped.headers["etag"]
        again = await fresh.get(f"/iip?FIF={RGB_TIF}&JTL=1,0")  # a capped tier's tile is replayed, as its own
        assert again.headers["server-timing"] == "replay" and again.content == capped.content
        assert again.headers["etag"] == capped.headers["etag"]
        region = f"/iiif/3/{RGB_TIF}/0,0,300,300/150,/0/default.jpg"
        first, second = await fresh.get(region), await fresh.get(region)
        assert second.headers["server-timing"] == "replay" and second.content == first.content
        assert (await fresh.get(region, headers=bearer())).content != first.content


async def test_overlays_are_set_for_watermarked_and_redacted_tiers(client: httpx.AsyncClient,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The core adds a tier's overlays to the request it renders (imaging/overlay.py draws them): stamped and
    blacked-out tiers only; their responses share no ETag with the authorised one."""
    import tileserver.core as core

    rendered: list[TileRequest] = []
    real = core.render

    def spy(image: Any, req: TileRequest, *args: Any, **kwargs: Any) -> Any:
        rendered.append(req)
        return real(image, req, *args, **kwargs)

    monkeypatch.setattr(core, "render", spy)
    for name, kind in ((SUBIFD_TIF, "text"), (ALPHA_PNG, "redactions")):
        url = f"/iiif/3/{name.replace('/', '%2F')}/full/97,/0/default.png"  # asked nowhere else: rendered
        anon = await client.get(url)
        auth = await client.get(url, headers=bearer())
        assert anon.status_code == auth.status_code == 200 and anon.headers["etag"] != auth.headers["etag"]
        overlays = [r.overlays for r in rendered if r.ident == name]
        assert any(o is not None and bool(getattr(o, kind)) for o in overlays)
        assert any(o is None for o in overlays)  # the authorised request has none
        assert decode(anon.content).width == decode(auth.content).width == 97
    r = await client.get(f"/iip?FIF={SUBIFD_TIF}&OBJ=Max-size")
    assert "Max-size:350 265" in r.text


async def test_no_policy_means_no_access_layer(image_root: Path) -> None:
    async with served_app(Settings(root=image_root)) as application:
        assert application.state.service.access is None
        names = [m.cls.__name__ for m in application.user_middleware]
        assert "AccessMiddleware" not in names


async def test_samples_follow_the_tier(client: httpx.AsyncClient) -> None:
    """IIP PFL reads the view's levels for a capped tier (its resolution numbers are the view's) and is refused
    for a tier with overlays (the values under a watermark or a redaction are not offered)."""
    anon = await client.get(f"/iip?FIF={RGB_TIF}&PFL=1:0,10-100,10")
    auth = await client.get(f"/iip?FIF={RGB_TIF}&PFL=1:0,10-100,10", headers=bearer())
    assert anon.status_code == auth.status_code == 200 and anon.json() == auth.json()
    assert (await client.get(f"/iip?FIF={RGB_TIF}&PFL=2:0,10-100,10")).status_code == 404
    assert (await client.get(f"/iip?FIF={RGB_TIF}&PFL=2:0,10-100,10", headers=bearer())).status_code == 200
    assert (await client.get(f"/iip?FIF={SUBIFD_TIF}&PFL=0:0,10-100,10")).status_code == 403
    assert (await client.get(f"/iip?FIF={SUBIFD_TIF}&PFL=0:0,10-100,10", headers=bearer())).status_code == 200


async def test_private_keeps_what_a_response_varied_by(client: httpx.AsyncClient) -> None:
    r = await client.get(f"/iiif/3/{RGB_TIF}/info.json")
    vary = [v.strip() for v in r.headers["vary"].split(",")]
    assert {"Accept", "Cookie", "Authorization"} <= set(vary)


async def test_tiers_never_share_a_shared_cache_entry(image_root: Path) -> None:
    """Two replicas with one Redis: a capped tile rendered on A is served to B's anonymous viewer from the shared
    cache (same ETag), never to B's authorised one, although both are the image's same tile (IIP numbers
    resolutions from the smallest, so `JTL=1,0` names one tile of the image for both tiers). Re-encoded (`QLT`): a
    stored tile passed through is read from the file by every replica (core `_stored_now`), not from the shared
    cache."""
    from .cache_servers import cache_server

    with cache_server("redis") as server:
        if server.proc is None:
            server.start()
        server.flush()
        settings = access_settings(image_root, cache_url=server.url)
        async with served_app(settings) as a, served_app(settings) as b:
            ca = httpx.AsyncClient(transport=httpx.ASGITransport(app=a), base_url="http://t")
            cb = httpx.AsyncClient(transport=httpx.ASGITransport(app=b), base_url="http://t")
            url = f"/iip?FIF={RGB_TIF}&QLT=60&JTL=1,0"
            first = await ca.get(url)
            assert a.state.service.shared is not None
            await a.state.service.shared.drain()
            authorised = await cb.get(url, headers=bearer())
            assert authorised.headers["server-timing"] != "cache;desc=shared"
            assert authorised.headers["etag"] != first.headers["etag"]
            anonymous = await cb.get(url)
            assert anonymous.headers["server-timing"] == "cache;desc=shared"
            assert anonymous.headers["etag"] == first.headers["etag"] and anonymous.content == first.content
            await ca.aclose()
            await cb.aclose()
            for app in (a, b):
                await app.state.service.aclose()


async def test_a_sidecar_edit_changes_the_tier_of_remembered_answers(tmp_path: Path, image_root: Path) -> None:
    """Sidecars through the app: answers remembered (documents, translations, replay) for one tier are not given
    once the sidecar says another, within `stat_interval` (0 here)."""
    import shutil

    root = tmp_path / "root"
    root.mkdir()
    shutil.copy(image_root / RGB_TIF, root / "a.tif")
    settings = Settings(root=root, access_sidecars=True, access_key=KEY, stat_interval=0)
    info, tile = "/iiif/3/a.tif/info.json", "/iip?FIF=a.tif&JTL=2,0"
    async with served(settings) as c:
        for _ in range(2):
            assert await width(c, url=info) == 1003 and (await c.get(tile)).status_code == 200
        assert "private" not in (await c.get(info)).headers.get("cache-control", "")
        (root / "a.tif.access.json").write_text('{"anonymous": {"max_width": 600}}')
        assert await width(c, url=info) == 501
        assert (await c.get(tile)).status_code == 404  # resolution 2 is past the view
        assert await width(c, bearer(), url=info) == 1003
        (root / "a.tif.access.json").write_text('{"anonymous": "denied"}')
        assert (await c.get(info)).status_code == 401 and (await c.get(tile)).status_code == 401
        assert (await c.get(tile, headers=bearer())).status_code == 200
        (root / "a.tif.access.json").write_text("{broken")
        assert (await c.get(tile, headers=bearer())).status_code == 403  # a broken sidecar fails closed


def access_hook(ident: str, location: str) -> object:
    return {"anonymous": "denied"} if ident == PLAIN_JPG else None


async def test_the_hook_through_the_app(image_root: Path) -> None:
    settings = Settings(root=image_root, access_hook=f"{__name__}:access_hook", access_key=KEY)
    async with served(settings) as c:
        assert (await c.get(f"/iiif/3/{PLAIN_JPG}/info.json")).status_code == 401
        assert await width(c, bearer(), url=f"/iiif/3/{PLAIN_JPG}/info.json") == 640
        assert await width(c, url=INFO) == 1003  # the hook had no opinion: no policy, full


@pytest.mark.parametrize("url", ["/iiif/3/sub%2Frgba-300x200.png/full/max/0/default.jpg",
                                 "/iip?FIF=sub/rgba-300x200.png&CVT=jpeg",
                                 "/iip?FIF=sub/rgba-300x200.png&JTL=1,0",
                                 "/deepzoom/sub/rgba-300x200.png_files/9/0_0.jpg",
                                 "/zoomify/sub/rgba-300x200.png/TileGroup0/1-0-0.jpg"])
async def test_redactions_are_painted_through_every_protocol(client: httpx.AsyncClient, url: str) -> None:
    """The blackout tier's rectangle (0, 0, 100, 80 in full-resolution pixels) is black in the decoded output of
    every protocol for anonymous viewers, and the image's own pixels for authorised ones."""
    anon = decode((await client.get(url)).content)
    auth = decode((await client.get(url, headers=bearer())).content)
    assert (anon.width, anon.height) == (auth.width, auth.height)
    inside = (2, 2, 90, 70)
    assert anon.crop(*inside).extract_band(0, n=3).max() <= 8
    assert auth.crop(*inside).extract_band(0, n=3).avg() > 20
    outside = (120, 100, 100, 60)
    assert max_diff(anon.crop(*outside), auth.crop(*outside)) < 40
