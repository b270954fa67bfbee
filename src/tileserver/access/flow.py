"""What the IIIF Auth services can do, from settings: the credentials they check and the profiles they offer.

- `active`: the login page, with a user file (`access_users`, access/users.py);
- `kiosk`: the kiosk page logs in any client from `access_kiosk_networks` without a password;
- `external`: no page: the token service finds the user already known, by the trusted proxy's identity header
  (`access_identity_header`) or an external JWT (`access_jwt_key`, access/identity.py).

Logging in sets the access cookie (`access_cookie`, an HMAC token of access/tokens.py, HttpOnly, lasting
`access_session_ttl`); the token services turn it (or the external identity) into an access token for the
viewer's script, a `describe` token of `access_token_ttl`. All of it is stateless: any replica with the same
`access_key` verifies what another issued.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from .identity import JwtVerifier
from .tokens import Keys
from .users import Users

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
PROFILES = ("external", "kiosk", "active")  # the order clients try them in (Auth 2.0 §3.3)


@dataclass(frozen=True)
class AuthFlow:
    keys: Keys
    users: Users | None = None
    kiosk: tuple[Network, ...] = ()
    jwt: JwtVerifier | None = None
    jwt_cookie: str | None = None
    identity_header: bool = False
    cookie: str = "tileserver_access"
    session_ttl: int = 8 * 3600
    token_ttl: int = 600
    samesite: str = "lax"
    origins: tuple[str, ...] = ("*",)
    label: str = "tileserver"

    @property
    def profiles(self) -> tuple[str, ...]:
        """The access services offered, in the order a client tries them."""
        on = {"active": self.users is not None, "kiosk": bool(self.kiosk),
              "external": self.identity_header or self.jwt is not None}
        return tuple(p for p in PROFILES if on[p])

    def origin_allowed(self, origin: str) -> bool:
        return "*" in self.origins or origin in self.origins

    def in_kiosk(self, host: str | None) -> bool:
        if host is None or not self.kiosk:
            return False
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(address in n for n in self.kiosk)


def parse_networks(text: str) -> tuple[Network, ...]:
    try:
        return tuple(ipaddress.ip_network(n.strip(), strict=False) for n in text.split(",") if n.strip())
    except ValueError as exc:
        raise ValueError(f"access_kiosk_networks: {exc}") from None
