"""The credentials of a request, read once in front of everything else (installed only with an access policy).

In order, the first that holds makes the viewer authorised: a signed URL (`sig`, `exp`, `tier` in the query:
always removed from the query, valid or not, so no protocol's grammar and no replay key sees them), a bearer
token (`Authorization: Bearer ...`), the login cookie (`access_cookie`), and the identity header a trusted proxy
sets (`access_identity_header`, counted only from `trusted_proxies` and removed from any other client's request).
A bearer token or the cookie may also be an external identity provider's JWT (`access_jwt_key`,
access/identity.py; its cookie `access_jwt_cookie`). An IIIF Auth access token (`use: describe`) counts as a
bearer token on descriptions only (`DESCRIPTIONS`: info.json, probes, manifests), never for pixels nor as a
cookie. Under `PUBLIC` (`/public/iiif/...`, the substitute image services the probes name) every request is
anonymous, whatever it carries. Anything expired, forged or malformed is anonymous: the request goes on, and only
an image whose anonymous tier is `denied` answers 401. The viewer is put in the ASGI scope (`SCOPE_KEY`) and in
the context variable the core reads (`access/tokens.py` VIEWER).
"""

from __future__ import annotations

from http.cookies import CookieError, SimpleCookie
from urllib.parse import unquote

from starlette.types import ASGIApp, Receive, Scope, Send

from ..access.identity import JwtVerifier
from ..access.tokens import ANONYMOUS, VIEWER, Claims, Keys, Viewer
from .proxies import TrustedProxies

SCOPE_KEY = "tileserver.viewer"
SIGNED = ("sig", "exp", "tier")
PUBLIC = "/public/"
DESCRIPTIONS = ("/info.json", "/probe")
MANIFESTS = "/iiif/manifests/"


def describes(path: str) -> bool:
    """Whether `path` is a description (what an Auth access token may be shown to)."""
    return path.endswith(DESCRIPTIONS) or path.startswith(MANIFESTS)


class AccessMiddleware:
    def __init__(self, app: ASGIApp, keys: Keys | None, cookie: str, identity_header: str | None,
                 trusted: TrustedProxies, jwt: JwtVerifier | None = None, jwt_cookie: str | None = None) -> None:
        self.app = app
        self.keys = keys
        self.cookie = cookie
        self.jwt = jwt
        self.jwt_cookie = jwt_cookie if jwt is not None else None
        self.identity = None if not identity_header else identity_header.strip().lower().encode("latin-1")
        self.trusted = trusted

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        scope, viewer = self.identify(scope)
        token = VIEWER.set(viewer)
        try:
            await self.app(scope, receive, send)
        finally:
            VIEWER.reset(token)

    def identify(self, scope: Scope) -> tuple[Scope, Viewer]:
        """The scope as the app sees it (signature parameters and an untrusted identity header removed) and
        its viewer."""
        viewer = ANONYMOUS
        path = _app_path(scope)
        if path.startswith(PUBLIC):
            scope[SCOPE_KEY] = viewer
            return scope, viewer
        query: bytes = scope.get("query_string", b"")
        if b"sig=" in query:
            kept, signed = split_signed(query)
            scope = {**scope, "query_string": kept}
            if self.keys is not None and self.keys.verify_url(
                    scope["path"], kept.decode("latin-1"), signed.get("sig", ""), signed.get("exp", ""),
                    signed.get("tier", "")):
                viewer = Viewer(signed["tier"] == "authorised", "", "signed-url")
        if self.identity is not None:
            peer = scope.get("client")
            trusted = peer is not None and peer[0] in self.trusted
            if not trusted:
                if any(n == self.identity for n, _ in scope["headers"]):
                    scope = {**scope, "headers": [(n, v) for n, v in scope["headers"] if n != self.identity]}
            elif not viewer.authorised:
                who = next((v for n, v in scope["headers"] if n == self.identity), b"").decode("latin-1").strip()
                if who:
                    viewer = Viewer(True, who[:256], "proxy")
        if not viewer.authorised and (self.keys is not None or self.jwt is not None):
            viewer = self._token(scope) or viewer
        scope[SCOPE_KEY] = viewer
        return scope, viewer

    def _token(self, scope: Scope) -> Viewer | None:
        for name, value in scope["headers"]:
            if name == b"authorization":
                kind, _, token = value.decode("latin-1").partition(" ")
                if kind.lower() == "bearer":
                    found = self._claims(token.strip(), "bearer", describes(_app_path(scope)))
                    if found is not None:
                        return found
            elif name == b"cookie":
                try:
                    jar = SimpleCookie(value.decode("latin-1"))
                except CookieError:
                    continue
                for cookie, via in ((self.cookie, "cookie"), (self.jwt_cookie, "jwt-cookie")):
                    morsel = None if cookie is None else jar.get(cookie)
                    if morsel is not None:
                        found = self._claims(morsel.value, via, False)
                        if found is not None:
                            return found
        return None

    def _claims(self, token: str, via: str, description: bool) -> Viewer | None:
        claims: Claims | None = None
        if token.startswith("v1.") and via != "jwt-cookie":
            claims = None if self.keys is None else self.keys.verify_token(token)
            if claims is not None and claims.use == "describe" and not (via == "bearer" and description):
                return None
        elif self.jwt is not None and via != "cookie":
            claims = self.jwt.verify(token)
            via = "jwt"
        if claims is None:
            return None
        return Viewer(claims.tier == "authorised", claims.subject, via)


def _app_path(scope: Scope) -> str:
    """The path without the application's root path (which the ASGI scope's path includes)."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    return path[len(root):] if root and path.startswith(root) else path


def split_signed(query: bytes) -> tuple[bytes, dict[str, str]]:
    """The query without `sig`, `exp` and `tier`, and their (percent-decoded) values."""
    kept, signed = [], {}
    for part in query.split(b"&"):
        name, _, value = part.partition(b"=")
        key = unquote(name.decode("latin-1"))
        if key in SIGNED:
            signed[key] = unquote(value.decode("latin-1"))
        else:
            kept.append(part)
    return b"&".join(kept), signed
