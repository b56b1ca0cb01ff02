"""Readiness: whether this worker's storage answers, for ``/health/ready`` (Kubernetes'
readiness probe), bounded in time and cached, so probes never queue behind storage nor hammer
it. ``/health`` (liveness) never touches storage."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from ..limits import READINESS_CHECK_S, READINESS_TTL_S

logger = logging.getLogger(__name__)


class Readiness:
    """Thread-safe. ``state()`` answers ``(ready, detail)``: the last result of ``check`` (a
    storage's ``check()``: a one-line description, or it raises) while it is younger than
    ``ttl_s``, else the result of a new check awaited at most ``wait_s`` (past it: not ready,
    the check left running). At most one check runs at a time, in a daemon thread of its own,
    so a stuck storage holds one thread whatever the number of probes. ``checks`` counts the
    checks made. A change of state is logged once (the detail stays in the log: the probe's
    answer is public)."""

    def __init__(self, check: Callable[[], str], wait_s: float = READINESS_CHECK_S,
                 ttl_s: float = READINESS_TTL_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._check, self.wait_s, self.ttl_s, self._clock = check, wait_s, ttl_s, clock
        self._lock = threading.Lock()
        self._result: tuple[bool, str] | None = None
        self._at = 0.0
        self._running: threading.Event | None = None
        self.checks = 0

    def state(self) -> tuple[bool, str]:
        with self._lock:
            if self._result is not None and self._clock() - self._at < self.ttl_s:
                return self._result
            done = self._running
            if done is None:
                done = self._running = threading.Event()
                threading.Thread(target=self._run, args=(done,), daemon=True,
                                 name="wsi-readiness").start()
        if not done.wait(self.wait_s):
            return False, f"storage did not answer within {self.wait_s:g} s"
        with self._lock:
            assert self._result is not None
            return self._result

    def _run(self, done: threading.Event) -> None:
        try:
            result = (True, self._check())
        except Exception as exc:  # any failure means "not ready", never a 500
            result = (False, f"{type(exc).__name__}: {exc}")
        with self._lock:
            if self._result is None or self._result[0] != result[0]:
                logger.log(logging.INFO if result[0] else logging.WARNING,
                           "readiness: storage %s (%s)",
                           "reachable" if result[0] else "NOT reachable", result[1])
            self._result, self._at = result, self._clock()
            self._running = None
            self.checks += 1
        done.set()
