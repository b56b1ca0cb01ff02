"""The one flight primitive: work in progress that other threads wait on, with bounded waits.

- ``Flight``: resolved once, with a value or an error. ``wait(timeout)`` returns the value,
  raises ``FlightTimeout`` when the leader has not finished in time, or raises the leader's
  error as the waiter's own exception instance chained (``__cause__``) to the original, so N
  waiters never share one traceback.
- ``FlightTable``: flights by key, guarded by the owner's lock (so a lookup can be atomic with
  the owner's own state, as in the block store). ``leading`` is the leader's try/finally: every
  flight it registered and did not resolve is failed on the way out, whatever was raised.
- ``SingleFlight``: deduplicated calls by key on top of both (the slide registry, the
  renderer). Nothing is remembered once a call ends (caching is the caller's business).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from typing import Generic, TypeVar

from ..errors import FlightAbandoned, FlightTimeout
from ..limits import FLIGHT_WAIT_S
from .slots import claim

T = TypeVar("T")
K = TypeVar("K", bound=Hashable)
E = TypeVar("E", bound=BaseException)

DEFAULT_WAIT_S = FLIGHT_WAIT_S


class Flight(Generic[T]):
    """One result in progress."""

    __slots__ = ("_event", "_value", "_error")

    def __init__(self) -> None:
        self._event = threading.Event()
        self._value: T | None = None
        self._error: BaseException | None = None

    @property
    def done(self) -> bool:
        return self._event.is_set()

    def resolve(self, value: T) -> bool:
        """Set the value; False (and nothing changes) when the flight already ended."""
        if self._event.is_set():
            return False
        self._value = value
        self._event.set()
        return True

    def fail(self, error: BaseException) -> bool:
        """End the flight with ``error``; False when it already ended."""
        if self._event.is_set():
            return False
        self._error = error
        self._event.set()
        return True

    def wait(self, timeout: float | None, what: str = "a storage read") -> T:
        """The leader's value or error; a waiter that must block takes its request's storage
        slot first (``slots.claim``: waiting on a read pins a thread as the read does)."""
        if not self._event.is_set():
            claim()
        if not self._event.wait(timeout):
            raise FlightTimeout(f"gave up after {timeout:g} s waiting for {what}")
        if self._error is not None:
            raise own_copy(self._error)
        return self._value  # type: ignore[return-value]


def own_copy(error: BaseException) -> BaseException:
    """A new instance of ``error``'s type with the same arguments and attributes, chained to
    it; a generic ``FlightAbandoned`` if the type cannot be instantiated that way."""
    copy: BaseException
    try:
        copy = type(error).__new__(type(error), *error.args)
        copy.args = error.args
        copy.__dict__.update(getattr(error, "__dict__", {}))
    except Exception:  # noqa: BLE001 - an exotic exception type: report it generically
        copy = FlightAbandoned(f"the shared read failed: {type(error).__name__}: {error}")
    copy.__cause__ = error
    return copy


def detached(error: E) -> E:
    """``error`` without its traceback, cause and context, to keep (a remembered verdict): a
    kept exception with its traceback pins every frame of the request that raised it, buffers
    included. A copy when the type allows one (the original may still be propagating)."""
    copy = own_copy(error)
    if type(copy) is not type(error):
        copy = error  # an exotic type: drop the references from the original instead
    copy.__cause__ = copy.__context__ = None
    copy.__traceback__ = None
    return copy


class FlightTable(Generic[K, T]):
    """In-progress flights by key. Not locked itself: call every method but ``leading`` under
    the owner's lock."""

    def __init__(self) -> None:
        self._flights: dict[K, Flight[T]] = {}

    def __contains__(self, key: object) -> bool:
        return key in self._flights

    def __len__(self) -> int:
        return len(self._flights)

    def keys(self) -> set[K]:
        return set(self._flights)

    def get(self, key: K) -> Flight[T] | None:
        return self._flights.get(key)

    def start(self, key: K) -> Flight[T]:
        if key in self._flights:
            raise RuntimeError(f"flight {key!r} already in progress")
        flight: Flight[T] = Flight()
        self._flights[key] = flight
        return flight

    def is_current(self, key: K, flight: Flight[T]) -> bool:
        """Whether ``flight`` is still the one registered for ``key``."""
        return self._flights.get(key) is flight

    def resolve(self, key: K, flight: Flight[T], value: T) -> bool:
        """Resolve and unregister ``flight`` if it is still ``key``'s; False otherwise."""
        if self._flights.get(key) is not flight:
            return False
        del self._flights[key]
        return flight.resolve(value)

    def fail(self, key: K, flight: Flight[T], error: BaseException) -> bool:
        if self._flights.get(key) is not flight:
            return False
        del self._flights[key]
        return flight.fail(error)

    def leading(self, lock: threading.Lock, mine: Mapping[K, Flight[T]]
                ) -> AbstractContextManager[None]:
        """Context of the leader's work on ``mine``: on exit every one of them still registered
        is failed (with the exception raised, or ``FlightAbandoned``), under ``lock``."""
        return self._leading(lock, mine)

    @contextmanager
    def _leading(self, lock: threading.Lock, mine: Mapping[K, Flight[T]]) -> Iterator[None]:
        error: BaseException | None = None
        try:
            yield
        except BaseException as exc:
            error = exc
            raise
        finally:
            if mine:
                reason = error or FlightAbandoned("the reading thread ended without a result")
                with lock:
                    for key, flight in mine.items():
                        self.fail(key, flight, reason)


class SingleFlight(Generic[T]):
    """Concurrent ``do(key, fn)`` calls run ``fn`` once; the others wait at most ``timeout``."""

    def __init__(self, timeout: float | None = DEFAULT_WAIT_S, what: str = "a shared call"
                 ) -> None:
        self.timeout = timeout
        self.what = what
        self._table: FlightTable[Hashable, T] = FlightTable()
        self._lock = threading.Lock()

    def do(self, key: Hashable, fn: Callable[[], T]) -> tuple[T, bool]:
        """Return ``(fn(), shared)``; ``shared`` is True when another caller's run was reused."""
        with self._lock:
            flight = self._table.get(key)
            leader = flight is None
            if flight is None:
                flight = self._table.start(key)
        if not leader:
            return flight.wait(self.timeout, self.what), True
        with self._table.leading(self._lock, {key: flight}):
            value = fn()
            with self._lock:
                self._table.resolve(key, flight, value)
        return value, False

    def in_flight(self) -> int:
        with self._lock:
            return len(self._table)
