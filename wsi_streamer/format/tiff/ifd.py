"""Image File Directories: one read per IFD, defensive against hostile files.

Small values of the tags this package uses are loaded with the IFD (they sit next to it, so
the block cache usually already holds them); large arrays (tile offsets and byte counts) stay
as entries and are read on demand with ``read_array``.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from ...errors import InvalidTiff, ReadPastEnd
from ...io.range_reader import RangeReader
from .header import TiffFormat
from .tags import FIELD_TYPES, Tag

MAX_IFDS = 1024
MAX_ENTRIES = 4096
IFD_WINDOW = 4096  # bytes read speculatively for one IFD (covers about 340 classic entries)
MAX_EAGER_VALUE = 1 << 20

# Tags whose values are loaded with the IFD; everything else stays an unread entry, read on
# demand (JPEGTables with the tile arrays: libtiff writes it after them, far from the IFD).
EAGER_TAGS = frozenset({
    Tag.NEW_SUBFILE_TYPE, Tag.IMAGE_WIDTH, Tag.IMAGE_LENGTH, Tag.BITS_PER_SAMPLE,
    Tag.COMPRESSION, Tag.PHOTOMETRIC, Tag.IMAGE_DESCRIPTION, Tag.MAKE, Tag.MODEL,
    Tag.SAMPLES_PER_PIXEL, Tag.ROWS_PER_STRIP, Tag.X_RESOLUTION, Tag.Y_RESOLUTION,
    Tag.PLANAR_CONFIGURATION, Tag.RESOLUTION_UNIT, Tag.SOFTWARE, Tag.TILE_WIDTH,
    Tag.TILE_LENGTH, Tag.YCBCR_SUBSAMPLING, Tag.IMAGE_DEPTH,
})

Value = tuple[int | float, ...] | bytes


@dataclass(frozen=True, slots=True)
class IfdEntry:
    tag: int
    type: int
    count: int
    inline: bytes | None  # raw value bytes when they fit in the entry, else None
    offset: int  # file offset of the value when not inline, else -1

    @property
    def nbytes(self) -> int:
        return self.count * FIELD_TYPES[self.type][0]


@dataclass(frozen=True, slots=True)
class Ifd:
    offset: int
    next_offset: int
    entries: tuple[IfdEntry, ...]
    values: tuple[tuple[int, Value], ...]  # loaded values of ``EAGER_TAGS``

    def entry(self, tag: int) -> IfdEntry | None:
        return next((e for e in self.entries if e.tag == tag), None)

    def value(self, tag: int) -> Value | None:
        return next((v for t, v in self.values if t == tag), None)

    def int_value(self, tag: int, default: int | None = None) -> int | None:
        """The first value of an integer field; ``default`` when absent or not an integer
        type (a FLOAT/RATIONAL width, NaN or infinity included)."""
        value = self.value(tag)
        if isinstance(value, tuple) and value and isinstance(value[0], int):
            return value[0]
        return default

    def text(self, tag: int) -> str:
        value = self.value(tag)
        if isinstance(value, bytes):
            return value.split(b"\0", 1)[0].decode("latin-1")
        return ""


def decode_value(fmt: TiffFormat, type_: int, count: int, raw: bytes) -> Value:
    """Decode the raw bytes of a field (``count`` items of ``type_``)."""
    size, code = FIELD_TYPES[type_]
    if type_ in (1, 2, 7):
        return bytes(raw[:count])
    if type_ in (5, 10):
        pairs = struct.unpack(f"{fmt.byteorder}{2 * count}{code}", raw[: size * count])
        return tuple(n / d if d else 0.0 for n, d in zip(pairs[::2], pairs[1::2], strict=True))
    return struct.unpack(f"{fmt.byteorder}{count}{code}", raw[: size * count])


def _parse_entries(fmt: TiffFormat, data: bytes, offset: int, file_size: int) -> tuple[
        list[IfdEntry], int]:
    n = fmt.uint(data, 0, fmt.count_size)
    if n == 0 or n > MAX_ENTRIES:
        raise InvalidTiff(f"IFD @{offset}: {n} entries")
    end = fmt.count_size + n * fmt.entry_size
    if len(data) < end + fmt.offset_size:
        raise InvalidTiff(f"IFD @{offset}: {n} entries run past the end of the file")
    half = fmt.offset_size
    entries = []
    for i in range(n):
        pos = fmt.count_size + i * fmt.entry_size
        tag, type_ = fmt.unpack("HH", data, pos)
        count = fmt.uint(data, pos + 4, half)
        if type_ not in FIELD_TYPES:
            continue  # unknown field types are skipped, as TIFF 6.0 asks readers to
        nbytes = count * FIELD_TYPES[int(type_)][0]
        value_pos = pos + 4 + half
        if nbytes <= half:
            entries.append(IfdEntry(int(tag), int(type_), count,
                                    data[value_pos : value_pos + nbytes], -1))
        else:
            value_offset = fmt.uint(data, value_pos, half)
            if value_offset + nbytes > file_size:
                raise InvalidTiff(f"IFD @{offset}: tag {tag!r} has {count} values at "
                                  f"{value_offset}, past the end of the file")
            entries.append(IfdEntry(int(tag), int(type_), count, None, value_offset))
    return entries, fmt.uint(data, end, half)


def read_ifd(reader: RangeReader, fmt: TiffFormat, offset: int) -> Ifd:
    """Read and validate the IFD at ``offset`` plus the values of ``EAGER_TAGS``."""
    size = reader.size
    if offset < 8 or offset + fmt.count_size > size:
        raise InvalidTiff(f"IFD offset {offset} is outside the file ({size} bytes)")
    data = reader.read(offset, min(IFD_WINDOW, size - offset))
    n = fmt.uint(data, 0, fmt.count_size)
    need = fmt.count_size + n * fmt.entry_size + fmt.offset_size
    if n <= MAX_ENTRIES and len(data) < need <= size - offset:
        data = reader.read(offset, need)
    entries, next_offset = _parse_entries(fmt, data, offset, size)

    wanted = [e for e in entries if e.tag in EAGER_TAGS]
    remote = [e for e in wanted if e.inline is None]
    for e in remote:
        if e.nbytes > MAX_EAGER_VALUE:
            raise InvalidTiff(f"IFD @{offset}: tag {e.tag} value of {e.nbytes} bytes")
    ranges = [(e.offset, e.nbytes) for e in remote]
    if 8 <= next_offset < size - fmt.count_size and ranges:
        # Pipelining: fetch the next IFD together with this one's values (one round trip).
        ranges.append((next_offset, min(IFD_WINDOW, size - next_offset)))
    blobs = _read_ranges(reader, ranges)
    raw = dict(zip((id(e) for e in remote), blobs, strict=False))
    values = tuple(
        (e.tag, decode_value(fmt, e.type, e.count, e.inline if e.inline is not None
                             else raw[id(e)]))
        for e in wanted
    )
    return Ifd(offset, next_offset, tuple(entries), values)


def _read_ranges(reader: RangeReader, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
    read_many: Callable[[Sequence[tuple[int, int]]], list[bytes]] | None = getattr(
        reader, "read_many", None)
    if read_many is not None and len(ranges) > 1:
        return read_many(ranges)
    return [reader.read(o, n) for o, n in ranges]


def read_ifd_chain(reader: RangeReader, fmt: TiffFormat, first: int) -> tuple[Ifd, ...]:
    """Follow the IFD chain from ``first``; loops, too many IFDs or bad offsets raise
    ``InvalidTiff`` (bounded time and memory whatever the file says)."""
    ifds: list[Ifd] = []
    seen: set[int] = set()
    offset = first
    while offset:
        if offset in seen:
            raise InvalidTiff(f"IFD chain loops back to offset {offset}")
        if len(ifds) >= MAX_IFDS:
            raise InvalidTiff(f"more than {MAX_IFDS} IFDs")
        seen.add(offset)
        try:
            ifd = read_ifd(reader, fmt, offset)
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


def read_bytes(reader: RangeReader, entry: IfdEntry, limit: int = MAX_EAGER_VALUE) -> bytes:
    """The raw value of a BYTE/UNDEFINED field read on demand (e.g. JPEGTables)."""
    if entry.nbytes > limit:
        raise InvalidTiff(f"tag {entry.tag} value of {entry.nbytes} bytes")
    return entry.inline if entry.inline is not None else reader.read(entry.offset, entry.nbytes)


def read_array(reader: RangeReader, fmt: TiffFormat, entry: IfdEntry) -> np.ndarray:
    """Read an integer array field (tile offsets or byte counts) with one request, as uint64."""
    if entry.type not in (3, 4, 16, 13, 18):
        raise InvalidTiff(f"tag {entry.tag} has non-integer type {entry.type}")
    size, code = FIELD_TYPES[entry.type]
    raw = entry.inline if entry.inline is not None else reader.read(entry.offset, entry.nbytes)
    dtype = np.dtype(f"{fmt.byteorder}{ {'H': 'u2', 'I': 'u4', 'Q': 'u8'}[code] }")
    return np.frombuffer(raw, dtype=dtype, count=entry.count).astype(np.uint64)
