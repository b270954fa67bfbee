"""Command line: `tileserver serve [ROOT]`, `tileserver info`, `tileserver convert SRC DST.tif`."""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import sys
from collections.abc import MutableMapping, Sequence
from typing import TYPE_CHECKING, Any

from . import __version__

if TYPE_CHECKING:
    from pathlib import Path

    from .settings import Settings


SECRET_VAR = "TILESERVER_STORE_SECRET_ACCESS_KEY"
# settings a dump masks, handed to worker processes through their own variables
SECRETS = {"store_secret_access_key": SECRET_VAR, "cache_api_token": "TILESERVER_CACHE_API_TOKEN",
           "access_key": "TILESERVER_ACCESS_KEY", "access_jwt_key": "TILESERVER_ACCESS_JWT_KEY"}


def _serve(args: argparse.Namespace) -> int:
    from .settings import Settings

    overrides: dict[str, Any] = {}
    for key in ("root", "host", "port", "workers", "threads"):
        value = getattr(args, key)
        if value is not None:
            overrides[key] = value
    settings = Settings(**overrides)
    if settings.root_url is None and not settings.root.is_dir():
        print(f"tileserver: image root {settings.root} is not a folder", file=sys.stderr)
        return 2
    if settings.huge_pages and heap_tunables(os.environ) and settings.workers == 1:
        # glibc reads its tunables when a process starts: this one starts again with them (the same pid)
        os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])
    folders = _shared_folders(settings)
    settings = settings.model_copy(update=folders)
    try:
        return _run(settings, args)
    finally:
        from .sources.jp2share import remove_folder

        for folder in folders.values():
            remove_folder(folder)


# glibc malloc tunables `tileserver serve` asks for (`heap_tunables`), each unless the operator named it already
HEAP_TUNABLES = {
    "glibc.malloc.hugetlb": "1",  # the heap in transparent huge pages
    "glibc.malloc.trim_threshold": str(16 << 20),  # up to 16 MB of freed heap kept, not given back and faulted again
    "glibc.malloc.mmap_threshold": str(1 << 20),  # blocks up to 1 MB (a decoded tile is 192 KB) from that heap
}


def heap_tunables(environ: MutableMapping[str, str]) -> bool:
    """Ask glibc's malloc, in the processes started from now on, for a heap in transparent huge pages that is kept
    once grown (`HEAP_TUNABLES` added to `GLIBC_TUNABLES`, each unless it is named there already: the operator's
    choice stands); whether anything was asked here (False off Linux or glibc).

    Why: a cold tile is new memory for the tile and replay caches, and each 4 KB page of it was a page fault (11 per
    60 KB stored tile); with THP in `madvise` mode (Debian's and Ubuntu's default) the heap grows by 2 MB pages
    instead. But glibc gives the top of its heap back once more than twice its largest freed block is free there
    (its default, dynamic, thresholds), and a re-encoded tile's decoded pixels (192 KB) and its encoder's buffer
    came and went often enough to trim it: each new 2 MB page was zeroed again (the kernel's `clear_page_erms`, 1-3 %
    of a cold `QLT=75` pass under perf). Fixed thresholds keep up to 16 MB of it. Where THP is off only the
    thresholds change."""
    if not sys.platform.startswith("linux") or not _glibc():
        return False
    tunables = environ.get("GLIBC_TUNABLES", "")
    named = {part.partition("=")[0] for part in tunables.split(":") if part}
    added = [f"{name}={value}" for name, value in HEAP_TUNABLES.items() if name not in named]
    if not added:
        return False
    environ["GLIBC_TUNABLES"] = ":".join(filter(None, (tunables, *added)))
    return True


def _glibc() -> bool:
    try:
        return (os.confstr("CS_GNU_LIBC_VERSION") or "").startswith("glibc")
    except (ValueError, OSError):  # a C library that does not know the name (musl)
        return False


def _shared_folders(settings: Settings) -> dict[str, Path]:
    """The folders the worker processes of this server share, made here and removed at exit: decoded JPEG 2000
    tiles (each decoded once) and metrics (one scrape counts every worker); none for one process."""
    if settings.workers == 1:
        return {}
    from .sources.jp2share import share_folder

    out = {}
    if settings.jp2_share is None:
        out["jp2_share"] = share_folder(kind="jp2")
    if settings.metrics and settings.metrics_dir is None:
        out["metrics_dir"] = share_folder(kind="metrics")
    return out


def _run(settings: Settings, args: argparse.Namespace) -> int:
    from .web.server import serve

    # worker processes rebuild the app from the environment: hand them the resolved settings
    # (the secrets, which a dump masks, through variables of their own)
    os.environ["TILESERVER_SETTINGS_JSON"] = settings.model_dump_json(exclude=set(SECRETS))
    for name, var in SECRETS.items():
        secret = getattr(settings, name)
        if secret is not None:
            os.environ[var] = secret.get_secret_value()
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return serve(settings, verbose=args.verbose)


def app_from_env() -> Any:
    """Uvicorn factory used by every worker process."""
    from .app import create_app
    from .settings import Settings

    raw = os.environ.get("TILESERVER_SETTINGS_JSON")
    settings = Settings.model_validate_json(raw) if raw else Settings()
    if raw:
        from pydantic import SecretStr

        secrets = {name: SecretStr(os.environ[var]) for name, var in SECRETS.items() if os.environ.get(var)}
        settings = settings.model_copy(update=secrets)
    return frozen(create_app(settings))


# Full collections after this many collections of the middle generation instead of Python's 10 (the young
# generations keep Python's thresholds). What a cold tile leaves alive is its cache entries (about 16 tracked,
# acyclic objects: the request, its translation, replay record and tile entries), and each full collection walked
# all of them (about 300 ns each; 25-35 ms for a cold pass of 6,241 tiles, two or three times per pass) while no
# cyclic garbage reached the old generation (`gc.collect()` after such a pass finds none). Cycles are still
# collected young, and the old generation still in full every 1000 x 10 x 700 allocations.
FULL_GC_EVERY = 1000


def frozen(app: Any) -> Any:
    """`app`, with every object made so far (modules, the app, its settings) moved out of the garbage
    collector's reach (`gc.freeze`): a full collection no longer walks them, which took 80-130 ms of a
    worker's GIL under load (bench/overload.py), stalling every request of the process. Full collections
    are then rarer (`FULL_GC_EVERY`)."""
    gc.collect()
    gc.freeze()
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, FULL_GC_EVERY)
    return app


def _shown(settings: Settings) -> dict[str, Any]:
    """The settings as `tileserver info` prints them: secrets masked, a cache URL without its password."""
    from .cache.backends import redacted

    shown: dict[str, Any] = json.loads(settings.model_dump_json())
    if shown.get("cache_url"):
        shown["cache_url"] = redacted(shown["cache_url"])
    return shown


def _info(args: argparse.Namespace) -> int:
    from .imaging import turbojpeg
    from .imaging.encode import available_formats
    from .settings import Settings
    from .sources.openjpeg import library
    from .sources.pyramid import libvips_version

    settings = Settings()
    lib = library()
    print(json.dumps({
        "version": __version__, "libvips": libvips_version(),
        "openjpeg": {"version": lib.version, "library": lib.path} if lib else None,
        "turbojpeg": crops.path if (crops := turbojpeg.library()) else None,  # lossless edge-tile crops
        "output_formats": [f.suffix for f in available_formats()],
        "settings": _shown(settings),
    }, indent=2))
    return 0


def _convert(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .imaging.convert import ConvertError, ConvertOptions, ProgressBar, convert

    opts = ConvertOptions(args.compression, args.tile_size, args.quality, args.force)
    show = sys.stderr.isatty() and not args.quiet
    try:
        img = convert(Path(args.src), Path(args.dst), opts, ProgressBar() if show else None)
    except ConvertError as exc:
        print(f"tileserver: {exc}", file=sys.stderr)
        return 1
    levels = img.get("n-pages") if img.get_typeof("n-pages") else 1
    print(f"wrote {args.dst}: {img.width} x {img.height}, {levels} levels, {args.compression} "
          f"{args.tile_size}x{args.tile_size} tiles")
    return 0


def _add_convert(sub: Any) -> None:
    from .imaging.convert import COMPRESSIONS

    c = sub.add_parser("convert", help="write a tiled pyramidal TIFF from any image libvips reads")
    c.add_argument("src", help="source image")
    c.add_argument("dst", help="destination .tif")
    c.add_argument("--compression", choices=COMPRESSIONS, default="jpeg", help="tile codec (default jpeg)")
    c.add_argument("--tile-size", type=int, default=256, choices=[128, 256, 512, 1024], help="tile size (256)")
    c.add_argument("--quality", type=int, default=90, choices=range(1, 101), metavar="1-100",
                   help="JPEG/WebP quality (90)")
    c.add_argument("--force", action="store_true", help="replace DST if it exists")
    c.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    c.set_defaults(func=_convert)


def _token(args: argparse.Namespace) -> int:
    """An access token, or a signed URL, under the configured `access_key` (access/tokens.py)."""
    import time

    from .access.tokens import Keys
    from .settings import Settings

    key = Settings().access_key
    if key is None:
        print("tileserver: TILESERVER_ACCESS_KEY is not set", file=sys.stderr)
        return 2
    keys = Keys.parse(key.get_secret_value())
    expiry = time.time() + args.ttl
    if args.sign_url is not None:
        path, _, query = args.sign_url.partition("?")
        print(f"{path}?{keys.sign_url(path, query, args.tier, expiry)}")
    else:
        print(keys.issue_token(args.subject, args.tier, expiry))
    return 0


def _add_token(sub: Any) -> None:
    t = sub.add_parser("token", help="print an access token (cookie or bearer), or a signed URL with --sign-url")
    t.add_argument("--subject", default="", help="who the token is for (logged by nothing, carried in it)")
    t.add_argument("--tier", choices=["authorised", "anonymous"], default="authorised", help="access class")
    t.add_argument("--ttl", type=int, default=3600, help="seconds until it expires (3600)")
    t.add_argument("--sign-url", metavar="PATH?QUERY", help="sign this path and query (as the server receives "
                   "them) instead of issuing a token")
    t.set_defaults(func=_token)


def _passwd(args: argparse.Namespace) -> int:
    """Add or replace a user of the login page's user file (access/users.py), the password read from stdin
    (a terminal prompts for it twice)."""
    import getpass
    from pathlib import Path

    from .access.users import Users, hash_line

    if sys.stdin.isatty():
        password = getpass.getpass(f"password for {args.user}: ")
        if getpass.getpass("again: ") != password:
            print("tileserver: the passwords differ", file=sys.stderr)
            return 2
    else:
        password = sys.stdin.readline().rstrip("\n")
    try:
        line = hash_line(args.user, password, args.rounds)
    except ValueError as exc:
        print(f"tileserver: {exc}", file=sys.stderr)
        return 2
    path = Path(args.file)
    kept = [] if not path.exists() else [
        raw for raw in path.read_text("utf-8").splitlines() if raw.partition(":")[0].strip() != args.user]
    text = "\n".join([*kept, line]) + "\n"
    Users.parse(text, path.name)  # never write a file the server would refuse
    path.write_text(text, "utf-8")
    path.chmod(0o600)
    return 0


def _add_passwd(sub: Any) -> None:
    t = sub.add_parser("passwd", help="add or replace a user of the login page's user file (bcrypt, as htpasswd -B)")
    t.add_argument("file", help="the user file (TILESERVER_ACCESS_USERS); made if missing")
    t.add_argument("user", help="the user name")
    t.add_argument("--rounds", type=int, default=12, choices=range(4, 16), metavar="4-15",
                   help="bcrypt cost (12)")
    t.set_defaults(func=_passwd)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tileserver", description="Multi-protocol image tile server")
    p.add_argument("--version", action="version", version=f"tileserver {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve", help="serve the images under ROOT")
    s.add_argument("root", nargs="?", help="image root: a folder, or a store URL (s3://BUCKET/PREFIX, "
                   "https://HOST/PREFIX/, gs://, az://) (default: settings / TILESERVER_ROOT)")
    s.add_argument("--host", help="bind address (default 127.0.0.1)")
    s.add_argument("--port", type=int, help="port (default 8000)")
    s.add_argument("--workers", type=int, help="server processes (default 1)")
    s.add_argument("--threads", type=int, help="pyvips threads per process (default 2)")
    s.add_argument("-v", "--verbose", action="store_true", help="log requests")
    s.set_defaults(func=_serve)
    i = sub.add_parser("info", help="print version, libvips, output formats and settings as JSON")
    i.set_defaults(func=_info)
    _add_convert(sub)
    _add_token(sub)
    _add_passwd(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result: int = args.func(args)
    return result
