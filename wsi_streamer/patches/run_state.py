"""``StreamRun``'s resumable state (mixed in): the pass it is in, the mark of the planner
before each task, the state at the last patch consumed, and a run rebuilt from one
(``resume.py`` says what a state holds)."""

from __future__ import annotations

from collections import deque
from concurrent.futures import ThreadPoolExecutor
from threading import Event
from typing import TYPE_CHECKING, Any

from ..errors import ResumeStateError
from .resume import EntryResume, Mark, PassMark, RunState, Slot, mark_to_json
from .slots import Entry, Opened, Pending, Task

if TYPE_CHECKING:
    from .engine import RunInput, Schedule

MAX_OPEN_ATTEMPTS = 3  # a slide that fails to open is retried at most twice per run


class ResumableRun:
    """The state methods of ``StreamRun`` (which sets these attributes)."""

    run: RunInput
    s: Schedule
    pool: list[Entry | Pending]
    queue: deque[Pending]
    ahead: deque[Task]
    idx: int
    visit: int
    ordinal: int
    finished: bool
    final: dict[str, Any] | None
    unsaved: Exception | None
    layout: tuple[Slot, ...] | None
    failures: tuple[tuple[str, int], ...] | None
    budgets: tuple[PassMark | None, dict[str, int]]
    passed: PassMark
    openers: ThreadPoolExecutor
    stopped: Event

    def new_pass(self, number: int) -> list[str]:
        """The order of pass ``number``, marked with what it was drawn from (the first pass
        is the input's ``first_pass`` when it has one)."""
        ledger = self.run.ledger
        state = ledger.order_state()
        failed = frozenset(ledger.failures()[0])
        explicit = self.run.first_pass if number == 0 else None
        order = [path for path, _ in explicit] if explicit is not None else self.run.slide_order()
        self.passed = PassMark(number, state, failed, len(order), explicit)
        return order

    def budget(self, path: str) -> int:
        """Attempts of ``path``'s entries in this pass (a slot keeps its own once it joins
        the pool: a slide of the previous pass may still be there when the next is queued)."""
        if self.passed.explicit is None:
            return self.s.patches_per_slide
        if self.budgets[0] is not self.passed:
            self.budgets = (self.passed, dict(self.passed.explicit))
        return self.budgets[1].get(path, self.s.patches_per_slide)

    def mark_now(self) -> Mark:
        if self.layout is None:  # a resumed slot not yet open keeps its counters
            self.layout = tuple(Slot(s.path, s.budget, s.resume, s.deferred)
                                if isinstance(s, Pending) else Slot(s.opened.path, s.budget, s)
                                for s in self.pool)
        if self.failures is None:
            self.failures = tuple(self.run.ledger.failures()[1].items())
        return Mark(self.passed, len(self.queue), self.layout, self.idx, self.visit,
                    self.ordinal, self.failures)

    def state(self) -> dict[str, Any]:
        """The run as of the last patch consumed (JSON-serialisable)."""
        if self.final is not None:
            return self.final
        if self.unsaved is not None:
            raise self.unsaved
        mark = self.ahead[0].mark if self.ahead and self.ahead[0].mark else self.mark_now()
        failed_now, open_failures = self.run.ledger.failures()
        reopened = {path for path, n in open_failures.items() if n >= MAX_OPEN_ATTEMPTS}
        failed = (failed_now - reopened) | {path for path, n in mark.open_failures
                                            if n >= MAX_OPEN_ATTEMPTS}
        return mark_to_json(mark, failed, self.run.ledger.pool_states(), self.finished)

    def keep_final_state(self) -> None:
        """At close: the state, kept (the pool is emptied next)."""
        if self.final is None and self.unsaved is None:
            try:
                self.final = self.state()
            except Exception as exc:  # noqa: BLE001 - a state nobody asked for never fails close
                self.unsaved = exc

    def restore(self, state: RunState) -> None:
        ledger = self.run.ledger
        failed, open_failures = ledger.failures()
        failed.clear()
        failed.update(state.passed.failed)
        ledger.set_order_state(state.passed.order_state)
        explicit = state.passed.explicit
        order = ([path for path, _ in explicit] if explicit is not None
                 else self.run.slide_order())
        if len(order) != state.passed.size or not 0 <= state.left <= len(order) or len(
                state.slots) > self.s.pool_size:
            raise ResumeStateError(f"the saved run does not fit this pipeline: a pass of "
                                   f"{state.passed.size} slides ({len(order)} here), "
                                   f"{len(state.slots)} pool slots (pool_size "
                                   f"{self.s.pool_size})")
        self.passed = PassMark(state.passed.number, state.passed.order_state,
                               state.passed.failed, len(order), explicit)
        failed.clear()
        failed.update(state.failed)
        open_failures.clear()
        open_failures.update(state.open_failures)
        self.queue = deque(Pending(path) for path in order[len(order) - state.left:])
        self.pool = [Pending(slot.path, deferred=slot.deferred,
                             resume=slot.entry if isinstance(slot.entry, EntryResume) else None,
                             budget=self.budget(slot.path) if slot.budget is None
                             else slot.budget) for slot in state.slots]
        for slot in self.pool:
            assert isinstance(slot, Pending)
            slot.future = self.openers.submit(self.run.open_slide, slot.path,
                                              self.stopped.is_set)
        self.idx = state.idx % len(self.pool) if self.pool else 0
        self.visit, self.ordinal, self.finished = state.visit, state.ordinal, state.finished

    def join_pool(self, opened: Opened, slot: Pending) -> Entry:
        """A slot of the pool is open: a new entry (the next ordinal) or a resumed one."""
        resumed = slot.resume
        if resumed is None:
            entry = self.run.make_entry(opened, self.ordinal, 0)
            self.ordinal += 1
        else:
            entry = self.run.make_entry(opened, resumed.ordinal, resumed.done)
            entry.planned = entry.done = resumed.done
            entry.reads_ok, entry.yielded = resumed.reads_ok, resumed.yielded
        entry.budget = slot.budget
        return entry
