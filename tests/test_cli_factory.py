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


class _Entry:
    """A cache entry's shape: a small object with a dict, alive as long as its cache keeps it."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.key = (str(n), n)


def test_long_lived_entries_do_not_set_off_full_collections(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """After startup, a cold pass's cache entries (many long-lived acyclic objects) make young collections only;
    cyclic garbage is still collected."""
    monkeypatch.delenv("TILESERVER_SETTINGS_JSON", raising=False)
    monkeypatch.setenv("TILESERVER_ROOT", str(tmp_path))
    before = gc.get_threshold()
    started: list[int] = []

    def seen(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started.append(info["generation"])

    gc.unfreeze()
    try:
        cli.app_from_env()
        assert gc.get_threshold() == (before[0], before[1], cli.FULL_GC_EVERY)
        gc.callbacks.append(seen)
        kept = [_Entry(n) for n in range(300_000)]
        assert 2 not in started and 1 in started, started.count(1)
        cycle: list[object] = []
        cycle.append(cycle)
        del cycle
        assert gc.collect(1) >= 1  # a young collection finds it
        assert len(kept) == 300_000
    finally:
        if seen in gc.callbacks:
            gc.callbacks.remove(seen)
        gc.set_threshold(*before)
        gc.unfreeze()
