"""``wsi_streamer.budget`` (issue 26, items 1 and 2): nesting, cancel checks, checkpoints
without a budget, detaching shared work, and the decoded-bytes allowance."""

from __future__ import annotations

import threading
import time

import pytest

from wsi_streamer import budget
from wsi_streamer.budget import applied, checkpoint, current, within
from wsi_streamer.errors import DeadlineExceeded, LimitExceeded, WorkAbandoned


def test_checkpoint_without_a_budget_does_nothing() -> None:
    assert current() is None
    checkpoint()
    checkpoint(1 << 40)  # no allowance without a budget either


def test_nested_budgets_keep_the_earlier_deadline() -> None:
    with within(10, "request") as outer:
        assert outer is not None and current() is outer
        with within(100, "step") as looser:
            assert looser is not None
            assert (looser.what, looser.seconds, looser.deadline) == ("request", 10,
                                                                       outer.deadline)
        with within(0.01, "tight") as tighter:
            assert tighter is not None and tighter.what == "tight"
            assert tighter.deadline < outer.deadline
            time.sleep(0.02)
            with pytest.raises(DeadlineExceeded, match="tight exceeded its budget of 0.01 s"):
                checkpoint()
        checkpoint()  # the outer budget is in force again, and not spent
        assert current() is outer
    assert current() is None


def test_cancel_checks_of_every_level_apply() -> None:
    outer_gone, inner_gone = threading.Event(), threading.Event()
    with within(None, "request", outer_gone.is_set):
        with within(60, "render", inner_gone.is_set):
            checkpoint()
            outer_gone.set()
            with pytest.raises(WorkAbandoned, match="client went away"):
                checkpoint()
        outer_gone.clear()
        with within(60, "render", inner_gone.is_set):
            inner_gone.set()
            with pytest.raises(WorkAbandoned):
                checkpoint()


def test_a_budget_is_checked_on_entry() -> None:
    with pytest.raises(WorkAbandoned):
        with within(None, "request", lambda: True):
            raise AssertionError("entered a budget whose client is gone")


def test_applied_none_detaches_shared_work() -> None:
    with within(None, "request", lambda: False) as mine:
        with applied(None), within(60, "overview build") as build:
            assert build is not None and build.cancelled is None and build.seconds == 60
        assert current() is mine


def test_the_budget_does_not_leak_into_other_threads_but_can_be_handed_over() -> None:
    seen: list[object] = []
    with within(5, "request") as mine:
        worker = threading.Thread(target=lambda: seen.append(current()))
        worker.start()
        worker.join()

        def handed() -> None:
            with applied(mine):
                seen.append(current())

        worker = threading.Thread(target=handed)
        worker.start()
        worker.join()
    assert seen == [None, mine]


def test_decoded_bytes_allowance_and_progress() -> None:
    with within(60, "request", decoded_bytes=1000):
        for _ in range(4):
            checkpoint(250)  # exactly the allowance: still allowed
        with pytest.raises(LimitExceeded, match="MAX_DECODED_BYTES") as caught:
            checkpoint(1)
        assert caught.value.limit == "MAX_DECODED_BYTES"
        assert "5 tiles" in str(caught.value)


def test_a_nested_allowance_counts_on_both_meters() -> None:
    with within(60, "request", decoded_bytes=1000) as outer:
        assert outer is not None and outer.meter is not None
        with within(60, "step"):  # no allowance of its own: the request's meter
            checkpoint(400)
        with within(60, "step", decoded_bytes=500):
            checkpoint(400)
            with pytest.raises(LimitExceeded):
                checkpoint(200)  # 600 > the step's 500
        assert outer.meter.decoded == 1000 and outer.meter.tiles == 3
        with pytest.raises(LimitExceeded):
            checkpoint(1)


def test_deadline_exceeded_names_the_work_done() -> None:
    with within(0.01, "thumbnail"):
        checkpoint(3 * 256 * 256)
        time.sleep(0.02)
        with pytest.raises(DeadlineExceeded) as caught:
            checkpoint(3 * 256 * 256)
    assert caught.value.done == "2 tiles, 0.4 MB decoded"
    assert str(caught.value) == ("thumbnail exceeded its budget of 0.01 s "
                                 "(2 tiles, 0.4 MB decoded)")
    assert budget.current() is None
