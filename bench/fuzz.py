"""The long fuzz run: at least 100,000 generated requests per protocol against a live `tileserver serve`
on loopback, from the generators the suite's fuzz tests use (tests/fuzz_urls.py: valid, near-valid
and hostile values in IIP GET and POST, IIIF 3.0/2.1, DeepZoom, Zoomify, manifests and pages),
reproducible by seed, sent by `--concurrency` keep-alive connections that write each request byte for
byte (a `..` segment or a broken escape reaches the server as generated, which an HTTP client library
would normalise away).

Prints one markdown table: per protocol the requests sent, the status histogram, 5xx (a 503 with
Retry-After is a refusal under load and counted apart), leaks (a server path or a traceback in a body
or header), timeouts and connection errors, the time and requests per second; then whether the server
still answers a known-good request, and the tracebacks and Python warnings its log holds (a warning
is a 500 in the suite, where warnings are errors). Every request with a
problem is saved, one JSON object a line, to `--out/fuzz-<protocol>-seed<seed>.jsonl`; `--replay FILE`
sends those again and prints what each gets now.

    .venv/bin/python bench/fuzz.py                          # 100,000 per protocol, seed 1, ~15-25 min
    .venv/bin/python bench/fuzz.py --count 2000 --protocols iip,iiif
    .venv/bin/python bench/fuzz.py --replay /tmp/tilebench/fuzz/fuzz-iip-seed1.jsonl

The server serves a fixture root written here (tests/fuzz_urls.py `make_fuzz_root`: a pyramid TIFF,
a PNG, a JPEG 2000, an SVS, an OME-TIFF, a document, a GIF, a stack, a sequence, a bad file, a symlink
out of the root), with `TILESERVER_MAX_SIZE` (`--max-size`, 1500) so that valid exports stay small:
the grammars are fuzzed here, the cost of large exports is the admission benchmark's. All traffic
goes to 127.0.0.1; every request has a timeout, the run a fixed count; the server started is stopped.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import sys
import tempfile
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.fuzz_urls import (  # noqa: E402
    PROTOCOLS,
    PYRAMID,
    FuzzRequest,
    Gen,
    Needles,
    RandomSource,
    check,
    fuzz_request,
    make_fuzz_root,
)
from tests.live import clean_env, live_tileserver  # noqa: E402

TIMEOUT = 60.0
NO_BODY = {204, 304}


@dataclass
class Answer:
    status: int
    headers: list[tuple[str, str]]
    body: bytes
    close: bool


class Connection:
    """One keep-alive HTTP/1.1 connection that sends a request's bytes as they are."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(OSError):
                await self.writer.wait_closed()
        self.reader = self.writer = None

    async def send(self, req: FuzzRequest) -> Answer:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        lines = [f"{req.method} {req.target} HTTP/1.1"]
        if not any(k.lower() == "host" for k, _ in req.headers):
            lines.append(f"Host: {self.host}:{self.port}")
        lines += [f"{k}: {v}" for k, v in req.headers]
        if req.body or req.method == "POST":
            lines.append(f"Content-Length: {len(req.body)}")
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + req.body)
        await self.writer.drain()
        return await self._read(req.method == "HEAD")

    async def _read(self, head: bool) -> Answer:
        assert self.reader is not None
        status_line = await self.reader.readline()
        if not status_line:
            raise ConnectionError("the server closed the connection")
        status = int(status_line.split()[1])
        headers: list[tuple[str, str]] = []
        while (line := await self.reader.readline()) not in (b"\r\n", b"\n", b""):
            key, _, value = line.decode("latin-1").partition(":")
            headers.append((key.strip(), value.strip()))
        fields = {k.lower(): v.lower() for k, v in headers}
        close = fields.get("connection") == "close"
        if head or status in NO_BODY or status < 200:
            body = b""
        elif "content-length" in fields:
            body = await self.reader.readexactly(int(fields["content-length"]))
        elif fields.get("transfer-encoding") == "chunked":
            body = await self._chunked()
        else:
            body, close = await self.reader.read(), True
        return Answer(status, headers, body, close)

    async def _chunked(self) -> bytes:
        assert self.reader is not None
        parts = []
        while True:
            size = int((await self.reader.readline()).split(b";")[0], 16)
            if size == 0:
                while (await self.reader.readline()) not in (b"\r\n", b""):
                    pass
                return b"".join(parts)
            parts.append(await self.reader.readexactly(size))
            await self.reader.readline()


@dataclass
class Tally:
    sent: int = 0
    statuses: collections.Counter[int] = field(default_factory=collections.Counter)
    errors: int = 0  # 5xx other than 503 + Retry-After
    busy: int = 0  # 503 + Retry-After
    leaks: int = 0
    timeouts: int = 0
    broken: int = 0  # connection errors
    seconds: float = 0.0
    bad: list[dict[str, object]] = field(default_factory=list)


def requests(protocol: str, seed: int, count: int) -> Iterator[FuzzRequest]:
    gen = Gen(RandomSource(zlib.crc32(f"{protocol}:{seed}".encode())))
    for _ in range(count):
        yield fuzz_request(gen, protocol)


def record(req: FuzzRequest, status: int | str, problems: list[str]) -> dict[str, object]:
    return {"method": req.method, "target": req.target, "body": req.body.decode("latin-1"),
            "headers": list(req.headers), "status": status, "problems": problems}


async def one(conn: Connection, req: FuzzRequest, needles: Needles, tally: Tally) -> None:
    tally.sent += 1
    try:
        answer = await asyncio.wait_for(conn.send(req), TIMEOUT)
    except TimeoutError:
        tally.timeouts += 1
        tally.bad.append(record(req, "timeout", [f"no answer within {TIMEOUT:g} s"]))
        await conn.close()
        return
    except (OSError, ConnectionError, ValueError, IndexError, asyncio.IncompleteReadError) as exc:
        tally.broken += 1
        tally.bad.append(record(req, "broken", [f"{type(exc).__name__}: {exc}"]))
        await conn.close()
        return
    tally.statuses[answer.status] += 1
    problems = check(req, answer.status, answer.headers, answer.body, needles)
    if answer.status == 503 and not any(p.startswith("status") for p in problems):
        tally.busy += 1
    if any(p.startswith("status") for p in problems):
        tally.errors += 1
    if any(p.startswith("leak") for p in problems):
        tally.leaks += 1
    if problems:
        tally.bad.append(record(req, answer.status, problems))
    if answer.close:
        await conn.close()


async def run_protocol(base: str, protocol: str, seed: int, count: int, concurrency: int, needles: Needles,
                       progress: bool) -> Tally:
    host, port = base.removeprefix("http://").rsplit(":", 1)
    tally = Tally()
    source = requests(protocol, seed, count)
    start = time.monotonic()

    async def worker() -> None:
        conn = Connection(host, int(port))
        try:
            for req in source:  # one shared iterator: the seed fixes the requests, not their order
                await one(conn, req, needles, tally)
                if progress and tally.sent % 10_000 == 0:
                    rate = tally.sent / (time.monotonic() - start)
                    print(f"  {protocol}: {tally.sent:,} sent, {rate:.0f}/s", file=sys.stderr, flush=True)
        finally:
            await conn.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    tally.seconds = time.monotonic() - start
    return tally


async def known_good(base: str) -> str:
    host, port = base.removeprefix("http://").rsplit(":", 1)
    conn = Connection(host, int(port))
    try:
        a = await conn.send(FuzzRequest("GET", f"/iip?FIF={PYRAMID}&WID=200&CVT=png"))
        b = await conn.send(FuzzRequest("GET", f"/iiif/3/{PYRAMID}/info.json"))
    finally:
        await conn.close()
    ok = a.status == 200 and a.body[:8] == b"\x89PNG\r\n\x1a\n" and b.status == 200 and b'"width": 517' in b.body
    return "yes" if ok else f"no (PNG {a.status}, info.json {b.status})"


def histogram(statuses: collections.Counter[int]) -> str:
    return ", ".join(f"{s}: {n:,}" for s, n in sorted(statuses.items()))


def table(tallies: dict[str, Tally]) -> str:
    rows = ["| protocol | URLs sent | statuses | 5xx | 503 busy | leaks | timeouts | conn. errors | time (s) "
            "| requests/s |", "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, t in tallies.items():
        rate = t.sent / t.seconds if t.seconds else 0.0
        rows.append(f"| {name} | {t.sent:,} | {histogram(t.statuses)} | {t.errors} | {t.busy} | {t.leaks} "
                    f"| {t.timeouts} | {t.broken} | {t.seconds:.0f} | {rate:.0f} |")
    return "\n".join(rows)


def save(out: Path, protocol: str, seed: int, tally: Tally) -> Path | None:
    if not tally.bad:
        return None
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"fuzz-{protocol}-seed{seed}.jsonl"
    with path.open("w") as f:
        for item in tally.bad:
            f.write(json.dumps(item) + "\n")
    return path


def server_env(args: argparse.Namespace, work: Path) -> dict[str, str]:
    return clean_env(TILESERVER_MAX_SIZE=str(args.max_size), TILESERVER_DERIVE_DIR=str(work / "derived"))


async def fuzz(args: argparse.Namespace, base: str, needles: Needles) -> dict[str, Tally]:
    tallies = {}
    for protocol in args.protocols:
        print(f"fuzzing {protocol}: {args.count:,} requests, seed {args.seed}", file=sys.stderr, flush=True)
        tallies[protocol] = await run_protocol(base, protocol, args.seed, args.count, args.concurrency, needles,
                                               not args.quiet)
    return tallies


async def replay(path: Path, base: str, needles: Needles) -> None:
    host, port = base.removeprefix("http://").rsplit(":", 1)
    conn = Connection(host, int(port))
    try:
        for line in path.read_text().splitlines():
            item = json.loads(line)
            req = FuzzRequest(item["method"], item["target"], item["body"].encode("latin-1"),
                              tuple(tuple(h) for h in item["headers"]))
            try:
                a = await asyncio.wait_for(conn.send(req), TIMEOUT)
                problems = check(req, a.status, a.headers, a.body, needles)
                print(f"{a.status} {problems or 'ok'} {str(req)[:300]}")
                if a.close:
                    await conn.close()
            except (OSError, ConnectionError, TimeoutError, asyncio.IncompleteReadError) as exc:
                print(f"--- {type(exc).__name__} {str(req)[:300]}")
                await conn.close()
    finally:
        await conn.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=100_000, help="requests per protocol (100000)")
    ap.add_argument("--protocols", type=lambda s: [p for p in s.split(",") if p], default=list(PROTOCOLS),
                    help=f"comma-separated, of {','.join(PROTOCOLS)}")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--concurrency", type=int, default=8, help="connections at once (8)")
    ap.add_argument("--workers", type=int, default=2, help="server processes (2)")
    ap.add_argument("--max-size", type=int, default=1500, help="the server's TILESERVER_MAX_SIZE (1500)")
    ap.add_argument("--out", type=Path, default=Path("/tmp/tilebench/fuzz"), help="where problem requests go")
    ap.add_argument("--replay", type=Path, help="send the requests of a saved .jsonl file again")
    ap.add_argument("--quiet", action="store_true", help="no progress lines")
    args = ap.parse_args()
    unknown = set(args.protocols) - set(PROTOCOLS)
    if unknown:
        ap.error(f"unknown protocols: {', '.join(sorted(unknown))}")
    with tempfile.TemporaryDirectory(prefix="tileserver-fuzz-") as tmp:
        work = Path(tmp)
        root = work / "root"
        make_fuzz_root(root)
        needles = Needles.for_root(root, str(work))
        log = work / "server.log"
        with live_tileserver(root, log, workers=args.workers, env=server_env(args, work)) as base:
            if args.replay:
                asyncio.run(replay(args.replay, base, needles))
                return
            tallies = asyncio.run(fuzz(args, base, needles))
            alive = asyncio.run(known_good(base))
        text = log.read_text(errors="replace")
        tracebacks = text.count("Traceback (most recent call last)")
        warnings = sorted({line.strip() for line in text.splitlines() if "Warning:" in line})
        print(f"\nFuzz run: seed {args.seed}, {args.concurrency} connections, tileserver serve --workers "
              f"{args.workers}, TILESERVER_MAX_SIZE={args.max_size}\n")
        print(table(tallies))
        print(f"\nAfterwards the server answers a known-good tile and info.json: {alive}. "
              f"Tracebacks in its log: {tracebacks}. Python warnings in its log: {len(warnings)}.")
        for line in warnings:
            print(f"    {line}")
        for protocol, tally in tallies.items():
            saved = save(args.out, protocol, args.seed, tally)
            if saved is not None:
                print(f"{protocol}: {len(tally.bad)} problem requests saved to {saved}")


if __name__ == "__main__":
    main()
