"""Encoded tiles (and parsed slide structures) in a diskcache shared by every gunicorn worker
on the host. A diskcache timeout or error is a miss plus a warning, never a failed request."""

from __future__ import annotations

import logging
import pickle

import diskcache

from ..format.detect import SlideStructure

logger = logging.getLogger(__name__)

_STRUCTURE_PREFIX = "structure:"
_SLIDE_PREFIX = "slide:"


class TileCache:
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
            logger.warning("tile cache read of %s failed: %s", key, exc)
            return None
        return value if isinstance(value, bytes) else None

    def set(self, key: str, value: bytes) -> None:
        try:
            self._cache.set(key, value, retry=True)
        except (diskcache.Timeout, OSError) as exc:
            logger.warning("tile cache write of %s failed: %s", key, exc)

    def get_structure(self, identity: str) -> SlideStructure | None:
        blob = self.get(_STRUCTURE_PREFIX + identity)
        if blob is None:
            return None
        try:
            structure = pickle.loads(blob)
        except Exception as exc:  # noqa: BLE001 - a stale or foreign entry is a miss
            logger.warning("structure cache entry for %s unreadable: %s", identity, exc)
            return None
        return structure if isinstance(structure, SlideStructure) else None

    def put_structure(self, identity: str, structure: SlideStructure) -> None:
        self.set(_STRUCTURE_PREFIX + identity, pickle.dumps(structure, protocol=5))

    def known_slide(self, slide_id: str) -> bool:
        """Whether a structure was stored for this slide id (by any worker on this host)."""
        return self.get(_SLIDE_PREFIX + slide_id) is not None

    def remember_slide(self, slide_id: str, identity: str) -> None:
        self.set(_SLIDE_PREFIX + slide_id, identity.encode())

    def clear(self) -> None:
        self._cache.clear()

    def close(self) -> None:
        self._cache.close()
