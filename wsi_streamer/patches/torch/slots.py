"""The writing side of the dataset statistics (``stats``): one slot per writing
process, a header and a table of named 64-bit values, mapped and updated in place after every
patch; ``PipelineRecorder`` adds a pipeline's deltas to it. ``reserve`` gives a file its pages
when it is made, so a full ``/dev/shm`` can never take a mapped page away later (SIGBUS)."""

from __future__ import annotations

import fcntl
import hashlib
import logging
import math
import mmap
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from ..pipeline import PatchPipeline

logger = logging.getLogger(__name__)

MAGIC = b"WSISTAT1"
CAPACITY = 1024  # named values per slot (keys: ~25 fixed, one per mpp, cancer and sample type)
KEY_BYTES = 112
HEADER = np.dtype([("magic", "S8"), ("used", "<i8"), ("pid", "<i8"), ("pad", "S40")])
ENTRY = np.dtype([("ivalue", "<i8"), ("fvalue", "<f8"), ("kind", "<i4"), ("klen", "<i4"),
                  ("key", f"S{KEY_BYTES}")])
SLOT_BYTES = HEADER.itemsize + CAPACITY * ENTRY.itemsize
INT, FSUM, FMIN, FMAX = 1, 2, 3, 4
TF_COUNT, TF_TOTAL, TF_MIN, TF_MAX = "_tf/count", "_tf/total", "_tf/min", "_tf/max"
_NOT_SUMMED = ("pipeline/slides_unique", "pipeline/mean_tissue_fraction",
               "pipeline/min_tissue_fraction", "pipeline/max_tissue_fraction")


def reserve(fd: int, size: int) -> None:
    """Give the file's first ``size`` bytes their pages now (extending it with zeros), so
    writing them later never needs space; ``OSError`` (ENOSPC) when there is none. Where the
    OS has no ``posix_fallocate``, only the size is set."""
    if hasattr(os, "posix_fallocate"):
        os.posix_fallocate(fd, 0, size)
    elif os.fstat(fd).st_size < size:
        os.ftruncate(fd, size)


def _key_bytes(key: str) -> bytes:
    raw = key.encode("utf-8")
    if len(raw) <= KEY_BYTES:
        return raw
    return raw[:KEY_BYTES - 13] + b"~" + hashlib.blake2b(raw, digest_size=6).hexdigest().encode()


class SlotWriter:
    """This process's slot (see the module). Used by one thread: the one iterating."""

    def __init__(self, folder: str) -> None:
        self.pid = os.getpid()
        number = 0
        while True:
            fd = os.open(os.path.join(folder, f"slot-{number}.bin"), os.O_RDWR | os.O_CREAT,
                         0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                os.close(fd)
                number += 1
        try:
            reserve(fd, SLOT_BYTES)  # mapped pages that a full /dev/shm cannot take away
        except OSError:
            os.close(fd)
            raise
        self._fd = fd  # kept open: the lock lives as long as this process
        self._mm = mmap.mmap(fd, SLOT_BYTES)
        self._header = np.frombuffer(self._mm, HEADER, count=1)
        if self._header["magic"][0] != MAGIC:
            self._mm[:] = bytes(SLOT_BYTES)
            self._header["magic"] = MAGIC
        self._header["pid"] = self.pid
        self._table = np.frombuffer(self._mm, ENTRY, count=CAPACITY, offset=HEADER.itemsize)
        self._ivalue, self._fvalue = self._table["ivalue"], self._table["fvalue"]
        used = int(self._header["used"][0])
        self._index = {bytes(self._table["key"][i]).decode("utf-8", "replace"): i
                       for i in range(used)}
        self._full_logged = False
        with open(os.path.join(folder, "seen.bin"), "r+b") as seen:
            self._seen_mm = mmap.mmap(seen.fileno(), 0)
        self._seen = np.frombuffer(self._seen_mm, np.uint8)

    def _slot(self, key: str, kind: int) -> int | None:
        index = self._index.get(key)
        if index is not None:
            return index
        used = int(self._header["used"][0])
        if used >= CAPACITY:
            if not self._full_logged:
                self._full_logged = True
                logger.warning("statistics slot full (%d keys): %s and later keys dropped",
                               CAPACITY, key)
            return None
        raw = _key_bytes(key)
        self._table["kind"][used] = kind
        self._fvalue[used] = math.inf if kind == FMIN else -math.inf if kind == FMAX else 0.0
        self._ivalue[used] = 0
        self._table["key"][used] = raw
        self._table["klen"][used] = len(raw)  # last: readers skip entries without a key
        self._header["used"] = used + 1
        self._index[key] = used
        return used

    def add(self, key: str, delta: int | float) -> None:
        if isinstance(delta, float):
            index = self._slot(key, FSUM)
            if index is not None:
                self._fvalue[index] += delta
        else:
            index = self._slot(key, INT)
            if index is not None:
                self._ivalue[index] += delta

    def extreme(self, key: str, value: float, kind: int) -> None:
        index = self._slot(key, kind)
        if index is not None:
            old = float(self._fvalue[index])
            self._fvalue[index] = min(old, value) if kind == FMIN else max(old, value)

    def mark_seen(self, index: int) -> None:
        if 0 <= index < self._seen.size:
            self._seen[index] = 1


class PipelineRecorder:
    """Adds what one pipeline did since the last ``record`` to this process's slot."""

    def __init__(self, writer: SlotWriter | None, pipeline: PatchPipeline,
                 slide_index: Mapping[str, int]) -> None:
        self._writer, self._pipeline, self._slide_index = writer, pipeline, slide_index
        self._last: dict[str, int | float] = {}
        self._tf = (0, 0.0)
        self._marked: set[str] = set()

    def record(self) -> None:
        writer = self._writer
        if writer is None:
            return
        values = self._pipeline.stats_dict()
        for key in _NOT_SUMMED:
            values.pop(key, None)
        last = self._last
        for key, value in values.items():
            delta = value - last.get(key, 0)
            if delta or key not in last:  # every key appears, zero or not
                writer.add(key, delta)
        self._last = values
        stats = self._pipeline.stats
        tf = stats.tissue_fractions
        if tf.count != self._tf[0]:
            writer.add(TF_COUNT, tf.count - self._tf[0])
            writer.add(TF_TOTAL, float(tf.total - self._tf[1]))
            writer.extreme(TF_MIN, tf.min_val, FMIN)
            writer.extreme(TF_MAX, tf.max_val, FMAX)
            self._tf = (tf.count, tf.total)
        seen = stats.slides_seen
        if len(seen) != len(self._marked):
            for path in seen - self._marked:
                index = self._slide_index.get(path)
                if index is not None:
                    writer.mark_seen(index)
            self._marked = set(seen)
