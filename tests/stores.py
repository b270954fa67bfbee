"""Real stores on loopback, for the store tests and bench/stores.py: an S3 API (moto's server mode), nginx
serving a folder by byte range, and `StoreProxy` (tests/store_proxy.py, re-exported here), a reverse proxy
in front of either that counts requests and response bytes, adds latency and injects faults.

    with moto_server() as s3:                      # S3Service: endpoint, credentials, region
        s3.create_bucket("images")
        s3.upload_tree("images", root, prefix="set/")
        with StoreProxy(s3.endpoint, latency=0.02) as proxy:
            env = s3.via(proxy.url).env()         # AWS_* variables for `tileserver serve s3://images/set`
            proxy.fail("503", retry_after=1, times=2)
            proxy.counts().requests

    with nginx_files(root) as base:                # "http://127.0.0.1:PORT", `root` served at "/"
        ...

moto ships with the `test` extra; nginx is Debian's (`nginx-light`, installed by `.ci/run`). Outside CI a
test whose service cannot be had is skipped; under CI (CI set) it fails. Every service binds 127.0.0.1 and
is stopped on exit."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, NoReturn

import httpx
import pytest

from .live import free_port, stop
from .store_proxy import Counts, Exchange, Fault, FaultKind, StoreProxy

__all__ = ["Counts", "Exchange", "Fault", "FaultKind", "FileServer", "S3Service", "StoreProxy", "moto_server",
           "nginx", "nginx_files", "unavailable"]

ACCESS_KEY = "tileserver-test-key"
SECRET_KEY = "tileserver-test-secret"
REGION = "us-east-1"
NGINX = "/usr/sbin/nginx"


def unavailable(why: str) -> NoReturn:
    """Skips the test, or fails it under CI, where every store service must be there."""
    if os.environ.get("CI"):
        pytest.fail(f"store tests must run in CI: {why}")
    pytest.skip(why)


def wait_answering(url: str, proc: subprocess.Popen[bytes], what: str, timeout: float = 15.0) -> None:
    """Until `url` answers any HTTP status; fails when `proc` exits or `timeout` passes."""
    deadline = time.monotonic() + timeout
    with httpx.Client(trust_env=False, timeout=1.0) as client:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"{what} exited with {proc.returncode}")
            try:
                client.get(url)
                return
            except httpx.HTTPError:
                time.sleep(0.05)
    raise RuntimeError(f"{what} did not answer {url} within {timeout} s")


# ------------------------------------------------------------------------------------------------- S3
@dataclass(frozen=True)
class S3Service:
    """An S3 endpoint with fixed test credentials. `via(url)` is the same service reached through another
    endpoint (a StoreProxy); `env()` gives the AWS variables a `tileserver serve s3://...` process reads."""

    endpoint: str
    access_key_id: str = ACCESS_KEY
    secret_access_key: str = SECRET_KEY
    region: str = REGION

    def via(self, endpoint: str) -> S3Service:
        return replace(self, endpoint=endpoint)

    def env(self) -> dict[str, str]:
        return {"AWS_ACCESS_KEY_ID": self.access_key_id, "AWS_SECRET_ACCESS_KEY": self.secret_access_key,
                "AWS_REGION": self.region, "AWS_ENDPOINT_URL": self.endpoint, "AWS_ALLOW_HTTP": "true"}

    def config(self) -> dict[str, str]:
        """obstore S3Store `config`: these credentials, this endpoint, path-style addressing."""
        return {"endpoint": self.endpoint, "access_key_id": self.access_key_id,
                "secret_access_key": self.secret_access_key, "region": self.region,
                "virtual_hosted_style_request": "false"}

    def store(self, bucket: str, prefix: str = "") -> Any:
        from obstore.store import S3Store

        return S3Store(bucket, prefix=prefix or None, config=self.config(), client_options={"allow_http": True})

    def create_bucket(self, bucket: str) -> None:
        """A new bucket (names of 3 to 63 characters); an existing one is kept."""
        r = httpx.put(f"{self.endpoint}/{bucket}", trust_env=False, timeout=10)
        if r.status_code not in (200, 409):
            raise RuntimeError(f"bucket {bucket}: HTTP {r.status_code} {r.text[:200]}")

    def put(self, bucket: str, key: str, data: bytes | Path) -> None:
        import obstore

        obstore.put(self.store(bucket), key, data)

    def upload_tree(self, bucket: str, root: Path, prefix: str = "") -> list[str]:
        """Every file under `root` as `prefix` + its relative path (prefix "set/" -> "set/a/b.tif"); the keys."""
        keys = []
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            key = prefix + path.relative_to(root).as_posix()
            self.put(bucket, key, path)
            keys.append(key)
        return keys

    def get(self, bucket: str, key: str) -> bytes:
        import obstore

        return bytes(obstore.get(self.store(bucket), key).bytes())

    def reset(self) -> None:
        """Forgets every bucket and object (moto's reset)."""
        httpx.post(f"{self.endpoint}/moto-api/reset", trust_env=False, timeout=10).raise_for_status()


def moto_executable() -> str:
    here = Path(sys.executable).with_name("moto_server")
    found = str(here) if here.exists() else shutil.which("moto_server")
    if not found:
        unavailable("moto_server is not installed (pip install 'moto[server]', in the test extra)")
    return found


@contextmanager
def moto_server(log: Path | None = None) -> Iterator[S3Service]:
    """moto's S3 server on a free loopback port (its output in `log`, else discarded), until exit."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    with open(log or os.devnull, "ab") as out:
        proc = subprocess.Popen([moto_executable(), "-H", "127.0.0.1", "-p", str(port)], env=env, stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        wait_answering(endpoint + "/moto-api/", proc, "moto_server")
        yield S3Service(endpoint)
    finally:
        stop(proc)


# ---------------------------------------------------------------------------------------------- nginx
@dataclass(frozen=True)
class FileServer:
    """A folder served over HTTP: files written under `root` are at `url` + "/" + their relative path."""

    root: Path
    url: str

    def url_of(self, relative: str) -> str:
        return f"{self.url}/{relative.lstrip('/')}"


NGINX_MAIN = """\
daemon off;
master_process off;
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    default_type application/octet-stream;
{http}
}}
"""
FILES_HTTP = """\
    access_log {access};
    sendfile on;
    keepalive_requests 100000;
    keepalive_timeout 75s;
    server {{
        listen 127.0.0.1:{port};
        root {root};
        autoindex {autoindex};
        autoindex_format json;
    }}
"""


def nginx_executable() -> str:
    if not os.access(NGINX, os.X_OK):
        unavailable(f"{NGINX} is missing (apt-get install nginx-light)")
    return NGINX


@contextmanager
def nginx(http: Callable[[Path], str], port: int, *, ready_path: str = "/", what: str = "nginx") -> Iterator[Path]:
    """Debian's nginx as the current user (one process, `master_process off`) on loopback, running the
    http-block text `http(folder)` gives for its temp folder (config, pid, error.log and temp folders live
    there; put access logs there too). Yields the folder once 127.0.0.1:`port` answers `ready_path` (any
    status); stopped on exit. The http text must `listen 127.0.0.1:port`."""
    exe = nginx_executable()
    with tempfile.TemporaryDirectory(prefix=f"{what}-") as name:
        tmp = Path(name)
        conf = tmp / "nginx.conf"
        conf.write_text(NGINX_MAIN.format(tmp=tmp, http=http(tmp)))
        with open(tmp / "stdout.log", "ab") as out:
            proc = subprocess.Popen([exe, "-e", f"{tmp}/error.log", "-p", str(tmp), "-c", str(conf)], stdout=out,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            try:
                wait_answering(f"http://127.0.0.1:{port}{ready_path}", proc, what)
            except RuntimeError as exc:
                raise RuntimeError(f"{exc}: {(tmp / 'error.log').read_text(errors='replace')[-2000:]}") from exc
            yield tmp
        finally:
            stop(proc)


@contextmanager
def nginx_files(root: Path, *, autoindex: bool = False, access_log: bool = False) -> Iterator[str]:
    """`nginx` serving `root` at "/" on a free loopback port with its static-file defaults: Range (206,
    multiple ranges too), ETag, Last-Modified, If-None-Match / If-Modified-Since / If-Range. `autoindex`:
    folders answer a JSON listing. Yields the base URL "http://127.0.0.1:PORT"."""
    port = free_port()

    def http(tmp: Path) -> str:
        return FILES_HTTP.format(port=port, root=Path(root).resolve(), autoindex="on" if autoindex else "off",
                                 access=f"{tmp}/access.log" if access_log else "off")

    with nginx(http, port, what="nginx-files"):
        yield f"http://127.0.0.1:{port}"
