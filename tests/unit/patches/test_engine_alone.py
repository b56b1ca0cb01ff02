"""``StreamRun`` alone: the engine driven through its narrow input (``RunInput``), the
pipeline's steps replaced by plain callables. No slide, no pipeline, no storage."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

from wsi_streamer.patches.engine import Entry, Opened, RunInput, Schedule, StreamRun
from wsi_streamer.patches.resume import PoolState, RunState, SlidePool, run_from_json
from wsi_streamer.patches.slots import ReadResult
from wsi_streamer.patches.stats import PipelineStats
from wsi_streamer.patches.types import NoPatchesError, PatchCoordinate, TissueMask

MASK = TissueMask(np.ones((4, 4), bool), 1.0, (4, 4))


@dataclass
class Ledger:
    """The pipeline's bookkeeping that outlives a run (``resume.RunLedger``)."""

    failed: set[str] = field(default_factory=set)
    opens: dict[str, int] = field(default_factory=dict)

    def order_state(self) -> dict[str, Any]:
        return {}

    def set_order_state(self, state: dict[str, Any]) -> None:
        pass

    def failures(self) -> tuple[set[str], dict[str, int]]:
        return self.failed, self.opens

    def pool_states(self) -> dict[str, PoolState]:
        return {}

    def consumed_from_pool(self, path: str, position: tuple[SlidePool, int]) -> None:
        pass


@dataclass
class Steps:
    """The pipeline's side, recording what the engine asked of it."""

    read_fails: tuple[str, ...] = ()
    open_fails: tuple[str, ...] = ()
    stats: PipelineStats = field(default_factory=PipelineStats)
    failed: list[str] = field(default_factory=list)
    open_failures: list[str] = field(default_factory=list)
    render_threads: set[int] = field(default_factory=set)

    def open_slide(self, path: str, stopped: Callable[[], bool]) -> Opened:
        return Opened(path, error="broken") if path in self.open_fails else Opened(path,
                                                                                   mask=MASK)

    def make_entry(self, opened: Opened, ordinal: int, skip: int) -> Entry:
        return Entry(opened, (PatchCoordinate(x, 0, 0, 1, None, opened.path)
                              for x in range(skip, 10)))

    def read_patch(self, opened: Opened, coord: PatchCoordinate) -> ReadResult:
        if opened.path in self.read_fails:
            raise OSError("injected")
        return np.full((1, 1, 3), coord.x, np.uint8), True, {}

    def render(self, image: np.ndarray, overrides: Mapping[str, np.ndarray]
               ) -> tuple[np.ndarray | None, dict[str, np.ndarray] | None]:
        self.render_threads.add(threading.get_ident())
        return image + 100, None

    def run(self, paths: list[str], *, cycle: bool = False,
            raise_errors: bool = False, resume: RunState | None = None) -> StreamRun:
        schedule = Schedule(slide_paths=tuple(paths), pool_size=2, patches_per_slide=2,
                            patches_per_visit=1, cycle=cycle, prefetch=4, io_threads=3,
                            open_threads=1, open_ahead=2, raise_errors=raise_errors)
        alive = [p for p in paths if p not in self.failed]
        return StreamRun(RunInput(
            schedule, stats=lambda: self.stats, slide_order=lambda: list(alive),
            open_slide=self.open_slide, make_entry=self.make_entry, read_patch=self.read_patch,
            render=self.render, mark_failed=self.failed.append,
            open_failed=lambda opened: self.open_failures.append(opened.path),
            ledger=Ledger(), resume=resume))


def test_the_schedule_is_round_robin_over_the_pool_and_rendered_by_the_consumer():
    steps = Steps()
    results = list(steps.run(["a", "b", "c"]))
    assert [(r.coordinate.slide_path, r.coordinate.x) for r in results] == [
        ("a", 0), ("b", 0), ("a", 1), ("b", 1), ("c", 0), ("c", 1)]
    assert [int(r.image[0, 0, 0]) for r in results] == [100, 100, 101, 101, 100, 101]
    assert steps.render_threads == {threading.get_ident()}
    assert steps.stats.patches_extracted == 6 and steps.stats.patch_errors == 0


def test_a_slide_whose_every_read_fails_is_marked_failed_and_its_errors_counted():
    steps = Steps(read_fails=("b",))
    results = list(steps.run(["a", "b", "c"]))
    assert [r.coordinate.slide_path for r in results] == ["a", "a", "c", "c"]
    assert steps.failed == ["b"]
    assert steps.stats.patch_errors == 2


def test_raise_errors_propagates_the_read_failure():
    with pytest.raises(OSError, match="injected"):
        list(Steps(read_fails=("a",)).run(["a"], raise_errors=True))


def test_a_failed_open_is_reported_and_the_pass_goes_on():
    steps = Steps(open_fails=("b",))
    results = list(steps.run(["a", "b", "c"]))
    assert [r.coordinate.slide_path for r in results] == ["a", "a", "c", "c"]
    assert steps.open_failures == ["b"]


def test_a_cycling_run_that_can_never_yield_raises():
    with pytest.raises(NoPatchesError, match="could not be opened: broken"):
        list(Steps(open_fails=("a", "b")).run(["a", "b"], cycle=True))


def test_a_run_resumed_from_its_state_goes_on_with_the_next_patch():
    whole = [(r.coordinate.slide_path, r.coordinate.x) for r in Steps().run(["a", "b", "c"])]
    for k in range(len(whole) + 1):
        first = Steps().run(["a", "b", "c"])
        stream = iter(first)
        head = [(r.coordinate.slide_path, r.coordinate.x)
                for _, r in zip(range(k), stream, strict=False)]
        state = first.state()  # the planner ran ahead; the state is the consumer's
        rest = [(r.coordinate.slide_path, r.coordinate.x)
                for r in Steps().run(["a", "b", "c"], resume=run_from_json(state))]
        assert head + rest == whole, k


def test_a_resumed_run_can_be_resumed_again_before_its_slides_reopen():
    def key(run: StreamRun, n: int) -> tuple[list[tuple[str, int]], RunState]:
        stream = iter(run)
        got = [(r.coordinate.slide_path, r.coordinate.x)
               for _, r in zip(range(n), stream, strict=False)]
        return got, run_from_json(run.state())

    paths = ["a", "b", "c", "d"]
    whole = [(r.coordinate.slide_path, r.coordinate.x) for r in Steps().run(paths)]
    for k in range(1, 6):
        for j in range(3):  # a second preemption j patches after the first resume
            head, state = key(Steps().run(paths), k)
            middle, state = key(Steps().run(paths, resume=state), j)
            rest, _ = key(Steps().run(paths, resume=state), 100)
            assert head + middle + rest == whole, (k, j)
