"""Command line: `tileserver serve [ROOT]`, `tileserver info`."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

from . import __version__


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from .settings import Settings

    overrides: dict[str, Any] = {}
    for key in ("root", "host", "port", "workers", "threads"):
        value = getattr(args, key)
        if value is not None:
            overrides[key] = value
    settings = Settings(**overrides)
    if not settings.root.is_dir():
        print(f"tileserver: image root {settings.root} is not a folder", file=sys.stderr)
        return 2
    # worker processes rebuild the app from the environment: hand them the resolved settings
    os.environ["TILESERVER_SETTINGS_JSON"] = settings.model_dump_json()
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    uvicorn.run("tileserver.cli:app_from_env", factory=True, host=settings.host, port=settings.port,
                workers=settings.workers, log_level="info" if args.verbose else "warning",
                access_log=args.verbose, proxy_headers=True, server_header=False)
    return 0


def app_from_env() -> Any:
    """Uvicorn factory used by every worker process."""
    from .app import create_app
    from .settings import Settings

    raw = os.environ.get("TILESERVER_SETTINGS_JSON")
    settings = Settings.model_validate_json(raw) if raw else Settings()
    return create_app(settings)


def _info(args: argparse.Namespace) -> int:
    from .encode import available_formats
    from .reader import libvips_version
    from .settings import Settings

    settings = Settings()
    print(json.dumps({
        "version": __version__, "libvips": libvips_version(),
        "output_formats": [f.suffix for f in available_formats()],
        "settings": json.loads(settings.model_dump_json()),
    }, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tileserver", description="Multi-protocol image tile server")
    p.add_argument("--version", action="version", version=f"tileserver {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve", help="serve the images under ROOT")
    s.add_argument("root", nargs="?", help="image root folder (default: settings / TILESERVER_ROOT)")
    s.add_argument("--host", help="bind address (default 127.0.0.1)")
    s.add_argument("--port", type=int, help="port (default 8000)")
    s.add_argument("--workers", type=int, help="server processes (default 1)")
    s.add_argument("--threads", type=int, help="pyvips threads per process (default 4)")
    s.add_argument("-v", "--verbose", action="store_true", help="log requests")
    s.set_defaults(func=_serve)
    i = sub.add_parser("info", help="print version, libvips, output formats and settings as JSON")
    i.set_defaults(func=_info)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result: int = args.func(args)
    return result
