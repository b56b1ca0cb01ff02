"""glibc malloc settings for long-running image workers.

Decoded tiles, canvases and encoder buffers are 0.1-50 MB each, made and freed thousands of
times a minute by many threads. With glibc's defaults (a dynamic mmap threshold that climbs to
32 MB after the first large free, and up to 8 arenas per core) those buffers come from the
heap and, once freed, stay in the process: the soak run (``bench/soak.py``) saw worker RSS
climb 20-55% over ten minutes while Python's own live allocations (tracemalloc) stayed flat,
and ``malloc_trim(0)`` gave half of it back. A fixed mmap threshold makes every buffer of
128 KiB or more its own mapping, returned to the system when freed, and two arenas per
process bound the rest. No effect (and no error) on other C libraries."""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

logger = logging.getLogger(__name__)

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8
MMAP_THRESHOLD = 128 * 1024
TRIM_THRESHOLD = 4 * 1024 * 1024
ARENA_MAX = 2


def tune_malloc() -> bool:
    """Apply the settings above to this process (call it in each worker, before the work);
    False where the C library is not glibc."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    ok = all(mallopt(param, value) == 1 for param, value in (
        (M_MMAP_THRESHOLD, MMAP_THRESHOLD), (M_TRIM_THRESHOLD, TRIM_THRESHOLD),
        (M_ARENA_MAX, ARENA_MAX)))
    if not ok:
        logger.debug("mallopt refused a setting; keeping the C library's defaults")
    return ok
