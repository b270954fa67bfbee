"""Deployment files agree with the code: the container's command is a valid `tileserver` command line, and
the compose file's health check and settings name a real route and real settings. (No Docker engine runs
on the project's machines, so the image itself is not built here.)"""

from __future__ import annotations

import json
import re
from pathlib import Path

from tileserver.cli import build_parser
from tileserver.settings import Settings

ROOT = Path(__file__).resolve().parents[1]


def test_dockerfile_command_parses() -> None:
    text = (ROOT / "Dockerfile").read_text()
    cmd = json.loads(re.search(r"^CMD (\[.*\])$", text, re.M)[1])  # type: ignore[index]
    assert cmd[0] == "tileserver"
    args = build_parser().parse_args(cmd[1:])
    assert (args.command, args.root, args.host, args.port, args.workers) == ("serve", "/images", "0.0.0.0", 8000, 2)


def test_compose_names_real_settings_and_routes() -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    for name in re.findall(r"^\s+(TILESERVER_[A-Z_]+):", text, re.M):
        assert name.removeprefix("TILESERVER_").lower() in Settings.model_fields, name
    assert "/health" in text and ":/images:ro" in text
