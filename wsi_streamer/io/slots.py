"""Storage slots: at most N requests of a process wait on storage at once, so a slow origin can
pin only N of its threads and the others stay free for ``/health``, ``/metrics`` and cached
tiles (the server gives each worker ``WSI_THREADS - 1`` slots).

A request binds a ``Ticket`` for its context (``StorageSlots.bound``); the first time it needs
storage (``claim()``: before a storage request, or before waiting on another thread's shared
read), the ticket takes one slot, held until the request ends. A request that never needs
storage never takes one. Helper threads that run a request's work in a copy of its context
(``copy_context().run``) claim on the request's ticket: one slot per request, whatever its
fan-out. Without a bound ticket (the patch pipeline, the CLI) ``claim`` does nothing.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from ..errors import Overloaded
from ..limits import RETRY_AFTER_S, STORAGE_SLOT_WAIT_S, STORAGE_STUCK_S


class StorageSlots:
    """Thread-safe. ``slots`` storage-bound requests at once. A request finding every slot
    taken waits up to ``wait_s`` for one while some holder took its slot less than ``stuck_s``
    ago (storage is busy, reads are finishing); when every holder has held its slot longer
    (storage is slow) it is refused at once, so a queue of requests never keeps the free
    thread waiting in turn. Refused: ``Overloaded`` (503 with Retry-After)."""

    def __init__(self, slots: int, wait_s: float = STORAGE_SLOT_WAIT_S,
                 retry_after: int = RETRY_AFTER_S, stuck_s: float = STORAGE_STUCK_S) -> None:
        if slots < 1:
            raise ValueError(f"storage slots need at least one slot, got {slots}")
        self.slots, self.wait_s, self.retry_after = slots, wait_s, retry_after
        self.stuck_s = stuck_s
        self.refused = 0
        self._cond = threading.Condition()
        self._since: dict[int, float] = {}  # id(ticket) -> when it took its slot

    @contextmanager
    def bound(self) -> Iterator[Ticket]:
        """A ticket for the block's context (a request); its slot, if taken, is given back
        when the block ends."""
        ticket = Ticket(self)
        token = _ticket.set(ticket)
        try:
            yield ticket
        finally:
            _ticket.reset(token)
            ticket.release()

    def _acquire(self, key: int) -> None:
        with self._cond:
            give_up = time.monotonic() + self.wait_s
            while len(self._since) >= self.slots:
                now = time.monotonic()
                if now >= give_up or max(self._since.values()) < now - self.stuck_s:
                    self.refused += 1
                    raise Overloaded(
                        f"{self.slots} requests of this worker are already waiting on "
                        "storage; retry later", self.retry_after)
                self._cond.wait(give_up - now)
            self._since[key] = time.monotonic()

    def _release(self, key: int) -> None:
        with self._cond:
            if self._since.pop(key, None) is not None:
                self._cond.notify()


class Ticket:
    """One request's claim on its process's storage slots."""

    def __init__(self, slots: StorageSlots) -> None:
        self._slots = slots
        self._lock = threading.Lock()
        self.held = False

    def claim(self) -> None:
        with self._lock:
            if not self.held:
                self._slots._acquire(id(self))
                self.held = True

    def release(self) -> None:
        with self._lock:
            if self.held:
                self.held = False
                self._slots._release(id(self))


_ticket: ContextVar[Ticket | None] = ContextVar("wsi_storage_ticket", default=None)


def claim() -> None:
    """Before storage work: take the current request's slot (once); no-op outside a request.
    ``Overloaded`` when every slot stays taken for ``wait_s``."""
    ticket = _ticket.get()
    if ticket is not None:
        ticket.claim()
