"""Settings: one typed object, built once and passed to `create_app(settings)`.

Every option has a `TILESERVER_` environment variable. iipsrv's own variable names are honoured too
(lower priority than the `TILESERVER_` ones), so an iipsrv configuration carries over unchanged; the
mapping is `IIPSRV_ENV` below and the README table. Nothing here is read at import time: the
environment is read when `Settings()` is constructed.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict

PROTOCOL_NAMES = ("iip", "iiif", "deepzoom", "zoomify")
CACHE_SCHEMES = ("redis://", "rediss://", "memcached://")
STORE_SCHEMES = ("s3://", "gs://", "az://", "abfs://", "azure://", "http://", "https://")
Interpolation = Literal["nearest", "linear", "cubic", "mitchell", "lanczos2", "lanczos3"]
Channel = Annotated[int, Field(ge=0, le=255)]
RGB = tuple[Channel, Channel, Channel]


def _flag(value: str) -> bool:
    return value.strip().lower() not in {"0", "false", "no", "off", ""}


def _max_cvt(value: str) -> int | None:
    n = int(value)
    if n == -1:
        return None
    return 5000 if n == 0 else max(n, 1)


def _prefix(value: str) -> dict[str, Any]:
    """iipsrv's FILESYSTEM_PREFIX is a plain string glued before the path: a folder when it ends
    in `/`, otherwise a folder plus a file-name prefix (`/data/img_` + `x.tif`)."""
    if value.endswith("/") or os.path.isdir(value):
        return {"root": value}
    head, tail = os.path.split(value)
    return {"root": head or ".", "filename_prefix": tail}


def default_derive_dir() -> Path | None:
    """Where derived pyramids go unless configured: the XDG cache of the server's user
    (`$XDG_CACHE_HOME/tileserver/derived`, else `~/.cache/tileserver/derived`); None when the user has
    no home. Not the temp dir: /tmp is often a RAM disk (tmpfs), emptied at boot, and shared by all users."""
    base = os.environ.get("XDG_CACHE_HOME", "")
    if not os.path.isabs(base):  # the XDG spec: a relative value is to be ignored
        try:
            home = Path.home()
        except (KeyError, RuntimeError):
            return None
        base = str(home / ".cache")
    return Path(base) / "tileserver" / "derived"


def _clamp(lo: int, hi: int) -> Callable[[str], int]:
    return lambda v: min(max(int(v), lo), hi)


# iipsrv variable -> (our field, converter). A converter may return a dict of several fields.
IIPSRV_ENV: dict[str, tuple[str, Callable[[str], Any]]] = {
    "FILESYSTEM_PREFIX": ("root", _prefix),
    "FILESYSTEM_SUFFIX": ("filename_suffix", str),
    "JPEG_QUALITY": ("jpeg_quality", _clamp(1, 100)),
    "PNG_QUALITY": ("png_compression", _clamp(0, 9)),
    "WEBP_QUALITY": ("webp_quality", _clamp(-1, 100)),
    "AVIF_QUALITY": ("avif_quality", _clamp(-1, 100)),
    "MAX_CVT": ("max_size", _max_cvt),
    "ALLOW_UPSCALING": ("allow_upscaling", _flag),
    "CORS": ("cors", str),
    "BASE_URL": ("base_url", str),
    "CACHE_CONTROL": ("cache_control", str),
    "MAX_IMAGE_CACHE_SIZE": ("tile_cache_mb", float),
    "MAX_METADATA_CACHE_SIZE": ("metadata_cache_size", lambda v: 1_000_000 if int(v) < 0 else int(v)),
    "INTERPOLATION": ("interpolation", lambda v: "nearest" if v.strip() == "0" else "linear"),
    "COPYRIGHT": ("rights", str),
    "EMBED_ICC": ("keep_icc", _flag),
    "MAX_ICC": ("keep_icc", lambda v: int(v) != 0),
    "CODEC_PASSTHROUGH": ("passthrough", _flag),
    "IIIF_VERSION": ("iiif_version", lambda v: 2 if int(v) < 3 else 3),
    "IIIF_DELIMITER": ("iiif_delimiter", str),
    "FILENAME_PATTERN": ("filename_pattern", str),
    "MEMCACHED_SERVERS": ("cache_url", lambda v: "memcached://" + ",".join(p.strip() for p in v.split(","))),
    "MEMCACHED_TIMEOUT": ("cache_ttl", _clamp(1, 2_592_000)),
    "WATERMARK": ("watermark", str),
    "WATERMARK_PROBABILITY": ("watermark_probability", lambda v: min(max(float(v), 0.0), 1.0)),
    "WATERMARK_OPACITY": ("watermark_opacity", lambda v: min(max(float(v), 0.0), 1.0)),
}


class IipsrvEnvSource(PydanticBaseSettingsSource):
    """Reads iipsrv's unprefixed variable names (below `TILESERVER_*` in priority)."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str] | None = None):
        super().__init__(settings_cls)
        self.environ = os.environ if environ is None else environ

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # unused: __call__ maps whole variables

    def __call__(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, (field, convert) in IIPSRV_ENV.items():
            raw = self.environ.get(name)
            if raw is None or raw == "":
                continue
            try:
                value = convert(raw)
            except ValueError as exc:
                raise ValueError(f"iipsrv variable {name}={raw!r} is not valid: {exc}") from exc
            if isinstance(value, dict):
                out.update(value)
            else:
                out[field] = value
        return out


class Settings(BaseSettings):
    """All configuration. Field docs double as the README configuration table."""

    model_config = SettingsConfigDict(env_prefix="TILESERVER_", extra="forbid", frozen=True)

    root: Path = Field(Path("images"), description="Image root folder; nothing outside it is read")
    filename_prefix: str = Field("", description="Prepended to every identifier's file name")
    filename_suffix: str = Field("", description="Appended to every identifier (e.g. `.tif`)")
    filename_pattern: str = Field("_pyr_", description="Separator of an image sequence's name and view angles: "
                                  "IIP `FIF=seq` is the files `seq_pyr_XXX_YYY.tif` (iipsrv FILENAME_PATTERN)")
    host: str = Field("127.0.0.1", description="Bind address for `tileserver serve`")
    port: int = Field(8000, ge=0, le=65535, description="Bind port")
    workers: int = Field(1, ge=1, le=64, description="Server processes")
    threads: int = Field(2, ge=1, le=256, description="Pyvips threads per process (one pool)")
    jpeg_quality: int = Field(75, ge=1, le=100, description="Default JPEG quality")
    png_compression: int = Field(1, ge=0, le=9, description="PNG zlib level")
    webp_quality: int = Field(50, ge=-1, le=100, description="WebP quality; -1 = lossless")
    avif_quality: int = Field(50, ge=-1, le=100, description="AVIF quality; -1 = lossless")
    tiff_compression: Literal["none", "lzw", "deflate", "jpeg", "webp", "zstd"] = Field(
        "deflate", description="TIFF output compression"
    )
    max_size: int | None = Field(5000, ge=1, description="Largest output width/height (None: no limit)")
    max_area: int | None = Field(None, ge=1, description="Largest output area in pixels (None: no limit)")
    allow_upscaling: bool = Field(True, description="Allow output larger than the source region")
    interpolation: Interpolation = Field("lanczos3", description="Resampling kernel")
    keep_icc: bool = Field(True, description="Embed the source ICC profile in outputs")
    background: RGB = Field((255, 255, 255), description="Colour behind transparent pixels in JPEG output "
                            "(JSON list)")
    rotation_fill: RGB = Field((0, 0, 0), description="Fill for the corners of rotated JPEG output, black as "
                               "in libvips' own `rotate` (JSON list)")
    cors: str = Field("*", description="Access-Control-Allow-Origin value; empty disables CORS")
    base_url: str = Field("", description="Public base URL used in IIIF ids and redirects")
    cache_control: str = Field("max-age=86400", description="Cache-Control on successful responses")
    passthrough: bool = Field(True, description="Send stored JPEG/WebP TIFF tiles without re-encoding")
    front: bool = Field(True, description="Answer tile requests that need no waiting (cached, or stored tiles "
                        "in the page cache) in `tileserver serve`'s HTTP protocol, before any ASGI cycle "
                        "(web/front.py); off: every request goes through the ASGI app")
    watermark: str | None = Field(None, description="Image laid over every image response (iipsrv WATERMARK): a "
                                  "local path or a store URL under a configured store root, any format libvips "
                                  "reads, its alpha band used; checked at startup (unreadable: the server does "
                                  "not start); None: off")
    watermark_probability: float = Field(1.0, ge=0, le=1, description="Share of tiles (and of the 2-tile blocks of "
                                         "larger outputs) that get the watermark, chosen per tile so a tile is the "
                                         "same every time (iipsrv WATERMARK_PROBABILITY)")
    watermark_opacity: float = Field(1.0, ge=0, le=1, description="Opacity of the watermark (iipsrv "
                                     "WATERMARK_OPACITY)")
    watermark_blend: Literal["add", "over"] = Field("add", description="How the watermark is laid on: add (iipsrv: "
                                                  "its colour times its alpha and the opacity added to the "
                                                  "pixels, so a mark drawn on black only brightens) or over "
                                                  "(alpha compositing)")
    tile_cache_mb: float = Field(128.0, ge=0, description="Encoded-tile cache per process, in MB")
    decoded_cache_mb: float = Field(256.0, ge=0, description="Decoded small levels kept per process, in MB")
    slide_cache_mb: float = Field(64.0, ge=0, description="OpenSlide's decoded-tile cache, shared by the whole-slide "
                                  "images of a process, in MB")
    jp2_cache_mb: float = Field(256.0, ge=0, description="Decoded JPEG 2000 codestream tiles (and blocks of "
                                "untiled codestreams) kept per process, in MB; with `jp2_share`, the worker "
                                "processes share one store of `workers` times that; each is decoded once")
    jp2_share: Path | None = Field(None, description="Folder where the worker processes of one server share "
                                   "decoded JPEG 2000 tiles; `tileserver serve --workers N` (N > 1) makes one in "
                                   "/dev/shm and removes it at exit; None: each process decodes its own")
    jp2_threads: int = Field(1, ge=1, le=64, description="OpenJPEG threads per JPEG 2000 decode (the pool's "
                             "threads already decode in parallel)")
    metadata_cache_size: int = Field(1000, ge=0, description="Image metadata entries cached per process")
    stat_interval: float = Field(1.0, ge=0, description="Seconds between file mtime re-checks (a due check runs in "
                                 "the background, answering from the image as loaded up to twice this long; 0: every "
                                 "request checks)")
    open_images: int = Field(64, ge=1, description="Open image handles kept per thread")
    virtual_tile_size: int = Field(256, ge=16, le=4096, description="Tile size for untiled sources")
    # -- derived pyramids of large untiled images (sources/derived.py, cache/disk.py) --
    derive_dir: Path | None = Field(default_factory=default_derive_dir,
                                    description="Folder of pyramids derived from large untiled images (JPEG, PNG, "
                                    "striped TIFF, WebP), shared by the worker processes; empty: no derivation")
    derive_cache_mb: float = Field(2048.0, gt=0, description="Size cap of the derived pyramids, in MB; the least "
                                   "recently used are deleted first, never one in use")
    derive_min_megapixels: float = Field(16.0, ge=0, description="Untiled images of more pixels than this (16: "
                                         "4096 x 4096) are converted to a pyramid on first use")
    derive_quality: int = Field(85, ge=1, le=100, description="JPEG quality of derived pyramids (8-bit RGB and "
                                "grey; 16-bit and alpha images are stored lossless, deflate); from 90 up libvips "
                                "stores RGB without chroma subsampling, about 3 times larger")
    derive_jobs: int = Field(1, ge=1, le=16, description="Conversions running at once per process")
    derive_preview_size: int = Field(2048, ge=64, le=8192, description="Longest side of the preview that answers "
                                     "an image's requests while its pyramid is made")
    # -- shared cache, single flight across replicas, the cache API (cache/shared.py, core.py, protocols/cacheapi.py) --
    cache_url: str | None = Field(None, description="Shared second-level cache of the replicas of a cluster: "
                                  "`redis://HOST:PORT/DB` (`rediss://` for TLS, `redis://:PASSWORD@HOST...`) or "
                                  "`memcached://HOST:PORT[,HOST:PORT...]` (iipsrv MEMCACHED_SERVERS); it holds "
                                  "encoded tiles and image metadata behind the in-process caches; None: off")
    cache_ttl: int = Field(86400, ge=1, le=2_592_000, description="Seconds a shared-cache entry lives (at most 30 "
                           "days, memcached's limit; iipsrv MEMCACHED_TIMEOUT)")
    cache_max_entry_bytes: int = Field(1_000_000, ge=1024, le=512 << 20, description="Largest entry stored in the "
                                       "shared cache (memcached refuses items over 1 MB by default: raise its `-I` "
                                       "before this)")
    cache_timeout: float = Field(0.1, gt=0, le=10, description="Seconds one shared-cache call may take; a slower or "
                                 "failed call is a miss (the request goes on from the local caches and the image)")
    cache_breaker_seconds: float = Field(5.0, gt=0, le=300, description="After a failed or slow call, seconds the "
                                         "shared cache is not used at all (then one call tries it again)")
    cache_lease_ms: int = Field(2000, ge=10, le=60_000, description="Single flight across the cluster: how long "
                                "a replica that misses a tile holds its lease while it renders it; the replicas "
                                "missing it meanwhile wait for its result up to this long, then render it themselves")
    cache_generation_ttl: float = Field(1.0, ge=0, le=60, description="Seconds a replica trusts the purge "
                                        "generation it last read for an image: a purge made through any replica is "
                                        "seen by all within this (plus `cache_timeout`)")
    cache_api_token: SecretStr | None = Field(None, description="Bearer token of the cache API (`DELETE /cache/{id}`, "
                                              "`DELETE /cache`, `POST /cache/{id}/warm`); at least 16 characters; "
                                              "None: the API is off (404)")
    # -- access control (access/): tiers, tokens, signed URLs --
    access_policy: str | None = Field(None, description="Access policy: JSON inline (starting with `{`) or the path "
                                      "of a JSON file: named tiers, a default and rules by glob or folder, each "
                                      "giving an anonymous and an authorised tier (access/policy.py); None with no "
                                      "sidecars and no hook: everything is full for everyone")
    access_sidecars: bool = Field(False, description="Read a tier pair from `<image>.access.json` next to a local "
                                  "image (it overrides the rules; a broken one denies the image)")
    access_hook: str | None = Field(None, description="`module:function` called with the identifier and the image's "
                                    "location (in a pool thread); returns None or `{\"anonymous\": tier, "
                                    "\"authorised\": tier}`; it overrides sidecars and rules")
    access_key: SecretStr | None = Field(None, description="HMAC-SHA256 key(s) of access tokens and signed URLs, "
                                         "comma-separated (the first signs, all verify: rotation), each at least "
                                         "16 characters; None: no token or signed URL is accepted")
    access_cookie: str = Field("tileserver_access", pattern=r"^[A-Za-z0-9_\-]{1,64}$",
                               description="Name of the cookie holding an access token")
    access_identity_header: str | None = Field(None, pattern=r"^[A-Za-z0-9\-]{1,64}$", description="A header (e.g. "
                                               "`X-Remote-User`) whose non-empty value, set by a trusted proxy "
                                               "(`trusted_proxies`), makes the request authorised; dropped from "
                                               "any other client")
    # -- IIIF Auth (protocols/iiif/auth.py, pages/auth.py): the services that let a viewer log in --
    access_users: Path | None = Field(None, description="User file of the login page (`user:bcrypt-hash` lines, as "
                                      "`htpasswd -B` or `tileserver passwd` write them): declares the `active` "
                                      "IIIF Auth access service (Auth 2.0 and 1.0 login) on restricted images")
    access_kiosk_networks: str = Field("", description="Comma-separated client networks (CIDR) whose requests to "
                                       "the kiosk access service are logged in without a password: declares the "
                                       "`kiosk` profile")
    access_jwt_key: SecretStr | None = Field(None, description="Verifies JWTs of an external identity provider "
                                             "(bearer, or the cookie `access_jwt_cookie`): an HMAC secret, or a PEM "
                                             "public key inline or as a file's path")
    access_jwt_algorithms: str = Field("HS256", pattern=r"^[A-Za-z0-9, ]{1,200}$", description="JWT algorithms "
                                       "accepted, comma-separated (HS* with a secret, RS*/ES*/PS*/EdDSA with a "
                                       "PEM key)")
    access_jwt_audience: str | None = Field(None, description="Required `aud` of a JWT (None: not checked)")
    access_jwt_issuer: str | None = Field(None, description="Required `iss` of a JWT (None: not checked)")
    access_jwt_cookie: str | None = Field(None, pattern=r"^[A-Za-z0-9_\-]{1,64}$", description="A cookie holding "
                                          "a JWT (an SSO's session cookie); with `access_jwt_key` or the identity "
                                          "header it declares the `external` profile")
    access_session_ttl: int = Field(8 * 3600, ge=60, le=90 * 86400, description="Seconds a login (the access "
                                    "cookie the login and kiosk pages set) lasts")
    access_token_ttl: int = Field(600, ge=10, le=86400, description="Seconds an IIIF Auth access token (for "
                                  "info.json and probes only) lasts, at most the session's remaining time")
    access_cookie_samesite: Literal["lax", "strict", "none"] = Field("lax", description="SameSite of the access "
                                                                     "cookie: `none` (with Secure) when viewers on "
                                                                     "other sites must send it")
    access_origins: str = Field("*", description="Origins the token services hand access tokens to, comma-separated"
                                "; `*`: any (an access token shows descriptions only)")
    access_label: str = Field("tileserver", max_length=200, description="The institution named in the login "
                              "services' labels (`Log in to ...`)")
    cache_warm_max_tiles: int = Field(20_000, ge=1, le=10_000_000, description="Most tiles one warm-up request may "
                                      "ask for (more: 413)")
    # -- stores: images in object storage and behind HTTP (sources/vfs.py, sources/stores.py) --
    root_url: str | None = Field(None, description="Image root as a URL instead of a folder: `s3://BUCKET/PREFIX`, "
                                 "`gs://...`, `az://...`, `https://HOST/PREFIX/` (`tileserver serve URL`, or "
                                 "TILESERVER_ROOT set to a URL); objects are read by byte range")
    store_endpoint: str | None = Field(None, description="S3 endpoint URL (MinIO, Ceph, R2, ...); default "
                                       "AWS_ENDPOINT_URL, else AWS")
    store_region: str | None = Field(None, description="S3 region; default AWS_REGION")
    store_access_key_id: str | None = Field(None, description="S3 access key; default AWS_ACCESS_KEY_ID")
    store_secret_access_key: SecretStr | None = Field(None, description="S3 secret key; default "
                                                      "AWS_SECRET_ACCESS_KEY (never logged or shown)")
    store_options: dict[str, str] = Field(default_factory=dict, description="More obstore configuration keys for the "
                                          "store (JSON), e.g. `{\"use_emulator\": \"true\"}` for Azurite or "
                                          "`{\"base_url\": ...}` for a GCS emulator; the `STORE_*` settings win")
    store_virtual_hosted: bool = Field(False, description="S3 virtual-hosted-style addressing "
                                       "(`BUCKET.HOST`) instead of path style (`HOST/BUCKET`, MinIO and Ceph)")
    store_allow_http: bool = Field(False, description="Allow a plain-http store endpoint (also AWS_ALLOW_HTTP; "
                                   "an `http://` root or endpoint allows it)")
    store_timeout: float = Field(10.0, gt=0, le=300, description="Seconds one store request may take")
    store_connect_timeout: float = Field(3.0, gt=0, le=60, description="Seconds to connect to a store")
    store_retries: int = Field(3, ge=0, le=10, description="Retries of a failed idempotent store request "
                               "(exponential backoff from 100 ms)")
    store_retry_timeout: float = Field(15.0, gt=0, le=600, description="Seconds after which a failing store "
                                       "request is not retried again (then 502/503/504 with Retry-After)")
    store_threads: int = Field(16, ge=1, le=256, description="Tile-lane threads per process when images come from "
                               "a store (instead of `threads`, if more): a cold tile's thread mostly waits on "
                               "the network, so more of them keep the CPU busy")
    store_block_cache_mb: float = Field(64, ge=0, description="Cache of the small reads of remote objects "
                                        "(TIFF directories) per process, MB")
    resolvers: dict[str, str] = Field(default_factory=dict, description="Location template per identifier "
                                      "prefix, tried before the image root: "
                                      "`{\"slides/\": \"s3://BUCKET/scans/{id}.svs\"}` "
                                      "(`{id}`: the identifier after the prefix, `{ident}`: all of it); JSON in "
                                      "the environment")
    resolver_hook: str | None = Field(None, description="`module:function` called with each identifier (before "
                                      "the templates), returning a path or store URL, or None to go on")
    resolver_roots: list[str] = Field(default_factory=list, description="More folders and store URLs the hook's "
                                      "locations may lie under (the image root and the templates' roots always "
                                      "may); anything else is a 404")
    source_cache_dir: Path | None = Field(None, description="Folder of the local copies of remote objects read "
                                          "only from files (slides, JPEG 2000, untiled images); default "
                                          "`$TMPDIR/tileserver-sources-UID`")
    source_cache_mb: float = Field(10240, gt=0, description="Bound of the source cache folder, MB (least "
                                   "recently used copies removed; a larger object is a 422)")
    # -- request and connection limits, trusted proxies, shutdown (web/limits.py, web/proxies.py, web/server.py) --
    max_url_bytes: int = Field(8192, ge=256, description="Longest request target (path and query string) in "
                               "bytes; longer is a 414")
    max_header_bytes: int = Field(32768, ge=1024, description="Largest request head (request line and headers) "
                                  "`tileserver serve` reads, in bytes; larger is a 431 (a 414 when the URL "
                                  "alone is too long) and the connection is closed")
    max_body_bytes: int = Field(65536, ge=0, description="Largest request body (an IIP POST form) in bytes; "
                                "larger is a 413, refused from its Content-Length before it is read, or as "
                                "soon as a chunked body passes the limit")
    header_timeout: float = Field(10.0, gt=0, description="Seconds a client has to send a request's headers, "
                                  "from connecting (or from the request's first byte on a kept-alive "
                                  "connection); then `tileserver serve` closes the connection (after a 408 "
                                  "when part of a request came)")
    body_timeout: float = Field(10.0, gt=0, description="Seconds a client has to send a request body, from "
                                "its first read; then 408 and the connection is closed")
    keep_alive_timeout: int = Field(5, ge=1, description="Seconds an idle kept-alive connection stays open "
                                    "(uvicorn's `timeout_keep_alive`)")
    max_connections: int | None = Field(2048, ge=1, description="Open connections per process; past it, "
                                        "requests are answered 503 (uvicorn's `limit_concurrency`); None: no cap")
    trusted_proxies: Annotated[tuple[str, ...], NoDecode] = Field(
        ("127.0.0.1", "::1"), description="Addresses or networks (comma-separated, e.g. `10.0.0.0/8,::1`) whose "
        "`Forwarded` and `X-Forwarded-*` headers count (public URLs, client address, scheme); from any other "
        "client they are dropped; `*`: trust every client; empty: none")
    shutdown_timeout: int = Field(8, ge=0, description="Seconds `tileserver serve` waits, after SIGTERM or "
                                  "SIGINT, for the requests in flight to finish before it cancels them and exits "
                                  "(new connections are refused at once)")
    # -- pixel budget (sources/budget.py) --
    max_image_megapixels: float = Field(100_000.0, gt=0, description="Largest image (or level of one) served, "
                                        "in declared megapixels (100000: 316228 x 316228, past every slide "
                                        "scanner and most gigapixel panoramas); larger ones are refused (422) "
                                        "when their metadata is read")
    max_untiled_megapixels: float = Field(1_000.0, gt=0, description="Largest image, in megapixels, read whole "
                                          "to be served: an untiled file (JPEG, PNG, WebP, striped TIFF, ...), "
                                          "converted to a pyramid in the background (derive_dir), or the stored "
                                          "level that smaller levels are shrunk from (a one-level tiled TIFF); "
                                          "larger ones are refused (422)")
    max_decode_megapixels: float = Field(100.0, gt=0, description="Most pixels one decode may hold in memory "
                                         "at once, in megapixels: a stored tile or strip, or a whole file libvips "
                                         "cannot read in pieces (GIF, WebP, HEIF/AVIF, progressive JPEG, "
                                         "interlaced PNG, and every untiled file when no pyramid is derived); "
                                         "an image needing more is refused (422)")
    # -- admission control: two lanes, limits and a deadline (admission.py) --
    admission_small_cost: float = Field(4.0, gt=0, description="Renders whose estimated cost is at most this many "
                                        "megapixel-equivalents (pixels decoded from the source plus output pixels "
                                        "weighted by format, rotation and source: admission.py) run in the tile "
                                        "lane, on `threads` threads kept for them; costlier ones in the large lane")
    admission_large_threads: int = Field(1, ge=1, le=64, description="Large renders running at once per process, "
                                         "on threads of their own")
    admission_large_nice: int = Field(10, ge=0, le=19, description="How much lower the OS priority (nice) of the "
                                      "large lane's render processes (with `admission_large_processes`; else its "
                                      "threads) is, so that tiles get the CPU first (0: the same). Without render "
                                      "processes libvips' own worker threads are shared by both lanes and keep "
                                      "theirs")
    admission_large_processes: bool = Field(True, description="Run large renders in child processes (as many as "
                                            "`admission_large_threads`, started when first needed, niced by "
                                            "`admission_large_nice`, reused): their libvips threads then give way "
                                            "to tiles, and an abandoned render's child is killed, which frees its "
                                            "CPU and memory at once; false: in the large lane's threads")
    admission_large_megapixels: float = Field(100.0, gt=0, description="Pixels (decoded plus output, in millions) "
                                              "that the large renders of a process may have in flight; one render "
                                              "always runs when the lane is idle, however large")
    admission_large_queue: int = Field(8, ge=0, le=1024, description="Large renders that may wait for a place per "
                                       "process, FIFO; one waits only while a place is expected within "
                                       "`admission_queue_wait` (from the recent seconds per cost unit), else it "
                                       "gets 503 with Retry-After at once, as past the queue's length")
    admission_queue_wait: float = Field(5.0, ge=0, description="Seconds a large render may wait in that queue "
                                        "before it gets 503")
    admission_deadline: float = Field(30.0, gt=0, description="Seconds a render may take, waiting included; past "
                                      "that the client gets 503 and the work is cancelled (libvips stops at its "
                                      "next block; a GIF or JPEG 2000 encode runs to its end) and counts against "
                                      "the limits until it really stops")
    # -- operations: metrics, access log, health probes (metrics.py, web/telemetry.py, pages/index.py) --
    warm_up: bool = Field(True, description="Warm each worker at start, before it takes a connection (warmup.py: "
                          "a throwaway app over a small generated pyramid answers every protocol's tile URLs a few "
                          "times, the output formats are probed), so that its first requests are not slower than "
                          "the rest; ~0.4 s per worker start")
    huge_pages: bool = Field(True, description="`tileserver serve` on Linux with glibc: its processes' malloc "
                             "heap in transparent huge pages and kept once grown (glibc.malloc.hugetlb=1, "
                             "trim_threshold=16 MB and mmap_threshold=1 MB added to GLIBC_TUNABLES, each unless it "
                             "names that tunable already): the tile and replay caches grow without a page fault "
                             "per 4 KB (11 per cold stored tile before), and re-encodes' buffers do not make glibc "
                             "give pages back and fault them in again; one process re-executes itself to take it")
    metrics: bool = Field(True, description="Prometheus metrics at `/metrics` (requests, latency, caches, "
                          "render paths and times, source reads, admission); labels carry route templates, never "
                          "identifiers; false: no `/metrics` and nothing recorded")
    metrics_dir: Path | None = Field(None, description="Folder where the worker processes of one server keep their "
                                     "metrics for one scrape (prometheus-client multiprocess mode); `tileserver serve "
                                     "--workers N` (N > 1) makes one in /dev/shm and removes it at exit; None: "
                                     "each process alone")
    access_log: Literal["off", "json", "text"] = Field("off", description="Access log on stderr, one line per "
                                                       "response: `json` (time, method, path, query, status, bytes, "
                                                       "duration_ms, source, client, protocol, route, worker) or "
                                                       "`text`; off: none")
    split_timing: bool = Field(False, description="Time the decode and the encode of libvips renders apart "
                               "(Server-Timing `decode` and `encode`, their metrics): outputs up to 4 MP are made "
                               "in memory before they are encoded, about 10 % more CPU per decoded tile; off: one "
                               "`decode` figure for libvips' single pass (recoded tiles are always split)")
    ready_timeout: float = Field(2.0, gt=0, le=60, description="Seconds within which the thread pool must run a "
                                 "trivial job and the image root be readable for `/health/ready` to answer 200")

    @field_validator("cache_url")
    @classmethod
    def _cache_url(cls, v: str | None) -> str | None:
        if v is None or not v.strip():
            return None
        v = v.strip()
        if not v.startswith(CACHE_SCHEMES) or not v.split("://", 1)[1].strip("/,"):
            raise ValueError(f"cache_url must be {' or '.join(s + 'HOST:PORT' for s in CACHE_SCHEMES)}")
        return v

    @field_validator("cache_api_token", mode="before")
    @classmethod
    def _token(cls, v: Any) -> Any:
        raw = v.get_secret_value() if isinstance(v, SecretStr) else v
        if raw is None or (isinstance(raw, str) and not raw.strip()):
            return None
        if not isinstance(raw, str) or len(raw.strip()) < 16:
            raise ValueError("cache_api_token must be at least 16 characters")
        return raw.strip()

    @field_validator("access_key", mode="before")
    @classmethod
    def _access_key(cls, v: Any) -> Any:
        raw = v.get_secret_value() if isinstance(v, SecretStr) else v
        if raw is None or (isinstance(raw, str) and not raw.strip()):
            return None
        keys = [k.strip() for k in raw.split(",")] if isinstance(raw, str) else []
        if not keys or any(len(k) < 16 for k in keys):
            raise ValueError("access_key: each comma-separated key must be at least 16 characters")
        return ",".join(keys)

    @field_validator("access_policy", "access_hook", "access_identity_header", "access_jwt_audience",
                     "access_jwt_issuer", "access_jwt_cookie", "access_users", mode="before")
    @classmethod
    def _empty_access(cls, v: Any) -> Any:
        return None if isinstance(v, str) and not v.strip() else v

    @field_validator("metrics_dir", mode="before")
    @classmethod
    def _no_empty_metrics_dir(cls, v: Any) -> Any:
        return None if isinstance(v, str) and not v.strip() else v
    rights: str = Field("", description="Rights URI / copyright when the image carries none")
    iiif_version: Literal[2, 3] = Field(3, description="IIIF version answered at `/iiif/{id}`")
    iiif_delimiter: str = Field("", description="Separator of a page index in IIIF identifiers: with `;`, "
                                "`stack.tif;2` is page 2 of an image stack; empty: off (iipsrv IIIF_DELIMITER)")
    max_identifier_length: int = Field(1024, ge=16, description="Longest accepted identifier")
    deepzoom_tile_size: int | None = Field(None, ge=1, le=4096,
                                           description="DeepZoom TileSize (None: the file's own tile width)")
    deepzoom_overlap: int = Field(0, ge=0, le=64, description="DeepZoom tile Overlap in pixels")
    zoomify_rounding: Literal["up", "down"] = Field(
        "up", description="Zoomify tiers halve rounding up (libvips, OpenLayers) or down (OpenSeadragon)")
    # -- viewer pages and IIIF manifests (pages/viewers.py, pages/manifests.py) --
    viewer_cdn: str = Field("https://cdn.jsdelivr.net/npm",
                            description="Where viewer pages load the pinned viewer packages from (npm CDN base)")
    viewer_assets: Path | None = Field(None, description="Folder holding the viewer npm packages (a node_modules); "
                                       "served at /assets/ and used instead of the CDN, for offline use")
    protocols: Annotated[tuple[str, ...], NoDecode] = Field(("iip", "iiif", "deepzoom", "zoomify"),
                                       description="Protocols to serve (comma-separated)")

    @field_validator("protocols", mode="before")
    @classmethod
    def _split_protocols(cls, v: Any) -> Any:
        names = tuple(p.strip().lower() for p in v.split(",") if p.strip()) if isinstance(v, str) else v
        unknown = set(names) - set(PROTOCOL_NAMES)
        if unknown:
            raise ValueError(f"unknown protocols {sorted(unknown)}; choose from {', '.join(PROTOCOL_NAMES)}")
        return names

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _split_proxies(cls, v: Any) -> Any:
        names = tuple(p.strip() for p in v.split(",") if p.strip()) if isinstance(v, str) else tuple(v)
        for name in names:
            if name != "*":
                try:
                    ipaddress.ip_network(name, strict=False)
                except ValueError as exc:
                    raise ValueError(f"trusted_proxies: {name!r} is not an address, a network or *") from exc
        return names

    @model_validator(mode="after")
    def _overlap_below_tile(self) -> Settings:
        if self.deepzoom_tile_size is not None and self.deepzoom_overlap >= self.deepzoom_tile_size:
            raise ValueError(f"deepzoom_overlap ({self.deepzoom_overlap}) must be smaller than "
                             f"deepzoom_tile_size ({self.deepzoom_tile_size})")
        return self

    @field_validator("filename_pattern")
    @classmethod
    def _plain_pattern(cls, v: str) -> str:
        if any(c in v for c in "/\\\x00"):
            raise ValueError("filename_pattern must not contain '/', '\\' or NUL: it is part of one file name")
        return v

    @field_validator("viewer_assets", "derive_dir", mode="before")
    @classmethod
    def _no_empty_assets(cls, v: Any) -> Any:
        return None if isinstance(v, str) and not v.strip() else v  # `VAR=` must not mean the current folder

    @field_validator("root")
    @classmethod
    def _expand_root(cls, v: Path) -> Path:
        return v.expanduser()

    @model_validator(mode="before")
    @classmethod
    def _root_as_url(cls, data: Any) -> Any:
        """`root` given as a store URL (TILESERVER_ROOT=s3://..., `tileserver serve https://...`) is `root_url`."""
        if isinstance(data, dict):
            root = data.get("root")
            if isinstance(root, str) and root.startswith(STORE_SCHEMES):
                data = {**data, "root_url": root}
                del data["root"]
        return data

    @field_validator("resolvers")
    @classmethod
    def _templates(cls, v: dict[str, str]) -> dict[str, str]:
        for prefix, template in v.items():
            if not prefix or ("{id}" not in template and "{ident}" not in template):
                raise ValueError(f"resolvers: {prefix!r} needs a non-empty prefix and an {{id}} in its template")
            fixed = template[: template.index("{")]
            if not fixed.startswith(STORE_SCHEMES) and not os.path.isabs(fixed):
                raise ValueError(f"resolvers: the template of {prefix!r} must start with a store URL or an "
                                 "absolute folder")
        return v

    @field_validator("root_url")
    @classmethod
    def _store_url(cls, v: str | None) -> str | None:
        if v is None or not v.strip():
            return None
        if not v.startswith(STORE_SCHEMES) or "://" not in v or not v.split("://", 1)[1].split("/", 1)[0]:
            raise ValueError(f"root_url must be a store URL ({', '.join(STORE_SCHEMES)}...)")
        return v

    @field_validator("watermark")
    @classmethod
    def _watermark_location(cls, v: str | None) -> str | None:
        """A local path made absolute (as given: the operator's, not under the image root); a store URL kept."""
        if v is None or not v.strip():
            return None
        v = v.strip()
        return v if v.startswith(STORE_SCHEMES) else str(Path(v).expanduser().absolute())

    @field_validator("derive_dir")
    @classmethod
    def _expand_derive_dir(cls, v: Path | None) -> Path | None:
        return None if v is None else v.expanduser().absolute()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, IipsrvEnvSource(settings_cls), dotenv_settings)

    @property
    def remote(self) -> bool:
        """Whether images may come from a store: the root, a resolver template or root is a URL, or a hook."""
        urls = [self.root_url or "", *self.resolvers.values(), *self.resolver_roots]
        return any(u.startswith(STORE_SCHEMES) for u in urls) or self.resolver_hook is not None

    @property
    def tile_threads(self) -> int:
        """The tile lane's threads: `threads`, or `store_threads` when images come from a store."""
        return max(self.threads, self.store_threads) if self.remote else self.threads

    @property
    def tile_cache_bytes(self) -> int:
        return int(self.tile_cache_mb * 1024 * 1024)

    @property
    def derive_cache_bytes(self) -> int:
        return int(self.derive_cache_mb * 1024 * 1024)
