"""A per-process cap on heavy renders (overview builds, renders decoding many tiles), so that
native and cached tiles keep being served while they run: a bounded semaphore with a bounded
wait, then ``Overloaded`` (503 with Retry-After). The wait is also bounded by the caller's
budget (``budget``): it is cut into ``BUDGET_POLL_S`` slices with a check of the budget after
each, so a request whose deadline passes or whose client goes away stops waiting."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from ..budget import checkpoint
from ..errors import Overloaded
from ..limits import BUDGET_POLL_S, HEAVY_RENDERS, HEAVY_WAIT_S, RETRY_AFTER_S


@dataclass
class GateStats:
    admitted: int = 0
    refused: int = 0
    running: int = 0
    peak: int = 0  # most heavy renders seen running at once


class HeavyGate:
    """Thread-safe. At most ``slots`` holders at once; a caller waits at most ``wait_s``
    seconds for a slot, then gets ``Overloaded``."""

    def __init__(self, slots: int = HEAVY_RENDERS, wait_s: float = HEAVY_WAIT_S,
                 retry_after: int = RETRY_AFTER_S) -> None:
        if slots < 1:
            raise ValueError("a heavy-render gate needs at least one slot")
        self.slots, self.wait_s, self.retry_after = slots, wait_s, retry_after
        self.stats = GateStats()
        self._semaphore = threading.BoundedSemaphore(slots)
        self._lock = threading.Lock()

    @contextmanager
    def slot(self, what: str) -> Iterator[None]:
        """Hold a slot for the block; ``Overloaded`` naming ``what`` after ``wait_s``;
        ``DeadlineExceeded`` / ``WorkAbandoned`` from the caller's budget while waiting."""
        if not self._acquire():
            with self._lock:
                self.stats.refused += 1
            raise Overloaded(f"{what}: {self.slots} heavy renders already running in this "
                             f"process for {self.wait_s:g} s; retry later", self.retry_after)
        with self._lock:
            self.stats.admitted += 1
            self.stats.running += 1
            self.stats.peak = max(self.stats.peak, self.stats.running)
        try:
            yield
        finally:
            with self._lock:
                self.stats.running -= 1
            self._semaphore.release()

    def _acquire(self) -> bool:
        give_up = time.monotonic() + self.wait_s
        while not self._semaphore.acquire(timeout=max(0.0, min(
                BUDGET_POLL_S, give_up - time.monotonic()))):
            checkpoint()
            if time.monotonic() >= give_up:
                return False
        return True
