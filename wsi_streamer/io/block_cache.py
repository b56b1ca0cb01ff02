"""A thread-safe LRU cache of fixed-size blocks with per-block singleflight.

``BlockStore`` holds the blocks of any number of readers (keyed by reader identity), bounded by
total bytes. ``BlockCache`` is the ``RangeReader`` view of one reader through a store.

Guarantees:
- N threads that want the same missing block cause exactly one storage request; the others
  wait on that block's ``threading.Event``.
- A read that needs several consecutive missing blocks issues ONE ranged request for the run.
- A failed fetch wakes every waiter with the same error and leaves nothing cached.
"""

from __future__ import annotations

import bisect
import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from contextvars import copy_context

from .range_reader import IoStats, RangeReader, check_range

DEFAULT_BLOCK_SIZE = 256 * 1024
DEFAULT_MAX_BYTES = 256 * 1024 * 1024

# (identity, block index) for blocks; (identity, offset, length) for exact ranges.
_Key = tuple[str, int] | tuple[str, int, int]
COALESCE_GAP = 64 * 1024  # exact ranges closer than this are fetched by one request
FETCH_THREADS = 32  # concurrent range fetches per store (one pool, made on first use)


class _Flight:
    """One in-progress block fetch that other threads can wait on."""

    __slots__ = ("event", "data", "error")

    def __init__(self) -> None:
        self.event = threading.Event()
        self.data: bytes | None = None
        self.error: BaseException | None = None


class BlockStore:
    """Blocks of many readers, LRU-bounded by ``max_bytes``; safe to share between threads."""

    def __init__(self, block_size: int = DEFAULT_BLOCK_SIZE,
                 max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        if block_size <= 0:
            raise ValueError("block_size must be positive")
        self.block_size = block_size
        self.max_bytes = max_bytes
        self.stats = IoStats()
        self._blocks: OrderedDict[_Key, bytes] = OrderedDict()
        self._flights: dict[_Key, _Flight] = {}
        self._spans: dict[str, list[tuple[int, int]]] = {}  # exact ranges per identity, sorted
        self._bytes = 0
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self._pool_pid = 0

    @property
    def cached_bytes(self) -> int:
        return self._bytes

    def view(self, reader: RangeReader) -> BlockCache:
        return BlockCache(reader, store=self)

    def get_blocks(self, reader: RangeReader, first: int, last: int) -> list[bytes]:
        """Return blocks ``first..last`` (inclusive) of ``reader``, fetching missing runs."""
        ident = reader.identity
        found: dict[int, bytes] = {}
        waiting: dict[int, _Flight] = {}
        mine: list[int] = []
        with self._lock:
            for index in range(first, last + 1):
                key = (ident, index)
                block = self._blocks.get(key)
                if block is not None:
                    self._blocks.move_to_end(key)
                    found[index] = block
                elif key in self._flights:
                    waiting[index] = self._flights[key]
                else:
                    flight = _Flight()
                    self._flights[key] = flight
                    waiting[index] = flight
                    mine.append(index)
        self.stats.add(hits=len(found), misses=len(mine))

        error: BaseException | None = None
        for start, stop in _runs(mine):
            try:
                self._fetch_run(reader, start, stop)
            except BaseException as exc:  # noqa: BLE001 - handed to every waiter, then raised
                error = error or exc
                self._fail([(ident, i) for i in range(start, stop)], exc)
        if error is not None:
            raise error

        _await(waiting, found)
        return [found[i] for i in range(first, last + 1)]

    def get_ranges(self, reader: RangeReader, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        """Exact byte ranges, for tile data: each is served from cached blocks when they cover
        it or from an earlier exact read; missing ranges are fetched without block rounding
        (neighbours within ``COALESCE_GAP`` by one request; groups concurrently), with
        singleflight per range, and cached as one entry each."""
        ident = reader.identity
        found: dict[int, bytes] = {}
        waiting: dict[int, _Flight] = {}
        mine: list[tuple[int, int]] = []
        with self._lock:
            for i, (offset, length) in enumerate(ranges):
                key = (ident, offset, length)
                data = self._lookup_locked(ident, offset, length, blocks=True)
                if data is not None:
                    found[i] = data
                elif key in self._flights:
                    waiting[i] = self._flights[key]
                else:
                    waiting[i] = self._flights[key] = _Flight()
                    mine.append((offset, length))
        self.stats.add(hits=len(found), misses=len(mine))
        groups = _coalesce(sorted(mine))
        if len(groups) > 1:
            outcomes = self._fan_out(reader, groups)
        else:
            outcomes = [self._fetch_group(reader, g) for g in groups]
        errors = [e for e in outcomes if e is not None]
        if errors:
            raise errors[0]
        _await(waiting, found)
        return [found[i] for i in range(len(ranges))]

    def _executor(self) -> ThreadPoolExecutor:
        """The store's one bounded pool, made on first use in this process (after a fork the
        child makes its own)."""
        with self._lock:
            if self._pool is None or self._pool_pid != os.getpid():
                self._pool = ThreadPoolExecutor(max_workers=FETCH_THREADS,
                                                thread_name_prefix="wsi-fetch")
                self._pool_pid = os.getpid()
            return self._pool

    def _fan_out(self, reader: RangeReader, groups: list[list[tuple[int, int]]]
                 ) -> list[BaseException | None]:
        """Fetch ``groups`` concurrently on the store's pool. Each group is claimed by the
        first thread to reach it and the caller runs every group no pool thread has started,
        so the caller only ever waits for groups being fetched: no deadlock when the pool is
        busy or when its own threads read through the store. The caller's context (the
        request's I/O counters) goes with every group."""
        claims = [threading.Lock() for _ in groups]
        done = [threading.Event() for _ in groups]
        outcomes: list[BaseException | None] = [None] * len(groups)
        context = copy_context()

        def work(index: int) -> None:
            if not claims[index].acquire(blocking=False):
                return
            try:
                outcomes[index] = context.copy().run(self._fetch_group, reader, groups[index])
            finally:
                done[index].set()

        pool = self._executor()
        for index in range(len(groups) - 1, 0, -1):
            pool.submit(work, index)
        for index in range(len(groups)):
            work(index)
        for event in done:
            event.wait()
        return outcomes

    def lookup(self, ident: str, offset: int, length: int) -> bytes | None:
        """The range if an exact range already held covers it (no fetch, no block rounding)."""
        with self._lock:
            return self._lookup_locked(ident, offset, length, blocks=False)

    def put_ranges(self, ident: str, ranges: Sequence[tuple[int, bytes]]) -> None:
        """Hold bytes the caller already has (e.g. the first reads of a probed open)."""
        with self._lock:
            for offset, data in ranges:
                key = (ident, offset, len(data))
                if data and key not in self._blocks:
                    self._insert_locked(key, data)
            self._evict()

    def _lookup_locked(self, ident: str, offset: int, length: int, *, blocks: bool
                       ) -> bytes | None:
        if length == 0:
            return b""
        key = (ident, offset, length)
        data = self._blocks.get(key)
        if data is not None:
            self._blocks.move_to_end(key)
            return data
        spans = self._spans.get(ident)
        if spans:
            # The few ranges starting at or before ``offset`` (tile ranges rarely overlap).
            i = bisect.bisect_right(spans, (offset, 1 << 62))
            for start, size in reversed(spans[max(0, i - 4) : i]):
                if start + size >= offset + length:
                    key = (ident, start, size)
                    self._blocks.move_to_end(key)
                    skip = offset - start
                    return self._blocks[key][skip : skip + length]
        return self._covered_locked(ident, offset, length) if blocks else None

    def _insert_locked(self, key: _Key, data: bytes) -> None:
        self._blocks[key] = data
        self._bytes += len(data)
        if len(key) == 3:
            bisect.insort(self._spans.setdefault(key[0], []), (key[1], key[2]))

    def _covered_locked(self, ident: str, offset: int, length: int) -> bytes | None:
        bs = self.block_size
        keys = [(ident, i) for i in range(offset // bs, (offset + length - 1) // bs + 1)]
        blocks = [self._blocks.get(k) for k in keys]
        if any(b is None for b in blocks):
            return None
        for key in keys:
            self._blocks.move_to_end(key)
        skip = offset - keys[0][1] * bs
        return b"".join(b for b in blocks if b is not None)[skip : skip + length]

    def _fetch_group(self, reader: RangeReader, group: list[tuple[int, int]]
                     ) -> BaseException | None:
        """Fetch one coalesced group; return (not raise) the error after failing its flights."""
        ident = reader.identity
        start = group[0][0]
        end = max(o + n for o, n in group)
        try:
            data = reader.read(start, end - start)
        except BaseException as exc:  # noqa: BLE001 - handed to every waiter, then raised
            self._fail([(ident, offset, length) for offset, length in group], exc)
            return exc
        with self._lock:
            for offset, length in group:
                part = data[offset - start : offset - start + length]
                key = (ident, offset, length)
                flight = self._flights.pop(key)
                flight.data = part
                self._insert_locked(key, part)
                flight.event.set()
            self._evict()
        return None

    def _fetch_run(self, reader: RangeReader, start: int, stop: int) -> None:
        bs = self.block_size
        begin = start * bs
        end = min(stop * bs, reader.size)
        data = reader.read(begin, end - begin)
        ident = reader.identity
        with self._lock:
            for index in range(start, stop):
                block = data[(index - start) * bs : (index - start + 1) * bs]
                key = (ident, index)
                flight = self._flights.pop(key)
                flight.data = block
                self._insert_locked(key, block)
                flight.event.set()
            self._evict()

    def _fail(self, keys: Sequence[_Key], exc: BaseException) -> None:
        """Wake the waiters of ``keys`` with ``exc``; nothing is cached."""
        with self._lock:
            for key in keys:
                flight = self._flights.pop(key, None)
                if flight is not None:
                    flight.error = exc
                    flight.event.set()

    def _evict(self) -> None:
        while self._bytes > self.max_bytes and self._blocks:
            key, block = self._blocks.popitem(last=False)
            self._bytes -= len(block)
            if len(key) == 3:
                spans = self._spans[key[0]]
                del spans[bisect.bisect_left(spans, (key[1], key[2]))]
                if not spans:
                    del self._spans[key[0]]


def _await(waiting: dict[int, _Flight], found: dict[int, bytes]) -> None:
    """Wait for each flight and put its data in ``found``; raise the first flight's error."""
    for index, flight in waiting.items():
        flight.event.wait()
        if flight.error is not None:
            raise flight.error
        assert flight.data is not None
        found[index] = flight.data


def _runs(indices: list[int]) -> list[tuple[int, int]]:
    """Consecutive runs of sorted indices as half-open ``(start, stop)`` pairs."""
    runs: list[tuple[int, int]] = []
    for index in indices:
        if runs and runs[-1][1] == index:
            runs[-1] = (runs[-1][0], index + 1)
        else:
            runs.append((index, index + 1))
    return runs


def _coalesce(ranges: list[tuple[int, int]]) -> list[list[tuple[int, int]]]:
    """Group sorted ``(offset, length)`` ranges whose gaps are at most ``COALESCE_GAP``."""
    groups: list[list[tuple[int, int]]] = []
    end = -1
    for offset, length in ranges:
        if groups and offset - end <= COALESCE_GAP:
            groups[-1].append((offset, length))
        else:
            groups.append([(offset, length)])
        end = max(end, offset + length) if len(groups[-1]) > 1 else offset + length
    return groups


class BlockCache:
    """``RangeReader`` that serves ``reader`` through a ``BlockStore`` (its own unless given)."""

    def __init__(self, reader: RangeReader, store: BlockStore | None = None, *,
                 block_size: int = DEFAULT_BLOCK_SIZE,
                 max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.inner = reader
        self.store = store if store is not None else BlockStore(block_size, max_bytes)

    @property
    def size(self) -> int:
        return self.inner.size

    @property
    def identity(self) -> str:
        return self.inner.identity

    @property
    def stats(self) -> IoStats:
        return self.store.stats

    def read(self, offset: int, length: int) -> bytes:
        check_range(offset, length, self.inner.size)
        if length == 0:
            return b""
        held = self.store.lookup(self.inner.identity, offset, length)
        if held is not None:
            return held
        bs = self.store.block_size
        first, last = offset // bs, (offset + length - 1) // bs
        blocks = self.store.get_blocks(self.inner, first, last)
        skip = offset - first * bs
        if len(blocks) == 1:
            return blocks[0][skip : skip + length]
        return b"".join(blocks)[skip : skip + length]

    def read_exact(self, offset: int, length: int) -> bytes:
        """Like ``read`` but a miss fetches exactly this range, not whole blocks (tile data:
        bytes per tile = the tile)."""
        check_range(offset, length, self.inner.size)
        return self.store.get_ranges(self.inner, [(offset, length)])[0]

    def read_exact_many(self, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        """Several exact ranges; missing neighbours are coalesced, groups fetched concurrently."""
        for offset, length in ranges:
            check_range(offset, length, self.inner.size)
        return self.store.get_ranges(self.inner, ranges)
