"""`tileserver serve`: uvicorn, with the connection limits it lacks.

uvicorn's httptools protocol reads a request head of any size (it appends the URL and each header as
they come) and puts no time limit on it: its keep-alive timer is armed only after a response and
disarmed by the next byte, so a connection that never sends anything, or sends its headers a byte at
a time (slowloris), is kept for ever. `GuardedProtocol` adds, per connection:

- a header timeout (`Settings.header_timeout`), armed when the connection is made and when a read of a
  kept-alive one ends inside a request's head, disarmed when the request's headers are complete; when
  it fires the connection is closed, after a 408 when part of a request came;
- a bound on the request head (`max_url_bytes` for the URL, `max_header_bytes` for the request line
  and headers together): past it a 414 or 431 and the connection is closed, having held at most the
  limit plus one read of the socket;
- one write per response: uvicorn writes the status line and headers as soon as the app sends them,
  and the body in a second write. `TurnWriter` holds what is written in one turn of the event loop
  and writes it at the end of that turn, so a response whose body is sent right after its head (every
  response of ours but streamed exports) leaves in one `send`. A process killed between the two
  writes would have sent a head and no body: a load balancer cannot retry that request elsewhere (it
  has begun to answer its client), and the client gets a broken response.

The rest are uvicorn's own options: `max_connections` -> `limit_concurrency` (503 past it),
`keep_alive_timeout` -> `timeout_keep_alive`, `shutdown_timeout` -> `timeout_graceful_shutdown` (after
SIGTERM: stop accepting, finish the requests in flight, cancel what is left at the timeout).
`Supervisor` is uvicorn's worker supervisor that also closes its copy of the listening socket when it
is told to stop, so that new connections are refused once the workers have closed theirs (each does as it
begins to drain; else the kernel queues them on that socket until the supervisor exits, then resets them).
Several workers share one listening socket, and each takes new connections only while it holds no more than
the fewest any worker holds (web/balance.py): a client's few keep-alive connections (a viewer's, a proxy's)
are spread over the workers exactly, not at random as by SO_REUSEPORT's hash, nor all to the worker that
wakes first.
"""

from __future__ import annotations

import asyncio
import functools
import http
import logging
import socket
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import httptools
import uvicorn
from uvicorn.config import STARTUP_FAILURE
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol, RequestResponseCycle
from uvicorn.supervisors.multiprocess import Multiprocess

from ..settings import Settings
from .balance import BalancedSocket
from .front import Answer, Front, Later

log = logging.getLogger("tileserver")


@dataclass(frozen=True)
class HeadLimits:
    timeout: float
    max_bytes: int
    max_url: int

    @classmethod
    def of(cls, settings: Settings) -> HeadLimits:
        return cls(settings.header_timeout, settings.max_header_bytes, settings.max_url_bytes)


class Refused(Exception):
    """Raised in a parser callback to stop parsing a refused request (`GuardedProtocol.refusal`)."""


REFUSALS = {414: "the request target is too long", 431: "the request's headers are too large"}


class TurnWriter:
    """A transport's writes of one event-loop turn, joined into one write at the end of the turn.

    Everything else is the transport's; `close` and `write_eof` write what is held first, `abort`
    drops it. Held bytes count in `get_write_buffer_size`, so flow control still sees them."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: list[bytes] = []

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not data:
            return
        if not self._held:
            self._loop.call_soon(self.flush)
        self._held.append(bytes(data) if not isinstance(data, bytes) else data)

    def writelines(self, lines: Any) -> None:
        for data in lines:
            self.write(data)

    def flush(self) -> None:
        held, self._held = self._held, []
        if held and not self._transport.is_closing():
            if len(held) == 1:
                self._transport.write(held[0])
            else:  # one vectored write (uvloop: writev), the body not copied into a joined buffer
                self._transport.writelines(held)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def abort(self) -> None:
        self._held = []
        self._transport.abort()

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + sum(map(len, self._held))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class _Answered:
    """uvicorn's cycle of a request the front answered (`GuardedProtocol.answered_now`): complete."""

    response_complete = True
    message_event = asyncio.Event()  # set by uvicorn when the connection is lost; nothing waits for it


ANSWERED = _Answered()


class _Pending:
    """uvicorn's cycle of a request the front answers later (`GuardedProtocol._answer_later`), while it waits."""

    def __init__(self, keep_alive: bool) -> None:
        self.keep_alive = keep_alive  # uvicorn's shutdown sets it False
        self.response_complete = False
        self.disconnected = False
        self.more_body = True
        self.body = bytearray()
        self.message_event = asyncio.Event()


FRONT_BUFFER = 1 << 20  # past this many bytes not yet written to a connection, its requests wait for the full stack


class GuardedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a header timeout, a bounded request head, one write per
    response (`TurnWriter`) and the front (web/front.py) asked first."""

    def __init__(self, *args: Any, limits: HeadLimits, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        state = getattr(self.app, "state", None)  # the app as loaded: Starlette's, unless uvicorn wrapped it
        # uvicorn's own access log writes its lines in its cycle: none from the front then
        self.front: Front | None = None if self.access_log else getattr(state, "front", None)
        self.limits = limits
        self.head_timer: asyncio.TimerHandle | None = None
        self.head_begun = False  # a byte of the request being read has come
        self.head_raw = 0  # bytes received while this request's head is incomplete
        self.head_fields = 0  # bytes of its complete header lines
        self.refusal = 0  # the status of a request refused in a parser callback
        self._defaults: tuple[object, bytes] = (None, b"")  # uvicorn's default headers, encoded (`_send`)
        self.on_lost: Callable[[], None] | None = None  # told when the connection ends (web/balance.py counts them)

    # -- the header timeout --------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(cast("asyncio.Transport", TurnWriter(transport, self.loop)))
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)
        if self.on_lost is not None:
            self.on_lost()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        # the keep-alive timer of a response the front sent while this data was being parsed (uvicorn cancels
        # it when data comes, before parsing)
        self._unset_keepalive_if_required()
        self.head_begun, self.head_raw, self.head_fields = True, 0, 0
        # the header timer is armed when this read ends with the head incomplete (`data_received`): a head that
        # comes whole in one read, as nearly every one does, costs no timer

    def on_headers_complete(self) -> None:
        self._disarm()
        self.head_begun = False
        if self.front is None or not self.answered_now(self.front):
            super().on_headers_complete()

    # -- the front -----------------------------------------------------------------------------------
    def answered_now(self, front: Front) -> bool:
        """Whether the front takes this request: answered now (written as uvicorn's cycle would write it), or later
        by a task of this connection (`_answer_later`); False: uvicorn's cycle takes it. Not while a response is in
        progress (pipelined requests keep their order), nor while much of what was sent has not left (flow
        control: the full stack waits for it), nor past `limit_concurrency` (uvicorn's 503)."""
        if (self.cycle is not None and not self.cycle.response_complete) or self.parser.get_method() != b"GET" \
                or self.expect_100_continue or self.parser.should_upgrade() \
                or self.transport.get_write_buffer_size() > FRONT_BUFFER or self._over_limit():
            return False
        http_version = self.parser.get_http_version()
        scope = self.scope
        try:
            parsed = httptools.parse_url(self.url)
            path = parsed.path.decode("ascii")
        except (httptools.HttpParserInvalidURLError, UnicodeDecodeError):
            return False
        # the scope as uvicorn fills it (its cycle fills it again when the front declines)
        scope["method"] = "GET"
        if http_version != "1.1":
            scope["http_version"] = http_version
        scope["path"] = self.root_path + (urllib.parse.unquote(path) if "%" in path else path)
        scope["raw_path"] = self.root_path.encode("ascii") + parsed.path
        scope["query_string"] = parsed.query or b""
        try:
            answer = front.answer(cast("dict[str, Any]", scope))
        except Exception:  # a bug: logged, and the full stack answers (a 500 if it meets it too)
            log.exception("the front failed on a request; the full stack answers it")
            return False
        if answer is None:
            return False
        keep_alive = http_version != "1.0" and self.parser.should_keep_alive()
        if isinstance(answer, tuple):
            self._send(answer, keep_alive)
            self.cycle = ANSWERED  # type: ignore[assignment]
            self.on_response_complete()
            return True
        pending = _Pending(keep_alive)
        self.cycle = pending  # type: ignore[assignment]
        task = self.loop.create_task(self._answer_later(answer, pending, scope))
        task.add_done_callback(self.tasks.discard)
        self.tasks.add(task)
        return True

    def _send(self, answer: Answer, keep_alive: bool) -> None:
        """Write `answer` as uvicorn's cycle would (its default headers first; `connection: close` and the
        connection closed when it is not kept alive, or when the answer says so)."""
        status, headers, body = answer
        fields = b"".join([b"%s: %s\r\n" % field for field in headers])
        if (fields.startswith(b"connection: ") or b"\nconnection: " in fields) \
                and any(k == b"connection" and b"close" in v.lower() for k, v in headers):  # (names are lower-case)
            keep_alive, close = False, b""
        else:
            close = b"" if keep_alive else b"connection: close\r\n"
        defaults = self.server_state.default_headers  # a new list each second (uvicorn's Date): encoded once
        if defaults is not self._defaults[0]:
            self._defaults = (defaults, b"".join([b"%s: %s\r\n" % field for field in defaults]))
        self.transport.writelines([b"".join((STATUS_LINE[status], self._defaults[1], fields, close, b"\r\n")), body])
        if not keep_alive:
            self.transport.close()

    async def _answer_later(self, later: Later, pending: _Pending, scope: Any) -> None:
        """The front's answer that waited for the pool, written when it comes (nothing if the connection is gone);
        None (or a bug) from it: uvicorn's cycle and the full stack answer the request after all."""
        try:
            answer = await later
        except Exception:
            log.exception("the front failed on a request; the full stack answers it")
            answer = None
        if answer is not None and not self.transport.is_closing():
            self._send(answer, pending.keep_alive)
        if answer is not None or self.transport.is_closing():  # answered, or nobody to answer
            pending.response_complete = True
            self.on_response_complete()
            return
        cycle = RequestResponseCycle(
            scope=scope, transport=self.transport, flow=self.flow, logger=self.logger,
            access_logger=self.access_logger, access_log=self.access_log,
            default_headers=self.server_state.default_headers, message_event=asyncio.Event(),
            expect_100_continue=False, keep_alive=pending.keep_alive, on_response=self.on_response_complete)
        cycle.more_body = False  # a GET without a body (the front takes no other)
        if cast("object", self.cycle) is pending:
            self.cycle = cycle
        pending.response_complete = True
        await cycle.run_asgi(self.app)

    def _over_limit(self) -> bool:
        limit = self.limit_concurrency
        return limit is not None and (len(self.connections) >= limit or len(self.tasks) >= limit)

    def _arm(self) -> None:
        self.head_timer = self.loop.call_later(self.limits.timeout, self._head_timed_out)

    def _disarm(self) -> None:
        if self.head_timer is not None:
            self.head_timer.cancel()
            self.head_timer = None

    def _head_timed_out(self) -> None:
        self.head_timer = None
        if self.transport.is_closing():
            return
        if self.head_begun:
            self.answer_and_close(408, "the request's headers did not come in time")
        else:
            self.transport.close()

    # -- the bounded head ----------------------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        super().data_received(data)  # parses; the callbacks below may refuse
        if self.head_begun and not self.transport.is_closing():  # this read ended inside a request's head
            if self.head_timer is None:
                self._arm()
            self.head_raw += len(data)  # an unfinished line is buffered by the parser: count it here
            if self.head_raw > self.limits.max_bytes:
                self.answer_and_close(431, REFUSALS[431])

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        if len(self.url) > self.limits.max_url:
            self.refusal = 414
            raise Refused

    def on_header(self, name: bytes, value: bytes) -> None:
        super().on_header(name, value)
        self.head_fields += len(name) + len(value) + 4
        if self.head_fields + len(self.url) > self.limits.max_bytes:
            self.refusal = 431
            raise Refused

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to a parser error, which `Refused` raised in a callback becomes."""
        if self.refusal:
            self.answer_and_close(self.refusal, REFUSALS[self.refusal])
        else:
            super().send_400_response(msg)

    def answer_and_close(self, status: int, text: str) -> None:
        body = text.encode()
        head = [f"HTTP/1.1 {status} {http.HTTPStatus(status).phrase}".encode()]
        head += [name + b": " + value for name, value in self.server_state.default_headers]
        head += [b"content-type: text/plain; charset=utf-8", b"content-length: %d" % len(body),
                 b"connection: close"]
        self.transport.write(b"\r\n".join(head) + b"\r\n\r\n" + body)
        self.transport.close()
        self._disarm()


class Supervisor(Multiprocess):
    """uvicorn's worker supervisor; on stopping, it closes its listening socket before it signals
    the workers, so new connections are refused at once."""

    def terminate_all(self) -> None:
        for sock in self.sockets:
            sock.close()
        super().terminate_all()


def listening_socket(config: uvicorn.Config) -> socket.socket:
    """The supervisor's socket: a `BalancedSocket` (web/balance.py) on a TCP address, else uvicorn's shared one."""
    if config.uds is None and config.fd is None:
        return BalancedSocket.bound(config.host, config.port, config.workers)
    return config.bind_socket()


def config_for(settings: Settings, *, verbose: bool) -> uvicorn.Config:
    protocol = functools.partial(GuardedProtocol, limits=HeadLimits.of(settings))
    return uvicorn.Config(
        "tileserver.cli:app_from_env", factory=True, host=settings.host, port=settings.port,
        workers=settings.workers, http=cast("type[asyncio.Protocol]", protocol), ws="none",
        log_level="info" if verbose else "warning", server_header=False,
        access_log=verbose and settings.access_log == "off",
        proxy_headers=False,  # web/proxies.py decides which clients' forwarded headers count
        limit_concurrency=settings.max_connections, timeout_keep_alive=settings.keep_alive_timeout,
        timeout_graceful_shutdown=settings.shutdown_timeout,
        # several workers share one socket, their connections balanced (web/balance.py) by their event loop
        loop="tileserver.web.balance:new_event_loop" if settings.workers > 1 else "auto")


def serve(settings: Settings, *, verbose: bool = False) -> int:
    """Run the server until SIGTERM or SIGINT; the exit status (uvicorn's 3: it did not start)."""
    config = config_for(settings, verbose=verbose)
    server = uvicorn.Server(config)
    try:
        if config.workers > 1:
            Supervisor(config, sockets=[listening_socket(config)]).run()
            return 0
        server.run()
    except KeyboardInterrupt:
        pass
    return 0 if server.started or config.workers > 1 else STARTUP_FAILURE
