"""prometheus_client's multiprocess files without SIGBUS: metrics go off, the server stays up.

prometheus_client (``mmap_dict.MmapedDict``) creates each ``<type>_<pid>.db`` by truncating it to
64 KiB (a sparse file), maps it, and grows it the same way; the pages are allocated only when
first written through the mapping. On a full filesystem (a small tmpfs or ``emptyDir``) that
write is SIGBUS: the worker dies at boot, gunicorn starts another, forever. Here:

- ``ReservedMmapedDict`` reserves a file's blocks (``os.posix_fallocate``) before they are
  mapped, at creation and at every growth: a full filesystem is then ``OSError(ENOSPC)`` raised
  where it can be caught, and a page already mapped can never fault for want of space.
- ``short_of_room`` checks the folder's free space (``statvfs``) against what the workers' files
  need at start plus ``limits.METRICS_FREE_MARGIN``, before anything is mapped (in the master
  for every worker, then in each worker for itself).
- ``turn_off(reason)``: metrics off in this process (and the workers forked after it), one
  warning; ``off_reason()`` says why (``/metrics`` answers 503 with it).
"""

from __future__ import annotations

import logging
import os
from typing import Any

from prometheus_client import values
from prometheus_client.mmap_dict import _INITIAL_MMAP_SIZE, MmapedDict

from ..limits import METRICS_FREE_MARGIN

logger = logging.getLogger(__name__)
SETTING = "PROMETHEUS_MULTIPROC_DIR"
# One file per kind of value a worker writes: counter, histogram, gauge_liveall, gauge_livesum.
FILES_PER_WORKER = 4
WORKER_BYTES = FILES_PER_WORKER * _INITIAL_MMAP_SIZE
_off: list[str] = []  # the reason metrics are off in this process, once set


class ReservedMmapedDict(MmapedDict):
    """``MmapedDict`` whose file blocks are allocated before they are mapped (``OSError`` with
    ``ENOSPC`` instead of SIGBUS on a full filesystem)."""

    def __init__(self, filename: str, read_mode: bool = False) -> None:
        if not read_mode:
            fd = os.open(filename, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
            try:
                size = os.fstat(fd).st_size or _INITIAL_MMAP_SIZE
                os.posix_fallocate(fd, 0, size)
            finally:
                os.close(fd)
        super().__init__(filename, read_mode)  # type: ignore[no-untyped-call]

    def _init_value(self, key: str) -> None:
        encoded = len(key.encode("utf-8"))
        entry = 4 + encoded + (8 - (encoded + 4) % 8) + 16  # MmapedDict's record layout
        capacity = self._capacity
        while self._used + entry > capacity:
            capacity *= 2
        if capacity != self._capacity:
            os.posix_fallocate(self._f.fileno(), 0, capacity)
        super()._init_value(key)  # type: ignore[no-untyped-call]


def reserve_files() -> None:
    """Make prometheus_client's multiprocess values use ``ReservedMmapedDict`` (its
    ``MultiProcessValue`` looks the class up in ``prometheus_client.values`` at each file's
    creation). Idempotent; call before the first metric is made."""
    values.MmapedDict = ReservedMmapedDict  # type: ignore[attr-defined]


def short_of_room(folder: str, workers: int) -> str | None:
    """Why ``folder`` cannot hold the files of ``workers`` new workers (``WORKER_BYTES`` each,
    plus ``METRICS_FREE_MARGIN``), or None when it can."""
    try:
        found = os.statvfs(folder)
    except OSError as exc:
        return f"{folder} cannot be examined: {exc.strerror or exc}"
    free = found.f_bavail * found.f_frsize
    need = workers * WORKER_BYTES + METRICS_FREE_MARGIN
    if free < need:
        return (f"{folder} has {free} bytes free, metrics need {need} ({workers} worker(s) x "
                f"{WORKER_BYTES} + {METRICS_FREE_MARGIN} margin)")
    return None


def turn_off(reason: str) -> None:
    """Metrics off in this process from now on; the first call logs one warning."""
    if _off:
        return
    _off.append(reason)
    logger.warning("metrics off, the server goes on without them: %s: %s; free space there "
                   "(or give the metrics a larger folder) and restart", SETTING, reason)


def off_reason() -> str | None:
    return _off[0] if _off else None


def failure(exc: Any) -> str:
    """A one-line reason for an ``OSError`` raised while writing metric files."""
    return f"writing a metric file failed: {getattr(exc, 'strerror', None) or exc}"
