"""A counting, optionally slow or failing ``RangeReader`` for cache and concurrency tests."""

from __future__ import annotations

import threading
import time

from wsi_streamer.errors import StorageError
from wsi_streamer.io.range_reader import check_range


class CountingReader:
    """Serves ``data``; records every ``(offset, length)`` call. ``delay`` seconds per read;
    while ``failures`` > 0 each read raises ``StorageError`` (after the delay) and decrements."""

    def __init__(self, data: bytes, identity: str = "fake://slide", *, delay: float = 0.0,
                 failures: int = 0) -> None:
        self.data = data
        self._identity = identity
        self.delay = delay
        self.failures = failures
        self.calls: list[tuple[int, int]] = []
        self._lock = threading.Lock()

    @property
    def size(self) -> int:
        return len(self.data)

    @property
    def identity(self) -> str:
        return self._identity

    def read(self, offset: int, length: int) -> bytes:
        check_range(offset, length, len(self.data))
        with self._lock:
            self.calls.append((offset, length))
            fail = self.failures > 0
            self.failures -= fail
        if self.delay:
            time.sleep(self.delay)
        if fail:
            raise StorageError("injected failure")
        return self.data[offset : offset + length]


def pattern(size: int) -> bytes:
    """Distinct bytes at every position modulo 251 (a prime, so blocks differ)."""
    return bytes(i % 251 for i in range(size))
