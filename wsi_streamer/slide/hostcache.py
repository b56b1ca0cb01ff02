"""A byte cache on the host's disk (diskcache over SQLite), shared by every process there:
gunicorn workers (encoded tiles), DataLoader workers and ranks (tissue masks, tile tables),
and both for parsed slide structures.

The cache never fails a request. Every diskcache call is bounded (SQLite's busy timeout, no
retry loop) and any failure of it (``diskcache.Timeout``, ``sqlite3.Error``, ``OSError``: a
locked, full, read-only or corrupt database) is a miss plus a warning, logged once per kind of
failure and then at most once a minute. A cache that cannot be opened at startup (corrupt
``cache.db``, read-only or full disk) leaves the process running without one; opening is tried
again at most once a minute, so deleting a corrupt ``cache.db`` heals it. The folder itself
must be private (``cachedir.ensure_private_dir``): that one is a ``ConfigError``.

Nothing read from the folder is executable: values are bytes, structures are versioned JSON
and arrays are typed records (``codec``); diskcache's pickled keys and values are refused."""

from __future__ import annotations

import errno
import logging
import math
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import diskcache
import numpy as np
from diskcache.core import MODE_BINARY, MODE_RAW, UNKNOWN

from ..errors import ConfigError
from ..format import drivers
from ..format.contract import FormatDriver
from ..format.drivers import Parsed
from .cachedir import ensure_private_dir
from .codec import CacheEntryError, decode_arrays, encode_arrays

logger = logging.getLogger(__name__)

_STRUCTURE_PREFIX = "structure:"
_SLIDE_PREFIX = "slide:"
LOG_INTERVAL_S = 60.0  # a failure of one kind is logged once, then at most once per interval
REOPEN_INTERVAL_S = 60.0  # how often a cache that failed to open is tried again
BUSY_COOLDOWN_S = 5.0  # after a timeout, that operation skips the cache for this long
# The folder stays within ``size_limit``: diskcache culls only after a write took it over its
# own limit, ten entries at a time, and counts the database's pages but not SQLite's
# write-ahead log, so its limit is a share of ours and the log is truncated at 1 MiB.
DISKCACHE_SHARE = 0.75
WAL_BYTES = 1 << 20
_VALUE_FILE = re.compile(r"^[0-9a-f]{2}[/\\][0-9a-f]{2}[/\\][0-9a-f]{28}\.val$")


class UnsafeEntry(Exception):
    """A database row this cache never writes: a pickled key or value, text, a foreign file."""


class _SafeDisk(diskcache.Disk):  # type: ignore[misc]
    """diskcache's serializer restricted to str keys and bytes values. A pickled key or value
    (diskcache's ``MODE_PICKLE``) is refused, never loaded; value files must carry diskcache's
    own random names inside the cache folder (no path from the database is trusted)."""

    def put(self, key: Any) -> Any:
        if type(key) is not str:
            raise TypeError(f"host cache keys are str, not {type(key).__name__}")
        return super().put(key)

    def get(self, key: Any, raw: bool) -> Any:
        if not raw:
            raise UnsafeEntry("a pickled key")
        return super().get(key, raw)

    def store(self, value: Any, read: bool, key: Any = UNKNOWN) -> Any:
        if type(value) is not bytes or read:
            raise TypeError(f"host cache values are bytes, not {type(value).__name__}")
        return super().store(value, read, key)

    def fetch(self, mode: int, filename: str | None, value: Any, read: bool) -> Any:
        if mode == MODE_RAW and not read:
            return super().fetch(mode, filename, value, read)
        if mode == MODE_BINARY and not read and _VALUE_FILE.match(filename or ""):
            return super().fetch(mode, filename, value, read)
        raise UnsafeEntry(f"an entry of diskcache mode {mode} (file {filename!r})")

    def remove(self, file_path: str) -> None:
        if _VALUE_FILE.match(file_path or ""):
            super().remove(file_path)


class _BoundedCache(diskcache.Cache):  # type: ignore[misc]
    """``diskcache.Cache`` whose opening waits at most ``open_wait`` seconds on a locked
    database (diskcache itself retries schema statements for 60 s)."""

    def __init__(self, directory: str, *, open_wait: float, **settings: Any) -> None:
        self._open_wait = open_wait
        super().__init__(directory, **settings)

    @property
    def _sql_retry(self) -> Callable[..., Any]:
        sql = self._sql
        deadline = time.monotonic() + self._open_wait

        def execute(statement: str, *args: Any, **kwargs: Any) -> Any:
            while True:
                try:
                    return sql(statement, *args, **kwargs)
                except sqlite3.OperationalError as exc:
                    if "locked" not in str(exc) or time.monotonic() >= deadline:
                        raise
                    time.sleep(0.005)

        return execute


class FailureLog:
    """Warnings rate-limited per kind of failure: the first one, then at most one per
    ``interval`` seconds, with the number left out since. Thread-safe."""

    def __init__(self, interval: float = LOG_INTERVAL_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self._clock = clock
        self._lock = threading.Lock()
        self._next: dict[str, float] = {}
        self._left_out: dict[str, int] = {}

    def warn(self, kind: str, message: str, *args: object) -> bool:
        """Log ``message % args`` unless ``kind`` was logged less than ``interval`` ago;
        True when it was logged."""
        now = self._clock()
        with self._lock:
            if now < self._next.get(kind, -math.inf):
                self._left_out[kind] = self._left_out.get(kind, 0) + 1
                return False
            self._next[kind] = now + self.interval
            left_out = self._left_out.pop(kind, 0)
        logger.warning(message + " [%s; logged at most once per %.0f s, %d left out since]",
                       *args, kind, self.interval, left_out)
        return True


def failure_kind(exc: BaseException) -> str:
    """What rate-limits a warning: ``timeout``, ``sqlite:SQLITE_FULL``, ``os:ENOSPC``..."""
    if isinstance(exc, diskcache.Timeout):
        return "timeout"
    if isinstance(exc, sqlite3.Error):
        return f"sqlite:{getattr(exc, 'sqlite_errorname', None) or exc}"
    if isinstance(exc, OSError):
        return f"os:{errno.errorcode.get(exc.errno or 0, exc.errno)}"
    return type(exc).__name__


def _busy(exc: BaseException) -> bool:
    return isinstance(exc, diskcache.Timeout) or (
        isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc))


class HostCache:
    """Thread- and process-safe byte cache bounded by ``size_limit`` bytes (eviction by
    diskcache's "least-recently-stored"; reads do not write). ``timeout`` (seconds) bounds
    every wait on a busy database. ``setting`` names the folder's configuration in errors;
    ``default_dir``: the folder is the predictable default in the temp dir (a symbolic link
    there is refused). Raises ``ConfigError`` for a folder that is not private to this user;
    nothing else (see the module docstring)."""

    def __init__(self, directory: str, size_limit: int, timeout: float = 1.0, *,
                 setting: str = "host cache directory", default_dir: bool = False,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.directory = directory
        self.size_limit = size_limit
        self.timeout = timeout
        self._setting = setting
        self._default_dir = default_dir
        self._clock = clock
        self.failures = FailureLog(clock=clock)
        self._open_lock = threading.Lock()
        self._reopen_at = -math.inf
        self._busy_until = {"read": -math.inf, "write": -math.inf}
        self._cache: diskcache.Cache | None = None
        self._cache = self._open(first=True)

    @property
    def available(self) -> bool:
        """Whether the database is open now (False: running without a cache)."""
        return self._cache is not None

    def _open(self, *, first: bool) -> diskcache.Cache | None:
        try:
            # The checked real path from now on: a link swapped after the start changes nothing.
            self.directory = ensure_private_dir(self.directory, setting=self._setting,
                                                default=self._default_dir)
            return _BoundedCache(self.directory, open_wait=self.timeout, timeout=self.timeout,
                                 disk=_SafeDisk,
                                 size_limit=int(self.size_limit * DISKCACHE_SHARE),
                                 eviction_policy="least-recently-stored",
                                 disk_min_file_size=1 << 20,
                                 sqlite_wal_autocheckpoint=WAL_BYTES // 4096 // 2,
                                 sqlite_journal_size_limit=WAL_BYTES)
        except ConfigError as exc:
            if first:
                raise
            failure: Exception = exc
        except Exception as exc:  # noqa: BLE001 - whatever a broken database raises
            failure = exc
        self._reopen_at = self._clock() + REOPEN_INTERVAL_S
        self.failures.warn(f"open:{failure_kind(failure)}",
                           "host cache %s cannot be opened, running without it (tried again "
                           "in %.0f s): %s: %s", self.directory, REOPEN_INTERVAL_S,
                           type(failure).__name__, failure)
        return None

    def _usable(self, op: str) -> diskcache.Cache | None:
        now = self._clock()
        if now < self._busy_until[op]:
            return None
        cache = self._cache
        if cache is None and now >= self._reopen_at and self._open_lock.acquire(blocking=False):
            try:
                if self._cache is None:
                    self._cache = self._open(first=False)
                cache = self._cache
            finally:
                self._open_lock.release()
        return cache

    def _failed(self, op: str, key: str, exc: Exception) -> None:
        if _busy(exc):
            self._busy_until[op] = self._clock() + BUSY_COOLDOWN_S
        self.failures.warn(failure_kind(exc), "host cache %s: %s of %s failed, a miss: %s: %s",
                           self.directory, op, key, type(exc).__name__, exc)

    def get(self, key: str) -> bytes | None:
        cache = self._usable("read")
        if cache is None:
            return None
        try:
            value = cache.get(key, default=None, retry=False)
        except Exception as exc:  # noqa: BLE001 - a cache failure is a miss
            self._failed("read", key, exc)
            return None
        return value if isinstance(value, bytes) else None

    def set(self, key: str, value: bytes) -> None:
        cache = self._usable("write")
        if cache is None:
            return
        try:
            cache.set(key, value, retry=False)
        except Exception as exc:  # noqa: BLE001 - a cache failure is a lost write
            self._failed("write", key, exc)

    def _unreadable(self, key: str, exc: CacheEntryError) -> None:
        if exc.stale:  # written by another version: expected after an upgrade
            logger.debug("host cache entry %s skipped: %s", key, exc)
        else:
            self.failures.warn("entry", "host cache %s: entry %s unreadable, a miss: %s",
                               self.directory, key, exc)

    def get_structure(self, identity: str, table: tuple[FormatDriver, ...] = drivers.NATIVE
                      ) -> Parsed | None:
        """The parsed slide stored for ``identity`` by a driver of ``table`` (None when
        absent or unreadable)."""
        key = _STRUCTURE_PREFIX + identity
        blob = self.get(key)
        if blob is None:
            return None
        try:
            return drivers.decode(blob, table)
        except CacheEntryError as exc:
            self._unreadable(key, exc)
            return None

    def put_structure(self, identity: str, parsed: Parsed) -> None:
        self.set(_STRUCTURE_PREFIX + identity, drivers.encode(parsed))

    def get_arrays(self, key: str, kind: str
                   ) -> tuple[dict[str, Any], dict[str, np.ndarray]] | None:
        """``(meta, arrays)`` stored by ``put_arrays`` with this ``kind`` (None when absent,
        unreadable or of another kind or version); arrays are read-only."""
        blob = self.get(key)
        if blob is None:
            return None
        try:
            return decode_arrays(blob, kind)
        except CacheEntryError as exc:
            self._unreadable(key, exc)
            return None

    def put_arrays(self, key: str, kind: str, meta: Mapping[str, Any],
                   arrays: Mapping[str, np.ndarray]) -> None:
        """Store JSON ``meta`` and numeric ``arrays`` (dtypes of ``codec.DTYPES``)."""
        self.set(key, encode_arrays(kind, meta, arrays))

    def known_slide(self, slide_id: str) -> bool:
        """Whether a structure was stored for this slide id (by any worker on this host)."""
        return self.get(_SLIDE_PREFIX + slide_id) is not None

    def remember_slide(self, slide_id: str, identity: str) -> None:
        self.set(_SLIDE_PREFIX + slide_id, identity.encode())

    def clear(self) -> None:
        cache = self._usable("write")
        if cache is None:
            return
        try:
            cache.clear(retry=False)
        except Exception as exc:  # noqa: BLE001
            self._failed("write", "(clear)", exc)

    def close(self) -> None:
        """Close this process's connections (a later call opens them again)."""
        cache = self._cache
        if cache is not None:
            try:
                cache.close()
            except Exception as exc:  # noqa: BLE001
                logger.debug("host cache %s: close failed: %s", self.directory, exc)
