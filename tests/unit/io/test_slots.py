"""Storage slots (``io/slots.py``): at most N requests of a worker wait on storage; a newcomer
waits for a slot while storage is busy and is refused at once while it is stuck. Counted, not
timed: waits end on events, and the time bounds are hang guards."""

from __future__ import annotations

import threading

import pytest

from wsi_streamer.errors import Overloaded
from wsi_streamer.io.slots import StorageSlots, claim


def _hold(slots: StorageSlots, taken: threading.Event, release: threading.Event) -> None:
    with slots.bound():
        claim()
        taken.set()
        release.wait(30)


def test_a_request_without_storage_work_takes_no_slot() -> None:
    slots = StorageSlots(1)
    with slots.bound():
        pass
    claim()  # outside a request: nothing to take
    with slots.bound() as ticket:
        claim()
        claim()  # once per request, whatever its fan-out
        assert ticket.held
    assert not ticket.held and slots.refused == 0


def test_a_newcomer_waits_while_storage_is_busy_and_gets_the_freed_slot() -> None:
    slots = StorageSlots(1, wait_s=30.0, stuck_s=30.0)
    taken, release = threading.Event(), threading.Event()
    holder = threading.Thread(target=_hold, args=(slots, taken, release))
    holder.start()
    assert taken.wait(30)
    got = threading.Event()

    def newcomer() -> None:
        with slots.bound():
            claim()
            got.set()

    waiter = threading.Thread(target=newcomer)
    waiter.start()
    assert not got.wait(0.2)  # the only slot is held: it waits (not refused)
    release.set()
    assert got.wait(30)
    holder.join(30)
    waiter.join(30)
    assert slots.refused == 0


def test_a_newcomer_is_refused_at_once_while_storage_is_stuck() -> None:
    """Every holder past ``stuck_s``: no wait on the free thread (the wait would be 30 s)."""
    slots = StorageSlots(1, wait_s=30.0, stuck_s=0.0)
    taken, release = threading.Event(), threading.Event()
    holder = threading.Thread(target=_hold, args=(slots, taken, release))
    holder.start()
    try:
        assert taken.wait(30)
        with slots.bound(), pytest.raises(Overloaded) as info:
            claim()
        assert info.value.retry_after > 0 and slots.refused == 1
    finally:
        release.set()
        holder.join(30)
