"""IIIF Authorization Flow 2.0 and Auth 1.0 on the access tiers (protocols/iiif/auth.py, pages/auth.py,
access/flow.py, users.py, identity.py): the services in info.json and manifests, the probe's status and
substitute, the login, kiosk and logout pages, the token services' messages and errors, access tokens that open
descriptions but no pixels, external identities (a JWT), and a token from one replica verified by another."""

from __future__ import annotations

import json
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from tileserver.access.identity import JwtVerifier
from tileserver.access.policy import DENIED, FULL, Access, Tier
from tileserver.access.users import Users, hash_line
from tileserver.app import create_app
from tileserver.protocols.iiif import auth
from tileserver.settings import Settings

from .conftest import META_CM_TIF, META_TIF, PLAIN_JPG, RGB_1000, RGB_TIF, decode, served
from .test_access_protocols import KEY, KEYS, POLICY

JWT_SECRET = "jwt-secret-0123456789abcdef-0123456789"
ORIGIN = "http://viewer.example"


@pytest.fixture(scope="module")
def users_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("users") / "users.htpasswd"
    path.write_text("# the login page's users\n" + hash_line("alice", "wonderland", rounds=4) + "\n"
                    + hash_line("bob", "builder", rounds=4) + "\n")
    return path


def auth_settings(root: Path, users: Path | None, **more: Any) -> Settings:
    return Settings(root=root, access_policy=json.dumps(POLICY), access_key=KEY, access_users=users, cors="*",
                    **more)


@pytest.fixture(scope="module")
async def client(image_root: Path, users_file: Path) -> AsyncIterator[httpx.AsyncClient]:
    async with served(auth_settings(image_root, users_file, access_jwt_key=JWT_SECRET,
                                    access_jwt_cookie="sso")) as c:
        yield c


async def login(c: httpx.AsyncClient, user: str = "alice", password: str = "wonderland") -> str:
    """The access cookie's value after a good login."""
    r = await c.post("/auth/login", data={"username": user, "password": password, "origin": ORIGIN})
    assert r.status_code == 200, r.text
    cookie = r.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Max-Age=28800" in cookie
    c.cookies.clear()
    return re.search(r"tileserver_access=([^;]+)", cookie).group(1)  # type: ignore[union-attr]


def posted(body: str) -> tuple[dict[str, Any], str]:
    """The message and target origin a token service page posts."""
    m = re.search(r"window\.parent\.postMessage\((\{.*\}), (\"[^\"]*\")\);", body)
    assert m, body
    return json.loads(m.group(1)), json.loads(m.group(2))


async def access_token(c: httpx.AsyncClient, cookie: str, path: str = "/auth/token") -> str:
    r = await c.get(path, params={"messageId": "m1", "origin": ORIGIN},
                    headers={"Cookie": f"tileserver_access={cookie}"})
    assert r.status_code == 200
    message, _ = posted(r.text)
    return str(message["accessToken"])


def size_of(r: httpx.Response) -> tuple[int, int]:
    assert r.status_code == 200, r.text[:200]
    im = decode(r.content)
    return im.width, im.height


# -- pure: probe status -------------------------------------------------------------------------------------
CAP = Tier("preview", max_width=600)


@pytest.mark.parametrize(("access", "authorised", "status", "substitute"), [
    (None, False, 200, False),
    (Access(), False, 200, False),
    (Access(CAP, FULL), False, 401, True),
    (Access(CAP, FULL), True, 200, False),
    (Access(DENIED, FULL), False, 401, False),
    (Access(DENIED, CAP), True, 200, False),
    (Access(DENIED, DENIED), False, 403, False),
    (Access(DENIED, DENIED), True, 403, False),
    (Access(FULL, DENIED), True, 403, False),
    (Access(CAP, CAP), False, 200, False),
])
def test_probe_status(access: Access | None, authorised: bool, status: int, substitute: bool) -> None:
    assert auth.probe_status(access, authorised) == status
    assert auth.degraded(access, authorised) == substitute


# -- descriptions -------------------------------------------------------------------------------------------
async def test_info_v3_of_a_restricted_image_names_the_services_and_the_substitute(
        client: httpx.AsyncClient) -> None:
    doc = (await client.get(f"/iiif/3/{RGB_TIF}/info.json")).json()
    assert doc["@context"] == [auth.CONTEXT2, "http://iiif.io/api/image/3/context.json"]
    assert doc["id"] == f"http://t/public/iiif/3/{RGB_TIF}"  # degraded: Auth 1.0 clients see the id differ
    assert (doc["width"], doc["height"]) == (501, 350)
    probe, external1, login1 = doc["service"]
    assert probe["type"] == "AuthProbeService2" and probe["id"] == f"http://t/iiif/3/{RGB_TIF}/probe"
    profiles = [s["profile"] for s in probe["service"]]
    assert profiles == ["external", "active"]  # JWT configured: external first (Auth 2.0 §3.3), then the login
    active = probe["service"][1]
    assert active["id"] == "http://t/auth/login" and active["label"] == {"en": ["Log in to tileserver"]}
    assert [s["type"] for s in active["service"]] == ["AuthAccessTokenService2", "AuthLogoutService2"]
    assert "id" not in probe["service"][0]  # external: no access service to open
    assert external1["@type"] == "AuthCookieService1"
    assert external1["profile"] == "http://iiif.io/api/auth/1/external"
    assert login1["profile"] == "http://iiif.io/api/auth/1/login"


async def test_auth1_services_in_v2_and_v3(client: httpx.AsyncClient) -> None:
    for version, key in ((3, "@type"), (2, "@context")):
        doc = (await client.get(f"/iiif/{version}/{RGB_TIF}/info.json")).json()
        by_profile = {s.get("profile"): s for s in doc["service"]}
        login1 = by_profile["http://iiif.io/api/auth/1/login"]
        assert key in login1 and login1["@id"] == "http://t/auth/login"
        assert login1["label"] == "Log in to tileserver" and login1["confirmLabel"] == "Log in"
        inner = {s["profile"]: s["@id"] for s in login1["service"]}
        assert inner == {"http://iiif.io/api/auth/1/token": "http://t/auth/1/token",
                         "http://iiif.io/api/auth/1/logout": "http://t/auth/logout"}
        probe = by_profile["AuthProbeService2"]
        assert probe["id"] == f"http://t/iiif/{version}/{RGB_TIF}/probe"
        assert (probe.get("@context") == auth.CONTEXT2) == (version == 2)
    v2 = (await client.get(f"/iiif/2/{RGB_TIF}/info.json")).json()
    assert v2["@id"] == f"http://t/public/iiif/2/{RGB_TIF}" and v2["@context"] == "http://iiif.io/api/image/2/context.json"


async def test_open_images_have_no_services(client: httpx.AsyncClient) -> None:
    # every image not in the rules is full for all: no probe, the image's own id
    doc = (await client.get(f"/iiif/3/{META_CM_TIF}/info.json")).json()
    assert doc["id"] == f"http://t/iiif/3/{META_CM_TIF}" and "service" not in doc
    assert doc["@context"] == "http://iiif.io/api/image/3/context.json"


def bearer(token: str | None = None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token or KEYS.issue_token('alice', 'authorised', time.time() + 600)}"}


async def test_denied_anonymous_gets_a_401_description_with_the_login(client: httpx.AsyncClient) -> None:
    r = await client.get(f"/iiif/3/{RGB_1000}/info.json")
    assert r.status_code == 401 and r.headers["cache-control"].startswith("private")
    doc = r.json()
    assert "width" not in doc and "sizes" not in doc and "tiles" not in doc
    assert {s.get("profile") for s in doc["service"]} >= {"AuthProbeService2", "http://iiif.io/api/auth/1/login"}
    authorised = (await client.get(f"/iiif/3/{RGB_1000}/info.json", headers=bearer())).json()
    assert authorised["id"] == f"http://t/iiif/3/{RGB_1000}" and authorised["width"] == 500  # its tier: preview


async def test_authorised_info_keeps_its_own_id_and_the_logout(client: httpx.AsyncClient) -> None:
    doc = (await client.get(f"/iiif/3/{RGB_TIF}/info.json", headers=bearer())).json()
    assert doc["id"] == f"http://t/iiif/3/{RGB_TIF}" and (doc["width"], doc["height"]) == (1003, 701)
    assert any(s.get("profile") == "http://iiif.io/api/auth/1/login" for s in doc["service"])


async def test_manifest_declares_the_probe(client: httpx.AsyncClient) -> None:
    doc = (await client.get(f"/iiif/manifests/{RGB_TIF}.json")).json()
    assert doc["@context"][0] == auth.CONTEXT2
    body = doc["items"][0]["items"][0]["items"][0]["body"]
    image_service = body["service"][0]
    assert image_service["id"] == f"http://t/iiif/3/{RGB_TIF}"
    assert image_service["service"][0]["type"] == "AuthProbeService2"
    assert image_service["service"][0]["id"] == f"http://t/iiif/3/{RGB_TIF}/probe"


# -- the probe ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("ident", "headers", "status", "substitute"), [
    (RGB_TIF, {}, 401, True),
    (RGB_TIF, "bearer", 200, False),
    (RGB_1000, {}, 401, False),  # anonymous denied: log in for the preview, no substitute
    (RGB_1000, "bearer", 200, False),
    (META_TIF, {}, 403, False),  # denied to all: logging in changes nothing
    (META_TIF, "bearer", 403, False),
    ("no-such-image.tif", {}, 404, False),
])
async def test_probe(client: httpx.AsyncClient, ident: str, headers: Any, status: int, substitute: bool) -> None:
    r = await client.get(f"/iiif/3/{ident}/probe", headers=bearer() if headers == "bearer" else headers)
    assert r.status_code == 200 and r.headers["cache-control"] == "private, no-store"
    doc = r.json()
    assert doc["@context"] == auth.CONTEXT2 and doc["type"] == "AuthProbeResult2" and doc["status"] == status
    assert ("substitute" in doc) == substitute
    if substitute:
        assert doc["substitute"] == [{"id": f"http://t/public/iiif/3/{ident}", "type": "ImageService3",
                                      "label": {"en": ["Public version"]}}]
    if status != 200:
        assert doc["heading"]["en"]


async def test_probe_cors_preflight_allows_the_bearer(client: httpx.AsyncClient) -> None:
    r = await client.options(f"/iiif/3/{RGB_TIF}/probe", headers={
        "Origin": ORIGIN, "Access-Control-Request-Method": "GET", "Access-Control-Request-Headers": "authorization"})
    assert r.status_code == 200
    assert "authorization" in r.headers["access-control-allow-headers"].lower()


async def test_the_substitute_is_the_anonymous_tier_whoever_asks(client: httpx.AsyncClient) -> None:
    doc = (await client.get(f"/public/iiif/3/{RGB_TIF}/info.json", headers=bearer())).json()
    assert doc["id"] == f"http://t/public/iiif/3/{RGB_TIF}" and (doc["width"], doc["height"]) == (501, 350)
    assert "service" not in doc  # accessible to everyone: no further auth services (Auth 2.0 §5.2)
    r = await client.get(f"/public/iiif/3/{RGB_TIF}/full/max/0/default.jpg", headers=bearer())
    assert size_of(r) == (501, 350)
    r = await client.get(f"/public/iiif/3/{RGB_1000}/info.json", headers=bearer())
    assert r.status_code == 401  # its anonymous tier is denied


# -- login, logout ----------------------------------------------------------------------------------------------
async def test_login_page_and_wrong_password(client: httpx.AsyncClient) -> None:
    r = await client.get("/auth/login", params={"origin": ORIGIN})
    assert r.status_code == 200 and '<form method="post">' in r.text and "X-Frame-Options" in r.headers
    for user, password in (("alice", "wrong"), ("nobody", "wonderland"), ("alice", "")):
        r = await client.post("/auth/login", data={"username": user, "password": password})
        assert r.status_code == 401 and "set-cookie" not in r.headers and "wrong password" in r.text
    r = await client.get("/auth/login", params={"origin": "javascript:alert(1)"})
    assert r.status_code == 400
    r = await client.post("/auth/login", data={"username": "alice", "password": "wonderland"},
                          headers={"Origin": "https://elsewhere.example"})
    assert r.status_code == 403 and "set-cookie" not in r.headers  # login CSRF
    r = await client.post("/auth/login", data={"username": "alice", "password": "wonderland"},
                          headers={"Origin": "http://t"})
    assert r.status_code == 200 and "set-cookie" in r.headers


async def test_login_cookie_shows_the_full_image(client: httpx.AsyncClient) -> None:
    cookie = await login(client)
    r = await client.post("/auth/login", data={"username": "alice", "password": "wonderland"})
    assert "window.close()" in r.text
    client.cookies.clear()
    headers = {"Cookie": f"tileserver_access={cookie}"}
    doc = (await client.get(f"/iiif/3/{RGB_TIF}/info.json", headers=headers)).json()
    assert doc["id"] == f"http://t/iiif/3/{RGB_TIF}" and doc["width"] == 1003
    assert size_of(await client.get(f"/iiif/3/{RGB_TIF}/full/max/0/default.jpg", headers=headers)) == (1003, 701)
    assert size_of(await client.get(f"/iip?FIF={RGB_TIF}&CVT=jpeg", headers=headers)) == (1003, 701)
    assert size_of(await client.get(f"/iiif/3/{RGB_TIF}/full/max/0/default.jpg")) == (501, 350)


async def test_logout_clears_the_cookie(client: httpx.AsyncClient) -> None:
    r = await client.get("/auth/logout")
    assert r.status_code == 200
    cookie = r.headers["set-cookie"]
    assert cookie.startswith('tileserver_access=""') and "Max-Age=0" in cookie and "Path=/" in cookie


# -- token services -----------------------------------------------------------------------------------------------
async def test_auth2_token_service_posts_a_describe_token(client: httpx.AsyncClient) -> None:
    cookie = await login(client)
    r = await client.get("/auth/token", params={"messageId": "ae3415", "origin": ORIGIN},
                         headers={"Cookie": f"tileserver_access={cookie}"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    message, target = posted(r.text)
    assert target == ORIGIN
    assert message["@context"] == auth.CONTEXT2 and message["type"] == "AuthAccessToken2"
    assert message["messageId"] == "ae3415" and message["expiresIn"] == 600
    token = message["accessToken"]
    assert token != cookie
    claims = KEYS.verify_token(token)
    assert claims is not None and claims.use == "describe" and claims.subject == "alice"
    # the access token opens the probe and info.json...
    probe = (await client.get(f"/iiif/3/{RGB_TIF}/probe", headers=bearer(token))).json()
    assert probe["status"] == 200
    doc = (await client.get(f"/iiif/3/{RGB_TIF}/info.json", headers=bearer(token))).json()
    assert doc["width"] == 1003
    # ...and no pixels, in no protocol, nor as the cookie (Auth 2.0 §4.4)
    assert size_of(await client.get(f"/iiif/3/{RGB_TIF}/full/max/0/default.jpg", headers=bearer(token))) == (501, 350)
    assert size_of(await client.get(f"/iip?FIF={RGB_TIF}&CVT=jpeg", headers=bearer(token))) == (501, 350)
    as_cookie = {"Cookie": f"tileserver_access={token}"}
    assert size_of(await client.get(f"/iiif/3/{RGB_TIF}/full/max/0/default.jpg", headers=as_cookie)) == (501, 350)
    assert (await client.get(f"/iiif/3/{RGB_TIF}/info.json", headers=as_cookie)).json()["width"] == 501


@pytest.mark.parametrize(("cookie", "profile"), [
    (None, "missingAspect"),
    ("expired", "expiredAspect"),
    ("forged", "invalidAspect"),
    ("describe", "invalidAspect"),  # an access token is no cookie
])
async def test_auth2_token_errors(client: httpx.AsyncClient, cookie: str | None, profile: str) -> None:
    values = {"expired": KEYS.issue_token("alice", "authorised", time.time() - 5),
              "forged": "v1.eyJzdWIiOiJ4In0.AAAA",
              "describe": KEYS.issue_token("alice", "authorised", time.time() + 60, use="describe")}
    headers = {} if cookie is None else {"Cookie": f"tileserver_access={values[cookie]}"}
    r = await client.get("/auth/token", params={"messageId": "x9", "origin": ORIGIN}, headers=headers)
    assert r.status_code == 200
    message, target = posted(r.text)
    assert target == ORIGIN and message["type"] == "AuthAccessTokenError2" and message["profile"] == profile
    assert message["messageId"] == "x9" and message["heading"]["en"]


@pytest.mark.parametrize("params", [
    {"origin": ORIGIN},  # no messageId
    {"messageId": "a"},  # no origin
    {"messageId": "a", "origin": "not an origin"},
    {"messageId": "a", "origin": "javascript:alert(1)"},
    {"messageId": "a" * 300, "origin": ORIGIN},
])
async def test_token_service_bad_requests(client: httpx.AsyncClient, params: dict[str, str]) -> None:
    r = await client.get("/auth/token", params=params)
    if "messageId" in params and len(params["messageId"]) > 256:
        assert posted(r.text)[0]["profile"] == "invalidRequest"
    else:
        assert r.status_code == 400


async def test_auth1_token_service(client: httpx.AsyncClient) -> None:
    cookie = await login(client)
    headers = {"Cookie": f"tileserver_access={cookie}"}
    r = await client.get("/auth/1/token", params={"messageId": "7", "origin": ORIGIN}, headers=headers)
    message, target = posted(r.text)
    assert target == ORIGIN and set(message) == {"accessToken", "expiresIn", "messageId"}
    assert message["messageId"] == "7"
    r = await client.get("/auth/1/token", params={"messageId": "8", "origin": ORIGIN})
    message, _ = posted(r.text)
    assert message["error"] == "missingCredentials" and message["messageId"] == "8"
    # the JSON form (no messageId), for clients outside a browser
    r = await client.get("/auth/1/token", headers=headers)
    assert r.status_code == 200 and KEYS.verify_token(r.json()["accessToken"]).use == "describe"  # type: ignore[union-attr]
    r = await client.get("/auth/1/token")
    assert r.status_code == 401 and r.json()["error"] == "missingCredentials"


async def test_origins_are_checked(image_root: Path, users_file: Path) -> None:
    async with served(auth_settings(image_root, users_file, access_origins="https://ok.example")) as c:
        cookie = await login(c)
        headers = {"Cookie": f"tileserver_access={cookie}"}
        r = await c.get("/auth/token", params={"messageId": "1", "origin": ORIGIN}, headers=headers)
        assert posted(r.text)[0]["profile"] == "invalidOrigin"
        r = await c.get("/auth/token", params={"messageId": "1", "origin": "https://ok.example"}, headers=headers)
        assert posted(r.text)[0]["type"] == "AuthAccessToken2"


# -- kiosk, external ------------------------------------------------------------------------------------------------
async def test_kiosk(image_root: Path) -> None:
    async with served(auth_settings(image_root, None, access_kiosk_networks="127.0.0.0/8")) as c:
        doc = (await c.get(f"/iiif/3/{RGB_TIF}/info.json")).json()
        probe = next(s for s in doc["service"] if s.get("type") == "AuthProbeService2")
        assert [(s["profile"], s["id"]) for s in probe["service"]] == [("kiosk", "http://t/auth/kiosk")]
        r = await c.get("/auth/kiosk", params={"origin": ORIGIN})
        assert r.status_code == 200 and "window.close()" in r.text
        cookie = re.search(r"tileserver_access=([^;]+)", r.headers["set-cookie"]).group(1)  # type: ignore[union-attr]
        c.cookies.clear()
        assert KEYS.verify_token(cookie).subject == "kiosk:127.0.0.1"  # type: ignore[union-attr]
        assert (await c.get("/auth/login")).status_code == 404  # no user file: no login page
    async with served(auth_settings(image_root, None, access_kiosk_networks="10.0.0.0/8")) as c:
        r = await c.get("/auth/kiosk")
        assert r.status_code == 403 and "set-cookie" not in r.headers


def a_jwt(secret: str = JWT_SECRET, ttl: float = 600, alg: str = "HS256", **claims: Any) -> str:
    return jwt.encode({"sub": "carol", "exp": int(time.time() + ttl), **claims}, secret, algorithm=alg)


async def test_external_jwt(client: httpx.AsyncClient) -> None:
    # a JWT as bearer raises the viewer for pixels too (an API client of the identity provider)
    assert size_of(await client.get(f"/iiif/3/{RGB_TIF}/full/max/0/default.jpg",
                                    headers=bearer(a_jwt()))) == (1003, 701)
    for bad in (a_jwt("another-secret-0123456789-0123456789"), a_jwt(ttl=-10), a_jwt(tier="anonymous"),
                jwt.encode({"sub": "x"}, JWT_SECRET, algorithm="HS256")):  # no exp
        assert size_of(await client.get(f"/iiif/3/{RGB_TIF}/full/max/0/default.jpg",
                                        headers=bearer(bad))) == (501, 350)
    # the SSO cookie is the authorising aspect of the external profile's token service
    r = await client.get("/auth/token", params={"messageId": "e", "origin": ORIGIN},
                         headers={"Cookie": f"sso={a_jwt()}"})
    message, _ = posted(r.text)
    assert message["type"] == "AuthAccessToken2"
    assert KEYS.verify_token(message["accessToken"]).subject == "carol"  # type: ignore[union-attr]
    # our own tokens are not accepted in the SSO cookie, nor a JWT in ours
    r = await client.get(f"/iiif/3/{RGB_TIF}/full/max/0/default.jpg",
                         headers={"Cookie": f"sso={KEYS.issue_token('x', 'authorised', time.time() + 60)}"})
    assert size_of(r) == (501, 350)
    r = await client.get(f"/iiif/3/{RGB_TIF}/full/max/0/default.jpg",
                         headers={"Cookie": f"tileserver_access={a_jwt()}"})
    assert size_of(r) == (501, 350)


def test_jwt_verifier_refuses_mixed_keys() -> None:
    with pytest.raises(ValueError, match="PEM"):
        JwtVerifier.of(JWT_SECRET, "RS256", None, None)
    with pytest.raises(ValueError, match="at least 32"):
        JwtVerifier.of("short", "HS256", None, None)
    with pytest.raises(ValueError, match="unknown"):
        JwtVerifier.of(JWT_SECRET, "XX1", None, None)
    v = JwtVerifier.of(JWT_SECRET, "HS256", "tiles", "https://idp.example")
    assert v.verify(a_jwt(aud="tiles", iss="https://idp.example")) is not None
    assert v.verify(a_jwt(aud="other", iss="https://idp.example")) is None
    assert v.verify(a_jwt(aud="tiles")) is None
    assert v.verify(a_jwt(JWT_SECRET * 2, alg="HS512")) is None  # an algorithm not configured
    assert JWT_SECRET not in repr(v)


def test_jwt_rs256_with_a_pem_key(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = private.public_key().public_bytes(serialization.Encoding.PEM,
                                            serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    (tmp_path / "idp.pem").write_text(pem)
    v = JwtVerifier.of(str(tmp_path / "idp.pem"), "RS256", None, None)
    token = jwt.encode({"sub": "dan", "exp": int(time.time() + 60)}, private, algorithm="RS256")
    claims = v.verify(token)
    assert claims is not None and claims.subject == "dan" and claims.tier == "authorised"
    # the public key used as an HMAC secret (algorithm confusion) is refused
    forged = jwt.encode({"sub": "eve", "exp": int(time.time() + 60)}, "x" * 40, algorithm="HS256")
    assert v.verify(forged) is None


# -- replicas, users, settings ------------------------------------------------------------------------------
async def test_a_token_from_one_replica_verifies_on_another(image_root: Path, users_file: Path) -> None:
    async with served(auth_settings(image_root, users_file)) as a, served(auth_settings(image_root, users_file)) as b:
        cookie = await login(a)
        token = await access_token(b, cookie)  # the login made by A is B's authorising aspect
        assert (await a.get(f"/iiif/3/{RGB_TIF}/probe", headers=bearer(token))).json()["status"] == 200
        assert size_of(await b.get(f"/iiif/3/{RGB_TIF}/full/max/0/default.jpg",
                                   headers={"Cookie": f"tileserver_access={cookie}"})) == (1003, 701)


def test_user_file() -> None:
    users = Users.parse("\n# c\n" + hash_line("ann", "pw1", rounds=4) + "\n")
    assert users.check("ann", "pw1") and not users.check("ann", "pw2") and not users.check("bob", "pw1")
    assert not users.check("ann", "x" * 100)  # past bcrypt's 72 bytes: refused, not cut
    apache = "$2y$04$" + hash_line("z", "pw", rounds=4).split("$2b$04$")[1]  # htpasswd -B writes $2y$
    assert Users.parse(f"ann:{apache}").check("ann", "pw")
    for bad, what in (("ann:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=", "line 1: only bcrypt"),
                      ("ok\nann:$apr1$x$y", "line 1: not"), ("ann:plain", "only bcrypt")):
        with pytest.raises(ValueError, match=re.escape(what)):
            Users.parse(bad)
    with pytest.raises(ValueError):
        hash_line("a:b", "pw")


def test_login_needs_the_key(image_root: Path, users_file: Path) -> None:
    with pytest.raises(ValueError, match="need access_key"):
        create_app(Settings(root=image_root, access_policy=json.dumps(POLICY), access_users=users_file))


async def test_no_login_means_no_services_and_own_ids(image_root: Path) -> None:
    async with served(Settings(root=image_root, access_policy=json.dumps(POLICY), access_key=KEY)) as c:
        doc = (await c.get(f"/iiif/3/{RGB_TIF}/info.json")).json()
        assert doc["id"] == f"http://t/iiif/3/{RGB_TIF}" and "service" not in doc and doc["width"] == 501
        assert (await c.get("/auth/login")).status_code == 404
        assert (await c.get(f"/iiif/3/{RGB_TIF}/probe")).json()["status"] == 401


async def test_passwd_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    from tileserver.cli import main

    path = tmp_path / "users"
    for user, password in (("ann", "one"), ("bob", "two"), ("ann", "three")):
        monkeypatch.setattr("sys.stdin", io.StringIO(password + "\n"))
        assert main(["passwd", str(path), user, "--rounds", "4"]) == 0
    users = Users.load(path)
    assert sorted(users.hashes) == ["ann", "bob"] and users.check("ann", "three") and users.check("bob", "two")
    assert path.stat().st_mode & 0o777 == 0o600


async def test_plain_jpg_capped_tier_through_the_public_route(client: httpx.AsyncClient) -> None:
    assert size_of(await client.get(f"/public/iiif/2/{PLAIN_JPG}/full/full/0/default.jpg")) == (320, 240)
