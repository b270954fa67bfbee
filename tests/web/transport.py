"""A fake asyncio transport for driving uvicorn's HTTP protocol in-process (web/server.py's GuardedProtocol)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable


class Recording(asyncio.Transport):
    """A transport that records each write (the socket's sends)."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.parts: list[list[bytes]] = []  # what each vectored write was made of
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.writes.append(bytes(data))

    def writelines(self, parts: Iterable[bytes | bytearray | memoryview]) -> None:
        """One vectored send (uvloop: writev) of the parts, not copied into one buffer first."""
        self.parts.append([bytes(p) for p in parts])
        self.writes.append(b"".join(self.parts[-1]))

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default: object = None) -> object:
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 50000)}.get(name, default)

    def get_write_buffer_size(self) -> int:
        return 0

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass
