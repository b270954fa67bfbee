"""Request and connection attacks on a live tileserver, before and after its limits (issue 12 parts 3, 4, 6).

Hand-run, loopback only; prints one markdown table. It starts `<repo>/.venv/bin/tileserver serve` on a
generated image root with no TILESERVER_* variable (the checkout's defaults), runs each attack while a
probe client fetches `/health` on a new connection every 50 ms, and stops the server (the process it
started, by pid) at the end:

- `baseline`: no attack for 5 s: the probe's worst latency on this machine at the time, to read the others by.
- `post64`: a 64 MB IIP POST form body: the answer, how much of the body the server took, the rise of
  its RSS, and the probe's worst latency while it lasted.
- `slowloris`: 300 connections sending a header line every second, never ending their headers, for
  `--hold` seconds: how many the server closed and when, how many were still open at the end.
- `silent`: 2,000 connections that send nothing for `--hold` seconds: the same counts.
- `bighead`: one request whose single header never ends (64 MB sent): RSS rise, and when it was cut.
- `longerr`: IIP error replies to a long input: a 1 MB query, a 7 KB query, a 60 KB POST body;
  the status and the reply's length.

    .venv/bin/python bench/attacks.py                      # this checkout (after)
    .venv/bin/python bench/attacks.py --repo /work/main    # another checkout (before)
    .venv/bin/python bench/attacks.py --only post64,longerr --hold 12
"""

from __future__ import annotations

import argparse
import contextlib
import os
import selectors
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
IMAGE = "bench-1201x803.tif"
MB = 1024 * 1024


# -- the server and its processes ---------------------------------------------------------------------
def children() -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            with contextlib.suppress(OSError, IndexError):
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
                out.setdefault(ppid, []).append(int(d.name))
    return out


def tree_rss(root: int) -> int:
    """Resident bytes of `root` and all its descendants."""
    kids, todo, total = children(), [root], 0
    while todo:
        pid = todo.pop()
        todo += kids.get(pid, [])
        with contextlib.suppress(OSError, ValueError, IndexError):
            total += int((Path(f"/proc/{pid}/statm")).read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    return total


@contextlib.contextmanager
def server(repo: Path, root: Path, port: int, workers: int) -> Iterator[subprocess.Popen[bytes]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TILESERVER_")}
    cmd = [str(repo / ".venv" / "bin" / "tileserver"), "serve", str(root), "--host", "127.0.0.1",
           "--port", str(port), "--workers", str(workers)]
    log = open(root.parent / "server.log", "wb")  # noqa: SIM115 - closed in the finally
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            if proc.poll() is not None:
                raise RuntimeError(f"the server exited; see {root.parent / 'server.log'}")
            time.sleep(0.2)
        time.sleep(1.0 if workers > 1 else 0.2)
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()


def make_root(folder: Path) -> Path:
    import pyvips

    root = folder / "images"
    root.mkdir()
    img = pyvips.Image.xyz(1201, 803)[0].cast("uchar").bandjoin([pyvips.Image.xyz(1201, 803)[1].cast("uchar")] * 2)
    img.copy(interpretation="srgb").tiffsave(str(root / IMAGE), tile=True, pyramid=True, compression="jpeg")
    return root


# -- measuring while an attack runs -------------------------------------------------------------------
class Probe(threading.Thread):
    """A normal client: `/health` on a new connection every 50 ms; its worst latency and failures."""

    def __init__(self, base: str) -> None:
        super().__init__(daemon=True)
        self.base, self.worst, self.failures, self.count = base, 0.0, 0, 0
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            t0 = time.monotonic()
            try:
                ok = httpx.get(self.base + "/health", timeout=15).status_code == 200
            except httpx.HTTPError:
                ok = False
            self.worst = max(self.worst, time.monotonic() - t0)
            self.failures += not ok
            self.count += 1
            self.halt.wait(0.05)

    def stop(self) -> str:
        self.halt.set()
        self.join()
        return f"worst {self.worst * 1000:.0f} ms, {self.failures} of {self.count} failed"


class RssPeak(threading.Thread):
    """The server's process tree RSS, sampled every 50 ms: its rise over the first sample."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.first = self.peak = tree_rss(pid)
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.wait(0.05):
            self.peak = max(self.peak, tree_rss(self.pid))

    def stop(self) -> str:
        self.halt.set()
        self.join()
        return f"+{(self.peak - self.first) / MB:.0f} MB"


def watched(pid: int, base: str, attack: Callable[[], str]) -> tuple[str, str, str]:
    rss, probe = RssPeak(pid), Probe(base)
    rss.start()
    probe.start()
    try:
        result = attack()
    finally:
        time.sleep(0.3)
        probed, grown = probe.stop(), rss.stop()
    return result, grown, probed


# -- the attacks --------------------------------------------------------------------------------------
def connect(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.setblocking(False)
    return s


def send_all(s: socket.socket, data: bytes, stop_on_reply: bool = True) -> int:
    """Send `data` in 1 MB pieces until done or the server answers or closes; bytes sent."""
    s.settimeout(10)
    sent = 0
    for i in range(0, len(data), MB):
        if stop_on_reply:
            ready = selectors.DefaultSelector()
            ready.register(s, selectors.EVENT_READ)
            if ready.select(0):
                break
        try:
            s.sendall(data[i:i + MB])
        except OSError:
            break
        sent += len(data[i:i + MB])
    return sent


def read_reply(s: socket.socket, timeout: float = 30) -> bytes:
    s.settimeout(timeout)
    chunks = []
    with contextlib.suppress(OSError):
        while chunk := s.recv(MB):
            chunks.append(chunk)
    return b"".join(chunks)


def status_of(reply: bytes) -> str:
    return reply.split(b" ", 2)[1].decode() if reply.startswith(b"HTTP/") else "no answer"


def post64(port: int) -> str:
    body = b"FIF=" + IMAGE.encode() + b"&OBJ=IIP,1.0&CNV=" + b"A" * (64 * MB)
    s = connect(port)
    head = (f"POST /iip HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
    t0 = time.monotonic()
    s.setblocking(True)
    s.sendall(head)
    sent = send_all(s, body)
    reply = read_reply(s)
    s.close()
    return (f"{status_of(reply)} after {time.monotonic() - t0:.1f} s; {sent / MB:.0f} of {len(body) / MB:.0f} MB "
            f"sent; reply {len(reply)} bytes")


def open_many(port: int, count: int, first: bytes) -> list[socket.socket]:
    socks = []
    for _ in range(count):
        try:
            s = connect(port)
        except OSError:
            continue
        if first:
            s.send(first)
        socks.append(s)
    return socks


def closed_by_server(s: socket.socket) -> bool:
    """Readable and at its end (or reset); an answer (a 408) is read past."""
    try:
        return not s.recv(65536)
    except BlockingIOError:
        return False
    except OSError:
        return True


def hold(port: int, count: int, seconds: float, trickle: bool) -> str:
    """`count` connections that never finish a request (a header line a second when `trickle`),
    held `seconds`: when the server closed them."""
    t0 = time.monotonic()
    socks = open_many(port, count, b"GET /health HTTP/1.1\r\nHost: x\r\n" if trickle else b"")
    closed: dict[socket.socket, float] = {}
    sel = selectors.DefaultSelector()
    for s in socks:
        sel.register(s, selectors.EVENT_READ)
    last_trickle = time.monotonic()
    while time.monotonic() - t0 < seconds:
        for key, _ in sel.select(0.2):
            s = key.fileobj
            assert isinstance(s, socket.socket)
            if closed_by_server(s):
                closed[s] = time.monotonic() - t0
                sel.unregister(s)
        if trickle and time.monotonic() - last_trickle >= 1.0:
            last_trickle = time.monotonic()
            for s in socks:
                if s not in closed:
                    with contextlib.suppress(OSError):
                        s.send(b"X-a: b\r\n")
    for s in socks:
        s.close()
    when = f"closed after {statistics.median(closed.values()):.1f} s (median)" if closed else "none closed"
    return f"{len(socks)} opened; {len(socks) - len(closed)} still open after {seconds:.0f} s; {when}"


def bighead(port: int) -> str:
    s = connect(port)
    s.setblocking(True)
    t0 = time.monotonic()
    s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: ")
    sent = send_all(s, b"a" * (64 * MB))
    reply = read_reply(s, timeout=5)
    s.close()
    return f"{status_of(reply)} after {time.monotonic() - t0:.1f} s; {sent / MB:.1f} of 64 MB sent"


def exchange(port: int, head: bytes, body: bytes = b"") -> bytes:
    """One request on a raw socket (httpx refuses URLs over 64 KB); the whole reply."""
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    s.sendall(head + body)
    reply = read_reply(s)
    s.close()
    return reply


def reply_body(reply: bytes) -> bytes:
    return reply.partition(b"\r\n\r\n")[2]


def longerr(port: int) -> str:
    out = []
    for label, size in (("1 MB query", MB), ("7 KB query", 7000)):
        target = f"/iip?FIF={IMAGE}&JTL=" + "9" * size
        reply = exchange(port, f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        out.append(f"{label}: {status_of(reply)}, reply body {len(reply_body(reply))} bytes")
    body = f"FIF={IMAGE}&JTL=".encode() + b"9" * 60000
    head = (f"POST /iip HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
    reply = exchange(port, head, body)
    out.append(f"60 KB POST: {status_of(reply)}, reply body {len(reply_body(reply))} bytes")
    return "; ".join(out)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repo", type=Path, default=REPO, help="checkout whose .venv/bin/tileserver runs (this one)")
    p.add_argument("--port", type=int, default=18231)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--hold", type=float, default=20.0, help="seconds slowloris and silent connections are held")
    p.add_argument("--only", default="baseline,post64,slowloris,silent,bighead,longerr")
    args = p.parse_args()
    attacks: dict[str, Callable[[], str]] = {
        "baseline": lambda: (time.sleep(5), "no attack, 5 s")[1],
        "post64": lambda: post64(args.port),
        "slowloris": lambda: hold(args.port, 300, args.hold, trickle=True),
        "silent": lambda: hold(args.port, 2000, args.hold, trickle=False),
        "bighead": lambda: bighead(args.port),
        "longerr": lambda: longerr(args.port),
    }
    chosen = [a.strip() for a in args.only.split(",") if a.strip()]
    rev = subprocess.run(["git", "-C", str(args.repo), "log", "-1", "--format=%h %s"], capture_output=True,
                         text=True).stdout.strip()
    rows = []
    with tempfile.TemporaryDirectory(prefix="attacks-") as tmp:
        root = make_root(Path(tmp))
        with server(args.repo, root, args.port, args.workers) as proc:
            for name in chosen:
                result, grown, probed = watched(proc.pid, f"http://127.0.0.1:{args.port}", attacks[name])
                rows.append(f"| {name} | {result} | {grown} | {probed} |")
                print(rows[-1], file=sys.stderr)
    print(f"\n{args.repo} ({rev}), --workers {args.workers}, {os.cpu_count()} cores, load "
          f"{os.getloadavg()[0]:.1f}\n")
    print("| attack | what happened | server RSS | probe client (/health every 50 ms) |")
    print("|---|---|---|---|")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
