"""A byte cache on the host's disk (diskcache), shared by every process there: gunicorn
workers (encoded tiles), DataLoader workers and ranks (tissue masks), and both for parsed slide
structures. A diskcache timeout or error is a miss plus a warning, never a failure."""

from __future__ import annotations

import logging
import pickle
from typing import Any

import diskcache

from ..format.detect import SlideStructure

logger = logging.getLogger(__name__)

_STRUCTURE_PREFIX = "structure:"
_SLIDE_PREFIX = "slide:"


class HostCache:
    """Thread- and process-safe byte cache bounded by ``size_limit`` bytes (LRU-ish eviction
    by diskcache's "least-recently-stored"; reads do not write)."""

    def __init__(self, directory: str, size_limit: int, timeout: float = 2.0) -> None:
        self.directory = directory
        self._cache = diskcache.Cache(directory, size_limit=size_limit, timeout=timeout,
                                      eviction_policy="least-recently-stored",
                                      disk_min_file_size=1 << 20)

    def get(self, key: str) -> bytes | None:
        try:
            value = self._cache.get(key, default=None, retry=True)
        except (diskcache.Timeout, OSError, pickle.UnpicklingError) as exc:
            logger.warning("host cache read of %s failed: %s", key, exc)
            return None
        return value if isinstance(value, bytes) else None

    def set(self, key: str, value: bytes) -> None:
        try:
            self._cache.set(key, value, retry=True)
        except (diskcache.Timeout, OSError) as exc:
            logger.warning("host cache write of %s failed: %s", key, exc)

    def get_structure(self, identity: str) -> SlideStructure | None:
        structure = self.get_object(_STRUCTURE_PREFIX + identity)
        return structure if isinstance(structure, SlideStructure) else None

    def put_structure(self, identity: str, structure: SlideStructure) -> None:
        self.put_object(_STRUCTURE_PREFIX + identity, structure)

    def get_object(self, key: str) -> Any | None:
        """A pickled object stored by ``put_object`` (None when absent or unreadable)."""
        blob = self.get(key)
        if blob is None:
            return None
        try:
            return pickle.loads(blob)
        except Exception as exc:  # noqa: BLE001 - a stale or foreign entry is a miss
            logger.warning("host cache entry %s unreadable: %s", key, exc)
            return None

    def put_object(self, key: str, value: Any) -> None:
        self.set(key, pickle.dumps(value, protocol=5))

    def known_slide(self, slide_id: str) -> bool:
        """Whether a structure was stored for this slide id (by any worker on this host)."""
        return self.get(_SLIDE_PREFIX + slide_id) is not None

    def remember_slide(self, slide_id: str, identity: str) -> None:
        self.set(_SLIDE_PREFIX + slide_id, identity.encode())

    def clear(self) -> None:
        self._cache.clear()

    def close(self) -> None:
        self._cache.close()
