"""The bytes read while opening a slide: served again without a request, fetched in batches.

Opening reads small pieces (IFDs, their values, speculative windows) at scattered offsets.
``Spans`` keeps every piece for the duration of the open, so a later lookup inside one costs
nothing, and ``fetch`` sends a batch of missing ranges as one round trip (exact ranges through
the block cache when the reader offers them, so nothing is rounded up to whole blocks).
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence

from ..io.range_reader import RangeReader, check_range, read_ranges

# The first reads of an open, fetched concurrently: Aperio keeps IFD 0 (and level 0's arrays)
# at the head and the other IFDs near the end; libvips ends with the small levels' IFDs.
OPEN_HEAD = 256 * 1024
OPEN_TAIL = 1024 * 1024


class Spans:
    """Non-thread-safe; one per open. Ranges are ``(offset, length)`` within the reader."""

    def __init__(self, reader: RangeReader) -> None:
        self.reader = reader
        self.size = reader.size
        self._starts: list[int] = []
        self._data: list[bytes] = []

    def get(self, offset: int, length: int) -> bytes | None:
        """The bytes if one held piece covers the range, else None."""
        i = bisect.bisect_right(self._starts, offset)
        for j in range(i - 1, max(-1, i - 5), -1):
            start, data = self._starts[j], self._data[j]
            if start + len(data) >= offset + length:
                return data[offset - start : offset - start + length]
        return None

    def covers(self, offset: int, length: int) -> bool:
        return self.get(offset, length) is not None

    def pieces(self) -> list[tuple[int, bytes]]:
        return list(zip(self._starts, self._data, strict=True))

    def add(self, offset: int, data: bytes) -> None:
        i = bisect.bisect_left(self._starts, offset)
        self._starts.insert(i, offset)
        self._data.insert(i, data)

    def fetch(self, ranges: Sequence[tuple[int, int]]) -> list[tuple[int, bytes]]:
        """Read the ranges not held yet, concurrently; return the new pieces."""
        wanted = sorted({(o, n) for o, n in self._clip(ranges) if not self.covers(o, n)})
        if not wanted:
            return []
        pieces = list(zip((o for o, _ in wanted), read_ranges(self.reader, wanted), strict=True))
        for offset, data in pieces:
            self.add(offset, data)
        return pieces

    def read(self, offset: int, length: int) -> bytes:
        """The range, fetched alone if it is not held."""
        check_range(offset, length, self.size)
        held = self.get(offset, length)
        if held is not None:
            return held
        self.fetch([(offset, length)])
        held = self.get(offset, length)
        assert held is not None
        return held

    def _clip(self, ranges: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
        clipped = []
        for offset, length in ranges:
            start, end = max(0, offset), min(self.size, offset + length)
            if end > start:
                clipped.append((start, end - start))
        return clipped


def plan_open_reads(size: int) -> list[tuple[int, int]]:
    """The head and tail ranges read (concurrently) before any driver looks; the same as
    ``Storage.open_probed(id, OPEN_HEAD, OPEN_TAIL)`` returns."""
    head = min(size, OPEN_HEAD)
    tail = min(size - head, OPEN_TAIL)
    return [(0, head)] + ([(size - tail, tail)] if tail > 0 else [])


def open_reads(reader: RangeReader) -> Spans:
    """The reads of one open, starting with the head and tail (exact ranges, one round trip,
    through the block cache when ``reader`` is one)."""
    spans = Spans(reader)
    spans.fetch(plan_open_reads(reader.size))
    return spans
