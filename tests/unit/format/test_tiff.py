"""TIFF/BigTIFF headers and IFD decoding: every field type, both byte orders, inline and
out-of-line values, and lazy tile-offset arrays."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from tests.fixtures.tiffpack import Field, pack_tiff, tiled_fields
from wsi_streamer.errors import InvalidTiff, UnsupportedFormat
from wsi_streamer.format.tiff.chain import read_ifd, read_ifd_chain
from wsi_streamer.format.tiff.header import TiffFormat, parse_header
from wsi_streamer.format.tiff.ifd import EAGER_TAGS, decode_array, decode_value, read_fields
from wsi_streamer.format.tiff.tags import Tag
from wsi_streamer.io.range_reader import BytesReader

FLAVOURS = [("<", False), (">", False), ("<", True), (">", True)]
IDS = ["II-classic", "MM-classic", "II-bigtiff", "MM-bigtiff"]


@pytest.mark.parametrize(("data", "order", "bigtiff", "first"), [
    (b"II*\0\x08\0\0\0", "<", False, 8),
    (b"MM\0*\0\0\0\x08", ">", False, 8),
    (b"II+\0\x08\0\0\0" + (16).to_bytes(8, "little"), "<", True, 16),
    (b"MM\0+\0\x08\0\0" + (1 << 33).to_bytes(8, "big"), ">", True, 1 << 33),
])
def test_header_flavours(data: bytes, order: str, bigtiff: bool, first: int) -> None:
    fmt, offset = parse_header(data)
    assert fmt == TiffFormat(order, bigtiff) and offset == first
    assert fmt.offset_size == (8 if bigtiff else 4)
    assert fmt.entry_size == (20 if bigtiff else 12)


@pytest.mark.parametrize("data", [
    b"", b"II", b"XX*\0\x08\0\0\0", b"II\x2b\0\x08\0\0\0", b"II\x2b\0\x04\0\0\0" + b"\0" * 8,
    b"II\x2a\x01\x08\0\0\0", b"\x89PNG\r\n\x1a\n", b"MM\0\x2b\0\x08\0\x01" + b"\0" * 8])
def test_header_rejects_non_tiff(data: bytes) -> None:
    with pytest.raises(UnsupportedFormat):
        parse_header(data)


# custom tags (>= 65000) of every field type; one value that fits the entry, one that does not
SHORT_VALUES = {1: [7], 2: b"ab\0", 3: [65535], 4: [4000000000], 5: [(1, 2)], 6: [-5],
                7: b"\x01\x02", 8: [-300], 9: [-70000], 10: [(-3, 4)], 11: [1.5],
                12: [2.25], 13: [123], 16: [1 << 40], 17: [-(1 << 40)], 18: [1 << 35]}
LONG_VALUES = {1: list(range(20)), 2: b"hello world\0", 3: [1, 2, 3, 4, 5], 4: [1, 2, 3],
               5: [(3, 4), (5, 0)], 6: [-1, -2, -3, -4, -5, -6, -7, -8, -9],
               7: bytes(range(30)), 8: [-1, 2, -3, 4, -5], 9: [-1, 2, -3],
               10: [(-1, 2), (7, -8)], 11: [0.5, -0.25, 8.0], 12: [1.0, -2.0],
               13: [8, 16, 24], 16: [1, 2, 1 << 60], 17: [-1, 1 << 62], 18: [5, 6]}
EXPECTED_RATIONALS = {5: {"short": (0.5,), "long": (0.75, 0.0)},
                      10: {"short": (-0.75,), "long": (-0.5, -0.875)}}
CLASSIC_TYPES = [t for t in SHORT_VALUES if t < 16]


def _expected(type_: int, values: object, kind: str) -> object:
    if type_ in EXPECTED_RATIONALS:
        return EXPECTED_RATIONALS[type_][kind]
    if type_ in (1, 2, 7):  # BYTE, ASCII and UNDEFINED decode as bytes
        return bytes(values)  # type: ignore[arg-type]
    return tuple(values)  # type: ignore[arg-type]


@pytest.mark.parametrize(("order", "bigtiff"), FLAVOURS, ids=IDS)
def test_every_field_type_inline_and_out_of_line(order: str, bigtiff: bool) -> None:
    types = list(SHORT_VALUES) if bigtiff else CLASSIC_TYPES
    fields = [Field(256, 3, [1]), Field(257, 3, [1])]
    for i, t in enumerate(types):
        fields.append(Field(65000 + 2 * i, t, SHORT_VALUES[t]))
        fields.append(Field(65001 + 2 * i, t, LONG_VALUES[t]))
    data = pack_tiff([fields], byteorder=order, bigtiff=bigtiff)
    reader = BytesReader(data)
    fmt, first = parse_header(data[:16])
    (ifd,) = read_ifd_chain(reader, fmt, first)
    for i, t in enumerate(types):
        for tag, values, kind in ((65000 + 2 * i, SHORT_VALUES[t], "short"),
                                  (65001 + 2 * i, LONG_VALUES[t], "long")):
            entry = ifd.entry(tag)
            assert entry is not None and entry.type == t
            fits = entry.nbytes <= fmt.offset_size
            assert (entry.inline is not None) == fits and (entry.offset == -1) == fits
            raw = entry.inline if fits else reader.read(entry.offset, entry.nbytes)
            assert decode_value(fmt, t, entry.count, raw) == _expected(t, values, kind), (t, kind)


@pytest.mark.parametrize(("order", "bigtiff"), FLAVOURS, ids=IDS)
def test_eager_tags_are_loaded_with_the_ifd(order: str, bigtiff: bool) -> None:
    desc = b"Aperio Image Library test\r\n" + b"x" * 300 + b"\0"
    fields = tiled_fields(100, 80, 16, [8] * 35, [1] * 35, tables=b"\xff\xd8" + b"t" * 70,
                          extra=[Field(270, 2, desc), Field(282, 5, [(20000, 1)])])
    reader = BytesReader(pack_tiff([fields], byteorder=order, bigtiff=bigtiff))
    fmt, first = parse_header(reader.read(0, 16))
    ifd = read_ifd(reader, fmt, first)
    assert ifd.int_value(Tag.IMAGE_WIDTH) == 100 and ifd.int_value(Tag.IMAGE_LENGTH) == 80
    assert ifd.value(Tag.BITS_PER_SAMPLE) == (8, 8, 8)
    assert ifd.text(Tag.IMAGE_DESCRIPTION) == desc[:-1].decode()
    tables = ifd.entry(Tag.JPEG_TABLES)  # read on demand, with the tile arrays
    assert tables is not None and read_fields(reader, [tables])[0] == b"\xff\xd8" + b"t" * 70
    assert ifd.value(Tag.X_RESOLUTION) == (20000.0,)
    assert ifd.value(Tag.TILE_OFFSETS) is None  # arrays are not eager
    assert Tag.TILE_OFFSETS not in EAGER_TAGS and ifd.entry(Tag.TILE_OFFSETS) is not None
    assert ifd.int_value(Tag.SOFTWARE, 42) == 42  # absent tag -> default


@pytest.mark.parametrize(("long_type", "bigtiff"), [(3, False), (4, False), (16, True)])
def test_read_array_widths(long_type: int, bigtiff: bool) -> None:
    offsets = [8 + i for i in range(50)]
    fields = tiled_fields(160, 80, 16, offsets, [1] * 50, long_type=long_type)
    reader = BytesReader(pack_tiff([fields], bigtiff=bigtiff, byteorder=">"))
    fmt, first = parse_header(reader.read(0, 16))
    ifd = read_ifd(reader, fmt, first)
    entry = ifd.entry(Tag.TILE_OFFSETS)
    assert entry is not None
    array = decode_array(fmt, entry, read_fields(reader, [entry])[0])
    assert array.dtype == np.uint64 and array.tolist() == offsets


def test_read_array_refuses_non_integer_type() -> None:
    fields = [Field(256, 3, [1]), Field(324, 11, [1.0, 2.0])]
    reader = BytesReader(pack_tiff([fields]))
    fmt, first = parse_header(reader.read(0, 16))
    entry = read_ifd(reader, fmt, first).entry(Tag.TILE_OFFSETS)
    assert entry is not None
    with pytest.raises(InvalidTiff):
        decode_array(fmt, entry, read_fields(reader, [entry])[0])


def test_unknown_field_types_are_skipped() -> None:
    fields = [Field(256, 3, [1]), Field(257, 3, [1])]
    data = bytearray(pack_tiff([fields + [Field(65000, 3, [1])]]))
    struct.pack_into("<H", data, 8 + 2 + 2 * 12 + 2, 99)  # third entry's type -> 99
    reader = BytesReader(bytes(data))
    (ifd,) = read_ifd_chain(reader, *parse_header(bytes(data[:16])))
    assert ifd.entry(65000) is None and ifd.int_value(Tag.IMAGE_WIDTH) == 1


def test_big_ifd_beyond_the_speculative_window_is_read_whole() -> None:
    fields = [Field(256, 3, [1]), Field(257, 3, [1])]
    fields += [Field(40000 + i, 3, [i]) for i in range(500)]  # 6 KB of entries
    reader = BytesReader(pack_tiff([fields]))
    (ifd,) = read_ifd_chain(reader, *parse_header(reader.read(0, 16)))
    assert len(ifd.entries) == 502 and ifd.entry(40499) is not None


def test_chain_order_and_next_offsets() -> None:
    pages = [[Field(256, 3, [w]), Field(257, 3, [w])] for w in (30, 20, 10)]
    reader = BytesReader(pack_tiff(pages, byteorder=">", bigtiff=True))
    ifds = read_ifd_chain(reader, *parse_header(reader.read(0, 16)))
    assert [i.int_value(Tag.IMAGE_WIDTH) for i in ifds] == [30, 20, 10]
    assert ifds[0].next_offset == ifds[1].offset and ifds[-1].next_offset == 0
