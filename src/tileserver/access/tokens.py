"""Signed credentials: HMAC-SHA256 tokens and signed URLs, verified with no shared state.

A token is `v1.<payload>.<mac>`: the payload is base64url JSON `{"sub": subject, "tier": class, "exp": unix
seconds}`, the mac base64url HMAC-SHA256 of `v1.<payload>` under the first key of `access_key` (comma-separated:
the first signs, every one verifies, so a key is rotated by putting the new one first and dropping the old one
after the longest token's lifetime). Any replica holding the keys verifies a token; nothing is stored. The `tier`
is the access class it grants: `authorised` (an image's authorised tier) or `anonymous`. A token may carry `"use":
"describe"`: the access tokens the IIIF Auth token services hand to a viewer's script, which count as a bearer
token on image descriptions only (info.json, probes, manifests), never for pixels and never as the cookie, so a
page that obtains one cannot fetch more than the description of what it may see (Auth 2.0 §4.4's warning).

A signed URL carries `sig`, `exp` and `tier` in its query: `sig` is the base64url HMAC-SHA256 of the path, the
rest of the query (in order, as sent), the expiry and the tier, so it grants that one resource only (with IIP,
the image is in the query: a signature of the path alone would grant every image). The middleware strips the
three parameters before any protocol parses the query.

`Viewer` is who the request being answered is for; `current_viewer()` reads it from a context variable the
middleware sets (anonymous where it did not run).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from collections.abc import Sequence
from contextvars import ContextVar
from dataclasses import dataclass

from .policy import CLASSES

PREFIX = "v1"
MAX_TOKEN = 4096  # characters of a token considered at all
MAX_SUBJECT = 256
USES = ("", "describe")


@dataclass(frozen=True)
class Viewer:
    """Who a response is for: authorised or not, the subject a credential named, and how it was shown
    (`cookie`, `bearer`, `signed-url`, `proxy`, `jwt`; empty for anonymous)."""

    authorised: bool = False
    subject: str = ""
    via: str = ""

    @property
    def key(self) -> str:
        """What a cached response for this viewer depends on (never the subject: tiers are per class)."""
        return "authorised" if self.authorised else "anonymous"


ANONYMOUS = Viewer()
VIEWER: ContextVar[Viewer] = ContextVar("tileserver_viewer", default=ANONYMOUS)


def current_viewer() -> Viewer:
    return VIEWER.get()


@dataclass(frozen=True)
class Claims:
    subject: str
    tier: str
    expiry: int
    use: str = ""  # "" (a credential) or "describe" (an Auth flow's access token: descriptions only)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Keys:
    """The HMAC keys: the first signs, all verify."""

    def __init__(self, keys: Sequence[bytes]) -> None:
        if not keys:
            raise ValueError("access_key: at least one key")
        self.keys = tuple(keys)

    @classmethod
    def parse(cls, secret: str) -> Keys:
        parts = [k.strip() for k in secret.split(",") if k.strip()]
        if not parts or any(len(k) < 16 for k in parts):
            raise ValueError("access_key: each comma-separated key must be at least 16 characters")
        return cls([k.encode() for k in parts])

    def __repr__(self) -> str:  # never the keys
        return f"Keys({len(self.keys)} keys)"

    def mac(self, message: bytes, key: bytes | None = None) -> bytes:
        return hmac.new(self.keys[0] if key is None else key, message, hashlib.sha256).digest()

    def verify(self, message: bytes, mac: bytes) -> bool:
        return any(hmac.compare_digest(self.mac(message, k), mac) for k in self.keys)

    # -- tokens ----------------------------------------------------------------------------------------
    def issue_token(self, subject: str, tier: str, expiry: float, use: str = "") -> str:
        """A token for `subject`, granting access class `tier` until `expiry` (unix seconds); `use="describe"`
        for the IIIF Auth access tokens (descriptions only)."""
        _check(subject, tier)
        if use not in USES:
            raise ValueError(f"a token's use is one of {USES}")
        doc: dict[str, object] = {"sub": subject, "tier": tier, "exp": int(expiry)}
        if use:
            doc["use"] = use
        payload = _b64(json.dumps(doc, separators=(",", ":"), sort_keys=True).encode())
        signed = f"{PREFIX}.{payload}"
        return f"{signed}.{_b64(self.mac(signed.encode()))}"

    def verify_token(self, token: str, now: float | None = None) -> Claims | None:
        """The claims of a valid, unexpired token; None for anything else."""
        if len(token) > MAX_TOKEN:
            return None
        parts = token.split(".")
        if len(parts) != 3 or parts[0] != PREFIX:
            return None
        try:
            mac = _unb64(parts[2])
            if not self.verify(f"{parts[0]}.{parts[1]}".encode(), mac):
                return None
            doc = json.loads(_unb64(parts[1]))
        except (binascii.Error, ValueError):
            return None
        if not isinstance(doc, dict):
            return None
        sub, tier, exp, use = doc.get("sub"), doc.get("tier"), doc.get("exp"), doc.get("use", "")
        if not isinstance(sub, str) or tier not in CLASSES or isinstance(exp, bool) or not isinstance(exp, int):
            return None
        if use not in USES:
            return None
        if exp <= (time.time() if now is None else now):
            return None
        return Claims(sub, str(tier), exp, str(use))

    # -- signed URLs -----------------------------------------------------------------------------------
    def _url_message(self, path: str, query: str, expiry: int, tier: str) -> bytes:
        return "\x00".join(("url", path, query, str(expiry), tier)).encode()

    def sign_url(self, path: str, query: str = "", tier: str = "authorised", expiry: float = 0.0) -> str:
        """The query string of a signed URL for `path?query` (query as it will be sent, without a `?`)."""
        _check("", tier)
        exp = int(expiry)
        sig = _b64(self.mac(self._url_message(path, query, exp, tier)))
        signed = f"sig={sig}&exp={exp}&tier={tier}"
        return f"{query}&{signed}" if query else signed

    def verify_url(self, path: str, query: str, sig: str, exp: str, tier: str, now: float | None = None) -> bool:
        if tier not in CLASSES or not exp.isdigit() or len(exp) > 12 or len(sig) > 64:
            return False
        if int(exp) <= (time.time() if now is None else now):
            return False
        try:
            mac = _unb64(sig)
        except (binascii.Error, ValueError):
            return False
        return self.verify(self._url_message(path, query, int(exp), tier), mac)


def _check(subject: str, tier: str) -> None:
    if tier not in CLASSES:
        raise ValueError(f"a token's tier is one of {', '.join(CLASSES)}")
    if len(subject) > MAX_SUBJECT:
        raise ValueError("a token's subject is at most 256 characters")
