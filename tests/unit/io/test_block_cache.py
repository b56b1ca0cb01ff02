"""BlockCache/BlockStore: hits, LRU byte bound, run coalescing, singleflight, failures."""

from __future__ import annotations

import pytest

from tests.fixtures.fakes import CountingReader, pattern
from tests.fixtures.threads import preempt_often, run_together, values
from wsi_streamer.errors import ReadPastEnd, StorageError
from wsi_streamer.io import block_cache
from wsi_streamer.io.block_cache import BlockCache, BlockStore
from wsi_streamer.io.range_reader import RangeReader

BS = 1024
DATA = pattern(10 * BS + 300)  # 11 blocks, the last one short


def make(data: bytes = DATA, **kwargs: object) -> tuple[CountingReader, BlockCache]:
    inner = CountingReader(data, **kwargs)  # type: ignore[arg-type]
    return inner, BlockCache(inner, block_size=BS, max_bytes=64 * BS)


def test_is_a_range_reader_with_inner_size_and_identity() -> None:
    inner, cache = make()
    assert isinstance(cache, RangeReader)
    assert cache.size == len(DATA) and cache.identity == inner.identity


@pytest.mark.parametrize(("offset", "length"), [
    (0, 1), (0, BS), (BS - 1, 2), (10, 3 * BS + 17), (len(DATA) - 5, 5), (0, len(DATA)),
    (5 * BS, BS), (len(DATA), 0)])
def test_reads_return_exact_bytes(offset: int, length: int) -> None:
    _, cache = make()
    assert cache.read(offset, length) == DATA[offset : offset + length]
    assert cache.read(offset, length) == DATA[offset : offset + length]  # from cache


def test_second_read_is_a_hit_without_storage_request() -> None:
    inner, cache = make()
    cache.read(100, 50)
    assert inner.calls == [(0, BS)]
    cache.read(200, 10)
    cache.read(0, BS)
    assert inner.calls == [(0, BS)]
    assert cache.stats.snapshot()["hits"] == 2 and cache.stats.snapshot()["misses"] == 1


def test_consecutive_missing_blocks_are_one_request() -> None:
    inner, cache = make()
    assert cache.read(BS + 10, 4 * BS) == DATA[BS + 10 : 5 * BS + 10]
    assert inner.calls == [(BS, 5 * BS)]  # blocks 1..5 in one ranged read


def test_cached_block_splits_runs_around_it() -> None:
    inner, cache = make()
    cache.read(3 * BS, 1)
    inner.calls.clear()
    cache.read(BS, 5 * BS)  # blocks 1..5; 3 is cached
    assert inner.calls == [(BS, 2 * BS), (4 * BS, 2 * BS)]


def test_last_short_block_is_clipped_to_object_size() -> None:
    inner, cache = make()
    assert cache.read(len(DATA) - 1, 1) == DATA[-1:]
    assert inner.calls == [(10 * BS, 300)]


@pytest.mark.parametrize(("offset", "length"), [(-1, 1), (0, len(DATA) + 1),
                                                (len(DATA), 1), (5, -1)])
def test_reads_past_end_raise_without_storage_request(offset: int, length: int) -> None:
    inner, cache = make()
    with pytest.raises(ReadPastEnd):
        cache.read(offset, length)
    assert inner.calls == []


def test_lru_is_bounded_by_bytes_and_evicts_least_recently_used() -> None:
    inner = CountingReader(DATA)
    store = BlockStore(block_size=BS, max_bytes=3 * BS)
    cache = store.view(inner)
    for block in (0, 1, 2):
        cache.read(block * BS, 1)
    cache.read(0, 1)  # block 0 becomes most recent
    cache.read(3 * BS, 1)  # evicts block 1
    assert store.cached_bytes <= 3 * BS
    inner.calls.clear()
    cache.read(0, 1)
    cache.read(2 * BS, 1)
    cache.read(3 * BS, 1)
    assert inner.calls == []
    cache.read(BS, 1)
    assert inner.calls == [(BS, BS)]
    assert store.cached_bytes <= 3 * BS


def test_store_keys_blocks_by_reader_identity() -> None:
    store = BlockStore(block_size=BS, max_bytes=64 * BS)
    a = CountingReader(b"a" * 4 * BS, "fake://a")
    b = CountingReader(b"b" * 4 * BS, "fake://b")
    assert store.view(a).read(0, 4) == b"aaaa"
    assert store.view(b).read(0, 4) == b"bbbb"
    assert store.view(CountingReader(b"x" * 4 * BS, "fake://a")).read(0, 4) == b"aaaa"


def test_invalid_block_size_is_rejected() -> None:
    with pytest.raises(ValueError):
        BlockStore(block_size=0)


def test_singleflight_32_threads_one_block_one_request() -> None:
    inner, cache = make(delay=0.05)
    results = run_together(lambda _: cache.read(2 * BS + 7, 100), range(32))
    assert results == [DATA[2 * BS + 7 : 2 * BS + 107]] * 32
    assert inner.calls == [(2 * BS, BS)]


def test_singleflight_overlapping_runs_fetch_each_block_once() -> None:
    inner, cache = make(delay=0.05)
    ranges = [(BS * (i % 4), 3 * BS) for i in range(32)]  # blocks 0..5 in overlapping runs
    results = values(run_together(lambda r: cache.read(*r), ranges))
    assert results == [DATA[o : o + n] for o, n in ranges]
    fetched = sorted(b for o, n in inner.calls for b in range(o // BS, (o + n) // BS))
    assert fetched == list(range(6))  # every block requested exactly once


def test_failed_fetch_wakes_all_waiters_and_caches_nothing() -> None:
    inner, cache = make(delay=0.05, failures=1)
    results = run_together(lambda _: cache.read(BS, 10), range(32))
    assert len(inner.calls) == 1
    assert all(isinstance(r, StorageError) for r in results), results
    assert cache.blocks.cached_bytes == 0
    assert cache.read(BS, 10) == DATA[BS : BS + 10]  # retry after failure works
    assert len(inner.calls) == 2


def test_failure_of_one_run_does_not_poison_others() -> None:
    inner, cache = make(failures=1)
    with pytest.raises(StorageError):
        cache.read(0, 10)
    assert cache.read(0, 10) == DATA[:10]
    assert cache.read(5 * BS, 10) == DATA[5 * BS : 5 * BS + 10]


def test_exact_ranges_and_put_ranges_serve_any_range_inside_them() -> None:
    inner, cache = make()
    cache.blocks.put_ranges(inner.identity, [(5 * BS + 7, DATA[5 * BS + 7 : 8 * BS])])
    assert cache.read(6 * BS, 100) == DATA[6 * BS : 6 * BS + 100]  # read() sees held ranges
    assert cache.read_exact(5 * BS + 7, 3) == DATA[5 * BS + 7 : 5 * BS + 10]
    assert cache.read_exact_many([(7 * BS, BS)]) == [DATA[7 * BS : 8 * BS]]
    assert inner.calls == []
    assert cache.read_exact_many([(100, 50), (2 * BS, 10)]) == [DATA[100:150],
                                                                 DATA[2 * BS : 2 * BS + 10]]
    inner.calls.clear()
    assert cache.read(110, 20) == DATA[110:130]  # inside the exact range fetched above
    assert inner.calls == []
    assert cache.read(5 * BS, 20) == DATA[5 * BS : 5 * BS + 20]  # starts before it: a block
    assert inner.calls == [(5 * BS, BS)]


def test_evicted_exact_ranges_leave_the_index() -> None:
    inner = CountingReader(DATA)
    store = BlockStore(block_size=BS, max_bytes=3 * BS)
    cache = store.view(inner)
    for i in range(6):
        cache.read_exact(i * BS, BS)
    assert store.cached_bytes <= 3 * BS
    assert store.lookup(inner.identity, 0, 10) is None  # evicted, and not found by the index
    assert store.lookup(inner.identity, 5 * BS, 10) == DATA[5 * BS : 5 * BS + 10]
    assert sum(len(v) for v in store._spans.values()) == 3


def test_track_request_sees_reads_made_by_helper_threads() -> None:
    from wsi_streamer.io.range_reader import BytesReader, track_request

    inner = BytesReader(pattern(300_000))  # ranges further apart than the coalescing gap
    cache = BlockCache(inner, block_size=BS)
    with track_request() as stats:
        cache.read_exact_many([(0, 10), (100_000, 10), (200_000, 10)])
    assert stats.requests == 3 and stats.bytes == 30
    assert inner.stats.requests == 3


@pytest.mark.parametrize("batch", [
    [(0, 5000), (100, 50)],  # nested: the second lies inside the first
    [(100, 50), (0, 5000)],  # the same, given in the other order
    [(0, 100), (0, 10)],  # same start, shorter second
    [(0, 10), (5, 10), (8, 100)],  # a chain of overlaps
    [(0, 100), (0, 100)],  # the same range twice
], ids=["nested", "nested-reversed", "same-start", "chain", "duplicate"])
def test_nested_and_overlapping_ranges_in_one_batch_are_exact(
        batch: list[tuple[int, int]]) -> None:
    inner, cache = make()
    assert cache.read_exact_many(batch) == [DATA[o : o + n] for o, n in batch]
    assert len(inner.calls) == 1  # neighbours coalesced into one request
    distinct = set(batch)
    assert cache.blocks.cached_bytes == sum(n for _, n in distinct)  # one entry per range
    for offset, length in distinct:  # each held exactly, not the request that fetched it
        assert cache.blocks.lookup(inner.identity, offset, length) == DATA[
            offset : offset + length]
    assert cache.read_exact_many(batch) == [DATA[o : o + n] for o, n in batch]
    assert [cache.read_exact(o, n) for o, n in batch] == [DATA[o : o + n] for o, n in batch]
    assert len(inner.calls) == 1  # all of it from the cache


def test_a_range_nested_in_a_long_one_does_not_end_the_group_early() -> None:
    """The group's end is the longest range's end, not the last one's: a neighbour within
    the coalescing gap of the long range joins the same request."""
    from wsi_streamer.io.block_cache import COALESCE_GAP

    data = pattern(300_000)
    inner = CountingReader(data)
    cache = BlockCache(inner, block_size=BS, max_bytes=1 << 20)
    batch = [(0, 100_000), (100, 50), (100_000 + COALESCE_GAP - 10, 10)]
    assert cache.read_exact_many(batch) == [data[o : o + n] for o, n in batch]
    assert inner.calls == [(0, 100_000 + COALESCE_GAP)]


ROUNDS, THREADS = 12, 64
BIG = pattern(ROUNDS * 4 * BS)


def test_block_claim_is_atomic_under_a_race() -> None:
    """64 threads released together on one cold block, switching threads at every line of the
    block cache, 12 times: one storage request per block, no exception."""
    inner = CountingReader(BIG)
    cache = BlockCache(inner, block_size=BS, max_bytes=len(BIG))
    with preempt_often(block_cache):
        for round_ in range(ROUNDS):
            offset = round_ * 4 * BS + 11
            results = values(run_together(lambda o: cache.read(o, 100), [offset] * THREADS))
            assert results == [BIG[offset : offset + 100]] * THREADS
    assert sorted(inner.calls) == [(r * 4 * BS, BS) for r in range(ROUNDS)]


def test_exact_range_claim_is_atomic_under_a_race() -> None:
    inner = CountingReader(BIG)
    cache = BlockCache(inner, block_size=BS, max_bytes=len(BIG))
    with preempt_often(block_cache):
        for round_ in range(ROUNDS):
            offset = round_ * 4 * BS + 5
            results = values(run_together(lambda o: cache.read_exact(o, 300),
                                          [offset] * THREADS))
            assert results == [BIG[offset : offset + 300]] * THREADS
    assert sorted(inner.calls) == [(r * 4 * BS + 5, 300) for r in range(ROUNDS)]


def test_a_gap_is_not_bridged_over_bytes_already_held() -> None:
    """Two missing ranges around a held one are two requests (the held bytes are not fetched
    again, e.g. another patch's tile between this patch's rows); with nothing held between
    them, one request."""
    inner, cache = make()
    cache.read_exact(100, 50)
    inner.calls.clear()
    batch = [(0, 100), (150, 50)]
    assert cache.read_exact_many(batch) == [DATA[o : o + n] for o, n in batch]
    assert sorted(inner.calls) == [(0, 100), (150, 50)]
    other, fresh = make()
    assert fresh.read_exact_many(batch) == [DATA[o : o + n] for o, n in batch]
    assert other.calls == [(0, 200)]
