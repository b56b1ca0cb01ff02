"""The flight primitive under failure: nothing strands a waiter, every wait is bounded, each
waiter raises its own exception instance, and the block store stays consistent (randomised
model test with injected failures and many threads)."""

from __future__ import annotations

import random
import threading

import pytest

from tests.fixtures.fakes import CountingReader, pattern
from tests.fixtures.threads import run_together, values
from wsi_streamer.errors import FlightAbandoned, FlightTimeout, StorageError
from wsi_streamer.io import block_cache
from wsi_streamer.io.block_cache import BlockCache, BlockStore
from wsi_streamer.io.singleflight import Flight, FlightTable, SingleFlight, own_copy

BS = 1024
DATA = pattern(40 * BS + 77)


class GatedReader(CountingReader):
    """Every read blocks until ``release`` is set (bounded, so a broken test cannot hang)."""

    def __init__(self, data: bytes = DATA) -> None:
        super().__init__(data)
        self.entered = threading.Event()
        self.release = threading.Event()

    def read(self, offset: int, length: int) -> bytes:
        self.entered.set()
        assert self.release.wait(10), "test never released the read"
        return super().read(offset, length)


# --- the primitive ---------------------------------------------------------------------------


def test_a_wait_is_bounded_and_names_what_it_waited_for() -> None:
    flight: Flight[int] = Flight()
    with pytest.raises(FlightTimeout, match="0.05 s waiting for a tile render"):
        flight.wait(0.05, "a tile render")


def test_each_waiter_gets_its_own_instance_chained_to_the_original() -> None:
    original = StorageError("storage answered 503")
    flight: Flight[int] = Flight()
    flight.fail(original)
    raised = []
    for _ in range(3):
        with pytest.raises(StorageError) as info:
            flight.wait(1)
        raised.append(info.value)
    assert all(e is not original and e.__cause__ is original for e in raised)
    assert len({id(e) for e in raised}) == 3
    assert all(str(e) == "storage answered 503" for e in raised)


def test_a_copy_keeps_attributes_of_errors_with_their_own_constructor() -> None:
    from wsi_streamer.errors import ObjectChanged, SlideNotFound
    for error in (SlideNotFound("a/b.svs"), ObjectChanged("a.svs"), OSError(28, "No space")):
        copy = own_copy(error)
        assert type(copy) is type(error) and str(copy) == str(error)
        assert copy.__dict__ == error.__dict__ and copy.__cause__ is error


def test_a_flight_ends_once() -> None:
    flight: Flight[int] = Flight()
    assert flight.resolve(1) and not flight.fail(ValueError()) and not flight.resolve(2)
    assert flight.wait(0) == 1


def test_leading_fails_every_flight_it_did_not_resolve() -> None:
    lock = threading.Lock()
    table: FlightTable[str, int] = FlightTable()
    mine = {k: table.start(k) for k in "abc"}
    with pytest.raises(KeyError), table.leading(lock, mine):
        table.resolve("a", mine["a"], 1)
        raise KeyError("a lookup error between registration and resolution")
    assert len(table) == 0
    assert mine["a"].wait(0) == 1
    with pytest.raises(KeyError):
        mine["b"].wait(0)
    # A normal exit that forgot a flight still ends it.
    forgotten = {"d": table.start("d")}
    with table.leading(lock, forgotten):
        pass
    with pytest.raises(FlightAbandoned):
        forgotten["d"].wait(0)


def test_leading_never_fails_a_newer_flight_for_the_same_key() -> None:
    lock = threading.Lock()
    table: FlightTable[str, int] = FlightTable()
    old = table.start("k")
    with table.leading(lock, {"k": old}):
        table.fail("k", old, ValueError("timed out"))
        newer = table.start("k")  # another leader took the key meanwhile
    assert table.is_current("k", newer) and not newer.done


def test_singleflight_waiters_give_up_after_the_timeout() -> None:
    flights: SingleFlight[int] = SingleFlight(timeout=0.1)
    release = threading.Event()

    def slow() -> int:
        assert release.wait(10)
        return 7

    leader = threading.Thread(target=lambda: flights.do("k", slow), daemon=True)
    leader.start()
    while flights.in_flight() == 0:
        threading.Event().wait(0.001)
    with pytest.raises(FlightTimeout):
        flights.do("k", lambda: 0)
    release.set()
    leader.join(10)
    assert flights.in_flight() == 0


# --- the block store ---------------------------------------------------------------------------


def test_a_fetch_pool_that_cannot_start_threads_strands_nobody(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Thread start failure between registration and resolution: the caller reads every
    group itself, so the call succeeds and no flight stays pending."""
    inner = CountingReader(DATA)
    store = BlockStore(BS, 64 * BS, wait_timeout=2)

    def no_threads() -> object:
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(store, "_executor", no_threads)
    ranges = [(0, 100), (20 * BS, 100), (39 * BS, 100)]  # three groups
    assert store.get_ranges(inner, ranges) == [DATA[o : o + n] for o, n in ranges]
    assert len(store._flights) == 0
    store.check_invariants()


def test_an_error_before_any_fetch_fails_the_flights_instead_of_hanging_waiters(
        monkeypatch: pytest.MonkeyPatch) -> None:
    inner = CountingReader(DATA)
    cache = BlockCache(inner, block_size=BS, max_bytes=64 * BS)

    def broken(_: list[int]) -> list[tuple[int, int]]:
        raise LookupError("a bug between registration and the fetch")

    monkeypatch.setattr(block_cache, "_runs", broken)
    with pytest.raises(LookupError):
        cache.read(0, 10)
    assert len(cache.blocks._flights) == 0
    monkeypatch.undo()
    assert cache.read(0, 10) == DATA[:10]  # nothing stuck: the next read fetches


@pytest.mark.parametrize("exact", [False, True])
def test_waiters_of_a_stalled_read_get_a_timeout_not_a_hang(exact: bool) -> None:
    inner = GatedReader()
    store = BlockStore(BS, 64 * BS, wait_timeout=0.2)
    cache = store.view(inner)
    read = (lambda: cache.read_exact(0, 10)) if exact else (lambda: cache.read(0, 10))
    leader = threading.Thread(target=read, daemon=True)
    leader.start()
    assert inner.entered.wait(10)
    results = run_together(lambda _: read(), range(4))
    assert all(isinstance(r, FlightTimeout) for r in results), results
    inner.release.set()
    leader.join(10)
    assert read() == DATA[:10]
    assert len(inner.calls) == 1  # the waiters never read; the stalled read was kept
    store.check_invariants()


def test_block_waiters_get_their_own_exception_instances() -> None:
    inner = CountingReader(DATA, delay=0.05, failures=1)
    cache = BlockCache(inner, block_size=BS, max_bytes=64 * BS)
    results = run_together(lambda _: cache.read(BS, 10), range(16))
    assert len(inner.calls) == 1
    assert all(isinstance(r, StorageError) for r in results)
    assert len({id(r) for r in results}) == len(results)


def test_put_ranges_leaves_a_range_in_flight_to_its_fetch() -> None:
    inner = GatedReader()
    store = BlockStore(BS, 64 * BS, wait_timeout=5)
    cache = store.view(inner)
    leader = threading.Thread(target=lambda: cache.read_exact(100, 50), daemon=True)
    leader.start()
    assert inner.entered.wait(10)
    store.put_ranges(inner.identity, [(100, DATA[100:150])])  # the same key, mid-flight
    store.check_invariants()
    inner.release.set()
    leader.join(10)
    store.check_invariants()
    assert store.cached_bytes == 50


class FlakyReader(CountingReader):
    """Fails about one read in four; sometimes with a non-storage error."""

    def __init__(self, data: bytes, seed: int) -> None:
        super().__init__(data)
        self._random = random.Random(seed)
        self._rlock = threading.Lock()

    def read(self, offset: int, length: int) -> bytes:
        with self._rlock:
            roll = self._random.random()
        if roll < 0.2:
            raise StorageError("injected")
        if roll < 0.25:
            raise ValueError("injected bug")
        return super().read(offset, length)


@pytest.mark.parametrize("seed", range(4))
def test_randomised_model_with_injected_failures(seed: int) -> None:
    """Many threads, random block reads, exact reads, batches and puts on a small store (so
    eviction runs all the time), a flaky reader: every answer is the true bytes or an
    injected error, and the invariants hold after every step and at the end."""
    rng = random.Random(seed)
    readers = [FlakyReader(pattern(30 * BS + i), seed * 10 + i) for i in range(3)]
    for i, reader in enumerate(readers):
        reader._identity = f"fake://{i}"
    store = BlockStore(BS, 12 * BS, wait_timeout=5)
    plans = []
    for _ in range(8):
        ops = []
        for _ in range(60):
            reader = rng.choice(readers)
            offset = rng.randrange(reader.size)
            length = rng.randrange(0, min(3 * BS, reader.size - offset) + 1)
            ops.append((rng.choice("rebp"), reader, offset, length,
                        [(o, rng.randrange(1, 600)) for o in rng.sample(range(reader.size - 600),
                                                                         3)]))
        plans.append(ops)

    def run(ops: list) -> int:
        done = 0
        for kind, reader, offset, length, batch in ops:
            cache = store.view(reader)
            try:
                if kind == "r":
                    assert cache.read(offset, length) == reader.data[offset : offset + length]
                elif kind == "e" and length:
                    got = cache.read_exact(offset, length)
                    assert got == reader.data[offset : offset + length]
                elif kind == "b":
                    got_many = cache.read_exact_many(batch)
                    assert got_many == [reader.data[o : o + n] for o, n in batch]
                elif length:
                    store.put_ranges(reader.identity,
                                     [(offset, reader.data[offset : offset + length])])
                done += 1
            except (StorageError, ValueError) as exc:
                assert "injected" in str(exc), exc
            store.check_invariants()
        return done

    done = values(run_together(run, plans, timeout=60))
    assert sum(done) > 0
    assert len(store._flights) == 0
    store.check_invariants()
