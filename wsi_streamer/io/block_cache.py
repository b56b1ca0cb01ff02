"""A thread-safe LRU cache of fixed-size blocks with per-block singleflight.

``BlockStore`` holds the blocks of any number of readers (keyed by reader identity), bounded by
total bytes. ``BlockCache`` is the ``RangeReader`` view of one reader through a block store.

Guarantees:
- N threads that want the same missing block cause exactly one storage request; the others
  wait on that block's flight (``io.singleflight.Flight``), at most ``wait_timeout`` seconds.
- A read that needs several consecutive missing blocks issues ONE ranged request for the run.
- A failed fetch wakes every waiter with its own copy of the error and leaves nothing cached;
  whatever the leader raises, no flight it registered is left pending (``FlightTable.leading``).
- Invariants (``check_invariants``): a key is held or in flight, never both; the span index
  mirrors the held exact ranges; ``cached_bytes`` is the sum of the held blocks.
"""

from __future__ import annotations

import bisect
import os
import threading
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextvars import copy_context

from ..errors import FlightTimeout
from .range_reader import IoStats, RangeReader, check_range
from .series import Member, members_of, selection_of
from .singleflight import DEFAULT_WAIT_S, Flight, FlightTable

DEFAULT_BLOCK_SIZE = 256 * 1024
DEFAULT_MAX_BYTES = 256 * 1024 * 1024

# (identity, block index) for blocks; (identity, offset, length) for exact ranges.
_Key = tuple[str, int] | tuple[str, int, int]
COALESCE_GAP = 64 * 1024  # exact ranges closer than this are fetched by one request
FETCH_THREADS = 32  # concurrent range fetches per block store (one pool, made on first use)


class BlockStore:
    """Blocks of many readers, LRU-bounded by ``max_bytes``; safe to share between threads."""

    def __init__(self, block_size: int = DEFAULT_BLOCK_SIZE,
                 max_bytes: int = DEFAULT_MAX_BYTES, *,
                 wait_timeout: float = DEFAULT_WAIT_S) -> None:
        if block_size <= 0:
            raise ValueError("block_size must be positive")
        self.block_size = block_size
        self.max_bytes = max_bytes
        self.wait_timeout = wait_timeout
        self.stats = IoStats()
        self._blocks: OrderedDict[_Key, bytes] = OrderedDict()
        self._flights: FlightTable[_Key, bytes] = FlightTable()
        self._spans: dict[str, list[tuple[int, int]]] = {}  # exact ranges per identity, sorted
        self._bytes = 0
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self._pool_pid = 0

    @property
    def cached_bytes(self) -> int:
        return self._bytes

    def view(self, reader: RangeReader) -> BlockCache:
        return BlockCache(reader, blocks=self)

    def get_blocks(self, reader: RangeReader, first: int, last: int) -> list[bytes]:
        """Return blocks ``first..last`` (inclusive) of ``reader``, fetching missing runs."""
        ident = reader.identity
        found: dict[int, bytes] = {}
        waiting: dict[int, Flight[bytes]] = {}
        mine: dict[_Key, Flight[bytes]] = {}
        with self._lock:
            for index in range(first, last + 1):
                key = (ident, index)
                block = self._blocks.get(key)
                flight = self._flights.get(key)
                if block is not None:
                    self._blocks.move_to_end(key)
                    found[index] = block
                elif flight is not None:
                    waiting[index] = flight
                else:
                    waiting[index] = mine[key] = self._flights.start(key)
        self.stats.add(hits=len(found), misses=len(mine))
        with self._flights.leading(self._lock, mine):
            for start, stop in _runs([key[1] for key in mine]):
                self._fetch_run(reader, start, stop, mine)
        self._await(waiting, found)
        return [found[i] for i in range(first, last + 1)]

    def get_ranges(self, reader: RangeReader, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        """Exact byte ranges, for tile data: each is served from cached blocks when they cover
        it or from an earlier exact read; missing ranges are fetched without block rounding
        (neighbours within ``COALESCE_GAP`` by one request; groups concurrently), with
        singleflight per range, and cached as one entry each. A local file's groups are read
        by the caller in turn: a page-cache read costs less than a hand-off to the pool."""
        ident = reader.identity
        found: dict[int, bytes] = {}
        waiting: dict[int, Flight[bytes]] = {}
        mine: dict[_Key, Flight[bytes]] = {}
        with self._lock:
            for i, (offset, length) in enumerate(ranges):
                key = (ident, offset, length)
                data = self._lookup_locked(ident, offset, length, blocks=True)
                flight = self._flights.get(key) if data is None else None
                if data is not None:
                    found[i] = data
                elif flight is not None:
                    waiting[i] = flight
                else:
                    waiting[i] = mine[key] = self._flights.start(key)
            # A gap is never bridged over bytes held or being fetched (e.g. another patch's
            # tiles between this patch's two rows): they would be fetched twice.
            flying = sorted(key[1:] for key in self._flights.keys()
                            if len(key) == 3 and key[0] == ident and key not in mine)
            others = sorted(r for r in ranges if r[1] and (ident, *r) not in mine)
            groups = _coalesce(sorted(key[1:] for key in mine),  # type: ignore[misc]
                               (others, flying, self._spans.get(ident, [])))
        self.stats.add(hits=len(found), misses=len(mine))
        with self._flights.leading(self._lock, mine):
            if len(groups) > 1 and getattr(reader, "local_path", None) is None:
                outcomes = self._fan_out(reader, groups, mine)
            else:
                outcomes = [self._fetch_group(reader, g, mine) for g in groups]
            errors = [e for e in outcomes if e is not None]
            if errors:
                raise errors[0]
        self._await(waiting, found)
        return [found[i] for i in range(len(ranges))]

    def _await(self, waiting: dict[int, Flight[bytes]], found: dict[int, bytes]) -> None:
        """Wait (bounded) for each flight and put its data in ``found``."""
        for index, flight in waiting.items():
            found[index] = flight.wait(self.wait_timeout)

    def _executor(self) -> ThreadPoolExecutor:
        """The block store's one bounded pool, made on first use in this process (after a fork the
        child makes its own)."""
        with self._lock:
            if self._pool is None or self._pool_pid != os.getpid():
                self._pool = ThreadPoolExecutor(max_workers=FETCH_THREADS,
                                                thread_name_prefix="wsi-fetch")
                self._pool_pid = os.getpid()
            return self._pool

    def _fan_out(self, reader: RangeReader, groups: list[list[tuple[int, int]]],
                 mine: dict[_Key, Flight[bytes]]) -> list[BaseException | None]:
        """Fetch ``groups`` concurrently on the block store's pool. Each group is claimed by the
        first thread to reach it and the caller runs every group no pool thread has started,
        so the caller only ever waits for groups being fetched: no deadlock when the pool is
        busy or when its own threads read through the block store. The caller's context (the
        request's I/O counters) goes with every group. A pool that cannot take work (no thread
        can be started) only means the caller runs more groups itself."""
        claims = [threading.Lock() for _ in groups]
        done = [threading.Event() for _ in groups]
        outcomes: list[BaseException | None] = [None] * len(groups)
        context = copy_context()

        def work(index: int) -> None:
            if not claims[index].acquire(blocking=False):
                return
            try:
                outcomes[index] = context.copy().run(self._fetch_group, reader, groups[index],
                                                     mine)
            finally:
                done[index].set()

        try:
            pool = self._executor()
            for index in range(len(groups) - 1, 0, -1):
                pool.submit(work, index)
        except RuntimeError:
            pass  # no thread available: the loop below reads what nobody claimed
        for index in range(len(groups)):
            work(index)
        for index, event in enumerate(done):
            if not event.wait(self.wait_timeout):
                outcomes[index] = FlightTimeout(
                    f"gave up after {self.wait_timeout:g} s waiting for a storage read")
        return outcomes

    def lookup(self, ident: str, offset: int, length: int) -> bytes | None:
        """The range if an exact range already held covers it (no fetch, no block rounding)."""
        with self._lock:
            return self._lookup_locked(ident, offset, length, blocks=False)

    def put_ranges(self, ident: str, ranges: Sequence[tuple[int, bytes]]) -> None:
        """Hold bytes the caller already has (e.g. the first reads of a probed open); a range
        being fetched right now is left to its flight."""
        with self._lock:
            for offset, data in ranges:
                key = (ident, offset, len(data))
                if data and key not in self._blocks and key not in self._flights:
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
        old = self._blocks.pop(key, None)
        self._blocks[key] = data
        self._bytes += len(data) - (len(old) if old is not None else 0)
        if len(key) == 3 and old is None:
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

    def _fetch_group(self, reader: RangeReader, group: list[tuple[int, int]],
                     mine: dict[_Key, Flight[bytes]]) -> BaseException | None:
        """Fetch one coalesced group; return (not raise) the error after failing its flights."""
        ident = reader.identity
        start = group[0][0]
        end = max(o + n for o, n in group)
        try:
            data = reader.read(start, end - start)
        except BaseException as exc:  # noqa: BLE001 - handed to every waiter, then raised
            with self._lock:
                for offset, length in group:
                    key = (ident, offset, length)
                    self._flights.fail(key, mine[key], exc)
            return exc
        self._complete((((ident, offset, length), data[offset - start : offset - start + length])
                        for offset, length in group), mine)
        return None

    def _fetch_run(self, reader: RangeReader, start: int, stop: int,
                   mine: dict[_Key, Flight[bytes]]) -> None:
        bs = self.block_size
        begin = start * bs
        end = min(stop * bs, reader.size)
        data = reader.read(begin, end - begin)
        ident = reader.identity
        self._complete((((ident, index), data[(index - start) * bs : (index - start + 1) * bs])
                        for index in range(start, stop)), mine)

    def _complete(self, parts: Iterable[tuple[_Key, bytes]],
                  mine: dict[_Key, Flight[bytes]] | None = None) -> None:
        """Hold each fetched part and resolve its flight, if that flight is still registered
        (one failed by the leader's exit, e.g. after a timeout, is dropped with its bytes)."""
        with self._lock:
            for key, part in parts:
                flight = self._flights.get(key) if mine is None else mine[key]
                if flight is not None and self._flights.resolve(key, flight, part):
                    self._insert_locked(key, part)
            self._evict()

    def check_invariants(self) -> None:
        """Raise ``AssertionError`` unless the block store is consistent (for tests)."""
        with self._lock:
            both = set(self._blocks) & self._flights.keys()
            assert not both, f"held and in flight: {sorted(both)[:3]}"
            assert self._bytes == sum(len(b) for b in self._blocks.values()), "byte count"
            spans: dict[str, list[tuple[int, int]]] = {}
            for key in self._blocks:
                if len(key) == 3:
                    spans.setdefault(key[0], []).append((key[1], key[2]))
            assert {k: sorted(v) for k, v in spans.items()} == self._spans, "span index"
            assert self._bytes <= self.max_bytes, "over budget"

    def _evict(self) -> None:
        while self._bytes > self.max_bytes and self._blocks:
            key, block = self._blocks.popitem(last=False)
            self._bytes -= len(block)
            if len(key) == 3:
                spans = self._spans[key[0]]
                del spans[bisect.bisect_left(spans, (key[1], key[2]))]
                if not spans:
                    del self._spans[key[0]]


def _runs(indices: list[int]) -> list[tuple[int, int]]:
    """Consecutive runs of sorted indices as half-open ``(start, stop)`` pairs."""
    runs: list[tuple[int, int]] = []
    for index in indices:
        if runs and runs[-1][1] == index:
            runs[-1] = (runs[-1][0], index + 1)
        else:
            runs.append((index, index + 1))
    return runs


def _coalesce(ranges: list[tuple[int, int]],
              avoid: Sequence[Sequence[tuple[int, int]]] = ()) -> list[list[tuple[int, int]]]:
    """Group sorted ``(offset, length)`` ranges whose gaps are at most ``COALESCE_GAP`` and
    start no range of any sorted list in ``avoid`` (bytes held or being fetched already)."""
    groups: list[list[tuple[int, int]]] = []
    end = -1
    for offset, length in ranges:
        held = any(i < len(spans) and spans[i][0] < offset
                   for spans in avoid for i in (bisect.bisect_left(spans, (end,)),))
        if groups and offset - end <= COALESCE_GAP and not held:
            groups[-1].append((offset, length))
        else:
            groups.append([(offset, length)])
        end = max(end, offset + length) if len(groups[-1]) > 1 else offset + length
    return groups


class BlockCache:
    """``RangeReader`` that serves ``reader`` through a ``BlockStore`` (its own unless given)."""

    def __init__(self, reader: RangeReader, blocks: BlockStore | None = None, *,
                 block_size: int = DEFAULT_BLOCK_SIZE,
                 max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.inner = reader
        self.blocks = blocks if blocks is not None else BlockStore(block_size, max_bytes)

    @property
    def size(self) -> int:
        return self.inner.size

    @property
    def identity(self) -> str:
        return self.inner.identity

    @property
    def stats(self) -> IoStats:
        return self.blocks.stats

    @property
    def local_path(self) -> str | None:
        """The inner reader's file when it is local (None for object storage)."""
        path = getattr(self.inner, "local_path", None)
        return path if isinstance(path, str) else None

    @property
    def members(self) -> tuple[Member, ...] | None:
        """The inner reader's members when it is a series (``io.series``), else None."""
        return members_of(self.inner)

    @property
    def selection(self) -> str:
        """The inner series reader's selection (``io.series.split_selection``), else ""."""
        return selection_of(self.inner)

    def close(self) -> None:
        """Close the inner reader (its cached blocks stay in the block store)."""
        close = getattr(self.inner, "close", None)
        if close is not None:
            close()

    def read(self, offset: int, length: int) -> bytes:
        check_range(offset, length, self.inner.size)
        if length == 0:
            return b""
        held = self.blocks.lookup(self.inner.identity, offset, length)
        if held is not None:
            return held
        bs = self.blocks.block_size
        first, last = offset // bs, (offset + length - 1) // bs
        blocks = self.blocks.get_blocks(self.inner, first, last)
        skip = offset - first * bs
        if len(blocks) == 1:
            return blocks[0][skip : skip + length]
        return b"".join(blocks)[skip : skip + length]

    def read_exact(self, offset: int, length: int) -> bytes:
        """Like ``read`` but a miss fetches exactly this range, not whole blocks (tile data:
        bytes per tile = the tile)."""
        check_range(offset, length, self.inner.size)
        return self.blocks.get_ranges(self.inner, [(offset, length)])[0]

    def read_exact_many(self, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        """Several exact ranges; missing neighbours are coalesced, groups fetched concurrently."""
        for offset, length in ranges:
            check_range(offset, length, self.inner.size)
        return self.blocks.get_ranges(self.inner, ranges)
