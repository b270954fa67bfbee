"""StoreProxy: a reverse proxy on loopback in front of a store (moto, nginx), run by an asyncio loop in a
background thread, that counts the requests and response body bytes it passes, adds a fixed latency per
request, and injects faults switched at run time (503 with or without Retry-After, 500, stalls, connections
dropped before or in the middle of a response). Requests pass byte for byte: Host, Range and conditional
headers unchanged, so S3 signatures stay valid. Stdlib only (bench/stores.py uses it too)."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field, replace
from typing import Any, Literal
from urllib.parse import urlsplit

FaultKind = Literal["503", "500", "429", "403", "stall", "stall-mid", "drop", "drop-mid"]
ERRORS = {  # status -> reason phrase, S3 error code
    503: ("Service Unavailable", "SlowDown"),  # S3's throttling
    500: ("Internal Server Error", "InternalError"),
    429: ("Too Many Requests", "TooManyRequests"),  # GCS's and many HTTP servers' throttling
    403: ("Forbidden", "AccessDenied"),  # refused credentials
}
FAULT_KINDS = (*(str(s) for s in ERRORS), "stall", "stall-mid", "drop", "drop-mid")


@dataclass
class Fault:
    """What the proxy does instead of (or while) forwarding: "503", "500", "429" and "403" answer that status
    at once (an S3 error body; Retry-After: `retry_after` when set) without asking the store; "stall" waits
    `seconds` and then forwards; "stall-mid" forwards the head and half the body, waits `seconds`, then the
    rest; "drop" closes the connection without an answer; "drop-mid" forwards the head and half the body,
    then closes. Applies to requests whose path contains `match` (all when empty), for the next `times` of
    them (None: until cleared)."""

    kind: FaultKind
    seconds: float = 0.0
    retry_after: int | None = None
    times: int | None = None
    match: str = ""


@dataclass
class Exchange:
    """One request the proxy received: method, target (path and query), the Range header sent, the status
    answered (None: no answer, or not yet), the response body bytes sent, the fault applied."""

    method: str
    target: str
    range: str | None
    status: int | None = None
    bytes: int = 0
    fault: str | None = None

    @property
    def path(self) -> str:
        return self.target.split("?", 1)[0]


@dataclass(frozen=True)
class Counts:
    """Totals since the last reset, and per path (the target without its query): requests received and
    response body bytes sent."""

    requests: int
    bytes: int
    paths: dict[str, tuple[int, int]] = field(default_factory=dict)  # path -> (requests, bytes)

    def path(self, path: str) -> tuple[int, int]:
        return self.paths.get(path, (0, 0))


class Head:
    """A parsed HTTP/1.x request or response head, its header lines kept byte for byte."""

    def __init__(self, raw: bytes):
        self.raw = raw
        lines = raw.decode("latin-1").split("\r\n")
        self.start = lines[0].split(" ", 2)
        self.headers = [tuple(p.strip() for p in line.split(":", 1)) for line in lines[1:] if ":" in line]

    def get(self, name: str) -> str | None:
        name = name.lower()
        return next((v for k, v in self.headers if k.lower() == name), None)

    def has_token(self, name: str, token: str) -> bool:
        return any(t.strip().lower() == token for t in (self.get(name) or "").split(","))

    def without(self, name: str) -> bytes:
        lines = self.raw.split(b"\r\n")
        kept = [ln for ln in lines[1:] if ln.split(b":", 1)[0].strip().lower() != name.lower().encode()]
        return b"\r\n".join([lines[0], *kept])


async def read_head(reader: asyncio.StreamReader) -> Head | None:
    try:
        raw = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if exc.partial.strip():
            raise ConnectionError("connection closed inside a head") from exc
        return None
    return Head(raw[:-4])


async def relay_chunked(reader: asyncio.StreamReader, write: Any) -> None:
    """Copies a chunked body as it is; `write(raw, payload_len)` is called per piece."""
    while True:
        line = await reader.readuntil(b"\r\n")
        size = int(line.split(b";", 1)[0].strip(), 16)
        if size == 0:
            trailer = line
            while True:
                tail = await reader.readuntil(b"\r\n")
                trailer += tail
                if tail == b"\r\n":
                    break
            await write(trailer, 0)
            return
        await write(line, 0)
        left = size
        while left:
            data = await reader.read(min(left, 1 << 16))
            if not data:
                raise ConnectionError("connection closed inside a chunk")
            left -= len(data)
            await write(data, len(data))
        await write(await reader.readexactly(2), 0)


async def read_request_body(reader: asyncio.StreamReader, head: Head) -> bytes:
    if head.has_token("transfer-encoding", "chunked"):
        parts: list[bytes] = []

        async def keep(raw: bytes, _n: int) -> None:
            parts.append(raw)

        await relay_chunked(reader, keep)
        return b"".join(parts)
    return await reader.readexactly(int(head.get("content-length") or 0))


class Upstream:
    """One keep-alive connection to the store, opened when first needed."""

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.used = False

    async def send(self, data: bytes) -> asyncio.StreamReader:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port, limit=1 << 16)
            self.used = False
        self.writer.write(data)
        await self.writer.drain()
        assert self.reader is not None
        return self.reader

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


class StoreProxy:
    """A reverse proxy on a free loopback port in front of `upstream` (an http://127.0.0.1:PORT endpoint),
    run by an asyncio loop in a background thread. Requests and headers pass unchanged (Host, Range,
    If-None-Match, ... and so S3 signatures stay valid); connections are kept alive on both sides, one store
    connection per client connection. `latency` seconds (settable at run time) are waited before each
    request is forwarded. `fail(...)` switches a fault on; `counts()`, `exchanges()` and `reset()` read and
    clear what it saw. Use as a context manager, or `start()` / `stop()`."""

    def __init__(self, upstream: str, *, latency: float = 0.0):
        parts = urlsplit(upstream)
        if parts.scheme != "http" or not (parts.hostname or "").startswith("127.") or not parts.port:
            raise ValueError(f"StoreProxy fronts a loopback http://127.x.x.x:PORT endpoint, not {upstream!r}")
        self.upstream_host: str = parts.hostname or ""
        self.upstream_port: int = parts.port
        self.latency = latency
        self.port = 0
        self._lock = threading.Lock()
        self._faults: list[Fault] = []
        self._log: list[Exchange] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- run time control
    def fail(self, kind: FaultKind, *, seconds: float = 0.0, retry_after: int | None = None,
             times: int | None = None, match: str = "") -> Fault:
        """Adds a fault (see `Fault`); the first matching one applies to each request."""
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault {kind!r}")
        fault = Fault(kind, seconds, retry_after, times, match)
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def counts(self) -> Counts:
        with self._lock:
            log = list(self._log)
        paths: dict[str, tuple[int, int]] = {}
        for ex in log:
            n, b = paths.get(ex.path, (0, 0))
            paths[ex.path] = (n + 1, b + ex.bytes)
        return Counts(len(log), sum(ex.bytes for ex in log), paths)

    def exchanges(self) -> list[Exchange]:
        with self._lock:
            return [replace(ex) for ex in self._log]

    def reset(self) -> None:
        """Zeroes the counts (faults stay)."""
        with self._lock:
            self._log.clear()

    # -- lifetime
    def start(self) -> StoreProxy:
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(target=loop.run_forever, name="store-proxy", daemon=True)
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(self._listen(), loop).result(10)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _listen(self) -> asyncio.Server:
        return await asyncio.start_server(self._client, "127.0.0.1", 0, limit=1 << 16, backlog=256)

    def stop(self) -> None:
        loop = self._loop
        if loop is None:
            return
        asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        assert self._thread is not None
        self._thread.join(10)
        loop.close()
        self._loop = None

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def __enter__(self) -> StoreProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- the proxy
    def _take_fault(self, target: str) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.match in target and (fault.times is None or fault.times > 0):
                    if fault.times is not None:
                        fault.times -= 1
                    return replace(fault)
        return None

    def _record(self, head: Head) -> Exchange:
        method, target = head.start[0], head.start[1] if len(head.start) > 1 else "/"
        ex = Exchange(method, target, head.get("range"))
        with self._lock:
            self._log.append(ex)
        return ex

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        upstream = Upstream(self.upstream_host, self.upstream_port)
        try:
            while await self._one(reader, writer, upstream):
                pass
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            pass  # a client or store that went away, or a head too large: this connection ends
        finally:
            upstream.close()
            writer.close()
            self._tasks.discard(task)

    async def _one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, upstream: Upstream) -> bool:
        """One request on a client connection; False when the connection is to be closed."""
        head = await read_head(reader)
        if head is None:
            return False
        ex = self._record(head)
        if head.has_token("expect", "100-continue"):
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        body = await read_request_body(reader, head)
        fault = self._take_fault(ex.target)
        ex.fault = fault.kind if fault else None
        if self.latency:
            await asyncio.sleep(self.latency)
        if fault and fault.kind == "drop":
            writer.transport.abort()
            return False
        if fault and fault.kind.isdigit():
            return await self._answer_error(writer, ex, fault)
        if fault and fault.kind == "stall":
            await asyncio.sleep(fault.seconds)
        keep = await self._forward(head, body, writer, upstream, ex, fault)
        version = head.start[2] if len(head.start) > 2 else "HTTP/1.0"
        client_close = head.has_token("connection", "close") or (
            version == "HTTP/1.0" and not head.has_token("connection", "keep-alive"))
        return keep and not client_close

    async def _answer_error(self, writer: asyncio.StreamWriter, ex: Exchange, fault: Fault) -> bool:
        status = int(fault.kind)
        reason, code = ERRORS[status]
        body = f"<Error><Code>{code}</Code><Message>injected by StoreProxy</Message></Error>".encode()
        retry = f"Retry-After: {fault.retry_after}\r\n" if fault.retry_after is not None else ""
        ex.status, ex.bytes = status, len(body)
        writer.write(f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/xml\r\nContent-Length: {len(body)}"
                     f"\r\n{retry}\r\n".encode() + body)
        await writer.drain()
        return True

    async def _store_head(self, head: Head, body: bytes, upstream: Upstream) -> tuple[asyncio.StreamReader, Head]:
        """Sends the request to the store; its response head (a reused connection the store had closed is
        opened anew once)."""
        request = head.without("expect") + b"\r\n\r\n" + body
        for attempt in (0, 1):
            reused = upstream.writer is not None
            try:
                up = await upstream.send(request)
                answer = await read_head(up)
                while answer is not None and answer.start[1].startswith("1"):  # interim 1xx: skipped
                    answer = await read_head(up)
            except ConnectionError:
                answer = None
            if answer is not None:
                return up, answer
            upstream.close()
            if not reused or attempt:
                break
        raise ConnectionError("the store closed the connection without an answer")

    async def _forward(self, head: Head, body: bytes, writer: asyncio.StreamWriter, upstream: Upstream,
                       ex: Exchange, fault: Fault | None) -> bool:
        up, answer = await self._store_head(head, body, upstream)
        status = int(answer.start[1])
        ex.status = status
        writer.write(answer.raw + b"\r\n\r\n")
        length = answer.get("content-length")
        bodiless = head.start[0] == "HEAD" or status in (204, 304)
        cut = fault.kind if fault and fault.kind in ("drop-mid", "stall-mid") else None
        half = int(length) // 2 if length and not bodiless else 0
        sent = 0

        async def write(raw: bytes, payload: int) -> None:
            nonlocal sent, cut
            if cut and sent + payload > half:
                first = half - sent
                ex.bytes += first  # counted before it is written: a client that has it sees it counted
                writer.write(raw[:first])
                sent = half
                await writer.drain()
                if cut == "drop-mid":
                    writer.transport.abort()
                    raise ConnectionError("dropped mid-response")
                await asyncio.sleep(fault.seconds if fault else 0)
                cut, raw, payload = None, raw[first:], payload - first
            sent += payload
            ex.bytes += payload
            writer.write(raw)
            await writer.drain()

        if bodiless:
            await writer.drain()
        elif answer.has_token("transfer-encoding", "chunked"):
            await relay_chunked(up, write)
        elif length is not None:
            left = int(length)
            while left:
                data = await up.read(min(left, 1 << 16))
                if not data:
                    raise ConnectionError("the store closed the connection inside a body")
                left -= len(data)
                await write(data, len(data))
        else:  # a body up to the end of the connection: the client's ends with it
            while data := await up.read(1 << 16):
                await write(data, len(data))
            upstream.close()
            return False
        if answer.has_token("connection", "close"):
            upstream.close()
            return False
        return True
