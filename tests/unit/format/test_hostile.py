"""Damaged and hostile files raise typed errors (InvalidTiff/UnsupportedFormat, or ReadPastEnd/
DecodeError for tile data) with bounded work; never IndexError, struct.error, hangs or huge
allocations. Work is counted, not timed: IFDs parsed, bytes read (``CountingReader``), tile
decodes and traced memory, against ``wsi_streamer.limits``."""

from __future__ import annotations

import functools
import tracemalloc
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fixtures.fakes import CountingReader
from tests.fixtures.images import abbreviated_jpeg_tiles, tissue
from tests.fixtures.slides import first_ifd_offset, make_svs
from tests.fixtures.tiffpack import Field, pack_tiff, payload_offset, tiled_fields
from wsi_streamer import limits
from wsi_streamer.errors import InvalidTiff, UnsupportedFormat, WsiError
from wsi_streamer.format.tiff import chain
from wsi_streamer.format.tiff import slide as tiled
from wsi_streamer.format.tiff.driver import parse_structure
from wsi_streamer.io.range_reader import BytesReader
from wsi_streamer.slide.reader import open_slide

DESC = Field(270, 2, b"Aperio Image Library test\0")


@dataclass(frozen=True)
class Tiles:
    """Five abbreviated 32x32 JPEG tiles sharing ``tables``, packed from ``payload_offset()``."""

    tables: bytes
    tiles: tuple[bytes, ...]

    @property
    def payload(self) -> bytes:
        return b"".join(self.tiles)

    @property
    def starts(self) -> list[int]:
        return [payload_offset() + sum(map(len, self.tiles[:i])) for i in range(5)]

    def level0(self, extra: list[Field]) -> list[Field]:
        """Level 0's fields (64x64 in four tiles) plus ``extra``."""
        return tiled_fields(64, 64, 32, self.starts[:4], [len(t) for t in self.tiles[:4]],
                            tables=self.tables, extra=extra)


@functools.cache
def jpeg() -> Tiles:
    tables, tiles = abbreviated_jpeg_tiles([tissue(32, 32, s) for s in range(5)], 80, rgb=True)
    return Tiles(tables, tuple(tiles))


def two_levels(level0: list[Field] | None = None, **kwargs: object) -> bytes:
    """Level 0: 64x64 in four 32x32 tiles; level 1: 32x32 in one tile."""
    t = jpeg()
    l0 = level0 or t.level0([DESC])
    l1 = tiled_fields(32, 32, 32, t.starts[4:], [len(t.tiles[4])], tables=t.tables)
    return pack_tiff([l0, l1], payload=t.payload, **kwargs)  # type: ignore[arg-type]


@dataclass
class Work:
    """What one open (and its tile reads) cost: IFDs parsed and tiles decoded (counted by
    wrapping ``ChainWalker.read_ifd`` and the tile decoder); reads in ``reader.calls``."""

    reader: CountingReader
    ifds: int = 0
    decodes: int = 0

    @property
    def bytes_read(self) -> int:
        return sum(n for _, n in self.reader.calls)


@contextmanager
def counted(data: bytes, monkeypatch: pytest.MonkeyPatch) -> Iterator[Work]:
    work = Work(CountingReader(data))
    read_ifd, decode = chain.ChainWalker.read_ifd, tiled.decode_tile_jpeg

    def counting_read_ifd(self: chain.ChainWalker, offset: int) -> object:
        work.ifds += 1
        return read_ifd(self, offset)

    def counting_decode(*args: object, **kwargs: object) -> object:
        work.decodes += 1
        return decode(*args, **kwargs)  # type: ignore[arg-type]

    with monkeypatch.context() as mp:
        mp.setattr(chain.ChainWalker, "read_ifd", counting_read_ifd)
        mp.setattr(tiled, "decode_tile_jpeg", counting_decode)
        yield work


def exercise(data: bytes, reader: CountingReader | None = None) -> str:
    """Open and read tiles (at most 4x4 per level); only ``WsiError`` may escape the engine.
    Returns what happened."""
    try:
        slide = open_slide(reader or BytesReader(data))
    except WsiError:
        return "refused"
    for info in slide.levels:
        if info.tile_width * info.tile_height > 1 << 20:
            continue  # a legal but huge tile: decoding it is allowed, just slow
        for y in range(min(info.tiles_y, 4)):
            for x in range(min(info.tiles_x, 4)):
                try:
                    slide.read_tile(info.level, x, y)
                except WsiError:
                    pass
    return "opened"


def test_valid_baseline_opens_and_decodes() -> None:
    slide = open_slide(BytesReader(two_levels()))
    assert [(lv.width, lv.height) for lv in slide.levels] == [(64, 64), (32, 32)]
    assert slide.read_tile(0, 1, 1).size == (32, 32)


def test_ifd_self_loop() -> None:
    first = first_ifd_offset(two_levels())
    with pytest.raises(InvalidTiff, match="loop"):
        parse_structure(BytesReader(two_levels(next_offsets={0: first})))


def test_ifd_loop_back_to_first() -> None:
    first = first_ifd_offset(two_levels())
    with pytest.raises(InvalidTiff, match="loop"):
        parse_structure(BytesReader(two_levels(next_offsets={1: first})))


def test_too_many_ifds_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    t = jpeg()
    page = [Field(256, 3, [1]), Field(257, 3, [1])]
    data = pack_tiff([tiled_fields(32, 32, 32, t.starts[:1], [len(t.tiles[0])],
                                   tables=t.tables)] + [page] * 1100, payload=t.payload)
    with counted(data, monkeypatch) as work, pytest.raises(InvalidTiff, match="IFDs"):
        parse_structure(work.reader)
    assert work.ifds == limits.MAX_IFDS  # each IFD of the chain parsed once, then refused
    assert work.bytes_read <= len(data), work.reader.calls  # each byte read at most once


@pytest.mark.parametrize("count", [0, 5000, 65535])
def test_absurd_entry_counts(count: int) -> None:
    with pytest.raises(InvalidTiff, match="entries"):
        parse_structure(BytesReader(two_levels(entry_counts={0: count})))


@pytest.mark.parametrize("first", [3, 7, 10**6, 2**32 - 1])
def test_first_ifd_offset_outside_file(first: int) -> None:
    with pytest.raises(InvalidTiff):
        parse_structure(BytesReader(two_levels(first_ifd=first)))


def test_damaged_trailing_ifd_keeps_the_pyramid() -> None:
    data = two_levels(next_offsets={0: 10**6})
    assert len(parse_structure(BytesReader(data)).levels) == 1


@pytest.mark.parametrize("field", [
    Field(324, 4, [8] * 4, count=2**30),  # TileOffsets count absurd (past end)
    Field(325, 4, [8] * 4, offset=10**7),  # TileByteCounts values past end
    Field(270, 2, b"Aperio x" * 4, offset=10**7),  # eager value past end
    Field(324, 4, [8] * 3),  # wrong number of tiles for the grid
    Field(256, 4, [2**31]),  # absurd width
    Field(322, 3, [0]),  # zero tile width
    Field(322, 3, [60000]),  # absurd tile width
])
def test_absurd_fields_are_invalid_tiff(field: Field, monkeypatch: pytest.MonkeyPatch) -> None:
    """Refused from what the IFD says, before allocating or reading what it claims (a
    2**30-value array would be 4 GiB): the file's 3 KiB read once, under 1 MiB traced."""
    level0 = [f for f in jpeg().level0([DESC]) if f.tag != field.tag]
    data = two_levels(level0 + [field])
    with counted(data, monkeypatch) as work:
        tracemalloc.start()
        try:
            with pytest.raises(InvalidTiff):
                parse_structure(work.reader)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert work.ifds <= 2
    assert work.bytes_read <= len(data), work.reader.calls
    assert peak < 1 << 20, peak


def test_huge_eager_value_is_refused_not_loaded() -> None:
    big = Field(270, 2, b"Aperio " + b"x" * (1 << 20) + b"\0")
    level0 = jpeg().level0([big])
    with pytest.raises(InvalidTiff, match="bytes"):
        parse_structure(BytesReader(two_levels(level0)))


@pytest.mark.parametrize(("offsets", "counts"), [
    ([8, 8, 8, 10**8], [10, 10, 10, 10]),  # tile past the end
    ([8, 8, 8, 8], [10, 10, 10, 10**9]),  # absurd byte count
])
def test_tile_ranges_outside_file_are_invalid(offsets: list[int], counts: list[int]) -> None:
    level0 = tiled_fields(64, 64, 32, offsets, counts, tables=jpeg().tables, extra=[DESC])
    slide = open_slide(BytesReader(two_levels(level0)))
    with pytest.raises(InvalidTiff, match="tile"):
        slide.read_raw_tile(0, 1, 1)


def test_sparse_tile_is_white_background() -> None:
    t = jpeg()
    level0 = tiled_fields(64, 64, 32, [t.starts[0], 0, t.starts[2], t.starts[3]],
                          [len(t.tiles[0]), 0, len(t.tiles[2]), len(t.tiles[3])],
                          tables=t.tables, extra=[DESC])
    slide = open_slide(BytesReader(two_levels(level0)))
    assert slide.read_raw_tile(0, 1, 0) == b""
    assert (np.asarray(slide.read_tile(0, 1, 0)) == 255).all()
    assert np.asarray(slide.read_tile(0, 0, 0)).std() > 5


def test_garbage_tile_bytes_are_decode_errors() -> None:
    level0 = tiled_fields(64, 64, 32, [8, 8, 8, 8], [40, 40, 40, 40], tables=jpeg().tables,
                          extra=[DESC])
    slide = open_slide(BytesReader(two_levels(level0)))  # the "tiles" are TIFF header bytes
    with pytest.raises(WsiError):
        slide.read_tile(0, 0, 0)


@pytest.fixture(scope="module")
def small_svs() -> bytes:
    return make_svs(300, 200, levels=2, tile=128).data


@pytest.mark.parametrize("fraction", [0.0, 0.001, 0.01, 0.2, 0.5, 0.8, 0.95, 0.999])
def test_truncated_files(small_svs: bytes, fraction: float,
                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever survives of the file costs at most its IFDs (5: two levels, thumbnail, label,
    macro), each byte read at most twice (open, then a tile) and one decode per tile tried
    (at most 16 per level, two levels)."""
    data = small_svs[: int(len(small_svs) * fraction)]
    with counted(data, monkeypatch) as work:
        result = exercise(data, work.reader)
    assert work.ifds <= 5
    assert work.bytes_read <= 2 * len(data), work.reader.calls
    assert work.decodes <= 2 * 16
    if fraction < 0.01:
        assert result == "refused"
    if fraction > 0.9:
        assert result == "opened" and work.ifds >= 2 and work.decodes > 0  # counted at all


def test_truncated_files_raise_typed_errors(small_svs: bytes) -> None:
    with pytest.raises(UnsupportedFormat):
        parse_structure(BytesReader(small_svs[:100]))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, 2**16), st.integers(0, 255)), min_size=1,
                max_size=8))
def test_fuzzed_bytes_only_raise_wsi_errors(edits: list[tuple[int, int]]) -> None:
    data = bytearray(two_levels())
    t = jpeg()
    structure_start = t.starts[-1] + len(t.tiles[-1])  # mostly hit IFDs and their values
    for pos, value in edits:
        index = pos % 8 if pos < 1024 else structure_start + pos % (len(data) - structure_start)
        data[index] = value
    exercise(bytes(data))
