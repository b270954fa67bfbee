"""Small LRU caches: one bounded in bytes (encoded tiles, decoded levels) with hit/miss counters.
Thread-safe: the event loop and the reader threads may both touch them."""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class ByteLRU(Generic[K, V]):
    """LRU bounded by the sum of the sizes given to `put`; 0 bytes disables it."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self.hits = 0
        self.misses = 0
        self._data: OrderedDict[K, tuple[V, int]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: K, miss: bool = True) -> V | None:
        """The value under `key`, refreshed; a hit is counted, and a miss unless `miss` is False (a lookup that is
        made again elsewhere when it fails: the front's, web/front.py; `missed` counts it if it is not)."""
        with self._lock:
            item = self._data.get(key)
            if item is None:
                self.misses += miss
                return None
            self._data.move_to_end(key)
            self.hits += 1
            return item[0]

    def put(self, key: K, value: V, size: int) -> None:
        if size > self.max_bytes:
            return
        with self._lock:
            old = self._data.pop(key, None)
            if old is not None:
                self.bytes -= old[1]
            self._data[key] = (value, size)
            self.bytes += size
            while self.bytes > self.max_bytes:
                _, (_, s) = self._data.popitem(last=False)
                self.bytes -= s

    def missed(self) -> None:
        with self._lock:
            self.misses += 1

    def peek(self, key: K) -> V | None:
        """The value under `key` without counting a lookup or refreshing it."""
        with self._lock:
            item = self._data.get(key)
            return None if item is None else item[0]

    def discard(self, key: K) -> None:
        with self._lock:
            item = self._data.pop(key, None)
            if item is not None:
                self.bytes -= item[1]

    def snapshot(self) -> list[K]:
        """A snapshot of the keys, least recently used first."""
        with self._lock:
            return list(self._data)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
            self.bytes = 0

    def __len__(self) -> int:
        return len(self._data)

    def stats(self) -> dict[str, int]:
        return {"entries": len(self._data), "bytes": self.bytes, "max_bytes": self.max_bytes,
                "hits": self.hits, "misses": self.misses}


class CountLRU(ByteLRU[K, V]):
    """LRU bounded by entry count."""

    def __init__(self, max_entries: int) -> None:
        super().__init__(max_entries)

    def put(self, key: K, value: V, size: int = 1) -> None:
        super().put(key, value, 1)
