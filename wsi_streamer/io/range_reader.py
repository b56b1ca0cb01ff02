"""The range-reader contract and the I/O counters every reader reports to.

A ``RangeReader`` is stateless with respect to position (no seek/tell), so one instance serves
every thread. Implementations: ``S3Reader`` (io/s3.py), ``LocalReader`` (io/local.py),
``BlockCache`` (io/block_cache.py, wrapping another reader) and ``BytesReader`` below.
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from ..errors import ReadPastEnd


@runtime_checkable
class RangeReader(Protocol):
    @property
    def size(self) -> int:
        """Total object size in bytes."""
        ...

    @property
    def identity(self) -> str:
        """Stable cache-key prefix that changes when the content changes (``s3://b/k#etag``)."""
        ...

    def read(self, offset: int, length: int) -> bytes:
        """Return exactly ``length`` bytes at ``offset``; raise ``ReadPastEnd`` beyond the end."""
        ...


def read_ranges(reader: RangeReader, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
    """Exact ``(offset, length)`` ranges: concurrently and without block rounding when the
    reader offers ``read_exact_many`` (the block cache), else one ``read`` each."""
    read_many: Callable[[Sequence[tuple[int, int]]], list[bytes]] | None = getattr(
        reader, "read_exact_many", None)
    if read_many is not None:
        return read_many(ranges)
    return [reader.read(o, n) for o, n in ranges]


def check_range(offset: int, length: int, size: int) -> None:
    """Raise ``ReadPastEnd`` unless ``[offset, offset + length)`` lies inside ``[0, size)``."""
    if offset < 0 or length < 0 or offset + length > size:
        raise ReadPastEnd(
            f"read of {length} bytes at {offset} is outside the object ({size} bytes)")


@dataclass
class IoStats:
    """Thread-safe counters: storage requests and bytes, block-cache hits and misses."""

    requests: int = 0
    bytes: int = 0
    hits: int = 0
    misses: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, requests: int = 0, nbytes: int = 0, hits: int = 0, misses: int = 0) -> None:
        with self._lock:
            self.requests += requests
            self.bytes += nbytes
            self.hits += hits
            self.misses += misses

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return {"requests": self.requests, "bytes": self.bytes,
                    "hits": self.hits, "misses": self.misses}


# Counters of the request being served (set by the server per request), so that the access log
# can say how many storage requests and bytes one HTTP request caused.
_request_stats: contextvars.ContextVar[IoStats | None] = contextvars.ContextVar(
    "wsi_request_stats", default=None
)


def record_storage_request(global_stats: IoStats, nbytes: int) -> None:
    """Count one storage request of ``nbytes`` globally and for the current request."""
    global_stats.add(requests=1, nbytes=nbytes)
    current = _request_stats.get()
    if current is not None:
        current.add(requests=1, nbytes=nbytes)


# Who wants to know when a storage request is sent and answered (the server's in-flight gauge);
# backends without their own event hooks (HTTP, local files) report through ``in_flight``.
_in_flight_listeners: list[tuple[Callable[[], None], Callable[[], None]]] = []


def listen_in_flight(sent: Callable[[], None], answered: Callable[[], None]) -> None:
    """Call ``sent`` before and ``answered`` after every storage request reported through
    ``in_flight`` (registered once per pair)."""
    if (sent, answered) not in _in_flight_listeners:
        _in_flight_listeners.append((sent, answered))


@contextmanager
def in_flight() -> Iterator[None]:
    """Around one storage request: tells the listeners, answered or failed alike."""
    listeners = list(_in_flight_listeners)
    for sent, _ in listeners:
        sent()
    try:
        yield
    finally:
        for _, answered in listeners:
            answered()


@contextmanager
def track_request() -> Iterator[IoStats]:
    """Collect the storage requests made by this thread (and the work it hands to helpers)."""
    stats = IoStats()
    token = _request_stats.set(stats)
    try:
        yield stats
    finally:
        _request_stats.reset(token)


class BytesReader:
    """A ``RangeReader`` over bytes in memory, counting requests (tests, generated slides)."""

    def __init__(self, data: bytes, identity: str = "mem://bytes") -> None:
        self._data = bytes(data)
        self._identity = identity
        self.stats = IoStats()

    @property
    def size(self) -> int:
        return len(self._data)

    @property
    def identity(self) -> str:
        return self._identity

    def read(self, offset: int, length: int) -> bytes:
        check_range(offset, length, len(self._data))
        record_storage_request(self.stats, length)
        return self._data[offset : offset + length]
