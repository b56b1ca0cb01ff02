"""TIFF and BigTIFF headers; byte order and offset width as data (``TiffFormat``), not branches."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from ...errors import UnsupportedFormat

HEADER_SIZE = 16  # enough for BigTIFF; classic uses 8


@dataclass(frozen=True, slots=True)
class TiffFormat:
    """Struct layout of one TIFF flavour (classic 42 or BigTIFF 43) in one byte order."""

    byteorder: str  # "<" (II) or ">" (MM)
    bigtiff: bool

    @property
    def offset_size(self) -> int:
        return 8 if self.bigtiff else 4

    @property
    def offset_code(self) -> str:
        return "Q" if self.bigtiff else "I"

    @property
    def count_size(self) -> int:
        """Size of the entry-count field that starts an IFD."""
        return 8 if self.bigtiff else 2

    @property
    def entry_size(self) -> int:
        return 20 if self.bigtiff else 12

    def unpack(self, code: str, data: bytes, offset: int = 0) -> tuple[int | float | bytes, ...]:
        return struct.unpack_from(self.byteorder + code, data, offset)

    def uint(self, data: bytes, offset: int, size: int) -> int:
        return int.from_bytes(data[offset : offset + size], "little" if self.byteorder == "<"
                              else "big")


def parse_header(data: bytes) -> tuple[TiffFormat, int]:
    """Return the format and the first IFD's offset; ``UnsupportedFormat`` if not a TIFF."""
    if len(data) < 8 or data[:2] not in (b"II", b"MM"):
        raise UnsupportedFormat("not a TIFF file (no II/MM byte-order mark)")
    order = "<" if data[:2] == b"II" else ">"
    (magic,) = struct.unpack_from(order + "H", data, 2)
    if magic == 42:
        fmt = TiffFormat(order, bigtiff=False)
        return fmt, fmt.uint(data, 4, 4)
    if magic == 43:
        if len(data) < 16:
            raise UnsupportedFormat("truncated BigTIFF header")
        offset_size, zero = struct.unpack_from(order + "HH", data, 4)
        if offset_size != 8 or zero != 0:
            raise UnsupportedFormat(f"BigTIFF with offset size {offset_size} is not supported")
        fmt = TiffFormat(order, bigtiff=True)
        return fmt, fmt.uint(data, 8, 8)
    raise UnsupportedFormat(f"not a TIFF file (magic number {magic})")
