"""Forwarded headers count only from trusted proxies (`Settings.trusted_proxies`).

A reverse proxy tells the server what its client asked for: `Forwarded` (RFC 7239) or
`X-Forwarded-Host`, `-Proto` and `-Prefix` for the public URLs (the ids of info.json and manifests, viewer
pages: `protocols.iiif.urls.public_base`), `X-Forwarded-For` and `-Proto` for the client's address and
scheme. Any client can send these headers. From a client that is not a trusted proxy they would choose
the ids of the documents it is served (and every URL a viewer follows from them, for whoever shares a
cache with it), so this middleware, the outermost (ahead of replay, whose keys include them), removes
them from the request before anything reads them.

From a trusted peer the headers stay, and the ASGI scope's `client` and `scheme` become the forwarded
ones, as uvicorn's ProxyHeadersMiddleware would set them (`tileserver serve` turns that one off, so
that this is the one place that decides): the client is the last address of `X-Forwarded-For` that is
not itself a trusted proxy. `*` trusts every peer: the headers always count.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from starlette.types import ASGIApp, Receive, Scope, Send

FORWARDED = frozenset({b"forwarded", b"x-forwarded-for", b"x-forwarded-host", b"x-forwarded-proto",
                       b"x-forwarded-prefix", b"x-forwarded-port"})
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class TrustedProxies:
    """Membership of peer addresses in a list of addresses and networks (or `*`)."""

    def __init__(self, entries: Iterable[str]) -> None:
        entries = tuple(entries)
        self.everyone = "*" in entries
        self.networks: tuple[Network, ...] = tuple(ipaddress.ip_network(e, strict=False) for e in entries if e != "*")
        self.exact = frozenset(str(n.network_address) for n in self.networks if n.num_addresses == 1)

    def __contains__(self, host: object) -> bool:
        if self.everyone:
            return True
        if not isinstance(host, str) or not host:
            return False
        if host in self.exact:
            return True
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False  # not an address (e.g. a test client's name): not a trusted proxy
        return any(address in n for n in self.networks)

    def forwarded(self, scope: Scope) -> Scope:
        """`scope` as the rest of the app sees it: with forwarded headers applied (a trusted peer) or removed."""
        if not any(name in FORWARDED for name, _ in scope["headers"]):
            return scope
        peer = scope.get("client")
        return self.apply(scope) if peer and peer[0] in self else self.strip(scope)

    @staticmethod
    def strip(scope: Scope) -> Scope:
        return {**scope, "headers": [(n, v) for n, v in scope["headers"] if n not in FORWARDED]}

    def apply(self, scope: Scope) -> Scope:
        headers = dict(scope["headers"])  # one value per name is enough here
        out = dict(scope)
        proto = headers.get(b"x-forwarded-proto", b"").decode("latin-1").split(",")[0].strip().lower()
        if proto in ("http", "https"):
            out["scheme"] = proto
        forwarded_for = b", ".join(v for n, v in scope["headers"] if n == b"x-forwarded-for")
        client = self.client_of(forwarded_for.decode("latin-1"))
        if client:
            out["client"] = (client, 0)
        return out

    def client_of(self, forwarded_for: str) -> str | None:
        """The client a chain of proxies reports: the last hop that is not a trusted proxy (the first
        when all are)."""
        hops = [host_of(h) for h in forwarded_for.split(",") if h.strip()]
        if not hops:
            return None
        if self.everyone:
            return hops[0]
        return next((h for h in reversed(hops) if h not in self), hops[0])


def host_of(hop: str) -> str:
    """The address of one `X-Forwarded-For` entry, without a port: `1.2.3.4:80`, `[::1]:80` -> `::1`."""
    hop = hop.strip()
    if hop.startswith("["):
        return hop[1:].partition("]")[0]
    if hop.count(":") == 1:
        return hop.partition(":")[0]
    return hop


class TrustedProxyMiddleware:
    def __init__(self, app: ASGIApp, trusted: Iterable[str]) -> None:
        self.app = app
        self.trusted = TrustedProxies(trusted)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scope = self.trusted.forwarded(scope)
        await self.app(scope, receive, send)
