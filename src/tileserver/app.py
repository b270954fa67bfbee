"""`create_app(settings)`: the Starlette application, its lifespan (thread pool, caches) and the
route table built from the enabled protocols."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware

from . import metrics, protocols
from .access.flow import AuthFlow, parse_networks
from .access.identity import JwtVerifier
from .access.tokens import Keys
from .access.users import Users
from .core import TileService
from .errors import install_handlers
from .pages import auth as auth_pages
from .pages import index as pages
from .pages import manifests, viewers
from .protocols import cacheapi, iiif
from .settings import Settings
from .warmup import warm_up
from .web import telemetry
from .web.access import AccessMiddleware
from .web.front import Front
from .web.lean import LeanMiddleware
from .web.limits import RequestLimitMiddleware
from .web.options import OptionsMiddleware
from .web.proxies import TrustedProxies, TrustedProxyMiddleware
from .web.replay import ReplayMiddleware


def auth_flow(settings: Settings, keys: Keys | None, jwt: JwtVerifier | None) -> AuthFlow | None:
    """The IIIF Auth services (access/flow.py): with an access key, which signs the logins they make."""
    wanted = settings.access_users is not None or bool(settings.access_kiosk_networks.strip())
    if keys is None:
        if wanted:
            raise ValueError("access_users and access_kiosk_networks need access_key (it signs the logins)")
        return None
    return AuthFlow(
        keys=keys, users=None if settings.access_users is None else Users.load(settings.access_users),
        kiosk=parse_networks(settings.access_kiosk_networks), jwt=jwt,
        jwt_cookie=settings.access_jwt_cookie, identity_header=settings.access_identity_header is not None,
        cookie=settings.access_cookie, session_ttl=settings.access_session_ttl, token_ttl=settings.access_token_ttl,
        samesite=settings.access_cookie_samesite,
        origins=tuple(o.strip() for o in settings.access_origins.split(",") if o.strip()) or ("*",),
        label=settings.access_label)


def create_app(settings: Settings | None = None) -> Starlette:
    settings = settings or Settings()
    service = TileService(settings)
    recording = metrics.configure(settings.metrics, settings.metrics_dir)
    sampler = metrics.Sampler()

    warmer = cacheapi.Warmer(service)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        service.start()
        if settings.warm_up:  # before the worker takes a connection: its first requests are not slower
            await warm_up(service, settings, create_app)
        try:
            async with telemetry.sampling(service, sampler):
                yield
        finally:
            await warmer.close()
            await service.aclose()
            service.stop()

    # forwarded headers dropped from untrusted clients first (replay keys and access logs include them); then
    # telemetry, so that replayed responses are counted and logged; then replay: repeats skip the rest
    middleware = [
        Middleware(TrustedProxyMiddleware, trusted=settings.trusted_proxies),
        Middleware(telemetry.TelemetryMiddleware, access_log=settings.access_log, record=recording),
        Middleware(ReplayMiddleware, service=service),
    ]
    flow = None
    if service.access is not None:  # an access policy: credentials read first (web/access.py), from the peer
        key = settings.access_key  # as connected, before the trusted-proxy middleware names the forwarded client
        keys = None if key is None else Keys.parse(key.get_secret_value())
        jwt = None if settings.access_jwt_key is None else JwtVerifier.of(
            settings.access_jwt_key.get_secret_value(), settings.access_jwt_algorithms, settings.access_jwt_audience,
            settings.access_jwt_issuer)
        flow = auth_flow(settings, keys, jwt)
        middleware.insert(0, Middleware(
            AccessMiddleware, keys=keys, cookie=settings.access_cookie,
            identity_header=settings.access_identity_header, trusted=TrustedProxies(settings.trusted_proxies),
            jwt=jwt, jwt_cookie=settings.access_jwt_cookie))
    # manifests come before the protocols (`/iiif/{rest:path}` would take them), and the protocols before
    # the pages, so the routes of tile requests are matched first
    manifest_routes = manifests.ROUTES if "iiif" in settings.protocols else []
    if service.access is not None and "iiif" in settings.protocols:  # IIIF Auth: substitutes, the auth pages
        manifest_routes = manifest_routes + iiif.PUBLIC_ROUTES + (auth_pages.ROUTES if flow is not None else [])
    routes = (cacheapi.routes(settings) + manifest_routes + protocols.routes(settings.protocols) + pages.ROUTES
              + viewers.ROUTES
              + viewers.asset_mounts(settings) + (telemetry.ROUTES if recording else []))
    if service.access is None:  # tile URLs straight to their endpoint, behind replay (web/lean.py)
        middleware.append(Middleware(LeanMiddleware, routes=routes, shape=protocols.is_tile_shape,
                                     tile_routes=protocols.routes(settings.protocols), settings=settings))
    if settings.cors:
        middleware.append(Middleware(
            CORSMiddleware, allow_origins=[o.strip() for o in settings.cors.split(",")],
            allow_methods=["GET", "HEAD", "POST", "OPTIONS"],
            allow_headers=["Accept", "Authorization", "Content-Type", "X-Requested-With", "If-Modified-Since",
                           "If-None-Match", "Range"],
            expose_headers=["ETag", "Last-Modified", "Link", "Content-Disposition", "Server-Timing"], max_age=86400,
        ))
    middleware += [Middleware(RequestLimitMiddleware, settings=settings), Middleware(OptionsMiddleware, routes=routes)]
    app = Starlette(routes=routes, middleware=middleware, lifespan=lifespan)
    app.state.settings = settings
    app.state.service = service
    app.state.sampler = sampler
    app.state.warmer = warmer
    app.state.auth_flow = flow
    app.state.query_protocols = protocols.query_commands(settings.protocols)
    # the front (web/front.py): `tileserver serve` answers what needs no waiting before the ASGI app
    app.state.front = None if service.access is not None or not settings.front else Front(
        app, routes, protocols.now_handlers(settings.protocols), protocols.is_front_shape, settings,
        telemetry.Telemetry(settings.access_log, recording))
    install_handlers(app)
    return app
