"""`tileserver serve` against attacks on its connections (web/server.py), through a real process on a
loopback port: connections that send nothing or never finish their headers are closed within a few
header timeouts while normal clients keep being served; kept-alive connections time out; the request
head is bounded on the wire (414, 431); bodies are refused before they are read (413); forwarded
headers count from trusted peers only; past `max_connections` requests get 503; and SIGTERM drains the
requests in flight, refuses new connections and exits within `shutdown_timeout`, with 1 and 2 workers."""

from __future__ import annotations

import asyncio
import contextlib
import selectors
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
import pyvips
import uvicorn
from uvicorn.server import ServerState

from tileserver.web.server import GuardedProtocol, HeadLimits, TurnWriter

from ..conftest import RGB_TIF, decode
from ..live import clean_env, live_process
from .transport import Recording

TIMEOUT = 1.0  # header, body and keep-alive timeouts of the module's server, in seconds
MAX_URL, MAX_HEAD, MAX_CONNECTIONS = 2048, 4096, 40
SETTINGS = {"TILESERVER_HEADER_TIMEOUT": "1", "TILESERVER_BODY_TIMEOUT": "1", "TILESERVER_KEEP_ALIVE_TIMEOUT": "1",
            "TILESERVER_MAX_URL_BYTES": str(MAX_URL), "TILESERVER_MAX_HEADER_BYTES": str(MAX_HEAD),
            "TILESERVER_MAX_CONNECTIONS": str(MAX_CONNECTIONS), "TILESERVER_TRUSTED_PROXIES": "127.0.0.2"}

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def server(image_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    log = tmp_path_factory.mktemp("guarded") / "server.log"
    with live_process(image_root, log, workers=1, env=clean_env(**SETTINGS)) as (base, _):
        yield base


def connect(base: str) -> socket.socket:
    url = urlsplit(base)
    return socket.create_connection((url.hostname, url.port), timeout=10)


@pytest.fixture
def dial(server: str) -> Iterator[Callable[[], socket.socket]]:
    """Opens connections to the module's server, all closed after the test."""
    opened: list[socket.socket] = []

    def new() -> socket.socket:
        opened.append(connect(server))
        return opened[-1]

    yield new
    for s in opened:
        s.close()


def response_of(s: socket.socket) -> bytes:
    """One whole response (head and Content-Length body) on a kept-alive connection."""
    s.settimeout(5)
    data = b""
    while b"\r\n\r\n" not in data:
        data += s.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    fields = dict(line.lower().split(b": ", 1) for line in head.split(b"\r\n")[1:])
    length = int(fields[b"content-length"])
    while len(body) < length:
        body += s.recv(65536)
    return head


def reply_of(s: socket.socket, timeout: float = 10) -> bytes:
    """Everything the server sends until it closes the connection."""
    s.settimeout(timeout)
    data = b""
    try:
        while chunk := s.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    return data


class Normal(threading.Thread):
    """A normal client asking for a tile on a new connection every 50 ms while an attack runs."""

    def __init__(self, base: str) -> None:
        super().__init__(daemon=True)
        self.base, self.statuses, self.halt = base, [], threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            try:
                self.statuses.append(httpx.get(f"{self.base}/iip?FIF={RGB_TIF}&JTL=1,0", timeout=10).status_code)
            except httpx.HTTPError as exc:
                self.statuses.append(type(exc).__name__)
            self.halt.wait(0.05)

    def __enter__(self) -> Normal:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.halt.set()
        self.join()
        assert len(self.statuses) >= 3 and set(self.statuses) == {200}, self.statuses


def until_closed(socks: list[socket.socket], limit: float, every: Callable[[], None] | None = None
                 ) -> dict[socket.socket, tuple[float, bytes]]:
    """When each socket was closed by the server (seconds from now) and what it sent first; `every`
    is called every 0.2 s meanwhile (a slow client's next header line)."""
    t0, out = time.monotonic(), {}
    sel = selectors.DefaultSelector()
    for s in socks:
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ, b"")
    while len(out) < len(socks) and time.monotonic() - t0 < limit:
        for key, _ in sel.select(0.2):
            s = key.fileobj
            assert isinstance(s, socket.socket)
            try:
                chunk = s.recv(65536)
            except (BlockingIOError, InterruptedError):
                continue
            except ConnectionResetError:
                chunk = b""
            if chunk:
                sel.modify(s, selectors.EVENT_READ, key.data + chunk)
            else:
                out[s] = (time.monotonic() - t0, key.data)
                sel.unregister(s)
        if every:
            every()
    return out


def trickle(socks: list[socket.socket]) -> Callable[[], None]:
    """A slow client's next header line, on each of `socks` still open."""

    def send() -> None:
        for s in socks:
            with contextlib.suppress(OSError):
                s.send(b"X-Slow: 1\r\n")

    return send


def test_silent_connections_are_closed(server: str, dial: Callable[[], socket.socket]) -> None:
    socks = [dial() for _ in range(20)]
    with Normal(server):
        closed = until_closed(socks, 3 * TIMEOUT)
    assert len(closed) == len(socks)
    assert all(0.5 * TIMEOUT <= t <= 3 * TIMEOUT and sent == b"" for t, sent in closed.values())


def test_slow_headers_are_closed(server: str, dial: Callable[[], socket.socket]) -> None:
    socks = [dial() for _ in range(20)]
    for s in socks:
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")

    with Normal(server):
        closed = until_closed(socks, 3 * TIMEOUT, trickle(socks))
    assert len(closed) == len(socks)
    for t, sent in closed.values():
        assert 0.5 * TIMEOUT <= t <= 3 * TIMEOUT and sent.startswith(b"HTTP/1.1 408 ")


def test_an_idle_kept_alive_connection_is_closed(dial: Callable[[], socket.socket]) -> None:
    s = dial()
    for _ in range(2):  # kept alive: a second request on the same connection
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert response_of(s).startswith(b"HTTP/1.1 200 ")
    closed = until_closed([s], 3 * TIMEOUT)
    assert closed[s][0] <= 3 * TIMEOUT


def test_a_slow_second_request_meets_the_header_timeout(dial: Callable[[], socket.socket]) -> None:
    s = dial()
    s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    assert response_of(s).startswith(b"HTTP/1.1 200 ")
    s.sendall(b"GET /health HTTP/1.1\r\n")

    t, sent = until_closed([s], 3 * TIMEOUT, trickle([s]))[s]
    assert t <= 3 * TIMEOUT and sent.startswith(b"HTTP/1.1 408 ")


def send_until_answered(s: socket.socket, head: bytes, endless: bytes, total: int) -> tuple[int, bytes]:
    """`head`, then `endless` again and again up to `total` bytes, until the server answers; the bytes
    sent and the answer."""
    s.sendall(head)
    sent = 0
    s.setblocking(False)
    sel = selectors.DefaultSelector()
    sel.register(s, selectors.EVENT_READ)
    while sent < total and not sel.select(0):
        try:
            sent += s.send(endless)
        except BlockingIOError:
            sel.select(0.05)
        except OSError:
            break
    s.setblocking(True)
    return sent, reply_of(s)


@pytest.mark.parametrize(
    ("head", "endless", "status"),
    [
        pytest.param(b"GET /health?", b"a" * 65536, 414, id="endless-url"),
        pytest.param(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: ", b"a" * 65536, 431, id="endless-header"),
        pytest.param(b"GET /health HTTP/1.1\r\nHost: x\r\n", b"X-Many: " + b"b" * 50 + b"\r\n", 431,
                     id="endless-headers"),
    ],
)
def test_the_request_head_is_bounded_on_the_wire(server: str, dial: Callable[[], socket.socket], head: bytes,
                                                endless: bytes, status: int) -> None:
    total = 64 * 1024 * 1024
    sent, reply = send_until_answered(dial(), head, endless, total)
    assert reply.startswith(b"HTTP/1.1 %d " % status) and b"connection: close" in reply.lower()
    assert sent < total // 4  # answered early, long before the end
    assert httpx.get(f"{server}/health").status_code == 200


@pytest.mark.parametrize(("length", "status"), [(MAX_URL - 100, 200), (MAX_URL + 100, 414)])
def test_the_url_limit_holds_on_the_wire(dial: Callable[[], socket.socket], length: int, status: int) -> None:
    s = dial()
    target = f"/iip?FIF={RGB_TIF}&OBJ=Max-size&".encode()
    s.sendall(b"GET " + target + b"&" * (length - len(target)) + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    reply = reply_of(s)
    assert reply.startswith(b"HTTP/1.1 %d " % status)
    if status == 200:
        assert reply.endswith(b"Max-size:1003 701\r\n")


def test_a_64_mb_post_is_refused_before_its_body_is_read(dial: Callable[[], socket.socket]) -> None:
    s = dial()
    s.sendall(b"POST /iip HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
              b"Content-Length: 67108864\r\n\r\nFIF=")
    t0 = time.monotonic()
    reply = reply_of(s)
    assert reply.startswith(b"HTTP/1.1 413 ") and b"connection: close" in reply.lower()
    assert time.monotonic() - t0 < 3 * TIMEOUT  # answered at once, not after waiting for the body


def test_a_chunked_post_is_refused_as_it_passes_the_limit(dial: Callable[[], socket.socket]) -> None:
    chunk = b"%x\r\n%s\r\n" % (65536, b"&" * 65536)
    total = 64 * 1024 * 1024
    head = (b"POST /iip HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n")
    sent, reply = send_until_answered(dial(), head, chunk, total)
    assert reply.startswith(b"HTTP/1.1 413 ") and sent < total // 4


def info_id(server: str, source: str) -> str:
    transport = httpx.HTTPTransport(local_address=source)
    with httpx.Client(transport=transport, base_url=server) as c:
        r = c.get(f"/iiif/3/{RGB_TIF}/info.json",
                  headers={"X-Forwarded-Host": "evil.example", "X-Forwarded-Proto": "https"})
        assert r.status_code == 200
        ident: str = r.json()["id"]
        return ident


def test_forwarded_headers_count_from_trusted_proxies_only(server: str) -> None:
    assert info_id(server, "127.0.0.1") == f"{server}/iiif/3/{RGB_TIF}"  # a forged header: ignored
    assert info_id(server, "127.0.0.2") == f"https://evil.example/iiif/3/{RGB_TIF}"  # the proxy's
    assert info_id(server, "127.0.0.1") == f"{server}/iiif/3/{RGB_TIF}"  # not replayed to the client


def test_past_max_connections_requests_get_503(server: str, dial: Callable[[], socket.socket]) -> None:
    socks = [dial() for _ in range(MAX_CONNECTIONS)]
    time.sleep(0.2)
    r = httpx.get(f"{server}/health")
    assert r.status_code == 503
    until_closed(socks, 3 * TIMEOUT)  # the header timeout frees them
    assert httpx.get(f"{server}/health").status_code == 200


def test_pipelined_tiles_over_a_real_socket(server: str, dial: Callable[[], socket.socket]) -> None:
    """The front (web/front.py) on a real connection: tiles asked back to back in one send, some it answers
    (stored tiles, then their replays) and one it leaves to the full stack (a re-encode), come back whole and in
    order on the kept-alive connection, each as its own request would have had it."""
    urls = [f"/iip?FIF={RGB_TIF}&JTL=2,{n}" for n in (1, 2)] + [f"/iip?FIF={RGB_TIF}&QLT=40&JTL=2,1"]
    alone = [httpx.get(server + u).content for u in urls]  # also loads the metadata: the front takes the rest
    s = dial()
    s.sendall(b"".join(f"GET {u} HTTP/1.1\r\nHost: x\r\n\r\n".encode() for u in urls * 2))
    s.settimeout(10)
    data = b""
    bodies = []
    for _ in range(2 * len(urls)):
        while b"\r\n\r\n" not in data:
            data += s.recv(65536)
        head, _, data = data.partition(b"\r\n\r\n")
        fields = dict(line.lower().split(b": ", 1) for line in head.split(b"\r\n")[1:])
        assert head.startswith(b"HTTP/1.1 200") and b"connection" not in fields
        while len(data) < int(fields[b"content-length"]):
            data += s.recv(65536)
        body, data = data[:int(fields[b"content-length"])], data[int(fields[b"content-length"]):]
        bodies.append(body)
    assert bodies == alone * 2
    assert decode(bodies[0]).width == 256


# -- graceful shutdown ----------------------------------------------------------------------------------
EXPORT = "noise-1600x1200.tif"


@pytest.fixture(scope="module")
def export_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An image whose lossless WebP export takes a while: noise does not compress."""
    root = tmp_path_factory.mktemp("export")
    bands = [pyvips.Image.gaussnoise(1600, 1200, sigma=80, seed=s).cast("uchar") for s in range(3)]
    bands[0].bandjoin(bands[1:]).copy(interpretation="srgb").tiffsave(
        str(root / EXPORT), tile=True, pyramid=True, compression="deflate")
    return root


def refused(base: str, within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            connect(base).close()
        except ConnectionRefusedError:
            return True
        time.sleep(0.05)
    return False


POST_HEAD = b"POST /iip HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"


def posting(stack: contextlib.ExitStack, base: str, length: int) -> socket.socket:
    """A POST of a `length`-byte body whose headers the application has begun to handle: it asks for
    `100 Continue`, which uvicorn sends when the application first reads the body."""
    s = stack.enter_context(connect(base))
    s.sendall(POST_HEAD + b"Expect: 100-continue\r\nContent-Length: %d\r\n\r\n" % length)
    s.settimeout(10)
    assert s.recv(65536) == b"HTTP/1.1 100 Continue\r\n\r\n"
    return s


def body_of(reply: bytes) -> bytes:
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 "), head
    return body


def exited_within(proc: subprocess.Popen[bytes], t0: float, seconds: float) -> float:
    """Seconds from `t0` to the process's exit, which must come within `seconds`."""
    try:
        proc.wait(timeout=max(seconds - (time.monotonic() - t0), 0.1))
    except subprocess.TimeoutExpired:
        pytest.fail(f"still running {time.monotonic() - t0:.1f} s after SIGTERM")
    assert proc.returncode in (0, -signal.SIGTERM)  # uvicorn ends by raising the SIGTERM it caught
    return time.monotonic() - t0


@pytest.mark.parametrize("workers", [1, 2])
def test_sigterm_drains_in_flight_requests(export_root: Path, tmp_path: Path, workers: int) -> None:
    """An export and a slow upload in flight at SIGTERM both complete; new connections are refused."""
    env = clean_env(TILESERVER_SHUTDOWN_TIMEOUT="30", TILESERVER_WEBP_QUALITY="-1")
    with contextlib.ExitStack() as stack:
        base, proc = stack.enter_context(live_process(export_root, tmp_path / "server.log", workers=workers, env=env))
        export_query, upload_query = f"FIF={EXPORT}&CVT=webp".encode(), f"FIF={EXPORT}&OBJ=Max-size".encode()
        export = posting(stack, base, len(export_query))
        upload = posting(stack, base, len(upload_query))
        export.sendall(export_query)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert refused(base, within=2.0)
        upload.sendall(upload_query)  # its body after SIGTERM
        assert body_of(reply_of(upload, timeout=30)) == b"Max-size:1600 1200\r\n"
        image = decode(body_of(reply_of(export, timeout=30)))
        assert (image.width, image.height, image.bands) == (1600, 1200, 3)
        exited_within(proc, t0, 30)


@pytest.mark.parametrize("workers", [1, 2])
def test_sigterm_exits_within_the_shutdown_timeout(image_root: Path, tmp_path: Path, workers: int) -> None:
    """A request still in flight when the timeout ends is cut, and the process exits."""
    timeout = 1
    env = clean_env(TILESERVER_SHUTDOWN_TIMEOUT=str(timeout), TILESERVER_BODY_TIMEOUT="60")
    with contextlib.ExitStack() as stack:
        base, proc = stack.enter_context(live_process(image_root, tmp_path / "server.log", workers=workers, env=env))
        stalled = posting(stack, base, 100)  # its body never comes
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        took = exited_within(proc, t0, timeout + 5)  # a generous bound: the machine may be loaded
        assert took >= timeout - 0.2  # it did wait for the request
        assert not reply_of(stalled, timeout=1).startswith(b"HTTP/1.1 200")


async def tile_app(scope: dict[str, object], receive: object, send: Callable[..., Awaitable[None]]) -> None:
    body = b"x" * 70000
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


async def test_a_response_head_and_body_leave_in_one_write() -> None:
    """A replica killed between head and body would leave nginx a response it cannot retry elsewhere."""
    config = uvicorn.Config(tile_app, lifespan="off", server_header=False, date_header=False)
    config.load()
    transport = Recording()
    protocol = GuardedProtocol(config=config, server_state=ServerState(), app_state={},
                               limits=HeadLimits(5, 4096, 2048))
    protocol.connection_made(transport)
    protocol.data_received(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    for _ in range(50):
        if transport.closed:
            break
        await asyncio.sleep(0.01)
    assert transport.closed
    assert len(transport.writes) == 2  # two responses, one write each
    for sent in transport.writes:
        head, _, body = sent.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 OK") and body == b"x" * 70000


async def test_turn_writer_holds_one_turn() -> None:
    transport = Recording()
    writer = TurnWriter(transport, asyncio.get_running_loop())
    writer.write(b"head")
    writer.write(memoryview(b"body"))
    assert transport.writes == [] and writer.get_write_buffer_size() == 8
    await asyncio.sleep(0)
    assert transport.writes == [b"headbody"]
    assert transport.parts == [[b"head", b"body"]]  # one send, the body not joined to the head first
    writer.write(b"last")
    writer.close()  # writes what it holds first
    assert transport.writes == [b"headbody", b"last"] and transport.closed
    await asyncio.sleep(0)
    assert len(transport.writes) == 2
