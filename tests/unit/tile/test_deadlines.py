"""The tile service under work budgets (issue 26, item 1), by counted decodes: a native tile
is not decoded once its request's budget is spent; an overview build has its own budget, is
not stopped by the request that started it, and the requests waiting for it give up on their
own deadline; waits for a heavy slot are bounded by the waiter's budget; a render abandoned by
its client is taken over by a request still waiting for it."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.threads import run_together
from tests.unit.tile.test_bounded_renders import TILE, TILES, Decodes, Slides, make_service
from wsi_streamer.budget import checkpoint, within
from wsi_streamer.errors import DeadlineExceeded, LimitExceeded, WorkAbandoned
from wsi_streamer.format.tiff.slide import TiffSlide
from wsi_streamer.tile.flights import BudgetedFlights
from wsi_streamer.tile.gate import HeavyGate

HANG_GUARD = 30.0


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> Decodes:
    counter = Decodes()
    monkeypatch.setattr(TiffSlide, "decode_tile", counter.wrap(TiffSlide.decode_tile))
    return counter


@pytest.fixture
def big() -> Slides:
    from tests.fixtures.single_level import single_level_slide

    return Slides({"big.tif": single_level_slide(16384, 16384, TILE)})


def test_a_native_tile_is_not_decoded_past_the_deadline_or_for_a_gone_client(
        tmp_path: Path, big: Slides, counted: Decodes) -> None:
    tiles = make_service(tmp_path, big)
    tiles.slide("big.tif")  # opened: only the tile itself is left to do
    with within(0.01, "request"):
        time.sleep(0.02)
        with pytest.raises(DeadlineExceeded):
            tiles.tile("big.tif", 0, 3, 4)
    gone = threading.Event()
    with within(60, "request", gone.is_set):
        gone.set()
        with pytest.raises(WorkAbandoned):
            tiles.tile("big.tif", 0, 5, 6)
    assert counted.calls == 0
    with within(60, "request", decoded_bytes=TILE * TILE * 3 - 1):
        with pytest.raises(LimitExceeded, match="MAX_DECODED_BYTES"):
            tiles.tile("big.tif", 0, 7, 8)  # one tile is more than this allowance
    assert counted.calls == 1


def test_an_overview_build_stops_at_its_own_budget(tmp_path: Path, big: Slides,
                                                    counted: Decodes) -> None:
    tiles = make_service(tmp_path, big, overview_deadline=0.05)
    counted.release = threading.Event()
    threading.Timer(0.2, counted.release.set).start()  # the first decode outlasts the budget
    with pytest.raises(DeadlineExceeded, match="the overview of mem://big.tif") as caught:
        tiles.thumbnail("big.tif", 256)
    assert counted.calls == 1 and caught.value.done == "1 tiles, 0.0 MB decoded"
    assert tiles.overviews.stats.built == 0


def test_the_build_outlives_its_requester_and_waiters_keep_their_own_deadline(
        tmp_path: Path, big: Slides, counted: Decodes) -> None:
    tiles = make_service(tmp_path, big)
    release = counted.release = threading.Event()

    def first() -> Any:  # its budget ends while it builds: the build goes on regardless
        with within(0.05, "first request", release.is_set):
            return tiles.thumbnail("big.tif", 256)

    def waiter() -> Any:  # comes while the build runs and gives up on its own deadline
        assert counted.entered.wait(HANG_GUARD)
        with within(0.1, "second request"):
            try:
                return tiles.thumbnail("big.tif", 128)
            finally:
                release.set()

    results = run_together(lambda f: f(), [first, waiter])
    assert isinstance(results[1], DeadlineExceeded), results
    assert "second request" in str(results[1])
    assert not isinstance(results[0], BaseException), results[0]
    assert results[0].data is not None
    assert counted.calls == (16384 // TILE) ** 2 == TILES
    assert tiles.overviews.stats.built == 1


def test_a_wait_for_a_heavy_slot_ends_with_the_waiters_budget() -> None:
    gate = HeavyGate(slots=1, wait_s=HANG_GUARD * 2)
    with gate.slot("a long render"):
        with within(0.1, "request"), pytest.raises(DeadlineExceeded):
            with gate.slot("another render"):
                raise AssertionError("got a slot that was held")
        gone = threading.Event()
        threading.Timer(0.1, gone.set).start()
        with within(None, "request", gone.is_set), pytest.raises(WorkAbandoned):
            with gate.slot("another render"):
                raise AssertionError("got a slot that was held")
    assert gate.stats.refused == 0 and gate.stats.admitted == 1


def test_a_render_abandoned_by_its_client_is_taken_over_by_a_waiter() -> None:
    flights: BudgetedFlights[str] = BudgetedFlights()
    started, leave = threading.Event(), threading.Event()
    runs: list[str] = []

    def taken_over() -> str:
        runs.append("second")
        return "pixels"

    def abandoned() -> str:
        runs.append("first")
        started.set()
        assert leave.wait(HANG_GUARD)
        checkpoint()  # its client has gone: WorkAbandoned
        return "never"

    def first() -> Any:
        with within(None, "first", leave.is_set):
            return flights.do("key", abandoned)

    def second() -> Any:
        assert started.wait(HANG_GUARD)
        threading.Timer(0.1, leave.set).start()
        return flights.do("key", taken_over)

    results = run_together(lambda f: f(), [first, second])
    assert isinstance(results[0], WorkAbandoned)
    assert results[1] == ("pixels", False) and runs == ["first", "second"]
