"""Shared renders whose waiters keep their own budget (``budget``): the service's renders and
the overviews are made once per process at a time (``io.singleflight``'s ``FlightTable``), and
a thread waiting for another's render waits in ``BUDGET_POLL_S`` slices, checking its own
deadline and client between them (``DeadlineExceeded`` / ``WorkAbandoned``), at most
``FLIGHT_WAIT_S`` in all (``FlightTimeout``).

A render stopped because its own client went away (``WorkAbandoned``) does not end the
waiters': one of them renders instead, as if the first had never started."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

from ..budget import checkpoint
from ..errors import FlightTimeout, WorkAbandoned
from ..io.singleflight import Flight, FlightTable
from ..limits import BUDGET_POLL_S, FLIGHT_WAIT_S

T = TypeVar("T")

RESTARTS = 3  # renders abandoned by their clients that one waiter takes over, at most


def wait_within_budget(flight: Flight[T], timeout: float, what: str) -> T:
    """``flight``'s value, waiting at most ``timeout`` s and never past the caller's budget."""
    give_up = time.monotonic() + timeout
    while True:
        left = give_up - time.monotonic()
        if flight.done or left <= 0:
            return flight.wait(0, what)  # the value, the leader's error, or FlightTimeout
        try:
            return flight.wait(min(BUDGET_POLL_S, left), what)
        except FlightTimeout:
            checkpoint()


class BudgetedFlights(Generic[T]):
    """Thread-safe. ``do(key, fn)``: ``fn()`` once per key at a time; the callers that come
    while it runs wait for its result within their own budget."""

    def __init__(self, what: str = "a shared render", timeout: float = FLIGHT_WAIT_S) -> None:
        self.what, self.timeout = what, timeout
        self._table: FlightTable[Hashable, T] = FlightTable()
        self._lock = threading.Lock()

    def do(self, key: Hashable, fn: Callable[[], T]) -> tuple[T, bool]:
        """``(value, shared)``: ``shared`` is True when another caller's run was reused."""
        for attempt in range(RESTARTS + 1):
            with self._lock:
                flight = self._table.get(key)
                leader = flight is None
                if flight is None:
                    flight = self._table.start(key)
            if leader:
                with self._table.leading(self._lock, {key: flight}):
                    value = fn()
                    with self._lock:
                        self._table.resolve(key, flight, value)
                return value, False
            try:
                return wait_within_budget(flight, self.timeout, self.what), True
            except WorkAbandoned:
                if attempt == RESTARTS:
                    raise
                checkpoint()  # our own client may be the one gone: then stop here
        raise AssertionError("unreachable")
