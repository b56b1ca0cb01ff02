"""Walking the IFD chain in few serial round trips.

The chain is serial: IFD k names IFD k+1, so a walk that reads one IFD at a time costs a
storage round trip per IFD outside the bytes already held. Two things cut that down:

- Every byte read while opening is kept (``Spans``), and an IFD's out-of-line values are
  fetched together with the next IFD.
- Speculation. IFDs are also found by scanning held bytes ("sniffing": an ImageWidth entry,
  validated by parsing the whole directory), and a sniffed IFD says where its predecessor
  probably is: libvips writes each level's tiles and then its IFD, so the IFD of level k (with
  its arrays) ends right before the first tile of level k+1. Whenever the walk has to fetch,
  the same round trip also fetches a window before each sniffed IFD whose predecessor is still
  unknown. The walk from the header backward and the guesses from the tail forward meet in the
  middle: a 9-level libvips pyramid with four IFDs outside the first reads opens in 3 round
  trips instead of 6.

The chain alone decides what the slide contains: a wrong guess costs bytes (at most
``GUESS_BUDGET`` per open), never correctness.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from ...errors import InvalidTiff, LimitExceeded, ReadPastEnd
from ...io.range_reader import RangeReader
from ...limits import (
    GUESS_BUDGET,
    MAX_ENTRIES,
    MAX_IFDS,
    MAX_OPEN_BYTES,
    MAX_SNIFF_BYTES,
    MAX_SNIFF_CANDIDATES,
    MAX_SNIFF_HITS,
    MAX_TOTAL_ENTRIES,
)
from ..spans import Spans
from .header import TiffFormat
from .ifd import (
    EAGER_TAGS,
    Ifd,
    IfdEntry,
    check_value_size,
    decode_array,
    decode_value,
    parse_entries,
)
from .tags import Tag

IFD_WINDOW = 4096  # bytes read for one IFD (covers about 340 classic entries)
MIN_GUESS, MAX_GUESS = 16 * 1024, 256 * 1024
MAX_GUESSES = 8  # windows per round trip
# Bounds (bytes read, entries parsed, sniffing work per open): see ``wsi_streamer.limits``.


@dataclass(frozen=True, slots=True)
class _Sniffed:
    offset: int
    next_offset: int
    offsets: IfdEntry  # TileOffsets or StripOffsets


class ChainWalker:
    """Reads IFDs through ``spans``; one per open, not thread-safe."""

    def __init__(self, spans: Spans, fmt: TiffFormat, first: int) -> None:
        self.spans, self.fmt, self.first = spans, fmt, first
        self.size = spans.size
        self._sniffed: dict[int, _Sniffed] = {}
        self._known_next: set[int] = {first}  # IFDs whose predecessor is known
        self._guessed: set[int] = set()
        self._budget = GUESS_BUDGET
        self._entries = 0  # parsed in this open (MAX_TOTAL_ENTRIES)
        self._sniff_hits = MAX_SNIFF_CANDIDATES  # patterns left to examine in this open
        self._sniff_bytes = MAX_SNIFF_BYTES  # bytes left to scan for them
        self._pattern = _width_entry_pattern(fmt)
        pieces = spans.pieces()
        self._read = sum(len(data) for _, data in pieces)  # bytes this open holds (read)
        for offset, data in pieces:
            self._sniff(offset, data)

    def walk(self) -> tuple[Ifd, ...]:
        """Follow the chain from ``first``; loops, too many IFDs or bad offsets raise
        ``InvalidTiff`` (bounded time and memory whatever the file says)."""
        ifds: list[Ifd] = []
        seen: set[int] = set()
        offset = self.first
        while offset:
            if offset in seen:
                raise InvalidTiff(f"IFD chain loops back to offset {offset}")
            if len(ifds) >= MAX_IFDS:
                raise InvalidTiff(f"more than {MAX_IFDS} IFDs")
            seen.add(offset)
            try:
                ifd = self.read_ifd(offset)
            except ReadPastEnd as exc:
                raise InvalidTiff(f"IFD @{offset} is truncated") from exc
            except InvalidTiff:
                if not ifds:
                    raise
                break  # a damaged trailing IFD (often a label or macro) does not spoil the pyramid
            ifds.append(ifd)
            offset = ifd.next_offset
        if not ifds:
            raise InvalidTiff("no IFD")
        return tuple(ifds)

    def read_ifd(self, offset: int) -> Ifd:
        """The IFD at ``offset`` with the values of ``EAGER_TAGS``."""
        fmt, size = self.fmt, self.size
        if offset < 8 or offset + fmt.count_size > size:
            raise InvalidTiff(f"IFD offset {offset} is outside the file ({size} bytes)")
        if not self.spans.covers(offset, fmt.count_size):
            self._fetch([(offset, min(IFD_WINDOW, size - offset))])
        n = fmt.uint(self.spans.read(offset, fmt.count_size), 0, fmt.count_size)
        if n == 0 or n > MAX_ENTRIES:
            raise InvalidTiff(f"IFD @{offset}: {n} entries")
        self._entries += n
        if self._entries > MAX_TOTAL_ENTRIES:
            raise LimitExceeded("MAX_TOTAL_ENTRIES", f"IFD @{offset}: more than "
                                f"{MAX_TOTAL_ENTRIES} IFD entries in one file")
        need = fmt.count_size + n * fmt.entry_size + fmt.offset_size
        if need > size - offset:
            raise InvalidTiff(f"IFD @{offset}: {n} entries run past the end of the file")
        if not self.spans.covers(offset, need):
            self._fetch([(offset, need)])
        entries, next_offset = parse_entries(fmt, self.spans.read(offset, need), offset, size)
        self._known_next.add(next_offset)

        wanted = [e for e in entries if e.tag in EAGER_TAGS]
        remote = [e for e in wanted if e.inline is None]
        for e in remote:
            check_value_size(e, f"IFD @{offset}")
        missing = [(e.offset, e.nbytes) for e in remote
                   if not self.spans.covers(e.offset, e.nbytes)]
        if missing:
            if 8 <= next_offset < size - fmt.count_size:
                # Pipelining: fetch the next IFD together with this one's values.
                missing.append((next_offset, min(IFD_WINDOW, size - next_offset)))
            self._fetch(missing)
        values = tuple(
            (e.tag, decode_value(fmt, e.type, e.count, e.inline if e.inline is not None
                                 else self.spans.read(e.offset, e.nbytes)))
            for e in wanted
        )
        return Ifd(offset, next_offset, tuple(entries), values)

    def _fetch(self, ranges: list[tuple[int, int]]) -> None:
        """One round trip: ``ranges`` plus the guessed windows; ``LimitExceeded`` before
        reading when the open would hold more than ``MAX_OPEN_BYTES``."""
        ranges = ranges + self._guesses()
        wanted = sum(max(0, min(self.size, o + n) - max(0, o)) for o, n in ranges)
        if self._read + wanted > MAX_OPEN_BYTES:
            raise LimitExceeded("MAX_OPEN_BYTES", f"opening needs more than {MAX_OPEN_BYTES} "
                                "bytes of IFDs and their values")
        for offset, data in self.spans.fetch(ranges):
            self._read += len(data)
            self._sniff(offset, data)

    def _guesses(self) -> list[tuple[int, int]]:
        """A window before the first tile of each sniffed IFD whose predecessor is unknown."""
        fmt, windows = self.fmt, []
        for ifd in self._sniffed.values():
            if ifd.offset in self._known_next or ifd.offset in self._guessed:
                continue
            data_start = self._data_start(ifd)
            if (data_start is None or data_start < MIN_GUESS
                    or self.spans.covers(data_start - 1, 1)):
                continue
            # The predecessor of a halving pyramid level has about 4x the tiles; two arrays.
            estimate = int(1.25 * 4 * ifd.offsets.count * 2 * fmt.offset_size) + 8192
            length = min(max(estimate, MIN_GUESS), MAX_GUESS, data_start)
            if length > self._budget:
                break
            self._budget -= length
            self._guessed.add(ifd.offset)
            windows.append((data_start - length, length))
            if len(windows) == MAX_GUESSES:
                break
        return windows

    def _data_start(self, ifd: _Sniffed) -> int | None:
        entry = ifd.offsets
        raw = entry.inline if entry.inline is not None else self.spans.get(entry.offset,
                                                                             entry.nbytes)
        if raw is None:
            return None
        offsets = decode_array(self.fmt, entry, raw)
        offsets = offsets[offsets > 8]
        return int(offsets.min()) if offsets.size else None

    def _sniff(self, base: int, data: bytes) -> None:
        """Record the valid IFDs found in a piece of the file."""
        fmt = self.fmt
        if self._sniff_bytes < len(data) or self._sniff_hits <= 0:
            return  # speculation only: past its budget the walk just reads serially
        self._sniff_bytes -= len(data)
        for hits, match in enumerate(self._pattern.finditer(data)):
            if hits >= MAX_SNIFF_HITS or self._sniff_hits <= 0:
                break
            self._sniff_hits -= 1
            for index in range(8):  # ImageWidth is at most the 8th entry in practice
                start = match.start() - fmt.count_size - index * fmt.entry_size
                if start < 0:
                    break
                found = self._parse_candidate(data, start, base, index)
                if found is not None:
                    self._sniffed.setdefault(found.offset, found)
                    self._known_next.add(found.next_offset)
                    break

    def _parse_candidate(self, data: bytes, start: int, base: int, index: int
                         ) -> _Sniffed | None:
        fmt = self.fmt
        n = fmt.uint(data, start, fmt.count_size)
        end = start + fmt.count_size + n * fmt.entry_size + fmt.offset_size
        if not index < n <= MAX_ENTRIES or end > len(data):
            return None
        tags = [fmt.uint(data, start + fmt.count_size + i * fmt.entry_size, 2)
                for i in range(n)]
        ascending = all(a < b for a, b in zip(tags, tags[1:], strict=False))
        if tags[index] != Tag.IMAGE_WIDTH or not ascending:
            return None
        try:
            entries, next_offset = parse_entries(fmt, data[start:end], base + start, self.size)
        except InvalidTiff:
            return None
        offsets = next((e for e in entries if e.tag in (Tag.TILE_OFFSETS, Tag.STRIP_OFFSETS)),
                       None)
        if offsets is None or offsets.count == 0 or offsets.type not in (3, 4, 16):
            return None
        return _Sniffed(base + start, next_offset, offsets)


def _width_entry_pattern(fmt: TiffFormat) -> re.Pattern[bytes]:
    """An ImageWidth entry with one SHORT, LONG (or LONG8) value, in this file's layout."""
    order: Literal["little", "big"] = "little" if fmt.byteorder == "<" else "big"
    count = (1).to_bytes(fmt.offset_size, order)
    tag = int(Tag.IMAGE_WIDTH).to_bytes(2, order)
    types = (3, 4, 16) if fmt.bigtiff else (3, 4)
    return re.compile(b"|".join(re.escape(tag + t.to_bytes(2, order) + count) for t in types))


def read_ifd_chain(source: Spans | RangeReader, fmt: TiffFormat, first: int
                   ) -> tuple[Ifd, ...]:
    """All IFDs of the chain starting at ``first``."""
    spans = source if isinstance(source, Spans) else Spans(source)
    return ChainWalker(spans, fmt, first).walk()


def read_ifd(reader: RangeReader, fmt: TiffFormat, offset: int) -> Ifd:
    """One IFD (with the values of ``EAGER_TAGS``) without following the chain."""
    return ChainWalker(Spans(reader), fmt, offset).read_ifd(offset)
