"""External identities: JWTs issued by an identity provider (PyJWT), for the `external` profile of IIIF Auth
and for API clients.

A JWT is accepted as `Authorization: Bearer ...` (a token that is not one of ours) and in the cookie
`access_jwt_cookie` (an SSO's session cookie). It is verified with `access_jwt_key` (an HMAC secret, or a PEM
public key, inline or as a file's path) for the algorithms of `access_jwt_algorithms` only (never chosen by the
token: an RS256 key is not usable as an HS256 secret), with `exp` required and `aud`/`iss` checked when set. The
subject is `sub`; a `tier` claim of `anonymous` or `authorised` names the access class, anything else (or none)
is `authorised`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import jwt

from .policy import CLASSES
from .tokens import MAX_TOKEN, Claims

ASYMMETRIC = ("RS", "ES", "PS", "Ed")


@dataclass(frozen=True)
class JwtVerifier:
    key: str
    algorithms: tuple[str, ...]
    audience: str | None = None
    issuer: str | None = None

    def __repr__(self) -> str:  # never the key
        return f"JwtVerifier({','.join(self.algorithms)})"

    @classmethod
    def of(cls, key: str, algorithms: str, audience: str | None, issuer: str | None) -> JwtVerifier:
        algs = tuple(a.strip() for a in algorithms.split(",") if a.strip())
        if not algs:
            raise ValueError("access_jwt_algorithms: at least one algorithm")
        unknown = [a for a in algs if a not in jwt.algorithms.get_default_algorithms()]
        if unknown:
            raise ValueError(f"access_jwt_algorithms: unknown {', '.join(unknown)}")
        text = key.strip()
        if not text.startswith("-----") and os.path.isfile(text):
            with open(text, encoding="utf-8") as f:
                text = f.read().strip()
        pem = text.startswith("-----BEGIN")
        asymmetric = [a.startswith(ASYMMETRIC) for a in algs]
        if (pem and not all(asymmetric)) or (not pem and any(asymmetric)):
            raise ValueError("access_jwt_key: a PEM public key goes with RS/ES/PS/EdDSA algorithms only, "
                             "a secret with HS algorithms only")
        if not pem and len(text) < 32:
            raise ValueError("access_jwt_key: an HMAC secret of at least 32 characters (RFC 7518 §3.2)")
        return cls(text, algs, audience or None, issuer or None)

    def verify(self, token: str) -> Claims | None:
        if len(token) > MAX_TOKEN or token.count(".") != 2:
            return None
        try:
            doc = jwt.decode(token, self.key, algorithms=list(self.algorithms), audience=self.audience,
                             issuer=self.issuer, options={"require": ["exp"], "verify_aud": self.audience is not None})
        except (jwt.PyJWTError, ValueError, TypeError):
            return None
        sub = doc.get("sub")
        tier = doc.get("tier")
        exp = doc.get("exp")
        return Claims(str(sub)[:256] if isinstance(sub, str) else "",
                      tier if tier in CLASSES else "authorised", int(exp) if isinstance(exp, (int, float)) else 0)
