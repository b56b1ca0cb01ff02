"""Work budgets: a deadline (and an optional "is anyone still waiting?" check) that long work
polls between tiles, so that no request, overview build or slide open runs unbounded.

A budget is entered with ``within(seconds, what)`` and applies to the current context
(``contextvars``: the thread or task that entered it, not threads it starts; code handing work
to another thread enters a budget there, or passes ``current()`` along and uses ``applied``).
Nested budgets keep the tighter deadline. ``checkpoint()`` is cheap (one context lookup and a
clock read) and is called where work is divisible: before each tile is decoded in
``slide.region``, between the steps of an open. Importable from every layer, like ``errors``.

A single step (one tile's decode) is not interrupted: its cost is bounded by the pre-decode
checks in ``format`` (``limits.MAX_JPEG_SCANS`` and friends), so a budget overruns by at most
one step.

A budget also counts its work (a ``Meter``): the tiles and decoded bytes passed to
``checkpoint(decoded)``, against an optional allowance of decoded bytes (``within(...,
decoded_bytes=N)``: ``LimitExceeded("MAX_DECODED_BYTES")`` once passed, by at most one tile).
A nested budget without an allowance of its own counts on its outer budget's meter; one with
an allowance counts on both. The counts name the progress in ``DeadlineExceeded``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

from .errors import DeadlineExceeded, LimitExceeded, WorkAbandoned

__all__ = ["Budget", "Meter", "applied", "checkpoint", "current", "within"]


class Meter:
    """Tiles and decoded bytes counted under a budget, against ``allowance`` decoded bytes
    (None: no allowance) and the ``parent``'s. Thread-safe (a budget may be ``applied`` in
    several threads)."""

    __slots__ = ("allowance", "parent", "tiles", "decoded", "_lock")

    def __init__(self, allowance: int | None = None, parent: Meter | None = None) -> None:
        self.allowance, self.parent = allowance, parent
        self.tiles = self.decoded = 0
        self._lock = threading.Lock()

    def add(self, decoded: int, what: str) -> None:
        """Count one tile of ``decoded`` bytes; ``LimitExceeded`` once past an allowance."""
        meter: Meter | None = self
        over: Meter | None = None
        while meter is not None:  # counted on every meter, then refused by the innermost
            with meter._lock:
                meter.tiles += 1
                meter.decoded += decoded
                if over is None and meter.allowance is not None \
                        and meter.decoded > meter.allowance:
                    over = meter
            meter = meter.parent
        if over is not None:
            raise LimitExceeded("MAX_DECODED_BYTES", f"{what} decoded more than "
                                f"{over.allowance} bytes of tiles ({over.tiles} tiles)")

    def progress(self) -> str:
        return f"{self.tiles} tiles, {self.decoded / 1e6:.1f} MB decoded"


@dataclass(frozen=True, slots=True)
class Budget:
    """``deadline`` is a ``time.monotonic()`` value; ``seconds`` the budget it came from."""

    what: str
    seconds: float
    deadline: float
    cancelled: Callable[[], bool] | None = None
    meter: Meter | None = None

    def remaining(self) -> float:
        """Seconds left (negative once past the deadline)."""
        return self.deadline - time.monotonic()

    def check(self) -> None:
        """Raise ``WorkAbandoned`` when ``cancelled()`` says so, ``DeadlineExceeded`` past the
        deadline; return otherwise."""
        if self.cancelled is not None and self.cancelled():
            done = f" ({self.meter.progress()})" if self.meter else ""
            raise WorkAbandoned(f"{self.what} abandoned: its client went away{done}")
        if time.monotonic() > self.deadline:
            raise DeadlineExceeded(self.what, self.seconds,
                                   self.meter.progress() if self.meter else None)


_current: ContextVar[Budget | None] = ContextVar("wsi_streamer_budget", default=None)


def current() -> Budget | None:
    """The budget in force in this context, if any."""
    return _current.get()


def checkpoint(decoded: int | None = None) -> None:
    """Check the budget in force (no-op without one); see ``Budget.check``. ``decoded``: the
    bytes of the tile just decoded, counted on the budget's meter first (``LimitExceeded``
    past its allowance)."""
    budget = _current.get()
    if budget is not None:
        if decoded is not None and budget.meter is not None:
            budget.meter.add(decoded, budget.what)
        budget.check()


@contextmanager
def applied(budget: Budget | None) -> Iterator[Budget | None]:
    """Put ``budget`` (e.g. another thread's ``current()``) in force for this context."""
    token = _current.set(budget)
    try:
        yield budget
    finally:
        _current.reset(token)


@contextmanager
def within(seconds: float | None, what: str,
           cancelled: Callable[[], bool] | None = None, *,
           decoded_bytes: int | None = None) -> Iterator[Budget | None]:
    """Run the block under a budget of ``seconds`` (``None``: no new deadline, only
    ``cancelled``). Inside an outer budget the earlier deadline wins, and both cancel checks
    apply. The block's work raises ``DeadlineExceeded`` / ``WorkAbandoned`` at its next
    ``checkpoint()``; the budget is also checked once on entry. ``decoded_bytes``: the
    block's allowance of decoded tile bytes (``Meter``). Work shared with others that must
    not inherit a caller's budget enters ``applied(None)`` first."""
    outer = _current.get()
    parent = outer.meter if outer is not None else None
    meter = Meter(decoded_bytes, parent) if decoded_bytes is not None or parent is None \
        else parent
    deadline = time.monotonic() + seconds if seconds is not None else float("inf")
    name, total = what, seconds if seconds is not None else float("inf")
    if outer is not None and outer.deadline <= deadline:
        deadline, name, total = outer.deadline, outer.what, outer.seconds
    checks = [c for c in (cancelled, outer.cancelled if outer else None) if c is not None]
    cancel: Callable[[], bool] | None = None
    if len(checks) == 1:
        cancel = checks[0]
    elif checks:
        cancel = lambda: any(c() for c in checks)  # noqa: E731
    budget = Budget(name, total, deadline, cancel, meter)
    with applied(budget):
        budget.check()
        yield budget
