from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from tileserver.settings import IipsrvEnvSource, Settings


def iipsrv(env: dict[str, str]) -> dict[str, object]:
    return IipsrvEnvSource(Settings, env)()


def test_iipsrv_variables_map_to_settings() -> None:
    out = iipsrv({
        "FILESYSTEM_PREFIX": "/data/images/", "FILESYSTEM_SUFFIX": ".tif", "JPEG_QUALITY": "150",
        "PNG_QUALITY": "6", "WEBP_QUALITY": "-1", "MAX_CVT": "-1", "ALLOW_UPSCALING": "0", "CORS": "*",
        "BASE_URL": "https://img.example.org/", "CACHE_CONTROL": "no-store", "MAX_IMAGE_CACHE_SIZE": "20",
        "MAX_METADATA_CACHE_SIZE": "50", "INTERPOLATION": "0", "COPYRIGHT": "CC0", "EMBED_ICC": "0",
    })
    assert out == {
        "root": "/data/images/", "filename_suffix": ".tif", "jpeg_quality": 100, "png_compression": 6,
        "webp_quality": -1, "max_size": None, "allow_upscaling": False, "cors": "*",
        "base_url": "https://img.example.org/", "cache_control": "no-store", "tile_cache_mb": 20.0,
        "metadata_cache_size": 50, "interpolation": "nearest", "rights": "CC0", "keep_icc": False,
    }


def test_filesystem_prefix_with_a_name_part() -> None:
    assert iipsrv({"FILESYSTEM_PREFIX": "/nonexistent/data/img_"}) == {
        "root": "/nonexistent/data", "filename_prefix": "img_"}


def test_max_cvt_zero_means_default() -> None:
    assert iipsrv({"MAX_CVT": "0"}) == {"max_size": 5000}


def test_bad_iipsrv_value_fails_loudly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JPEG_QUALITY", "high")
    with pytest.raises(ValueError, match="JPEG_QUALITY"):
        Settings()


def test_prefixed_variable_wins(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("JPEG_QUALITY", "40")
    monkeypatch.setenv("TILESERVER_JPEG_QUALITY", "60")
    monkeypatch.setenv("TILESERVER_PROTOCOLS", "iip")
    s = Settings(root=tmp_path)
    assert s.jpeg_quality == 60
    assert s.protocols == ("iip",)


def test_invalid_setting_is_rejected() -> None:
    with pytest.raises(ValidationError):
        Settings(jpeg_quality=0)
    with pytest.raises(ValidationError):
        Settings(protocols="iip,gopher")  # type: ignore[arg-type]


def test_derive_dir_is_the_xdg_cache_unless_set(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("TILESERVER_DERIVE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert Settings().derive_dir == tmp_path / "xdg" / "tileserver" / "derived"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/cache")  # the XDG spec: a relative value is ignored
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert Settings().derive_dir == tmp_path / "home" / ".cache" / "tileserver" / "derived"
    monkeypatch.setenv("TILESERVER_DERIVE_DIR", "")
    assert Settings().derive_dir is None  # empty: no derivation
    monkeypatch.setenv("TILESERVER_DERIVE_DIR", str(tmp_path / "d"))
    monkeypatch.setenv("TILESERVER_DERIVE_CACHE_MB", "10")
    monkeypatch.setenv("TILESERVER_DERIVE_MIN_MEGAPIXELS", "50")
    s = Settings()
    assert (s.derive_dir, s.derive_cache_bytes, s.derive_min_megapixels) == (tmp_path / "d", 10 << 20, 50.0)
    with pytest.raises(ValidationError):
        Settings(derive_cache_mb=0)


@pytest.mark.parametrize(("env", "expected"), [
    pytest.param({"MEMCACHED_SERVERS": "mc1:11211, mc2"}, {"cache_url": "memcached://mc1:11211,mc2"}, id="servers"),
    pytest.param({"MEMCACHED_SERVERS": "localhost", "MEMCACHED_TIMEOUT": "3600"},
                 {"cache_url": "memcached://localhost", "cache_ttl": 3600}, id="timeout"),
    pytest.param({"MEMCACHED_TIMEOUT": "99999999"}, {"cache_ttl": 2_592_000}, id="ttl-capped-at-30-days"),
])
def test_iipsrv_memcached_variables_name_the_shared_cache(env: dict[str, str], expected: dict[str, object]) -> None:
    assert iipsrv(env) == expected
    assert Settings(**{k: v for k, v in expected.items()}).model_dump(include=set(expected)) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize("url", ["redis://127.0.0.1:6379/0", "rediss://:pw@cache:6380/2", "memcached://a:1,b:2"])
def test_cache_urls_accepted(url: str) -> None:
    assert Settings(cache_url=url).cache_url == url


@pytest.mark.parametrize("url", ["http://cache:6379", "redis://", "memcached://", "memcached://,"])
def test_cache_urls_refused(url: str) -> None:
    with pytest.raises(ValidationError, match="cache_url"):
        Settings(cache_url=url)


def test_cache_api_token_is_secret_and_long_enough() -> None:
    assert Settings(cache_api_token="").cache_api_token is None  # type: ignore[arg-type]
    settings = Settings(cache_api_token="x" * 20)  # type: ignore[arg-type]
    assert settings.cache_api_token is not None and "x" * 20 not in settings.model_dump_json()
    with pytest.raises(ValidationError, match="16 characters"):
        Settings(cache_api_token="short")  # type: ignore[arg-type]


def test_tileserver_info_shows_no_cache_secret(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
                                               ) -> None:
    import json

    from tileserver.cli import main

    monkeypatch.setenv("TILESERVER_CACHE_URL", "redis://:hunter2-password@cache:6379/1")
    monkeypatch.setenv("TILESERVER_CACHE_API_TOKEN", "api-token-hunter2-0123456789")
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "hunter2" not in out
    assert json.loads(out)["settings"]["cache_url"] == "redis://:***@cache:6379/1"
