"""The IIIF Auth pages (with an access policy and `access_key`; access/flow.py says which are offered):

- `/auth/login` (the `active` access service, Auth 2.0 and 1.0): a login form checked against the user file; a
  good password sets the access cookie and the page closes itself, as both specs ask (a form posted from another
  origin, by its `Origin` header, is refused: no site can log a visitor in as someone else);
- `/auth/kiosk` (`kiosk`): logs in a client of `access_kiosk_networks` without a form and closes itself;
- `/auth/external` (Auth 1.0's `external` service id): closes itself (the identity is already there);
- `/auth/token?messageId=&origin=` (Auth 2.0 access token service): a page posting an `AuthAccessToken2`
  (or `AuthAccessTokenError2`) to `origin`; `/auth/1/token` the Auth 1.0 form (`accessToken` / `error`), and
  without `messageId` the same as JSON (Auth 1.0's non-browser form);
- `/auth/logout`: clears the access cookie.

The authorising aspect a token service accepts is the access cookie, the trusted proxy's identity header or an
external JWT (not a bearer token or a signed URL: a script holding one has no need of the flow). The token it
hands out is a `describe` token (access/tokens.py): for info.json and probes only. A token service hands tokens
to `access_origins` only (default any).
"""

from __future__ import annotations

import html
import json
import re
import time
from typing import Any
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Route

from ..access.flow import AuthFlow
from ..access.tokens import current_viewer
from ..errors import BadRequest
from ..protocols.iiif import base_of
from ..protocols.iiif.auth import CONTEXT2

ORIGIN = re.compile(r"^https?://[A-Za-z0-9.\-]+(:[0-9]{1,5})?$|^https?://\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?$")
MESSAGE_ID = 256  # characters of a messageId kept
ASPECTS = ("cookie", "proxy", "jwt")
NO_STORE = {"Cache-Control": "no-store", "X-Frame-Options": "DENY"}
FRAMED = {"Cache-Control": "no-store"}  # the token pages are loaded in the client's frame
PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>body{{font-family:system-ui,sans-serif;margin:2em;max-width:30em}}label{{display:block;margin:.6em 0}}
input{{font-size:1em}}.error{{color:#a00}}</style></head>
<body><h1>{title}</h1>{body}</body></html>"""
CLOSE = "<script>window.close();</script>"


def flow_of(request: Request) -> AuthFlow:
    flow: AuthFlow = request.app.state.auth_flow
    return flow


def _page(title: str, body: str, status: int = 200, headers: dict[str, str] | None = None) -> HTMLResponse:
    return HTMLResponse(PAGE.format(title=html.escape(title), body=body), status,
                        headers={**NO_STORE, **(headers or {})})


def _origin(request: Request, required: bool) -> str:
    origin = request.query_params.get("origin", "")
    if origin and (len(origin) > 256 or not ORIGIN.match(origin)):
        raise BadRequest("origin: a scheme, a host and an optional port")
    if required and not origin:
        raise BadRequest("the origin query parameter is required")
    return origin


def _secure(request: Request, flow: AuthFlow) -> bool:
    return request.url.scheme == "https" or flow.samesite == "none"


def _cookie_path(request: Request) -> str:
    root: str = request.scope.get("root_path", "")
    return (root.rstrip("/") or "") + "/"


def set_login(response: Response, request: Request, flow: AuthFlow, subject: str) -> None:
    token = flow.keys.issue_token(subject, "authorised", time.time() + flow.session_ttl)
    response.set_cookie(flow.cookie, token, max_age=flow.session_ttl, path=_cookie_path(request), httponly=True,
                        secure=_secure(request, flow), samesite=flow.samesite)  # type: ignore[arg-type]


# -- access services ---------------------------------------------------------------------------------------
def _form(origin: str, error: str = "") -> str:
    note = f'<p class="error">{html.escape(error)}</p>' if error else ""
    return (f'{note}<form method="post"><input type="hidden" name="origin" value="{html.escape(origin)}">'
            '<label>User <input name="username" autocomplete="username" required autofocus></label>'
            '<label>Password <input name="password" type="password" autocomplete="current-password" required>'
            '</label><button type="submit">Log in</button></form>')


async def login(request: Request) -> Response:
    flow = flow_of(request)
    if flow.users is None:
        return _page("No login here", "<p>This server has no user file.</p>", 404)
    title = f"Log in to {flow.label}"
    if request.method != "POST":
        origin = _origin(request, False)
        viewer = current_viewer()
        if viewer.authorised and viewer.via == "cookie":
            return _page(title, f"<p>You are logged in as {html.escape(viewer.subject)}.</p>{CLOSE}")
        return _page(title, _form(origin))
    sender = request.headers.get("origin")
    own = urlsplit(base_of(request, ""))
    if sender is not None and sender != f"{own.scheme}://{own.netloc}":  # a form posted from another site
        return _page(title, "<p>Log in from this server's own login page.</p>", 403)
    form = await request.form(max_files=0, max_fields=8, max_part_size=4096)
    name, password, origin = (str(form.get(k, "")) for k in ("username", "password", "origin"))
    if origin and not ORIGIN.match(origin):
        origin = ""
    users = flow.users
    ok = await request.app.state.service.run(users.check, name, password)
    if not ok:
        return _page(title, _form(origin, "Unknown user or wrong password."), 401)
    response = _page(title, f"<p>You are logged in as {html.escape(name)}. This window closes now.</p>{CLOSE}")
    set_login(response, request, flow, name)
    return response


async def kiosk(request: Request) -> Response:
    flow = flow_of(request)
    _origin(request, False)
    peer = request.client.host if request.client else None
    if not flow.in_kiosk(peer):
        return _page("Not a kiosk", f"<p>This device is not one of the kiosks.</p>{CLOSE}", 403)
    response = _page("Kiosk", f"<p>Logged in.</p>{CLOSE}")
    set_login(response, request, flow, f"kiosk:{peer}")
    return response


async def external(request: Request) -> Response:
    _origin(request, False)
    return _page("Logged in elsewhere", f"<p>Nothing to do here.</p>{CLOSE}")


async def logout(request: Request) -> Response:
    flow = flow_of(request)
    response = _page("Logged out", f"<p>You are logged out of {html.escape(flow.label)}.</p>")
    response.delete_cookie(flow.cookie, path=_cookie_path(request), httponly=True, secure=_secure(request, flow),
                           samesite=flow.samesite)  # type: ignore[arg-type]
    return response


# -- access token services -----------------------------------------------------------------------------------
def _aspect(request: Request, flow: AuthFlow) -> tuple[str | None, str]:
    """The access token for the request's authorising aspect, or None and why not (Auth 2.0's error profile)."""
    viewer = current_viewer()
    if viewer.authorised and viewer.via in ASPECTS:
        subject = viewer.subject or viewer.via
        return flow.keys.issue_token(subject[:256], "authorised", time.time() + flow.token_ttl, use="describe"), ""
    raw = request.cookies.get(flow.cookie)
    if raw is None:
        return None, "missingAspect"
    lapsed = flow.keys.verify_token(raw, now=0)
    if lapsed is not None and not lapsed.use:  # a login of ours, expired (an access token is no login)
        return None, "expiredAspect"
    return None, "invalidAspect"


ERROR_TEXT = {"missingAspect": ("Not logged in", "Log in to see this image in full."),
              "expiredAspect": ("Login expired", "Your login has expired: log in again."),
              "invalidAspect": ("Login not valid", "Your login is not valid here: log in again."),
              "invalidOrigin": ("Not allowed", "This site may not receive access tokens."),
              "invalidRequest": ("Bad request", "The token request was malformed.")}
AUTH1_ERROR = {"missingAspect": "missingCredentials", "expiredAspect": "invalidCredentials",
               "invalidAspect": "invalidCredentials", "invalidOrigin": "invalidOrigin",
               "invalidRequest": "invalidRequest"}


def _post(message: dict[str, Any], origin: str) -> HTMLResponse:
    """A page posting `message` to its parent frame at `origin` (JSON in a script: `<` escaped)."""
    def js(value: object) -> str:
        return json.dumps(value).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    body = f"<!DOCTYPE html><html><body><script>window.parent.postMessage({js(message)}, {js(origin)});</script>" \
           "</body></html>"
    return HTMLResponse(body, 200, headers=FRAMED)


def _token_request(request: Request, flow: AuthFlow) -> tuple[str, str | None, str]:
    """The message id (None when absent), the origin, and the error profile of the request itself ("" if none)."""
    message_id = request.query_params.get("messageId")
    origin = request.query_params.get("origin", "")
    if not origin or len(origin) > 256 or not ORIGIN.match(origin):
        return origin, message_id, "invalidRequest"
    if message_id is not None and (not message_id or len(message_id) > MESSAGE_ID):
        return origin, message_id, "invalidRequest"
    if not flow.origin_allowed(origin):
        return origin, message_id, "invalidOrigin"
    return origin, message_id, ""


async def token2(request: Request) -> Response:
    flow = flow_of(request)
    origin, message_id, problem = _token_request(request, flow)
    if message_id is None or (problem == "invalidRequest" and not ORIGIN.match(origin)):
        raise BadRequest("the token service takes messageId and origin (an origin such as https://example.org)")
    token, problem = (None, problem) if problem else _aspect(request, flow)
    if token is not None:
        return _post({"@context": CONTEXT2, "type": "AuthAccessToken2", "accessToken": token,
                      "expiresIn": flow.token_ttl, "messageId": message_id}, origin)
    heading, note = ERROR_TEXT[problem]
    return _post({"@context": CONTEXT2, "type": "AuthAccessTokenError2", "profile": problem,
                  "heading": {"en": [heading]}, "note": {"en": [note]}, "messageId": message_id}, origin)


async def token1(request: Request) -> Response:
    flow = flow_of(request)
    origin, message_id, problem = _token_request(request, flow)
    if message_id is None:  # the JSON form, for clients that are not in a browser
        problem = "" if problem == "invalidRequest" and not origin else problem
        token, problem = (None, problem) if problem else _aspect(request, flow)
        if token is not None:
            return JSONResponse({"accessToken": token, "expiresIn": flow.token_ttl}, headers=NO_STORE)
        error = AUTH1_ERROR[problem]
        return JSONResponse({"error": error, "description": ERROR_TEXT[problem][1]},
                            400 if error == "invalidRequest" else 401, headers=NO_STORE)
    if problem == "invalidRequest" and not ORIGIN.match(origin):
        raise BadRequest("the token service takes messageId and origin (an origin such as https://example.org)")
    token, problem = (None, problem) if problem else _aspect(request, flow)
    if token is not None:
        return _post({"accessToken": token, "expiresIn": flow.token_ttl, "messageId": message_id}, origin)
    return _post({"error": AUTH1_ERROR[problem], "description": ERROR_TEXT[problem][1], "messageId": message_id},
                 origin)


ROUTES: list[BaseRoute] = [
    Route("/auth/login", login, methods=["GET", "POST"]),
    Route("/auth/kiosk", kiosk, methods=["GET"]),
    Route("/auth/external", external, methods=["GET"]),
    Route("/auth/token", token2, methods=["GET"]),
    Route("/auth/1/token", token1, methods=["GET"]),
    Route("/auth/logout", logout, methods=["GET", "POST"]),
]
