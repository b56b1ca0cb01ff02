"""SingleFlight: one run per key at a time, its result or exception handed to every caller
that joined it, nothing remembered afterwards. Every wait is bounded."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from tests.fixtures.threads import run_together
from wsi_streamer.io.singleflight import SingleFlight

WAIT = 10.0  # seconds any single wait in these tests may take


class Gate:
    """A function that counts its runs and blocks each one until ``open``; ``entered`` is set
    once a run has started."""

    def __init__(self, result: object = "value", error: BaseException | None = None) -> None:
        self.result, self.error = result, error
        self.entered = threading.Event()
        self._open = threading.Event()
        self.runs = 0
        self._lock = threading.Lock()

    def __call__(self) -> object:
        with self._lock:
            self.runs += 1
        self.entered.set()
        assert self._open.wait(WAIT), "gate never opened"
        if self.error is not None:
            raise self.error
        return self.result

    def open(self) -> None:
        self._open.set()


def _outcome(fn: Callable[[], object]) -> object:
    try:
        return fn()
    except BaseException as exc:  # noqa: BLE001 - inspected by the test
        return exc


def _leader_then_followers(flight: SingleFlight[object], gate: Gate, followers: int
                           ) -> tuple[object, list[object]]:
    """The leader enters ``gate``; ``followers`` threads then call ``do`` while it is held,
    and the gate opens shortly after the last of them started. Returns the leader's outcome
    and the followers'."""
    leader: list[object] = []
    thread = threading.Thread(target=lambda: leader.append(_outcome(
        lambda: flight.do("k", gate))), daemon=True)
    thread.start()
    assert gate.entered.wait(WAIT), "the leader never ran"
    arrived = threading.Semaphore(0)

    def open_after_arrivals() -> None:
        if all(arrived.acquire(timeout=WAIT) for _ in range(followers)):
            time.sleep(0.3)  # time for the followers to reach do() while the gate is shut
        gate.open()

    threading.Thread(target=open_after_arrivals, daemon=True).start()

    def follow(_: int) -> object:
        arrived.release()
        return flight.do("k", gate)

    outcomes = run_together(follow, range(followers), timeout=WAIT)
    thread.join(WAIT)
    assert not thread.is_alive() and leader, "the leader never returned"
    return leader[0], outcomes


def test_concurrent_callers_share_one_run() -> None:
    flight: SingleFlight[object] = SingleFlight()
    gate = Gate("value")
    leader, followers = _leader_then_followers(flight, gate, 8)
    assert leader == ("value", False)
    # A follower that came late runs the function itself (shared False); on time, it shares.
    # Either way it gets the value, and runs == 1 + late followers.
    assert all(f in (("value", True), ("value", False)) for f in followers), followers
    late = sum(f == ("value", False) for f in followers)
    assert gate.runs == 1 + late
    assert late < len(followers), "no caller ever shared the leader's run"


def test_the_leaders_exception_reaches_every_caller_that_joined() -> None:
    flight: SingleFlight[object] = SingleFlight()
    error = ValueError("boom")
    gate = Gate(error=error)
    leader, followers = _leader_then_followers(flight, gate, 8)
    assert leader is error
    # A follower that joined gets its own instance chained to the leader's (never the shared
    # object, whose traceback the other threads would extend); a late one ran fn itself.
    joined = [f for f in followers if f is not error]
    assert joined, "no caller joined the leader's run"
    for f in joined:
        assert type(f) is ValueError and f.args == ("boom",) and f.__cause__ is error
    assert len({id(f) for f in joined}) == len(joined)


def test_nothing_is_remembered_after_a_call() -> None:
    flight: SingleFlight[int] = SingleFlight()
    runs: list[int] = []

    def fn() -> int:
        runs.append(1)
        return len(runs)

    assert flight.do("k", fn) == (1, False)
    assert flight.do("k", fn) == (2, False)  # a finished call is not a cache
    with pytest.raises(KeyError):
        flight.do("k", lambda: {}["missing"])
    assert flight.do("k", fn) == (3, False)  # nor is a failed one


def test_different_keys_do_not_wait_for_each_other() -> None:
    flight: SingleFlight[object] = SingleFlight()
    gate = Gate("slow")
    thread = threading.Thread(target=lambda: flight.do("slow", gate), daemon=True)
    thread.start()
    assert gate.entered.wait(WAIT)
    try:
        # Bounded: were "fast" to wait for "slow", run_together would fail after 5 s.
        assert run_together(lambda _: flight.do("fast", lambda: "fast"), [0],
                            timeout=5) == [("fast", False)]
    finally:
        gate.open()
        thread.join(WAIT)
