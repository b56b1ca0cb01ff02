"""Image File Directories as data, parsed defensively (hostile files raise ``InvalidTiff``).

Small values of the tags this package uses (``EAGER_TAGS``) are loaded with the IFD by the chain
walker (chain.py); large arrays (tile offsets and byte counts) stay as entries and are read on
demand with ``read_fields`` and ``decode_array``.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ...errors import InvalidTiff
from ...io.range_reader import RangeReader, read_ranges
from ...limits import MAX_EAGER_VALUE, MAX_ENTRIES
from .header import TiffFormat
from .tags import FIELD_TYPES, Tag

INTEGER_TYPES = frozenset({3, 4, 16, 13, 18})  # SHORT, LONG, LONG8, IFD, IFD8

# Tags whose values are loaded with the IFD; everything else stays an unread entry, read on
# demand (JPEGTables with the tile arrays: libtiff writes it after them, far from the IFD).
EAGER_TAGS = frozenset({
    Tag.NEW_SUBFILE_TYPE, Tag.IMAGE_WIDTH, Tag.IMAGE_LENGTH, Tag.BITS_PER_SAMPLE,
    Tag.COMPRESSION, Tag.PHOTOMETRIC, Tag.IMAGE_DESCRIPTION, Tag.MAKE, Tag.MODEL,
    Tag.SAMPLES_PER_PIXEL, Tag.ROWS_PER_STRIP, Tag.X_RESOLUTION, Tag.Y_RESOLUTION,
    Tag.PLANAR_CONFIGURATION, Tag.RESOLUTION_UNIT, Tag.SOFTWARE, Tag.TILE_WIDTH,
    Tag.TILE_LENGTH, Tag.YCBCR_SUBSAMPLING, Tag.IMAGE_DEPTH, Tag.PREDICTOR,
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


def parse_entries(fmt: TiffFormat, data: bytes, offset: int, file_size: int) -> tuple[
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


def check_value_size(entry: IfdEntry, where: str, limit: int = MAX_EAGER_VALUE) -> None:
    """``InvalidTiff`` for a value (description, JPEGTables...) larger than ``limit``."""
    if entry.nbytes > limit:
        raise InvalidTiff(f"{where}: tag {entry.tag} value of {entry.nbytes} bytes")


def read_fields(reader: RangeReader, entries: Sequence[IfdEntry]) -> list[bytes]:
    """The raw values of ``entries``; those not inline are read as exact ranges, concurrently
    (one round trip through the block cache)."""
    remote = [e for e in entries if e.inline is None]
    fetched = iter(read_ranges(reader, [(e.offset, e.nbytes) for e in remote]))
    return [e.inline if e.inline is not None else next(fetched) for e in entries]


def decode_array(fmt: TiffFormat, entry: IfdEntry, raw: bytes) -> np.ndarray:
    """The raw bytes of an integer array field as uint64 (``InvalidTiff`` for other types)."""
    if entry.type not in INTEGER_TYPES:
        raise InvalidTiff(f"tag {entry.tag} has non-integer type {entry.type}")
    code = FIELD_TYPES[entry.type][1]
    dtype = np.dtype(f"{fmt.byteorder}{ {'H': 'u2', 'I': 'u4', 'Q': 'u8'}[code] }")
    return np.frombuffer(raw, dtype=dtype, count=entry.count).astype(np.uint64)
