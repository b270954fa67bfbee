"""IIIF Authorization Flow 2.0 (https://iiif.io/api/auth/2.0/) and Auth 1.0 (https://iiif.io/api/auth/1.0/), as
described in info.json and answered by the probe: pure builders over an `AuthFlow` (access/flow.py) and an
image's two tiers (access/policy.py `Access`).

An image whose tiers differ (`Access.restricted`) has, in its info.json `service` (3.0 and 2.1):
- an Auth 2.0 probe service `{image}/probe`, holding the access services the flow offers (`external`, `kiosk`,
  `active`, in that order), each with the token service `/auth/token` and (active) the logout service;
- Auth 1.0 cookie services for the same profiles (`http://iiif.io/api/auth/1/login`, `kiosk`, `external`), with
  the token service `/auth/1/token` and the logout service, for Mirador 4 and Universal Viewer.

The probe answers 200 with an `AuthProbeResult2` whose `status` is what the image's URLs give the viewer: 200 when
it sees the best it may, 401 for an anonymous viewer with a lesser tier (with a `substitute`: the anonymous tier
as its own image service under `/public/iiif/...`, which never varies by viewer; none when the anonymous tier is
denied), 403 when logging in cannot help. The image's own URLs answer an anonymous viewer with the same lesser
tier (access/view.py), and its info.json then gives the substitute's `id`: the way Auth 1.0 clients (Mirador)
recognise a degraded image and offer the login, while plain viewers still open what the viewer may see.

The probe service also carries `"profile": "AuthProbeService2"`: Auth 2.0 defines none, but manifesto-based
clients (Mirador 4, UV) call `getProfile().match(...)` on every service of an info.json and fail on a service
without one.
"""

from __future__ import annotations

from typing import Any

from ...access.flow import AuthFlow
from ...access.policy import Access
from .grammar import Version

CONTEXT2 = "http://iiif.io/api/auth/2/context.json"
CONTEXT1 = "http://iiif.io/api/auth/1/context.json"
AUTH1 = "http://iiif.io/api/auth/1/"
LOGIN, KIOSK, EXTERNAL, TOKEN2, TOKEN1, LOGOUT = (
    "/auth/login", "/auth/kiosk", "/auth/external", "/auth/token", "/auth/1/token", "/auth/logout")
PAGES = {"active": LOGIN, "kiosk": KIOSK, "external": EXTERNAL}
AUTH1_PROFILE = {"active": "login", "kiosk": "kiosk", "external": "external"}


def en(text: str) -> dict[str, list[str]]:
    return {"en": [text]}


def probe_status(access: Access | None, authorised: bool) -> int:
    """What the image's URLs answer this viewer, as the probe reports it."""
    if access is None or not access.restricted:
        return 200
    tier = access.tier(authorised)
    if authorised or tier.key == access.authorised.key:  # logging in changes nothing
        return 403 if tier.denied else 200
    return 401


def degraded(access: Access | None, authorised: bool) -> bool:
    """Whether the viewer is answered the image's anonymous tier while logging in would show more (its
    info.json then names the substitute as its `id`)."""
    return probe_status(access, authorised) == 401 and access is not None and not access.anonymous.denied


def auth2_services(flow: AuthFlow, root: str, probe: str, version: Version) -> list[dict[str, Any]]:
    """The probe service of an image (`probe`: its URI), with the flow's access services."""
    token = {"id": root + TOKEN2, "type": "AuthAccessTokenService2",
             "errorHeading": en("Not logged in"),
             "errorNote": en(f"{flow.label} could not confirm that you are logged in.")}
    logout = {"id": root + LOGOUT, "type": "AuthLogoutService2", "label": en(f"Log out from {flow.label}")}
    access: list[dict[str, Any]] = []
    for profile in flow.profiles:
        if profile == "active":
            access.append({"id": root + LOGIN, "type": "AuthAccessService2", "profile": "active",
                           "label": en(f"Log in to {flow.label}"), "heading": en("Please log in"),
                           "note": en(f"{flow.label} shows this image in full to users who log in."),
                           "confirmLabel": en("Log in"), "service": [token, logout]})
        elif profile == "kiosk":
            access.append({"id": root + KIOSK, "type": "AuthAccessService2", "profile": "kiosk",
                           "label": en(f"{flow.label} kiosk"), "service": [token]})
        else:
            access.append({"type": "AuthAccessService2", "profile": "external",
                           "label": en(f"Logged in to {flow.label} elsewhere"), "service": [token]})
    out: dict[str, Any] = {"id": probe, "type": "AuthProbeService2", "profile": "AuthProbeService2",
                           "service": access, "errorHeading": en("Restricted"),
                           "errorNote": en(f"{flow.label} restricts this image.")}
    if version == 2:
        out = {"@context": CONTEXT2, **out}
    return [out]


def auth1_services(flow: AuthFlow, root: str, version: Version) -> list[dict[str, Any]]:
    """Auth 1.0 cookie services, one per profile, each with its token and logout services."""
    def ref(uri: str, profile: str, kind: str) -> dict[str, Any]:
        """A 1.0 service: `@type` in 3.0 (Image API 3.0 §5.8), the 1.0 `@context` in 2.1 where `kind` is a cookie
        service (a top-level one)."""
        head: dict[str, Any] = {"@id": uri, "@type": kind} if version == 3 else {"@id": uri}
        if version == 2 and kind == "AuthCookieService1":
            head = {"@context": CONTEXT1, **head}
        return {**head, "profile": AUTH1 + profile}

    token = ref(root + TOKEN1, "token", "AuthTokenService1")
    logout = {**ref(root + LOGOUT, "logout", "AuthLogoutService1"), "label": f"Log out from {flow.label}"}
    out = []
    for profile in flow.profiles:
        service = ref(root + PAGES[profile], AUTH1_PROFILE[profile], "AuthCookieService1")
        if profile == "active":
            service.update({"label": f"Log in to {flow.label}", "header": "Please log in",
                            "description": f"{flow.label} shows this image in full to users who log in.",
                            "confirmLabel": "Log in", "failureHeader": "Not logged in",
                            "failureDescription": "The login did not succeed; the image is shown as for everyone."})
        else:
            service["label"] = f"{flow.label} {'kiosk' if profile == 'kiosk' else 'login'}"
        service["service"] = [token, logout] if profile == "active" else [token]
        out.append(service)
    return out


def services(flow: AuthFlow | None, root: str, probe: str, version: Version) -> list[dict[str, Any]]:
    """Every auth service of a restricted image's info.json (none when the flow offers no way in)."""
    if flow is None or not flow.profiles:
        return []
    return auth2_services(flow, root, probe, version) + auth1_services(flow, root, version)


def probe_result(status: int, substitute: str | None, version: Version, flow: AuthFlow | None) -> dict[str, Any]:
    doc: dict[str, Any] = {"@context": CONTEXT2, "type": "AuthProbeResult2", "status": status}
    if status != 200:
        if substitute is not None:
            doc["substitute"] = [{"id": substitute, "type": "ImageService3" if version == 3 else "ImageService2",
                                  "label": en("Public version")}]
        label = "tileserver" if flow is None else flow.label
        heading, note = {401: ("Log in to see more", f"{label} shows this image in full to users who log in."),
                         403: ("Not available", "This image is not available to you."),
                         404: ("Not found", "There is no such image.")}.get(status, ("Not available", ""))
        doc["heading"] = en(heading)
        if note:
            doc["note"] = en(note)
    return doc
