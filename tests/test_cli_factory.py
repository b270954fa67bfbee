"""cli.app_from_env, the workers' app factory: what startup made is frozen out of the garbage collector's walk."""

from __future__ import annotations

import gc
from pathlib import Path

import pytest

from tileserver import cli


def test_the_worker_factory_freezes_what_startup_made(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TILESERVER_SETTINGS_JSON", raising=False)
    monkeypatch.setenv("TILESERVER_ROOT", str(tmp_path))
    gc.unfreeze()
    try:
        app = cli.app_from_env()
        assert app.state.settings.root == tmp_path
        assert gc.get_freeze_count() > 10_000  # the modules, the app and its settings
    finally:
        gc.unfreeze()  # this test process goes on making and dropping apps
