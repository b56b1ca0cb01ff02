"""The streaming engine of ``PatchPipeline``: one run of the pool schedule with its latency
hidden.

The schedule is wsistream's (a pool of open slides visited round-robin, ``patches_per_visit``
attempts per visit, ``patches_per_slide`` attempts per open, the queue refilled per pass when
cycling). Because every attempt counts against the budget whatever its outcome, the schedule
can be planned ahead: the planner draws coordinates up to ``prefetch`` patches before they are
consumed and hands each read (fetch of exactly the tiles under it, decode, resample, filter)
to ``io_threads`` threads; the next slides in the queue are opened (structure, thumbnail,
mask) by background threads before the pool needs them. Results are taken in plan order and
transformed in the consuming thread, so a seeded run gives the same patches whatever the
timing. The one outcome the schedule depends on (a slide whose every read failed is dropped
from later passes) is settled at the pass boundary, where the planner waits for the reads
in flight. Each planned task carries the planner's mark, so the run's state as of the last
patch consumed is known without waiting for the reads ahead (``run_state.py``)."""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import limits
from .resume import PassMark, RunLedger, RunState, Slot
from .run_state import MAX_OPEN_ATTEMPTS, ResumableRun
from .slots import Entry, Opened, Pending, ReadResult, Streak, Task, no_patches_message
from .stats import PipelineStats
from .types import NoPatchesError, PatchCoordinate, PatchResult

__all__ = ["MAX_OPEN_ATTEMPTS", "Entry", "Opened", "RunInput", "Schedule", "StreamRun"]
logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Schedule:
    """The pool schedule of one run (validated by ``PatchPipeline``)."""

    slide_paths: tuple[str, ...]  # every slide of the stream, duplicates included
    pool_size: int  # slides open at once
    patches_per_slide: int  # attempts per open (every outcome counts)
    patches_per_visit: int  # attempts per visit of a pool slot
    cycle: bool  # queue the next pass when the queue runs out
    prefetch: int  # patches planned ahead of the consumer
    io_threads: int  # reads in flight
    open_threads: int  # background opens at once
    open_ahead: int  # slides of the queue opening in the background
    raise_errors: bool  # a failed read raises (``on_error="raise"``) instead of being skipped
    open_patience: float | None = limits.PIPELINE_OPEN_PATIENCE_S  # None: never defer an open


@dataclass(frozen=True, slots=True)
class RunInput:
    """What one run takes from its pipeline: the schedule and the steps it cannot decide.
    Each callable runs in the thread named; none but ``read_patch`` and ``render`` may raise."""

    schedule: Schedule
    stats: Callable[[], PipelineStats]  # the counts to add to (consuming thread)
    slide_order: Callable[[], list[str]]  # one pass, failed slides left out (planning thread)
    open_slide: Callable[[str, Callable[[], bool]], Opened]  # (path, stopped): opener threads
    make_entry: Callable[[Opened, int, int], Entry]  # (opened, ordinal, coordinates to skip):
    # a slide joins the pool, its coordinates seeded by its ordinal in the run (planning thread)
    read_patch: Callable[[Opened, PatchCoordinate], ReadResult]  # reader threads
    render: Callable[[np.ndarray, Mapping[str, np.ndarray]],
                     tuple[np.ndarray | None, dict[str, np.ndarray] | None]]  # image, views
    mark_failed: Callable[[str], None]  # every read of a slide failed: left out from now on
    open_failed: Callable[[Opened], None]  # an open failed (``Opened.error``): counted
    ledger: RunLedger  # the pipeline's bookkeeping a resumable state reads and restores
    resume: RunState | None = None  # start where this state's run stood
    first_pass: tuple[tuple[str, int], ...] | None = None  # (slide, budget): an elastic resume


class StreamRun(ResumableRun):
    """One iteration over a pipeline; close it (or exhaust it) to stop its threads. Its state
    as of the last patch consumed: ``state()`` (``run_state.py``)."""

    def __init__(self, run: RunInput) -> None:
        self.run, self.s = run, run.schedule
        self.pool: list[Entry | Pending] = []  # a slot is opened when first visited
        self.ahead: deque[Task] = deque()
        self.idx = 0
        self.visit = 0
        self.ordinal = 0  # entries made: an entry's coordinates are seeded by its ordinal
        self.needs_refill = False
        self.finished = False
        self.final: dict[str, Any] | None = None  # the state once closed
        self.unsaved: Exception | None = None  # why it could not be taken at close
        self.layout: tuple[Slot, ...] | None = None
        self.failures: tuple[tuple[str, int], ...] | None = None
        self.budgets: tuple[PassMark | None, dict[str, int]] = (None, {})
        self.streak = Streak()
        self.unique = len(set(self.s.slide_paths) | {p for p, _ in run.first_pass or ()})
        self.readers = ThreadPoolExecutor(self.s.io_threads, thread_name_prefix="wsi-read")
        self.openers = ThreadPoolExecutor(self.s.open_threads, thread_name_prefix="wsi-open")
        self.stopped = threading.Event()  # set by close: opens in flight stop at their next tile
        if run.resume is None:
            self.queue: deque[Pending] = deque(Pending(p) for p in self.new_pass(0))
        else:
            self.restore(run.resume)
            if self.passed.explicit is not None:
                self.unique = len(set(self.s.slide_paths) | {p for p, _ in self.passed.explicit})

    # --- consuming ---------------------------------------------------------------------------
    def __iter__(self) -> Iterator[PatchResult]:
        try:
            while not self.finished:
                self.plan()
                if not self.ahead:
                    if self.needs_refill:
                        self.refill()
                        continue
                    self.finished = True
                    return
                task = self.ahead.popleft()
                result = self.finish(task)
                if result is not None:
                    yield result
        finally:
            self.close()

    def finish(self, task: Task) -> PatchResult | None:
        entry, coord = task.entry, task.coord
        assert task.future is not None
        entry.done += 1
        if task.pool_pos is not None:
            self.run.ledger.consumed_from_pool(coord.slide_path, task.pool_pos)
        result: PatchResult | None = None
        try:
            image, accepted, overrides = task.future.result()
            entry.reads_ok += 1
            if not accepted:
                self.run.stats().patches_filtered += 1
            else:
                result = self.emit(entry, coord, image, overrides)
        except Exception as exc:  # noqa: BLE001 - faults stay with the patch (on_error)
            if self.s.raise_errors:
                raise
            stats = self.run.stats()
            stats.patch_errors += 1
            stats.record_error(coord.slide_path, str(exc))
            if not entry.logged_error:
                entry.logged_error = True
                logger.warning("patch of %s at (%d, %d) failed: %s", coord.slide_path, coord.x,
                               coord.y, exc)
        if entry.retired and entry.done == entry.planned:
            self.settle(entry)
        return result

    def emit(self, entry: Entry, coord: PatchCoordinate, image: np.ndarray,
             overrides: dict[str, np.ndarray]) -> PatchResult:
        out_image, views = self.run.render(image, overrides)
        props = entry.opened.handle.properties if entry.opened.handle else None
        ds = props.level_downsamples[coord.level] if props else 1.0
        side = int(coord.patch_size * ds)
        assert entry.opened.mask is not None
        fraction = entry.opened.mask.tissue_fraction_at(coord.x, coord.y, side, side)
        stats = self.run.stats()
        stats.patches_extracted += 1
        stats.count_mpp(coord.mpp)
        entry.yielded += 1
        if self.streak.reasons:
            self.streak = Streak()
        return PatchResult(image=out_image, coordinate=coord, tissue_fraction=fraction,
                           slide_metadata=entry.opened.metadata, views=views)

    def settle(self, entry: Entry) -> None:
        """All reads of a retired entry are done: close it, judge it."""
        if entry.opened.handle is not None:
            try:
                entry.opened.handle.close()
            except Exception:  # noqa: BLE001 - closing never fails a run
                pass
        path = entry.opened.path
        if entry.planned > 0 and entry.reads_ok == 0:
            self.run.mark_failed(path)
            self.streak.add(path, "every read failed")
        elif entry.yielded == 0:
            self.streak.add(path, "every patch was filtered out" if entry.reads_ok
                            else "no valid patch position (no tissue, or smaller than the "
                            "patch)")

    # --- planning ----------------------------------------------------------------------------
    def plan(self) -> None:
        while len(self.ahead) < self.s.prefetch:
            task = self.next_task()
            if task is None:
                return
            task.future = self.readers.submit(self.run.read_patch, task.entry.opened, task.coord)
            self.ahead.append(task)

    def next_task(self) -> Task | None:
        while True:
            if not self.fill_pool():
                return None
            if not self.pool:
                return None
            slot = self.pool[self.idx]
            if isinstance(slot, Pending):
                assert slot.future is not None
                if not slot.future.done() and not self.await_open(slot):
                    if slot.deferred and self.skip_deferred():
                        continue
                    if self.ahead:
                        return None  # hand out what is ready first; plan on once opened
                    if slot.deferred:  # every slot of the pool is a deferred open
                        wait([s.future for s in self.pool if isinstance(s, Pending)
                              and s.future is not None], return_when=FIRST_COMPLETED)
                    continue
                self.resolve(self.idx, slot)
                continue
            entry = slot
            coord = next(entry.coords, None)
            if coord is None:
                self.retire(self.idx)
                continue
            mark = self.mark_now()
            entry.planned += 1
            pool = entry.slide_pool
            task = Task(entry, coord, mark, None if pool is None else (pool, pool.pool.popped))
            if entry.planned >= entry.budget:
                self.retire(self.idx)
            else:
                self.visit += 1
                if self.visit >= self.s.patches_per_visit:
                    self.idx = (self.idx + 1) % len(self.pool)
                    self.visit = 0
            return task

    def await_open(self, slot: Pending) -> bool:
        """Whether ``slot``'s open has ended. With reads still ahead, no wait (they go out
        first); once the stream has nothing else, a slot not yet deferred gets
        ``open_patience`` seconds, and then is deferred if another slide of the pool is
        ready (head-of-line: a slow open never holds the other slides' patches; it joins the
        rotation when it ends). With none ready, deferring would gain nothing: it waits on.
        Never deferred, so waited for: every slot with ``open_patience=None`` (the order
        then never depends on timing), and a resumed slot that was open at the state
        (the interrupted run had it in the rotation)."""
        assert slot.future is not None
        if slot.deferred or self.ahead:
            return slot.future.done()
        patience = self.s.open_patience
        if patience is None or slot.resume is not None:
            wait([slot.future])
            return True
        while not wait([slot.future], timeout=patience).done:
            if any(other is not slot and (isinstance(other, Entry) or (
                    other.future is not None and other.future.done())) for other in self.pool):
                break
        else:
            return True
        slot.deferred = True
        self.layout = None  # the state keeps the deferral: a resumed run defers it too
        logger.info("opening %s takes over %g s: serving the other slides meanwhile",
                    slot.path, patience)
        return False

    def skip_deferred(self) -> bool:
        """Move the rotation to the next slot that is not a deferred open still running;
        False when every slot of the pool is one."""
        for step in range(1, len(self.pool)):
            index = (self.idx + step) % len(self.pool)
            slot = self.pool[index]
            if not (isinstance(slot, Pending) and slot.deferred and slot.future is not None
                    and not slot.future.done()):
                self.idx, self.visit = index, 0
                return True
        return False

    def resolve(self, index: int, slot: Pending) -> None:
        """The first visit of a slot: wait for its background open (only this one: the
        first patch does not wait for the whole pool), then make its entry or drop it."""
        assert slot.future is not None
        opened = slot.future.result()
        self.layout = None
        if opened.error is None:
            self.pool[index] = self.join_pool(opened, slot)
            return
        self.failures = None
        self.run.open_failed(opened)
        self.streak.add(opened.path, f"could not be opened: {opened.error}")
        self.pool.pop(index)
        self.idx = index % len(self.pool) if self.pool else 0
        self.visit = 0

    def retire(self, index: int) -> None:
        self.layout = None
        entry = self.pool.pop(index)
        assert isinstance(entry, Entry)
        entry.retired = True
        if entry.done == entry.planned:
            self.settle(entry)
        self.idx = index % len(self.pool) if self.pool else 0
        self.visit = 0

    def fill_pool(self) -> bool:
        """Fill the pool's free slots from the queue (their opens already under way in the
        background). False when a pass boundary needs the reads in flight settled first (the
        caller stops planning; ``refill`` runs once drained)."""
        while len(self.pool) < self.s.pool_size:
            if not self.queue:
                if not self.s.cycle or len(self.pool) >= self.unique:
                    return True
                if self.ahead:
                    self.needs_refill = True
                    return False
                self.refill()
                if not self.queue:
                    return True
            self.top_up()
            joining = self.queue.popleft()
            joining.budget = self.budget(joining.path)  # the queue holds this pass's slides
            self.pool.append(joining)
            self.layout = None
            self.top_up()
        return True

    def refill(self) -> None:
        """A pass is over: unless every slide has given nothing since the last patch, queue
        the next pass (reads in flight are settled, so this is decided on complete facts)."""
        self.needs_refill = False
        if set(self.streak.reasons) >= set(self.s.slide_paths):
            raise NoPatchesError(no_patches_message(self.streak.reasons))
        order = self.new_pass(self.passed.number + 1)
        if not order:
            raise NoPatchesError("no slide is left to read: every slide failed ("
                                 + no_patches_message(self.streak.reasons) + ")")
        self.queue.extend(Pending(path) for path in order)

    def top_up(self) -> None:
        """Keep the next ``open_ahead`` slides of the queue opening in the background."""
        for pending in list(self.queue)[: self.s.open_ahead]:
            if pending.future is None:
                pending.future = self.openers.submit(self.run.open_slide, pending.path,
                                                     self.stopped.is_set)

    def close(self) -> None:
        self.keep_final_state()
        self.stopped.set()
        for task in self.ahead:
            if task.future is not None:
                task.future.cancel()
        self.readers.shutdown(wait=True, cancel_futures=True)
        self.openers.shutdown(wait=True, cancel_futures=True)
        opened: list[Opened] = [task.entry.opened for task in self.ahead]
        for slot in [*self.pool, *self.queue]:
            if isinstance(slot, Entry):
                opened.append(slot.opened)
            elif slot.future is not None and slot.future.done() and not slot.future.cancelled():
                opened.append(slot.future.result())
        for handle in {id(o.handle): o.handle for o in opened if o.handle is not None}.values():
            handle.close()
        self.pool.clear()
        self.ahead.clear()
